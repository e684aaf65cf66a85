"""A scripted stand-in for the OpenAI Responses API, for driving the real Codex CLI in tests.

Codex sends `POST /v1/responses` and reads a Server-Sent Events stream back: `response.created`, an
`output_item.done` per item (a message, or an `exec_command` function call it then runs and answers
with the command's output in its next request), `response.completed` (as observed with Codex CLI
0.169.0 and 0.171.0, configured with a model provider at this server's URL and retries off). Each
request takes the next step of the server's script; when the script runs out, `default` answers. A
step is a dict:

    {"say": "text"}            a final assistant message
    {"run": "shell command"}   an `exec_command` function call (Codex runs it, then asks again);
                               "yield_ms": N hands the turn back after N ms while it still runs
    {"status": 500}            an HTTP error, which ends the turn (retries are off in the config)
    {"hang": True}             never answer (until the server stops)
    {"drop": True}             start the stream, then close the connection before it completes
                               (a network blip: Codex reconnects if the config allows stream retries)
    "delay": seconds           may be added to any step: wait that long before answering
    "wait": threading.Event    may be added to any step: answer once the test sets it (or the server
                               stops; `release()` sets them all), so a test waits for its own events

Tasks that run at once share one server: `route(marker, *steps)` gives the requests whose body
holds `marker` (a word of the task's goal) a script of their own.

Every request is recorded with its arrival and end times and its JSON body, so tests can prove
ordering (two tasks in one repo never overlap) and read what Codex sent (prompt, instructions).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPORT = (
    "## Summary\nDid the work.\n\n## Tests\nRan the tests: 3 passed.\n\n"
    "## Files Changed\n- src/app.py\n"
)


def report(summary: str = "Did the work.", tests: str = "Ran the tests: 3 passed.",
           files: list[str] | None = None) -> str:
    """A complete final message with the three sections the review asks for."""
    listed = "\n".join(f"- {f}" for f in (files if files is not None else ["src/app.py"]))
    return f"## Summary\n{summary}\n\n## Tests\n{tests}\n\n## Files Changed\n{listed}\n"


class ModelServer:
    def __init__(self, steps: list[dict] | None = None, default: dict | None = None):
        self.steps = list(steps or [])
        self.routes: dict[str, list] = {}
        self.waiting: list[threading.Event] = []
        self.default = default or {"say": REPORT}
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ModelServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def push(self, *steps: dict) -> None:
        with self._lock:
            self.steps.extend(steps)

    def release(self) -> None:
        """Answer every step that waits for an event of the test."""
        for event in list(self.waiting):
            event.set()

    def route(self, marker: str, *steps: dict) -> None:
        """The requests whose body holds `marker` take these steps (then `default`)."""
        with self._lock:
            self.routes.setdefault(marker, []).extend(steps)

    def write_config(self, codex_home: Path, retries: int = 0, url: str | None = None) -> None:
        """Point a private CODEX_HOME at this server (or at `url`), with `retries` stream retries."""
        codex_home.mkdir(parents=True, exist_ok=True)
        (codex_home / "config.toml").write_text(
            'model = "gpt-5"\nmodel_provider = "fake"\n'
            "[model_providers.fake]\n"
            f'name = "fake"\nbase_url = "{url or self.url}"\nwire_api = "responses"\n'
            f"request_max_retries = {retries}\nstream_max_retries = {retries}\n"
        )

    # -- request handling ------------------------------------------------------------------

    def _next_step(self, raw: bytes) -> tuple[int, dict]:
        with self._lock:
            self._counter += 1
            for marker, steps in self.routes.items():
                if marker.encode() in raw:
                    return self._counter, steps.pop(0) if steps else self.default
            step = self.steps.pop(0) if self.steps else self.default
            return self._counter, step

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                record = {"start": time.monotonic(), "path": self.path}
                try:
                    record["body"] = json.loads(raw or b"{}")
                except ValueError:
                    record["body"] = {}
                with server._lock:
                    server.requests.append(record)
                n, step = server._next_step(raw)
                record["step"] = step
                if step.get("delay"):
                    server._stop.wait(step["delay"])
                if step.get("wait") is not None:
                    server.waiting.append(step["wait"])
                    while not step["wait"].wait(0.2) and not server._stop.is_set():
                        pass
                if step.get("hang"):
                    server._stop.wait(3600)
                    return
                if step.get("status"):
                    self.send_response(step["status"])
                    self.send_header("content-type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error":{"message":"scripted failure"}}')
                    record["end"] = time.monotonic()
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                rid = f"resp_{n}"
                if step.get("drop"):
                    created = {"type": "response.created", "response": {"id": rid}}
                    self.wfile.write(f"event: response.created\ndata: {json.dumps(created)}\n\n".encode())
                    self.wfile.flush()
                    self.close_connection = True
                    record["end"] = time.monotonic()
                    return
                events = [{"type": "response.created", "response": {"id": rid}}]
                if "run" in step:
                    events.append({"type": "response.output_item.done", "item": {
                        "type": "function_call", "call_id": f"call_{n}", "name": "exec_command",
                        "arguments": json.dumps({"cmd": step["run"], **({"yield_time_ms": step["yield_ms"]}
                                                                          if "yield_ms" in step else {})})}})
                else:
                    events.append({"type": "response.output_item.done", "item": {
                        "type": "message", "role": "assistant", "id": f"msg_{n}",
                        "content": [{"type": "output_text", "text": step["say"]}]}})
                events.append({"type": "response.completed", "response": {"id": rid, "usage": {
                    "input_tokens": 10, "input_tokens_details": None, "output_tokens": 5,
                    "output_tokens_details": None, "total_tokens": 15}}})
                for event in events:
                    self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                record["end"] = time.monotonic()

        return Handler

    # -- what tests read ---------------------------------------------------------------------

    def texts(self, index: int) -> str:
        """All the text Codex sent in request `index` (instructions, prompt, tool output)."""
        return json.dumps(self.requests[index]["body"].get("input", ""))
