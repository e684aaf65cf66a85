"""Background tasks as a person gets them: the real Claude Code (2.1.332), interactive under a
pseudo-terminal (tests/pty_driver.py), with codex-mcp registered as a user MCP server, the scripted
Messages API (tests/anthropic_server.py) as its model, and the real Codex CLI behind the scripted
Responses API (tests/model_server.py).

Interactive Claude Code declares the tasks extension on its calls: a waiting call (delegate-task with
until "verdict") comes back at once as "moved to the background", Claude Code polls tasks/get, and the
verdict reaches the model as a `<task-notification>` in a turn Claude Code starts by itself. A person
stops such a task from /tasks; a server that died is reconnected from /mcp and follows on from the
files in the repository's state folder. `claude -p` never declares the extension: its calls stay
synchronous. Each test checks what the model received and the task records on disk.

The server runs behind a logging stdio proxy (pty_driver.py's `proxy`), so the tests also see the
wire: the polls, the two tasks/cancel of one stop, the process a poll went to. Codex's scripted
turns can wait for an event of the test (a step's "wait"), so nothing here waits for a fixed time.

(The same flows spoken on the wire by a test client are in tests/test_background.py.)"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import codex_mcp as cm
from anthropic_server import notifications, since_last_answer, tool_results
from conftest import MODULE
from model_server import report
from pty_driver import Terminal, Wire
import test_plugin
from test_plugin import CLAUDE_VERSION, base_env

pytestmark = pytest.mark.codex

claude_bin = test_plugin.claude_bin     # fixture: the pinned Claude Code (a skip when missing, a failure in CI)
model = test_plugin.model               # fixture: the scripted Messages API (a broken script fails the test)

DRIVER = Path(__file__).resolve().parent / "pty_driver.py"
SERVER = "codex-mcp"
TOOL = f"mcp__{SERVER}__"
EXT = "io.modelcontextprotocol/tasks"
MOVED = "was moved to the background"


class Session:
    """Claude Code in a throwaway HOME, in the harness's repository, with codex-mcp registered for
    the user (behind the logging proxy) and its tools allowed; interactive on a terminal, or -p."""

    def __init__(self, h, binary: str, model, folder: Path) -> None:
        self.h, self.binary, self.model, self.folder = h, binary, model, folder
        config = folder / "claude-home" / ".claude"
        config.mkdir(parents=True)
        self.wire = Wire(folder / "wire.jsonl")
        key = model.env()["ANTHROPIC_API_KEY"]
        (config / ".claude.json").write_text(json.dumps({
            "hasCompletedOnboarding": True, "theme": "dark", "lastOnboardingVersion": CLAUDE_VERSION,
            "customApiKeyResponses": {"approved": [key[-20:]], "rejected": []},
            "projects": {str(h.repo): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}},
            "mcpServers": {SERVER: {"type": "stdio", "command": sys.executable, "env": {}, "args": [
                str(DRIVER), "proxy", str(self.wire.path), "--",
                sys.executable, MODULE, "--codex-cmd", h.codex, "serve"]}}}))
        (config / "settings.json").write_text(json.dumps({"permissions": {"allow": [f"mcp__{SERVER}"]}}))
        # The scripted model calls the tools by name: offered in full, not behind ToolSearch.
        self.env = base_env(HOME=str(config.parent), CLAUDE_CONFIG_DIR=str(config), **model.env(),
                            ENABLE_TOOL_SEARCH="false", CODEX_HOME=h.env["CODEX_HOME"])
        self.terminal: Terminal | None = None

    # -- interactive ---------------------------------------------------------------------------

    def start(self) -> Terminal:
        """Claude Code on a terminal, ready: codex-mcp connected (its tools listed) and the prompt drawn."""
        self.terminal = Terminal([self.binary], self.env, self.h.repo, log=self.folder / "screen.log")
        self.wire.wait_for(lambda: self.wire.requests("tools/list"), 90, "tools/list")
        self.terminal.wait_for("❯", 60)
        return self.terminal

    def say(self, text: str) -> None:
        """Type a prompt (or a slash command) and press Enter."""
        self.terminal.type(text)
        self.terminal.send("\r")

    def screen_shows(self, pattern: str, timeout: float = 60, gone: bool = False) -> None:
        self.terminal.wait_for(pattern, timeout, gone)

    # -- print mode ----------------------------------------------------------------------------

    def print_mode(self, prompt: str) -> str:
        done = subprocess.run([self.binary, "-p", prompt], cwd=self.h.repo, env=self.env, capture_output=True,
                              text=True, timeout=240, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"claude -p: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    # -- the records ---------------------------------------------------------------------------

    def task(self, task_id: str) -> cm.Task:
        return cm.Store(self.h.repo).load(task_id)

    def until_task(self, task_id: str, check, timeout: float, what: str) -> cm.Task:
        deadline = time.monotonic() + timeout
        while True:
            try:
                task = self.task(task_id)
                if check(task):
                    return task
            except cm.CodexMcpError:
                task = None                 # not written yet
            assert time.monotonic() < deadline, f"{task_id} never {what}: " + \
                (f"{task.status} ({task.reason})" if task else "no record")
            time.sleep(0.1)

    def close(self) -> None:
        self.h.server.release()
        if self.terminal is not None:
            self.terminal.close()


@pytest.fixture
def session(harness, claude_bin, model, tmp_path):
    opened = Session(harness, claude_bin, model, tmp_path)
    yield opened
    opened.close()


def delegate(word: str, path: str, line: str, **more) -> dict:
    """A delegate-task call whose goal starts with `word` (the Codex script's route), with a verify
    that says why it fails."""
    return {"tool": f"{TOOL}delegate-task", "input": {
        "goal": f"{word}: write `{line}` to {path}", "allowedPaths": [path], "until": "verdict",
        "verify": f"grep -qx '{line}' {path} || {{ echo '{path} does not say {line}'; exit 1; }}", **more}}


def the_result(body: dict) -> str:
    """The text of the one tool result the request carries."""
    [result] = tool_results(body)
    assert not result["is_error"], result
    return result["text"]


def turn_started_by_claude_code(body: dict) -> bool:
    """The request follows an answer that ended the model's turn (text, no tool call): Claude Code
    started this turn by itself."""
    last = next(m for m in reversed(body["messages"]) if m["role"] == "assistant")
    content = last["content"] if isinstance(last["content"], list) else [{"type": "text"}]
    return not any(block.get("type") == "tool_use" for block in content)


def declares_tasks(request: dict) -> bool:
    """Did this request declare the tasks extension (in its `_meta`, as revision 2026-07-28 has it)?"""
    declared = request["params"].get("_meta", {}).get("io.modelcontextprotocol/clientCapabilities", {})
    return EXT in (declared.get("extensions") or {})


def notified(task_id: str, status: str = "completed"):
    def check(body: dict) -> bool:
        return any(n.get("status") == status and f"MCP task {task_id}." in n.get("summary", "")
                   for n in notifications(body))
    return check


# -- 1. two worktree tasks, their verdicts as notifications ------------------------------------------

def test_two_worktree_verdicts_arrive_as_notifications_each_in_a_turn_of_its_own(session, model):
    """The model delegates two worktree tasks until "verdict", lists the tasks while they run and ends
    its turn. Each verdict then starts a turn of its own: Alpha done at once, Beta done after accept
    sent it back once (its first run wrote the wrong value, its verify failed)."""
    h, go = session.h, threading.Event()
    h.server.route("Alpha-job", {"run": "printf 'x = 2\\n' > src/app.py", "wait": go},
                   {"say": report(files=["src/app.py"])})
    h.server.route("Beta-job", {"run": "printf 'y = 1\\n' > src/other.py", "wait": go},
                   {"say": report(files=["src/other.py"])},
                   {"run": "printf 'y = 2\\n' > src/other.py"}, {"say": report(files=["src/other.py"])})
    seen: dict = {}

    def then(key: str, step: dict):
        def record(body: dict) -> dict:
            seen[key] = the_result(body)
            return step
        return record

    model.steps = [delegate("Alpha-job", "src/app.py", "x = 2", isolation="worktree"),
                   then("alpha", delegate("Beta-job", "src/other.py", "y = 2", isolation="worktree")),
                   then("beta", {"tool": f"{TOOL}list-tasks", "input": {}}),
                   then("listed", {"say": "Alpha and Beta run in the background."})]
    model.default = {"say": "Noted."}
    session.start()
    session.say("Hand Alpha and Beta to Codex")
    session.screen_shows(r"Alpha and Beta run in the background\.")
    listed = json.loads(seen["listed"])
    assert sorted((t["taskId"], t["status"]) for t in listed["tasks"]) == [("T-001", "doing"), ("T-002", "doing")], \
        listed                                      # both running (Codex waits for the test)
    go.set()                                        # the turn has ended: Codex may run now
    alpha = model.wait_for(notified("T-001"), 150, "notifying T-001's verdict")
    beta = model.wait_for(notified("T-002"), 150, "notifying T-002's verdict")

    # The calls went to the background at once, each with its handle.
    for key, task_id in (("alpha", "T-001"), ("beta", "T-002")):
        assert MOVED in seen[key] and f"started server-side task {task_id}.verdict.1@{h.repo}" in seen[key], seen[key]
    # Each verdict came in a turn Claude Code started by itself, alone, after the first turn ended.
    verdicts = {}
    for body, task_id in ((alpha, "T-001"), (beta, "T-002")):
        assert turn_started_by_claude_code(body), since_last_answer(body)
        [note] = notifications(body)
        verdicts[task_id] = json.loads(note["result"])
    assert alpha is not beta
    assert verdicts["T-001"]["taskId"] == "T-001" and verdicts["T-001"]["action"] == "done", verdicts["T-001"]
    assert verdicts["T-002"]["taskId"] == "T-002" and verdicts["T-002"]["action"] == "done", verdicts["T-002"]
    # The records agree: both done, Beta after one rework; both merged.
    first, second = session.task("T-001"), session.task("T-002")
    assert (first.status, first.rework_count, first.isolation) == ("done", 0, "worktree")
    assert (second.status, second.rework_count, second.isolation) == ("done", 1, "worktree")
    assert (h.repo / "src/app.py").read_text() == "x = 2\n" and (h.repo / "src/other.py").read_text() == "y = 2\n"
    reworked = [r for r in h.server.requests if "src/other.py does not say y = 2" in json.dumps(r["body"])]
    assert reworked, "Codex's second run was not told why the first was sent back"
    # On the wire: both calls declared the extension and were answered with a task; Claude Code polled
    # each to its end; nothing was cancelled.
    calls = session.wire.requests("tools/call")
    delegated = [call for call in calls if call["params"]["name"] == "delegate-task"]
    assert len(delegated) == 2 and all(declares_tasks(call) and call["answer"]["result"]["resultType"] == "task"
                                       for call in delegated), delegated
    for task_id in ("T-001", "T-002"):
        polls = session.wire.requests("tasks/get", f"{task_id}.verdict.1@{h.repo}")
        assert polls[-1]["answer"]["result"]["status"] == "completed", polls[-1]
    assert not session.wire.requests("tasks/cancel")


# -- 2. the person stops it ------------------------------------------------------------------------

@pytest.mark.parametrize("way", ["/tasks", "down"], ids=["slash-tasks", "arrow-down"])
def test_the_person_stopping_the_background_task_blocks_the_codex_mcp_task(session, model, way):
    """/tasks and Enter (the detail opens directly when one task runs), or ↓ on the empty prompt and
    Enter (↓ selects the footer's "1 MCP task"; x there does nothing); then x. Claude Code sends
    tasks/cancel (twice), the Codex run is stopped and the record says who stopped it; the model
    hears of it with the person's next message."""
    h = session.h
    h.server.route("Gamma-job", {"hang": True})        # Codex waits for its model until stopped
    model.steps = [delegate("Gamma-job", "src/app.py", "x = 3"),
                   {"say": "Gamma runs in the background."}]
    terminal = session.start()
    session.say("Hand Gamma to Codex")
    session.screen_shows(r"Gamma runs in the background\.")
    handle = f"T-001.verdict.1@{h.repo}"
    session.until_task("T-001", lambda t: t.status == "doing" and t.thread_id, 60, "ran Codex")
    session.wire.wait_for(lambda: session.wire.requests("tasks/get", handle), 30, "a poll of the task")

    if way == "/tasks":
        session.say("/tasks")
    else:
        terminal.send("\x1b[B")                    # ↓ ("↓ to manage", says the prompt's footer)
        session.screen_shows("1 MCP task · enter to view tasks", 30)
        terminal.send("\r")
    session.screen_shows(r"Status: +working · Codex running[\s\S]*x to stop", 30)
    terminal.send("x")
    stopped = session.until_task("T-001", lambda t: t.status == "blocked", 60, "was blocked")
    assert stopped.reason == "cancelled: the run was stopped from Claude Code (its background task was stopped)"
    assert stopped.rework_count == 0
    cancels = session.wire.wait_for(lambda: len(session.wire.requests("tasks/cancel", handle)) >= 2 and
                                    session.wire.requests("tasks/cancel", handle), 30, "two tasks/cancel")
    assert len(cancels) == 2 and abs(cancels[1]["t"] - cancels[0]["t"]) < 1
    assert "the run was stopped from Claude Code" in (h.repo / "agents/tasks/T-001.md").read_text()

    # What the model hears: nothing at once; on the person's next message, that the task was stopped.
    model.steps = [{"say": "Gamma was stopped."}]
    session.screen_shows("No tasks currently running[\\s\\S]*Esc to close", 30)      # back to the list, empty
    terminal.send("\x1b")                          # close it (and wait: Esc and a key would be Alt+key)
    session.screen_shows("Esc to close", 30, gone=True)
    session.say("What happened to Gamma?")
    body = model.wait_for(lambda b: "What happened to Gamma?" in json.dumps(since_last_answer(b)), 60,
                          "the next prompt")
    [note] = notifications(body)
    assert note["status"] == "killed" and "stopped by the user" in note["summary"], note
    assert not any(notifications(b) for b in model.turns if b is not body)
    assert session.task("T-001").status == "blocked"


# -- 3. the server dies, the person reconnects it -------------------------------------------------------

def test_a_server_killed_while_a_task_runs_delivers_its_verdict_after_reconnect(session, model):
    """The server is killed (SIGKILL) while Codex runs; Claude Code does not restart it. The person
    reconnects it from /mcp; Claude Code polls the same handle on the new process, which follows the
    task on from the records, and the verdict arrives as a notification."""
    h, go = session.h, threading.Event()
    h.server.route("Delta-job", {"run": "printf 'x = 2\\n' > src/app.py", "wait": go},
                   {"say": report(files=["src/app.py"])})
    model.steps = [delegate("Delta-job", "src/app.py", "x = 2"), {"say": "Delta runs in the background."}]
    model.default = {"say": "Noted."}
    terminal = session.start()
    session.say("Hand Delta to Codex")
    session.screen_shows(r"Delta runs in the background\.")
    handle = f"T-001.verdict.1@{h.repo}"
    session.until_task("T-001", lambda t: t.status == "doing" and t.thread_id, 60, "ran Codex")
    session.wire.wait_for(lambda: session.wire.requests("tasks/get", handle), 30, "a poll of the task")

    [first] = session.wire.server_pids()
    os.kill(first, signal.SIGKILL)
    session.wire.wait_for(lambda: any(e["msg"].startswith("child exit") for e in session.wire.lines()), 30,
                          "the proxy seeing the server die")
    assert session.task("T-001").status == "doing"         # the run goes on: its worker is detached

    session.say("/mcp")
    session.screen_shows(f"✘ {SERVER}", 60)             # failed, and not restarted by Claude Code
    assert session.wire.server_pids() == [first]
    terminal.send("\r")                                  # the server's detail
    session.screen_shows("Status: +✘ failed[\\s\\S]*❯ Reconnect", 30)
    terminal.send("\r")                                  # Reconnect
    session.screen_shows(f"Reconnected to {SERVER}", 60)
    polled = session.wire.wait_for(lambda: [r for r in session.wire.requests("tasks/get", handle)
                                            if r["server"] == 1 and r["answer"]],
                                   60, "a poll of the same handle on the new process")
    assert polled[0]["answer"]["result"]["status"] == "working", polled[0]      # known there, from the files
    assert session.task("T-001").status == "doing"
    go.set()                                             # now Codex may finish
    body = model.wait_for(notified("T-001"), 150, "notifying T-001's verdict")

    assert turn_started_by_claude_code(body)
    [note] = notifications(body)
    verdict = json.loads(note["result"])
    assert verdict["taskId"] == "T-001" and verdict["action"] == "done", verdict
    task = session.task("T-001")
    assert (task.status, task.rework_count) == ("done", 0)
    assert (h.repo / "src/app.py").read_text() == "x = 2\n"
    pids = session.wire.server_pids()
    assert len(pids) == 2 and pids[0] == first
    polls = session.wire.requests("tasks/get", handle)
    assert polls[-1]["server"] == 1 and polls[-1]["answer"]["result"]["status"] == "completed"
    assert all(poll["answer"] is None or poll["answer"]["result"]["status"] == "working"
               for poll in polls if poll["server"] == 0)


# -- 4. claude -p: synchronous ----------------------------------------------------------------------

def test_print_mode_with_the_same_registration_gets_the_verdict_synchronously(session, model):
    """`claude -p` does not declare the extension: the tool_result the model receives is the verdict
    itself, not a task moved to the background."""
    h = session.h
    h.server.route("Epsilon-job", {"run": "printf 'x = 2\\n' > src/app.py"}, {"say": report(files=["src/app.py"])})
    seen: dict = {}

    def finish(body: dict) -> dict:
        seen["result"] = the_result(body)
        return {"say": "Epsilon: " + json.loads(seen["result"])["action"]}

    model.steps = [delegate("Epsilon-job", "src/app.py", "x = 2"), finish]
    out = session.print_mode("Hand Epsilon to Codex")

    assert "Epsilon: done" in out
    assert MOVED not in seen["result"] and not any(notifications(body) for body in model.turns)
    verdict = json.loads(seen["result"])
    assert verdict["taskId"] == "T-001" and verdict["action"] == "done" and verdict["status"] == "done", verdict
    task = session.task("T-001")
    assert (task.status, task.rework_count) == ("done", 0)
    [call] = session.wire.requests("tools/call")
    assert not declares_tasks(call), call["params"].get("_meta")
    assert call["answer"]["result"].get("resultType") != "task"
    assert call["answer"]["result"]["structuredContent"] == verdict
    assert not session.wire.requests("tasks/get")
