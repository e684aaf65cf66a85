"""Scale behaviour (the figures are in tests/bench): paged lists, waits woken by the worker's end,
big ignored trees, and the process checks that work without /proc."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from mcp.client import Client

import codex_mcp as cm
from conftest import MODULE, make_repo, run_cli
from model_server import report


def many_tasks(repo: Path, count: int) -> list:
    """`count` records, each updated a second after the one before (T-001 oldest)."""
    store = cm.Store(repo)
    for n in range(1, count + 1):
        task = cm.new_task(f"T-{n:03d}", f"task number {n}", ["src/"])
        task.updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + n))
        task.status = ("todo", "review", "blocked", "done")[n % 4]
        store.write_record(task.id, cm.render_task(task))
    return [f"T-{n:03d}" for n in range(count, 0, -1)]


def test_list_pages_newest_first_and_reaches_every_unchanged_task_once_while_one_changes(tmp_path):
    newest_first = many_tasks(tmp_path, 50)
    first = cm.list_tasks(tmp_path)
    assert [t["taskId"] for t in first["tasks"]] == newest_first[:first["count"]]
    assert 10 <= first["count"] <= 20 and first["total"] == 50 and first["nextCursor"]
    assert len(json.dumps(first).encode()) < cm.RESULT_BUDGET
    moved = newest_first[45]                                  # on the last page; a person edits it now
    path = tmp_path / "agents" / "tasks" / f"{moved}.md"
    text = path.read_text()
    path.write_text(text.replace("- Status: review", "- Status: blocked").replace("- Status: done", "- Status: blocked")
                    .replace("- Updated: 2023", "- Updated: 2030"))
    pages = [first]
    while "nextCursor" in pages[-1]:
        pages.append(cm.list_tasks(tmp_path, cursor=pages[-1]["nextCursor"]))
        assert len(json.dumps(pages[-1]).encode()) < cm.RESULT_BUDGET
    seen = [t["taskId"] for page in pages for t in page["tasks"]]
    assert sorted(seen) == sorted(t for t in newest_first if t != moved) and len(seen) == len(set(seen)) == 49
    assert all(page["changedSince"] == 1 for page in pages[1:])     # changed since the listing began: counted
    again = cm.list_tasks(tmp_path, limit=1)
    assert again["tasks"][0]["taskId"] == moved and again["tasks"][0]["status"] == "blocked"   # newest now


def test_list_filters_by_one_or_several_statuses(tmp_path):
    many_tasks(tmp_path, 12)
    blocked = cm.list_tasks(tmp_path, status=["blocked"])
    assert blocked["total"] == 3 and {t["status"] for t in blocked["tasks"]} == {"blocked"}
    two = cm.list_tasks(tmp_path, status="todo,done", limit=100)
    assert two["total"] == 6 and {t["status"] for t in two["tasks"]} == {"todo", "done"}
    status, out = run_cli("list", "--status", "review", "--limit", "2", cwd=tmp_path)
    assert status == 0 and out["count"] == 2 and out["total"] == 3
    status, out = run_cli("list", "--cursor", out["nextCursor"], cwd=tmp_path)
    assert status == 0 and out["count"] == 1


def test_the_index_is_rebuilt_from_the_records(tmp_path):
    many_tasks(tmp_path, 5)
    cm.list_tasks(tmp_path)
    index = cm.Store(tmp_path).state_dir / "index.json"
    assert index.exists()
    index.write_text("{ not json")                            # a broken index is only a cache
    assert cm.list_tasks(tmp_path)["total"] == 5
    (tmp_path / "agents/tasks/T-003.md").unlink()
    assert [t["taskId"] for t in cm.list_tasks(tmp_path)["tasks"]] == ["T-005", "T-004", "T-002", "T-001"]


@pytest.mark.codex
def test_a_wait_ends_within_half_a_second_of_the_task_leaving_doing(harness):
    h = harness
    h.server.default = {"say": report(), "delay": 2.0}
    h.ok("delegate", "--goal", "g", "--paths", "src/")
    record = h.repo / "agents/tasks/T-001.md"
    left_doing = []

    def watch() -> None:
        while not left_doing:
            if "- Status: review" in record.read_text():
                left_doing.append(time.monotonic())
            time.sleep(0.005)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    status, out = h.cli("check", "T-001", "--wait", "60")
    returned = time.monotonic()
    watcher.join(5)
    assert status == 0 and out["status"] == "review"
    assert returned - left_doing[0] <= 0.5, f"the wait returned {returned - left_doing[0]:.2f} s late"

    h.server.push({"say": report(), "delay": 2.0})
    h.ok("rework", "T-001", "--items", "again")
    os.environ["CODEX_HOME"] = h.env["CODEX_HOME"]
    try:
        async def go():
            async with Client(cm.build_server(str(h.repo), h.codex)) as client:
                result = await client.call_tool("check-task", {"taskId": "T-001", "waitSeconds": 60})
                return result, time.monotonic()
        left_doing.clear()
        watcher = threading.Thread(target=watch, daemon=True)
        time.sleep(0.3)
        watcher.start()
        result, returned = anyio.run(go)
    finally:
        del os.environ["CODEX_HOME"]
    assert result.structured_content["status"] == "review"
    assert returned - left_doing[0] <= 0.5


@pytest.mark.codex
def test_delegate_and_check_take_the_same_wait_form(harness):
    h = harness
    h.server.push({"say": report(), "delay": 1.0})
    status, out = h.cli("delegate", "--goal", "g", "--paths", "src/", "--wait", "30")
    assert status == 0 and out["status"] == "review" and out["lastCodexResultSummary"] == "Did the work."
    h.server.push({"say": report(), "delay": 1.0})
    h.ok("rework", "T-001", "--items", "again")
    status, out = h.cli("check", "T-001", "--wait")                # no number: until it leaves doing
    assert status == 0 and out["status"] == "review"
    status, out = h.cli("delegate", "--goal", "g2", "--paths", "src/", "--wait")   # in this process
    assert status == 0 and out["status"] == "review"


def test_ignored_build_output_is_not_hashed_and_a_new_env_beside_it_is_caught(tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text(".env\ntarget/\nnode_modules/\n")
    for folder, count in (("target/debug/deps", 400), ("node_modules/pkg", 300)):
        (repo / folder).mkdir(parents=True)
        for n in range(count):
            (repo / folder / f"f{n}.bin").write_bytes(os.urandom(2048))
    ws = cm.InPlace(cm.Store(repo))
    assert ws.changes() == {}
    kept = ws.store.state_dir / "objects"
    assert sum(1 for _ in kept.rglob("*") if _.is_file()) < 5      # 700 ignored files, none hashed
    (repo / ".env").write_text("KEY=1\n")
    (repo / "target/debug/deps/f1.bin").write_bytes(b"rebuilt")
    changes = ws.changes()
    assert set(changes) == {".env", "target/debug/deps/f1.bin"}
    ignored = cm.ignored_paths(repo, list(changes))
    assert [path for path in changes if not cm.unjudged(path, path in ignored)] == [".env"]


# -- without /proc (as on macOS) -----------------------------------------------------------------------------

def test_process_identities_and_groups_work_from_ps(monkeypatch):
    monkeypatch.setattr(cm, "HAVE_PROC", False)
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        identity = cm.process_identity(child.pid)
        assert identity.startswith(f"{child.pid}@s") and cm.process_alive(identity)
        assert not cm.process_alive(f"{child.pid}@s{int(identity.split('@s')[1]) - 100}")   # a reused pid
        assert cm.group_members(child.pid, identity.split("@")[1]) == [child.pid]
        cm.kill_group(child.pid, grace=1)
        child.wait(5)
        assert not cm.process_alive(identity) and not cm.group_alive(child.pid)
    finally:
        child.kill()


@pytest.mark.codex
def test_a_killed_worker_is_found_and_its_codex_stopped_without_proc(harness):
    h = harness
    h.env["CODEX_MCP_NO_PROC"] = "1"
    h.server.push({"hang": True})
    h.ok("delegate", "--goal", "g", "--paths", "src/")
    task = h.task("T-001")
    assert "@s" in task.worker
    deadline = time.monotonic() + 10
    while not h.task("T-001").child_process and time.monotonic() < deadline:
        time.sleep(0.1)
    codex = h.task("T-001").child_process
    os.kill(int(task.worker.split("@")[0]), signal.SIGKILL)
    time.sleep(0.5)
    out = h.ok("check", "T-001")
    assert out["status"] == "blocked" and "died" in out["reason"]
    time.sleep(0.5)
    assert not cm.process_alive(codex.split("@")[0] + "@"), "Codex outlived its dead worker"
