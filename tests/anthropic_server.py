"""A scripted stand-in for the Anthropic Messages API, for driving the real Claude Code CLI in tests.

Claude Code sends `POST /v1/messages` (JSON body with `model`, `system`, `messages`, `tools`,
`stream: true`) and reads a Server-Sent Events stream back: `message_start`, content blocks
(`text` or `tool_use`, streamed as deltas), `message_delta` with the stop reason, `message_stop`.

Requests that carry tools are the conversation; each one takes the next step of the script. Requests
without tools are Claude Code's side calls (titles, summaries): they get a short text and take no
step. A step is either a dict or a function of the request body that returns one:

    {"say": "text"}                              a final answer (stop_reason end_turn)
    {"tool": "Bash", "input": {...}}             one tool call (stop_reason tool_use)
    "delay": seconds                             may be added to either: think that long first

When the script runs out, `default` answers. A step that calls a tool the request does not offer, while
Claude Code offers WaitForMcpServers (in `claude -p` the first request can go out before an MCP server has
connected), is answered with a call of WaitForMcpServers first and taken on the next request. Every request is recorded, so tests can read what
Claude Code sent: the tools it offered, the skills and agents it listed, the tool results.

A step may call only a tool the model could call: one offered in full, or a deferred one (`defer_loading`,
Claude Code's ToolSearch) that a search has loaded (a `tool_reference` in an earlier tool result). Claude Code
runs a call of a tool it only named, but a model cannot make one (it has no schema): such a step is
recorded in `errors`, which the tests' `model` fixture fails on.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union

Step = Union[dict, Callable[[dict], dict]]
WAIT_FOR_MCP = "WaitForMcpServers"


def since_last_answer(body: dict) -> list[dict]:
    """The messages after the model's last answer. Not always one: Claude Code may add a user message
    after the tool results (an MCP server that has just connected, with its instructions)."""
    messages = body.get("messages", [])
    since = next((i + 1 for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "assistant"), 0)
    return messages[since:]


def tool_results(body: dict) -> list[dict]:
    """The tool_result blocks sent since the model's last answer, text joined."""
    results = []
    for message in since_last_answer(body):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if block.get("type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, list):
                    inner = "".join(part.get("text", "") for part in inner if isinstance(part, dict))
                results.append({"id": block.get("tool_use_id"), "text": inner or "",
                                "is_error": bool(block.get("is_error"))})
    return results


def tool_references(body: dict) -> list[str]:
    """The tools a ToolSearch call loaded, from the tool results since the model's last answer, in order."""
    return [part["tool_name"] for message in since_last_answer(body) if isinstance(message.get("content"), list)
            for block in message["content"] if block.get("type") == "tool_result"
            and isinstance(block.get("content"), list)
            for part in block["content"] if part.get("type") == "tool_reference"]


def callable_tools(body: dict) -> set[str]:
    """The tools a model can call in this request: those offered in full, and deferred ones (defer_loading)
    that a ToolSearch result earlier in the conversation loaded."""
    loaded = {part.get("tool_name") for message in body.get("messages", []) if isinstance(message.get("content"), list)
              for block in message["content"] if block.get("type") == "tool_result"
              and isinstance(block.get("content"), list)
              for part in block["content"] if part.get("type") == "tool_reference"}
    return {tool.get("name") for tool in body.get("tools", [])
            if not tool.get("defer_loading") or tool.get("name") in loaded}


TASK_NOTIFICATION = re.compile(r"<task-notification>(.*?)</task-notification>", re.S)


def notifications(body: dict) -> list[dict]:
    """The `<task-notification>` blocks Claude Code sent since the model's last answer (a background task
    that ended: an MCP task, a background Bash command), each as {"task-id", "status", "summary",
    "result", ...: the text of each tag}, in order. Its text may stand in a user message of its own or in
    a system reminder added to the tool results."""
    found = []
    for match in TASK_NOTIFICATION.finditer("\n".join(texts(since_last_answer(body)))):
        found.append({tag: value.strip() for tag, value in re.findall(r"<([\w-]+)>(.*?)</\1>", match.group(1), re.S)})
    return found


def texts(messages: list[dict]) -> list[str]:
    """Every text in these messages: plain contents, text blocks, tool results' text."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
            continue
        for block in content or []:
            inner = block.get("content") if block.get("type") == "tool_result" else [block]
            if isinstance(inner, str):
                out.append(inner)
                continue
            out += [part.get("text", "") for part in inner or [] if isinstance(part, dict)]
    return out


def all_text(body: dict) -> str:
    """Every piece of text in a request (system, messages, tool descriptions), for searching."""
    return json.dumps(body, ensure_ascii=False)


class AnthropicServer:
    def __init__(self, steps: list[Step] | None = None, default: dict | None = None) -> None:
        self.steps: list[Step] = list(steps or [])
        self.default = default or {"say": "Done."}
        self.requests: list[dict] = []      # every request body, side calls included
        self.turns: list[dict] = []         # the conversation requests, in order
        self.errors: list[str] = []         # exceptions raised by step functions
        self.waited = 0                     # calls of WaitForMcpServers made for a step
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._counter = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "AnthropicServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def env(self) -> dict:
        """The environment that points Claude Code here and keeps it off the network."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }

    def wait_for(self, check: Callable[[dict], object], timeout: float, what: str = "") -> dict:
        """Wait for a conversation request for which `check(body)` is true (one already received
        counts): a test waits for what Claude Code sends, not for a time. Returns its body."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for body in self.turns:
                    if check(body):
                        return body
                left = deadline - time.monotonic()
                assert left > 0, f"no request {what or check} in {timeout} s ({len(self.turns)} turns)"
                self._arrived.wait(min(left, 1.0))

    # -- answering ---------------------------------------------------------------------------

    def _answer(self, body: dict) -> dict:
        with self._lock:
            self.requests.append(body)
            if not body.get("tools"):
                return {"say": "ok"}
            self.turns.append(body)
            self._arrived.notify_all()
            step = self.steps.pop(0) if self.steps else self.default
        if callable(step):
            try:
                step = step(body)
            except Exception as error:          # a broken script must show in the test, not hang it
                self.errors.append(f"{error!r} on a request ending {json.dumps(body['messages'][-1])[-600:]}")
                step = {"say": f"script error: {error!r}"}
        offered = callable_tools(body)
        if "tool" in step and step["tool"] not in offered and WAIT_FOR_MCP in offered:
            # An MCP server still (re)connecting: its tools are missing and Claude Code offers a tool that
            # waits for it. Call that first, as a model does, and take the step on the next request.
            with self._lock:
                self.steps.insert(0, step)
                self.waited += 1
            return {"tool": WAIT_FOR_MCP, "input": {}}
        if "tool" in step and step["tool"] not in offered:
            named = step["tool"] in all_text(body)
            self.errors.append(f"the script calls {step['tool']}, which this request does not offer"
                               + (" (only named: deferred behind ToolSearch, not loaded)" if named else ""))
        return step

    def _events(self, step: dict) -> list[dict]:
        with self._lock:
            self._counter += 1
            n = self._counter
        usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        events = [{"type": "message_start", "message": {
            "id": f"msg_{n}", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}]
        if "tool" in step:
            block = {"type": "tool_use", "id": f"toolu_{n:04d}", "name": step["tool"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(step.get("input", {}))}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": step["say"]}
            stop = "end_turn"
        events += [{"type": "content_block_start", "index": 0, "content_block": block},
                   {"type": "content_block_delta", "index": 0, "delta": delta},
                   {"type": "content_block_stop", "index": 0},
                   {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": 5}},
                   {"type": "message_stop"}]
        return events

    def _handler(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.end_headers()

            def do_GET(self) -> None:
                self._json({})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                if not self.path.split("?")[0].endswith("/v1/messages"):
                    # count_tokens and other helpers: a plausible answer, no step taken
                    self._json({"input_tokens": 10})
                    return
                step = server._answer(body)
                if step.get("delay"):
                    time.sleep(step["delay"])
                events = server._events(step)
                if not body.get("stream"):
                    self._json(self._collapse(events))
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.end_headers()
                for event in events:
                    self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()

            def _collapse(self, events: list[dict]) -> dict:
                message = dict(events[0]["message"])
                block = dict(events[1]["content_block"])
                delta = events[2]["delta"]
                if block["type"] == "text":
                    block["text"] = delta["text"]
                else:
                    block["input"] = json.loads(delta["partial_json"])
                message["content"] = [block]
                message["stop_reason"] = events[4]["delta"]["stop_reason"]
                return message

            def _json(self, value: dict) -> None:
                data = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
