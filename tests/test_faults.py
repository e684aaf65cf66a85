"""Fault drills: kill -9 the worker at ten points of a task's life, make Codex fail in every way it
can, and push bad input through both the CLI and the MCP server. After each: every record parses,
the status and reason are right, retry recovers, and no process is left behind (the harness fixture
fails a test that leaves one)."""

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import codex_mcp as cm
from conftest import CODEX_VERSION, MODULE, ROOT, Harness, processes_under, run_cli
from model_server import report

# -- helpers -----------------------------------------------------------------------------------------


def until(predicate, seconds: float = 20, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pid_of(identity: str) -> int:
    return int(identity.split("@")[0])


def worker_of(h: Harness, task_id: str) -> int:
    return pid_of(until(lambda: h.task(task_id).worker, what=f"{task_id}'s worker"))


def codex_of(h: Harness, task_id: str) -> str:
    return until(lambda: h.task(task_id).child_process, what=f"{task_id}'s Codex process")


def all_records_parse(repo: Path) -> None:
    store = cm.Store(repo)
    for task_id in store.ids():
        store.load(task_id)


def assert_recovered(h: Harness, task_id: str, status: str = "blocked", words: str = "died") -> dict:
    all_records_parse(h.repo)
    out = h.ok("check", task_id)
    assert out["status"] == status and words in (out["reason"] or "") + " ".join(h.task(task_id).history), out
    if status == "blocked":
        assert h.ok("retry", task_id)["status"] == "todo"
    return out


def script(path: Path, body: str) -> str:
    """A stand-in for Codex that answers --version like the real one (codex-mcp asks before a first task)."""
    path.write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "codex-cli {CODEX_VERSION}"; exit 0; }}\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def delegate(h: Harness, *extra: str) -> dict:
    return h.ok("delegate", "--goal", "drill", "--paths", "src/", *extra)


pytestmark = pytest.mark.codex

# -- kill -9 of the worker at ten points ---------------------------------------------------------------


def test_kill_while_queued(harness):
    h = harness
    h.server.push({"hang": True})
    delegate(h)
    delegate(h)
    until(lambda: "waiting for T-001" in h.task("T-002").progress, what="T-002 queued")
    os.kill(worker_of(h, "T-002"), signal.SIGKILL)
    assert_recovered(h, "T-002", words="while the task was todo")
    h.ok("cancel", "T-001")


def kill_worker_with_codex(h: Harness, task_id: str = "T-001") -> None:
    """kill -9 the worker while Codex runs: the task recovers and Codex dies with its worker."""
    codex = codex_of(h, task_id)
    os.kill(worker_of(h, task_id), signal.SIGKILL)
    assert_recovered(h, task_id)
    until(lambda: not cm.process_alive(codex), 5, "Codex to die with its worker")


def test_kill_while_codex_is_starting(harness, tmp_path):
    h = harness
    slow = script(tmp_path / "slow-codex", f'[ "$1" = --version ] || sleep 30\nexec "{h.codex}" "$@"\n')
    h.ok("--codex-cmd", slow, "delegate", "--goal", "drill", "--paths", "src/")
    kill_worker_with_codex(h)


def test_kill_while_codex_waits_for_the_model(harness):
    h = harness
    h.server.push({"hang": True})
    assert delegate(h)["threadId"]
    kill_worker_with_codex(h)


def state_of(*folders: Path) -> dict:
    """path -> (size, mtime, content) of every file under the folders (the rebuildable list index aside)."""
    return {path: (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes()) for folder in folders
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != "index.json"}


def test_check_and_list_write_nothing_even_about_a_dead_worker(harness):
    """The read-only tools are read-only: a dead worker's task is shown blocked, and the record is put
    right by the next command that writes."""
    h = harness
    h.server.push({"say": report()})
    delegate(h)
    assert h.wait("T-001")["status"] == "review"
    h.server.push({"hang": True})
    delegate(h)
    codex = codex_of(h, "T-002")
    os.kill(worker_of(h, "T-002"), signal.SIGKILL)
    until(lambda: not cm.process_alive(codex), 5, "Codex to die with its worker")
    before = state_of(h.repo / "agents", h.repo / ".git" / "codex-mcp")
    assert "- Status: doing" in h.record("T-002")
    out = h.ok("check", "T-002", "--detail")
    assert out["status"] == "blocked" and "died" in out["reason"], out
    assert h.ok("check", "T-002", "--wait", "2")["status"] == "blocked"
    assert h.ok("check", "T-001", "--wait", "1")["status"] == "review"
    page = h.ok("list", "--limit", "1")
    assert h.ok("list", "--cursor", page["nextCursor"])["tasks"][0]["status"] in ("review", "blocked")
    assert {t["taskId"]: t["status"] for t in h.ok("list")["tasks"]} == {"T-001": "review", "T-002": "blocked"}
    assert state_of(h.repo / "agents", h.repo / ".git" / "codex-mcp") == before, "a read-only tool wrote"
    assert h.ok("retry", "T-002")["status"] == "todo"         # a command that writes puts the record right
    assert "died while the task was doing" in " ".join(h.task("T-002").history)


def test_kill_while_codex_runs_a_command(harness):
    h = harness
    h.server.push({"run": "sleep 60 # drill-command"}, {"say": report()})
    delegate(h)
    until(lambda: any("drill-command" in cmd for _, cmd in processes_under(h.repo)), what="the command")
    os.kill(worker_of(h, "T-001"), signal.SIGKILL)
    assert_recovered(h, "T-001")
    until(lambda: not any("drill-command" in cmd for _, cmd in processes_under(h.repo)), 5,
          "Codex's command to be killed with it")


def test_kill_mid_stream(harness, tmp_path):
    h = harness
    events = [{"type": "thread.started", "thread_id": "drill-thread"}, {"type": "turn.started"}]
    lines = "\n".join(json.dumps(e) for e in events)
    stream = script(tmp_path / "streaming-codex",
                    f"cat > /dev/null\necho '{lines}'\n"
                    "i=0; while [ $i -lt 400 ]; do echo '{\"type\":\"item.completed\",\"item\":{\"type\":\"reasoning\"}}';"
                    " i=$((i+1)); sleep 0.05; done\n")
    h.ok("--codex-cmd", stream, "delegate", "--goal", "drill", "--paths", "src/")
    until(lambda: h.task("T-001").last_event == "item.completed", what="events to flow")
    os.kill(worker_of(h, "T-001"), signal.SIGKILL)
    assert_recovered(h, "T-001")


def test_kill_while_writing_the_record(harness, tmp_path):
    """Codex rewrites its own record on every event, so the worker writes it back on every event:
    kills at random moments land inside writes. The record must always parse, never be torn."""
    h = harness
    rng = random.Random(7)
    churn = script(tmp_path / "churning-codex",
                   "cat > /dev/null\necho '{\"type\":\"thread.started\",\"thread_id\":\"churn\"}'\n"
                   "while true; do echo '- Noise: x' >> agents/tasks/$TASK.md; "
                   "echo '{\"type\":\"item.completed\",\"item\":{\"type\":\"reasoning\"}}'; done\n")
    for round_ in range(5):
        task_id = f"T-{round_ + 1:03d}"
        env = {**h.env, "TASK": task_id}
        status, out = run_cli("delegate", "--goal", "drill " + "x" * 5000, "--paths", "src/", cwd=h.repo, env=env,
                              codex=churn)
        assert status == 0, out
        until(lambda: h.task(task_id).tampered or h.task(task_id).last_event, what="churn to start")
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(worker_of(h, task_id), signal.SIGKILL)
        assert_recovered(h, task_id)
        assert cm.Store(h.repo).load(task_id).goal == "drill " + "x" * 5000
        assert "- Noise: x" not in (h.repo / "agents/tasks" / f"{task_id}.md").read_text()   # put back


def test_a_record_codex_rewrote_just_before_its_worker_died_is_put_back(harness):
    """The worker puts its record back within an event of Codex writing it; killed inside that window,
    it cannot. The next check does, from the tool's copy: a forged `done` with no worker and a wider
    boundary is not believed, and the forged text is kept where a person can read it."""
    h = harness
    h.server.push({"hang": True})
    delegate(h)
    codex_of(h, "T-001")
    os.kill(worker_of(h, "T-001"), signal.SIGKILL)
    record = h.repo / "agents/tasks/T-001.md"
    record.write_text(record.read_text().replace("- Status: doing", "- Status: done")
                      .replace("- `src/`", "- `.`").replace("- Worker:", "- Was:"))
    listed = h.ok("list")["tasks"]
    assert [t["status"] for t in listed] == ["blocked"], listed
    out = assert_recovered(h, "T-001", words="died")
    task = h.task("T-001")
    assert task.allowed_paths == ["src/"] and "Status: done" not in record.read_text(), out
    saved = [line for line in task.history if "(put back); the changed text is saved at" in line]
    assert saved and "- Status: done" in Path(saved[0].rsplit(" ", 1)[1]).read_text(), task.history


def test_kill_during_a_rework_run(harness):
    h = harness
    delegate(h)
    h.wait("T-001")
    h.server.push({"hang": True})
    h.ok("rework", "T-001", "--items", "again")
    codex_of(h, "T-001")
    os.kill(worker_of(h, "T-001"), signal.SIGKILL)
    out = assert_recovered(h, "T-001", words="while the task was doing")
    assert h.task("T-001").rework_count == 0 and len(h.task("T-001").rounds) == 1


def accept_in_background(h: Harness) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, MODULE, "--cwd", str(h.repo), "--codex-cmd", h.codex, "accept", "T-001"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=h.env)


def test_kill_during_a_completion_request(harness):
    h = harness
    h.server.push({"say": "## Summary\nok\n## Files Changed\n- src/app.py\n"})
    delegate(h)
    h.wait("T-001")
    h.server.push({"hang": True})
    asked = len(h.server.requests)
    accept = accept_in_background(h)
    codex = codex_of(h, "T-001")
    until(lambda: len(h.server.requests) > asked, what="the completion request to reach the model")
    accept.kill()
    accept.wait()
    out = assert_recovered(h, "T-001", status="review", words="running a Codex request or the verify command")
    until(lambda: not cm.process_alive(codex), 5, "the completion's Codex to die")
    h.server.push({"say": "## Tests\n2 passed"})
    assert h.ok("accept", "T-001")["action"] == "done"


def test_kill_during_verify(harness):
    h = harness
    delegate(h, "--verify", "sleep 61; true")        # a compound command: its sleep is a grandchild
    h.wait("T-001")
    accept = accept_in_background(h)
    until(lambda: any(cmd == "sleep 61" for _, cmd in processes_under(h.repo)), what="verify to start")
    accept.kill()
    accept.wait()
    all_records_parse(h.repo)
    out = h.ok("check", "T-001")
    assert out["status"] == "review" and "running a Codex request or the verify command" in out["reason"]
    until(lambda: not any(cmd == "sleep 61" for _, cmd in processes_under(h.repo)), 5,
          "check to stop the dead accept's verify command")


def test_kill_the_running_worker_lets_the_queue_go_on(harness):
    h = harness
    h.server.push({"hang": True})
    delegate(h)
    delegate(h)
    codex_of(h, "T-001")
    os.kill(worker_of(h, "T-001"), signal.SIGKILL)
    assert h.wait("T-002")["status"] == "review"     # the lock died with its holder
    assert_recovered(h, "T-001")


# -- Codex failing in every way it can -------------------------------------------------------------


def test_codex_killed_by_a_signal(harness):
    h = harness
    h.server.push({"hang": True})
    delegate(h)
    os.kill(pid_of(codex_of(h, "T-001")), signal.SIGKILL)
    out = h.wait("T-001")
    assert out["status"] == "blocked" and "killed by signal SIGKILL" in out["reason"]


def test_codex_exiting_non_zero(harness):
    h = harness
    h.ok("--codex-cmd", f"{h.codex} --no-such-flag", "delegate", "--goal", "g", "--paths", "src/")
    out = h.wait("T-001")
    assert out["status"] == "blocked" and "exited with status 2" in out["reason"]
    assert "no-such-flag" in out["reason"]


def test_codex_printing_non_json_lines(harness, tmp_path):
    h = harness
    noisy = script(tmp_path / "noisy-codex",
                   "cat > /dev/null\necho 'WARNING: not json'\n"
                   "echo '{\"type\":\"thread.started\",\"thread_id\":\"noisy\"}'\necho '<<garbage>>'\n"
                   f"printf '%s\\n' '{json.dumps({'type': 'item.completed', 'item': {'type': 'agent_message', 'text': report()}})}'\n"
                   "echo '{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}'\n")
    h.ok("--codex-cmd", noisy, "delegate", "--goal", "g", "--paths", "src/")
    out = h.wait("T-001")
    assert out["status"] == "review" and out["codexThreadId"] == "noisy"
    assert "not JSON: WARNING: not json" in h.task("T-001").run_log
    assert "not JSON: <<garbage>>" in h.task("T-001").run_log


def test_codex_hanging_with_no_output_past_the_idle_timeout(harness, tmp_path):
    h = harness
    silent = script(tmp_path / "silent-codex", "sleep 120 # drill-silent\n")
    h.ok("--codex-cmd", silent, "delegate", "--goal", "g", "--paths", "src/", "--idle-timeout", "2")
    out = h.wait("T-001", seconds=30)
    assert out["status"] == "blocked" and out["reason"].startswith("idle timeout: no progress from Codex for 2 s")


def test_codex_missing_from_path(harness):
    h = harness
    status, out = h.cli("--codex-cmd", "definitely-not-codex", "delegate", "--goal", "g", "--paths", "src/")
    assert status == 1 and "'definitely-not-codex' is not on PATH" in out["error"]["message"]
    assert not (h.repo / "agents").exists()
