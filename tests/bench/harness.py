"""Measuring helpers: timed commands, a watcher that sees a task record change within ~5 ms, a
minimal stdio MCP client (JSON-RPC lines, as Claude Code speaks to `codex-mcp serve`), and the
statistics the table is made of."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path

now = time.perf_counter


class BenchError(Exception):
    """A benchmark could not measure what it meant to (a command failed, a task ended wrongly)."""


def run_timed(argv: list, *, env: dict | None = None, cwd: object = None, input: bytes | None = None,
              check: bool = True, timeout: float = 900) -> tuple:
    """(seconds, CompletedProcess) of one command, its output captured."""
    started = now()
    done = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, input=input, capture_output=True,
                          timeout=timeout)
    elapsed = now() - started
    if check and done.returncode:
        raise BenchError(f"{' '.join(map(str, argv[:6]))} ... exited {done.returncode}: "
                         f"{(done.stderr or done.stdout).decode(errors='replace')[-800:]}")
    return elapsed, done


def median(values: list) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list, fmt=lambda v: f"{v:.2f}") -> str:
    return f"{fmt(min(values))} to {fmt(max(values))}" if values else "-"


STATUS_LINE = re.compile(rb"^- Status: *(\w+)", re.M)


class StatusWatcher:
    """Reads a task record every ~5 ms (from before it exists) and notes the moment its Status
    first says something other than todo or doing (or, with `final`, one of those): the moment a
    waiter should be woken."""

    def __init__(self, path: Path, every: float = 0.005, final: tuple = ()) -> None:
        self.path, self.every = path, every
        self.final = tuple(status.encode() for status in final)
        self.at: float | None = None
        self.status = ""
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while not self.stopped.is_set():
            try:
                match = STATUS_LINE.search(self.path.read_bytes())
            except OSError:
                match = None
            if match and (match.group(1) in self.final if self.final else match.group(1) not in (b"todo", b"doing")):
                self.at, self.status = now(), match.group(1).decode()
                return
            time.sleep(self.every)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


class McpClient:
    """`codex-mcp serve` (or any stdio MCP server) driven by JSON-RPC lines on its stdin/stdout."""

    PROTOCOL = "2025-11-25"

    def __init__(self, argv: list, env: dict, cwd: object) -> None:
        self.process = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=env, cwd=cwd)
        self.next_id = 0
        self.notifications = 0

    def send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        ident = self.next_id
        self.send({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise BenchError(f"the MCP server closed its output during {method}")
            message = json.loads(line)
            if message.get("id") == ident and ("result" in message or "error" in message):
                if "error" in message:
                    raise BenchError(f"{method}: {message['error']}")
                return message["result"]
            if "method" in message and "id" in message:          # a request from the server: say nothing to it
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": {}})
            else:
                self.notifications += 1

    def initialize(self) -> dict:
        result = self.request("initialize", {"protocolVersion": self.PROTOCOL, "capabilities": {},
                                             "clientInfo": {"name": "codex-mcp-bench", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def call(self, tool: str, arguments: dict, progress: bool = False) -> dict:
        params: dict = {"name": tool, "arguments": arguments}
        if progress:
            params["_meta"] = {"progressToken": f"bench-{self.next_id + 1}"}
        result = self.request("tools/call", params)
        text = result["content"][0]["text"] if result.get("content") else "{}"
        if result.get("isError"):
            raise BenchError(f"{tool}: {text}")
        return result.get("structuredContent") or json.loads(text)

    def tasks(self) -> "TasksClient":
        return TasksClient(self)

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


class TasksClient:
    """The same server spoken to as Claude Code 2.1.332 does in an interactive session: revision
    2026-07-28 (no handshake; each request says who it is) declaring the tasks extension, so that
    a waiting call answers with a task, polled with tasks/get at the interval the server asks for."""

    META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "codex-mcp-bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}}

    def __init__(self, client: McpClient) -> None:
        self.client = client
        self.polls = 0

    def request(self, method: str, params: dict) -> dict:
        return self.client.request(method, {**params, "_meta": self.META})

    def call(self, tool: str, arguments: dict) -> dict:
        return self.request("tools/call", {"name": tool, "arguments": arguments})

    def until_done(self, handle: dict, first: float = 0.09) -> tuple:
        """(the moment the answer carrying the result arrived, the result): the first poll soon
        after the handle, then one every pollIntervalMs, as Claude Code does."""
        time.sleep(first)
        while True:
            self.polls += 1
            task = self.request("tasks/get", {"taskId": handle["taskId"]})
            if task["status"] != "working":
                return now(), task
            time.sleep(task["pollIntervalMs"] / 1000)
