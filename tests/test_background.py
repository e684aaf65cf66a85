"""Waiting calls as MCP background tasks (revision 2026-07-28, extension io.modelcontextprotocol/tasks),
spoken on the wire to `codex-mcp serve` as a subprocess, with the real Codex CLI and the scripted
model: a call that declares the extension gets a task at once and its result is the synchronous
call's answer; the edge cases of tasks/get and tasks/cancel; a server killed and restarted while a
task runs; and every client that does not declare the extension (the old handshake, a modern
request without it, the SDK's own client) gets today's synchronous answers.

(The same flows driven by the real Claude Code, interactive under a pseudo-terminal, are in
tests/test_claude_tasks.py.)"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

import codex_mcp as cm
from conftest import ROOT
from model_server import report

pytestmark = pytest.mark.codex

EXT = "io.modelcontextprotocol/tasks"


class Wire:
    """One `codex-mcp serve` process, spoken to line by line: requests may overlap (a reader thread
    files the answers by id)."""

    def __init__(self, h, tasks: bool = True) -> None:
        self.h, self.tasks = h, tasks
        self.process = subprocess.Popen(
            [sys.executable, "-m", "codex_mcp", "--codex-cmd", h.codex, "serve"], cwd=h.repo,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**h.env, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        self.answers: dict = {}
        self.arrived = threading.Condition()
        self.next_id = 0
        threading.Thread(target=self.read, daemon=True).start()

    def read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            with self.arrived:
                if "id" in message:
                    self.answers[message["id"]] = message
                    self.arrived.notify_all()

    def meta(self, tasks: bool | None = None) -> dict:
        declared = self.tasks if tasks is None else tasks
        return {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "claude-code", "version": "2.1.332"},
                "io.modelcontextprotocol/clientCapabilities": {"extensions": {EXT: {}}} if declared else {}}

    def send(self, method: str, params: dict, tasks: bool | None = None) -> int:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method,
                   "params": {**params, "_meta": self.meta(tasks)}}
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return self.next_id

    def answer(self, number: int, timeout: float = 120) -> dict:
        with self.arrived:
            assert self.arrived.wait_for(lambda: number in self.answers, timeout), f"no answer to request {number}"
            return self.answers.pop(number)

    def rpc(self, method: str, params: dict, tasks: bool | None = None, timeout: float = 120) -> dict:
        return self.answer(self.send(method, params, tasks), timeout)

    def call(self, tool: str, arguments: dict, tasks: bool | None = None, timeout: float = 120) -> dict:
        reply = self.rpc("tools/call", {"name": tool, "arguments": arguments}, tasks, timeout)
        assert "result" in reply, reply
        return reply["result"]

    def poll(self, handle: str, until=("completed", "failed", "cancelled"), timeout: float = 120) -> dict:
        """tasks/get at the interval the server asks for, until the task is in one of `until`."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.rpc("tasks/get", {"taskId": handle})
            assert "result" in reply, reply
            if reply["result"]["status"] in until:
                return reply["result"]
            assert time.monotonic() < deadline, f"{handle} still {reply['result']}"
            time.sleep(reply["result"]["pollIntervalMs"] / 1000)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture
def wire(harness):
    opened = []

    def open_wire(tasks: bool = True) -> Wire:
        opened.append(Wire(harness, tasks))
        return opened[-1]
    yield open_wire
    for each in opened:
        if each.process.poll() is None:
            each.close()


def structured(result: dict) -> dict:
    assert result.get("isError") is False, result
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    return result["structuredContent"]


# Two seconds of work: more than the moment in which a waiting call is still answered directly.
CHANGE = ({"run": "sleep 2; printf 'x = 2\\n' > src/app.py"}, {"say": report(files=["src/app.py"])})


def test_a_waiting_call_becomes_a_task_and_its_result_is_the_synchronous_answer(harness, wire):
    h = harness
    h.server.route("Make-x-two", *CHANGE)
    server = wire()
    discover = server.rpc("server/discover", {})["result"]
    assert EXT in discover["capabilities"]["extensions"]
    began = time.monotonic()
    handle = server.call("delegate-task", {"goal": "Make-x-two", "allowedPaths": ["src/"], "until": "verdict",
                                           "verify": "grep -q 'x = 2' src/app.py"})
    assert handle["resultType"] == "task" and handle["status"] == "working", handle
    assert handle["taskId"].startswith("T-001.verdict.") and f"@{h.repo}" in handle["taskId"]
    assert 1000 <= handle["pollIntervalMs"] <= 2000 and handle["ttlMs"] > 2 * 3600 * 1000
    assert all(0x21 <= ord(c) <= 0x7E for c in handle["taskId"]) and len(handle["statusMessage"]) <= 70
    assert time.monotonic() - began < 15        # at once: Codex started, nothing waited for its end
    # While it runs, other calls are answered.
    assert structured(server.call("list-tasks", {}))["tasks"][0]["taskId"] == "T-001"
    done = server.poll(handle["taskId"])
    assert done["status"] == "completed", done
    verdict = structured(done["result"])
    assert verdict["action"] == "done" and verdict["status"] == "done" and verdict["taskId"] == "T-001"
    assert verdict["filePath"] == "agents/tasks/T-001.md" and "accept" not in verdict["next"]
    assert len(done["result"]["content"][0]["text"].encode()) < 1500
    assert h.task("T-001").status == "done" and (h.repo / "src/app.py").read_text() == "x = 2\n"
    # The same call without the extension: the same answer, synchronously (a modern request as
    # claude -p sends it).
    h.server.route("Add-y-one", {"run": "printf 'x = 2\\ny = 1\\n' > src/app.py"},
                   {"say": report(files=["src/app.py"])})
    plain = server.call("delegate-task", {"goal": "Add-y-one", "allowedPaths": ["src/"], "until": "verdict",
                                          "verify": "grep -q 'y = 1' src/app.py"}, tasks=False)
    again = structured(plain)
    assert again["action"] == "done" and again["taskId"] == "T-002"
    assert set(again) == set(verdict), (set(again) ^ set(verdict))
    assert server.rpc("tasks/get", {"taskId": handle["taskId"]})["result"]["result"] == done["result"]  # kept


def test_the_edge_cases_of_tasks_get_and_cancel(harness, wire):
    h = harness
    h.server.route("First-job", {"run": "sleep 2; printf 'x = 2\\n' > src/app.py"}, {"say": report()})
    h.server.route("Second-job", {"run": "sleep 1; printf 'y = 1\\n' > src/other.py"},
                   {"say": report(files=["src/other.py"])})
    server = wire()
    first = server.call("delegate-task", {"goal": "First-job", "allowedPaths": ["src/app.py"], "until": "review",
                                          "isolation": "worktree"})
    second = server.call("delegate-task", {"goal": "Second-job", "allowedPaths": ["src/other.py"],
                                           "until": "review", "isolation": "worktree"})
    assert first["resultType"] == second["resultType"] == "task" and first["taskId"] != second["taskId"]
    # Two tasks polled in turn, each to its own answer.
    ended = {}
    while len(ended) < 2:
        for handle in (first["taskId"], second["taskId"]):
            reply = server.rpc("tasks/get", {"taskId": handle})["result"]
            assert reply["taskId"] == handle
            if reply["status"] != "working":
                ended[handle] = reply
        time.sleep(0.5)
    assert structured(ended[first["taskId"]]["result"])["taskId"] == "T-001"
    assert structured(ended[second["taskId"]]["result"])["status"] == "review"
    # Cancel after the end: acknowledged, and nothing changes.
    assert server.rpc("tasks/cancel", {"taskId": first["taskId"]})["result"]["resultType"] == "complete"
    after = server.rpc("tasks/get", {"taskId": first["taskId"]})["result"]
    assert after["status"] == "completed" and after["result"] == ended[first["taskId"]]["result"]
    assert h.task("T-001").status == "review"
    # Not one of ours (asked again by Claude Code for a while): -32602. Ours but gone: failed, at once.
    for garbage in ("nonsense", "T-001.verdict.1@relative/path", "T-1x.review.1@/tmp", "x" * 2000):
        assert server.rpc("tasks/get", {"taskId": garbage})["error"]["code"] == -32602
    gone = f"T-001.review.99@{h.repo}"
    reply = server.rpc("tasks/get", {"taskId": gone})["result"]
    assert reply["status"] == "failed" and "check-task" in reply["error"]["message"]
    assert server.rpc("tasks/get", {})["error"]["code"] == -32602
    assert server.rpc("tasks/update", {"taskId": first["taskId"], "inputResponses": {}})["result"]["resultType"] \
        == "complete"


def test_stopping_a_background_task_cancels_its_run_and_says_who(harness, wire):
    h = harness
    h.server.route("Long-job", {"hang": True})
    server = wire()
    handle = server.call("delegate-task", {"goal": "Long-job", "allowedPaths": ["src/"], "until": "verdict"})
    deadline = time.monotonic() + 60
    while h.task("T-001").status != "doing" or not h.task("T-001").thread_id:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Claude Code sends it twice, in the same millisecond.
    one, two = server.send("tasks/cancel", {"taskId": handle["taskId"]}), \
        server.send("tasks/cancel", {"taskId": handle["taskId"]})
    assert "result" in server.answer(one) and "result" in server.answer(two)
    task = h.task("T-001")
    assert task.status == "blocked", task.status
    assert task.reason == "cancelled: the run was stopped from Claude Code (its background task was stopped)"
    assert server.rpc("tasks/get", {"taskId": handle["taskId"]})["result"]["status"] == "cancelled"
    assert "the run was stopped from Claude Code" in h.record("T-001")


def test_a_restarted_server_still_delivers_the_verdict(harness, wire):
    h = harness
    h.server.route("Survive-restart", {"run": "sleep 3; printf 'x = 2\\n' > src/app.py"},
                   {"say": report(files=["src/app.py"])})
    server = wire()
    handle = server.call("delegate-task", {"goal": "Survive-restart", "allowedPaths": ["src/"],
                                           "until": "verdict", "verify": "grep -q 'x = 2' src/app.py"})["taskId"]
    server.kill()                 # as when the person updates the plugin, or the process dies
    assert h.task("T-001").status in ("todo", "doing")      # the run goes on: its worker is detached
    again = wire()                # Claude Code's reconnect: a new process, the same handle polled
    done = again.poll(handle)
    verdict = structured(done["result"])
    assert verdict["action"] == "done" and h.task("T-001").status == "done"


def test_waits_and_accept_are_tasks_too_and_a_quick_one_answers_at_once(harness, wire):
    h = harness
    h.server.route("Wait-for-me", {"run": "sleep 2; printf 'x = 2\\n' > src/app.py"},
                   {"say": report(files=["src/app.py"])})
    server = wire()
    started = structured(server.call("delegate-task", {"goal": "Wait-for-me", "allowedPaths": ["src/"],
                                                       "verify": "grep -q 'x = 2' src/app.py"}))
    assert started["status"] in ("todo", "doing")           # until "started": an answer, not a task
    waiting = server.call("check-task", {"taskId": "T-001", "waitSeconds": 120})
    assert waiting["resultType"] == "task" and waiting["taskId"].startswith("T-001.wait.")
    checked = structured(server.poll(waiting["taskId"])["result"])
    assert checked["status"] == "review"
    quick = server.call("check-task", {"taskId": "T-001", "waitSeconds": 30})    # nothing to wait for
    assert quick["resultType"] == "complete" and structured(quick)["status"] == "review"
    accepted = server.call("accept-task", {"taskId": "T-001"})
    verdict = structured(server.poll(accepted["taskId"])["result"]) if accepted.get("resultType") == "task" \
        else structured(accepted)
    assert verdict["action"] == "done"
    refused = server.call("accept-task", {"taskId": "T-001"})         # not in review: refused, as ever
    assert refused["isError"] is True and "done" in json.loads(refused["content"][0]["text"])["error"]["message"]
    unknown = server.call("check-task", {"taskId": "T-404", "waitSeconds": 5})
    assert unknown["isError"] is True and "T-404" in unknown["content"][0]["text"]


def test_clients_that_do_not_run_tasks_get_todays_answers(harness):
    """The SDK's own client on the old handshake (2025-11-25, as Claude Code 2.1.197 speaks it) and
    on the new revision without the extension: synchronous answers, until "verdict" included."""
    h = harness
    h.server.route("Old-client", *CHANGE)
    h.server.route("New-client", {"run": "printf 'x = 3\\n' > src/app.py"}, {"say": report(files=["src/app.py"])})
    params = StdioServerParameters(command=sys.executable, args=["-m", "codex_mcp", "--codex-cmd", h.codex, "serve"],
                                   cwd=str(h.repo), env={**h.env, "PYTHONPATH": str(ROOT)})

    async def go(mode: str, goal: str) -> dict:
        async with Client(params, read_timeout_seconds=120, mode=mode) as client:
            result = await client.call_tool("delegate-task", {"goal": goal, "allowedPaths": ["src/"],
                                                              "until": "verdict"})
            assert not result.is_error, result.content[0].text
            return client.protocol_version, result.structured_content
    version, verdict = anyio.run(go, "legacy", "Old-client")
    assert version == "2025-11-25" and verdict["action"] == "done" and verdict["taskId"] == "T-001"
    version, verdict = anyio.run(go, "auto", "New-client")
    assert version == "2026-07-28" and verdict["action"] == "done" and verdict["taskId"] == "T-002"


def test_handles_name_the_task_and_survive_odd_paths():
    for repo in ("/home/me/proj", "/tmp/a b/c%d:e@f", "/srv/ünï"):
        handle = cm.task_handle(cm.Path(repo), "T-012", "verdict", 3)
        assert all(0x21 <= ord(c) <= 0x7E for c in handle), handle
        assert cm.parse_handle(handle) == (cm.Path(repo), "T-012", "verdict", 3)
    assert cm.task_handle(cm.Path("/p"), "T-012", "wait", 1) == "T-012.wait.1@/p"
    for bad in ("T-012.verdict.3", "T-012.later.3@/p", "T-012.verdict.x@/p", "T-12a.verdict.3@/p", 42, None):
        assert cm.parse_handle(bad) is None


def test_the_status_line_is_short_and_says_where_the_task_stands():
    task = cm.new_task("T-007", "goal", ["src/"])
    task.status, task.progress = "doing", "Codex running 3 min, 14 commands, now `pytest -q tests/test_a_long_name.py`"
    task.rework_count = 1
    line = cm.task_line(task)
    assert line.startswith("rework 1 of 3: Codex running 3 min, 14 commands") and len(line) <= 70
    task.verify = "pytest -q"
    assert cm.task_line(task, "accept") == "accept: verify running"
    assert cm.duration(40) == "40 s" and cm.duration(185) == "3 min" and cm.duration(7500) == "2 h 5 min"


def test_the_cli_follows_a_task_to_its_verdict_through_a_rework(harness):
    """`delegate --until verdict`: Codex's run, accept, the rework accept sends back by itself (the
    verify fails), the second run, accept again: one command, one answer, progress on stderr."""
    h = harness
    h.server.route("Make-x-three", {"run": "printf 'x = 2\\n' > src/app.py"}, {"say": report(files=["src/app.py"])},
                   {"run": "printf 'x = 3\\n' > src/app.py"}, {"say": report(summary="Fixed.", files=["src/app.py"])})
    done = subprocess.run([sys.executable, str(ROOT / "codex_mcp.py"), "--codex-cmd", h.codex, "delegate",
                           "--goal", "Make-x-three", "--paths", "src/", "--verify",
                           "grep -qx 'x = 3' src/app.py || { echo 'x is not 3'; exit 1; }", "--until", "verdict"],
                          cwd=h.repo, env=h.env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["action"] == "done" and verdict["filePath"] == "agents/tasks/T-001.md", verdict
    assert "T-001 review: accept: verify running" in done.stderr and "rework 1 of 3" in done.stderr
    task = h.task("T-001")
    assert task.status == "done" and task.rework_count == 1 and (h.repo / "src/app.py").read_text() == "x = 3\n"
    refused = subprocess.run([sys.executable, str(ROOT / "codex_mcp.py"), "check", "T-001", "--until", "verdict"],
                             cwd=h.repo, env=h.env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--until" in json.loads(refused.stdout)["error"]["message"]
