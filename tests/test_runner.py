"""Delegation with the real Codex CLI against the scripted model server: the run, its ends,
scheduling, cancel, a dead worker, and a lost thread."""

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
from conftest import MODULE, Harness, make_repo
from model_server import ModelServer, report

pytestmark = pytest.mark.codex


def delegate(h: Harness, *extra: str, repo=None) -> dict:
    return h.ok("delegate", "--goal", "Change x to 2", "--paths", "src/", *extra, repo=repo)


def test_delegate_runs_codex_to_review_and_records_everything(harness):
    h = harness
    end = threading.Event()         # Codex cannot finish before delegate has answered
    h.server.push({"run": "printf 'x = 2\\n' > src/app.py"},
                  {"say": report(files=["src/app.py"]), "wait": end})
    out = delegate(h, "--constraints", "no new files", "--criteria", "x is 2")
    assert out["taskId"] == "T-001" and out["filePath"] == "agents/tasks/T-001.md"
    assert out["status"] == "doing" and out["threadId"]
    end.set()
    done = h.wait("T-001")
    assert done["status"] == "review" and done["codexThreadId"] == out["threadId"]
    assert done["lastCodexResultSummary"] == "Did the work." and done["progress"]["commands"] == 1

    task = h.task("T-001")
    log = h.repo / task.log
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[0] == {"type": "thread.started", "thread_id": out["threadId"]}
    assert task.result == report(files=["src/app.py"]) and task.tokens > 0
    assert "printf 'x = 2\\n' > src/app.py" in task.run_log or "x = 2" in task.run_log
    assert "modified  src/app.py" in task.changes
    assert (h.repo / "src/app.py").read_text() == "x = 2\n"
    assert [h.split(" ", 1)[1] for h in task.history] == [
        "created (todo)", "todo -> doing: delegate: Codex started", "doing -> review: Codex finished its turn"]
    first = h.server.texts(0)
    assert "Allowed paths" in first and "- src/" in first and "no new files" in first   # developer instructions
    assert "Change x to 2" in first and "x is 2" in first                                 # the prompt on stdin


def test_files_written_by_a_command_are_real_changes(harness):
    h = harness
    h.server.push({"run": "mkdir -p src/pkg && echo 'new' > src/pkg/mod.py && echo leak > notes.txt"},
                  {"say": report(files=["src/pkg/mod.py"])})
    delegate(h)
    h.wait("T-001")
    changes = h.task("T-001").changes
    assert "added     src/pkg/mod.py" in changes and "added     notes.txt" in changes


def test_model_error_500_blocks_and_says_the_service_failed(harness):
    h = harness
    h.server.push({"status": 500})
    delegate(h)
    out = h.wait("T-001")
    assert out["status"] == "blocked" and out["reason"].startswith("the network or the model service failed (")
    assert "high demand" in out["reason"] and "`codex-mcp retry T-001`, then `codex-mcp start T-001`, runs it again" in out["reason"]
    assert "doing -> blocked" in h.task("T-001").history[-1]


@pytest.mark.parametrize("flag, words", [("--timeout", "hard timeout"), ("--idle-timeout", "idle timeout")])
def test_timeouts_kill_codex_and_block(harness, flag, words):
    h = harness
    h.server.push({"hang": True})
    delegate(h, flag, "3")
    out = h.wait("T-001", seconds=30)
    assert out["status"] == "blocked" and out["reason"].startswith(words)
    codex = h.task("T-001").child_process
    assert not codex   # cleared: the process group was killed (the fixture checks for strays)


def test_cancel_stops_a_running_task(harness):
    h = harness
    h.server.push({"hang": True})
    delegate(h)
    time.sleep(0.5)
    out = h.ok("cancel", "T-001")
    assert out["status"] == "blocked" and out["reason"].startswith("cancelled")
    assert h.ok("retry", "T-001")["status"] == "todo"


def test_kill_9_of_the_worker_is_detected_by_check(harness):
    h = harness
    h.server.push({"hang": True})
    delegate(h)
    task = h.task("T-001")
    worker_pid = int(task.worker.split("@")[0])
    deadline = time.monotonic() + 10
    while not h.task("T-001").child_process and time.monotonic() < deadline:
        time.sleep(0.1)
    codex_pid = int(h.task("T-001").child_process.split("@")[0])
    os.kill(worker_pid, signal.SIGKILL)
    time.sleep(0.3)
    out = h.ok("check", "T-001")
    assert out["status"] == "blocked" and f"worker process ({worker_pid}) died" in out["reason"]
    time.sleep(0.5)
    assert not cm.process_alive(f"{codex_pid}@"), "Codex outlived its dead worker"
    assert h.ok("retry", "T-001")["status"] == "todo"


def test_two_tasks_in_one_repo_run_one_after_the_other(harness):
    h = harness
    go = threading.Event()          # the first run's answer waits for the test, not for a clock
    h.server.default = {"say": report(), "wait": go}
    first = delegate(h)
    second = delegate(h)
    assert first["status"] == "doing"
    assert second["status"] == "todo" and "threadId" not in second
    queued = h.ok("check", "T-002")
    assert "waiting for T-001" in queued["progress"]["note"]
    go.set()
    assert h.wait("T-001")["status"] == "review"
    assert h.wait("T-002")["status"] == "review"
    a, b = sorted(h.server.requests, key=lambda r: r["start"])
    assert b["start"] >= a["end"], "two Codex runs overlapped in one repo"


def test_two_repos_run_in_parallel(harness, tmp_path):
    h = harness
    other = make_repo(tmp_path / "other")
    go = threading.Event()          # neither run can end before both have asked the model
    h.server.default = {"say": report(), "wait": go}
    assert delegate(h)["status"] == "doing"
    assert delegate(h, repo=other)["status"] == "doing"
    deadline = time.monotonic() + 120
    while len(h.server.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(h.server.requests) == 2, "tasks in different repos did not run at once"
    go.set()
    assert h.wait("T-001")["status"] == "review"
    assert h.wait("T-001", repo=other)["status"] == "review"


def test_queued_tasks_start_in_id_order(harness):
    h = harness
    h.server.default = {"say": report(), "delay": 0.8}
    for _ in range(3):
        delegate(h)
    for task_id in ("T-001", "T-002", "T-003"):
        assert h.wait(task_id)["status"] == "review"
    starts = [h.task(t).started for t in ("T-001", "T-002", "T-003")]
    assert starts == sorted(starts)
    threads = [h.task(t).thread_id for t in ("T-001", "T-002", "T-003")]
    order = [next(i for i, r in enumerate(h.server.requests) if "Task " + t in h.server.texts(i))
             for t in ("T-001", "T-002", "T-003")]
    assert order == sorted(order) and len(set(threads)) == 3


def test_rework_resumes_the_same_thread_in_the_sandbox(harness):
    h = harness
    delegate(h)
    thread = h.wait("T-001")["codexThreadId"]
    escape = Path.home() / f".codex-mcp-escape-{os.getpid()}"   # /tmp stays writable in the sandbox; $HOME not
    h.server.push({"run": f"echo 'x = 3' > src/app.py && (echo no > {escape} || true)"},
                  {"say": report(summary="Fixed it.")})
    out = h.ok("rework", "T-001", "--items", "use 3 not 2,add a comment")
    assert out == {"taskId": "T-001", "threadId": thread, "status": "doing", "reworkCount": 1,
                   "next": "already sent back to Codex: `codex-mcp check T-001 --wait 600` waits for the rework"}
    done = h.wait("T-001")
    assert done["status"] == "review" and done["codexThreadId"] == thread
    assert done["lastCodexResultSummary"] == "Fixed it."
    assert h.task("T-001").rounds == ["1. use 3 not 2\n2. add a comment"]
    assert (h.repo / "src/app.py").read_text() == "x = 3\n"
    written = escape.exists()
    escape.unlink(missing_ok=True)
    assert not written, "a resumed turn wrote outside the repo"
    last = h.server.texts(len(h.server.requests) - 2)
    assert "1. use 3 not 2" in last and "2. add a comment" in last


def test_lost_thread_is_recovered_on_a_new_thread(harness):
    h = harness
    delegate(h)
    h.wait("T-001")
    path = h.repo / "agents/tasks/T-001.md"
    old = h.task("T-001").thread_id
    bogus = "01a20000-0000-7000-8000-000000000000"
    path.write_text(path.read_text().replace(old, bogus))     # as if CODEX_HOME had been wiped
    h.ok("rework", "T-001", "--items", "add tests")
    out = h.wait("T-001")
    assert out["status"] == "review" and out["codexThreadId"] not in (bogus, old)
    history = h.task("T-001").history
    assert any(f"thread recovered: {bogus} -> {out['codexThreadId']}" in line for line in history)
    recovery = h.server.texts(len(h.server.requests) - 1)
    assert "Change x to 2" in recovery and "1. add tests" in recovery and "Did the work." in recovery


def test_delegate_file_starts_a_hand_written_task_and_wait_reports_progress(harness):
    h = harness
    tasks = h.repo / "agents" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "T-005.md").write_text("# T-005: hand written\n\n## Status\n\n- Status: todo\n\n## Goal\n\n"
                                    "Write the docs.\n\n## Allowed Paths\n\n- docs/\n\n## My own notes\n\nkeep me\n")
    done = subprocess.run([sys.executable, MODULE, "--cwd", str(h.repo), "--codex-cmd", h.codex, "delegate",
                           "--file", "T-5", "--wait"], capture_output=True, text=True, env=h.env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["taskId"] == "T-005" and out["status"] == "review"
    assert "T-005 review:" in done.stderr
    text = h.record("T-005")
    assert "## My own notes\n\nkeep me\n" in text and "- Status: review" in text
    assert "Write the docs." in h.server.texts(0)
    status, again = h.cli("delegate", "--file", "T-005")
    assert status == 1 and again["error"]["code"] == "refused_transition"


def test_codex_cmd_may_carry_arguments(harness):
    h = harness
    status, out = h.cli("--codex-cmd", f"{h.codex} -c model_reasoning_summary=\"none\"", "delegate",
                        "--goal", "g", "--paths", "src/", "--model", "gpt-5")
    assert status == 0
    assert h.wait("T-001")["status"] == "review"
    assert h.server.requests[0]["body"]["model"] == "gpt-5"
