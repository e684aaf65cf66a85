"""People edit the task files: nothing they write is lost, and every failure is explained."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp.client import Client

import codex_mcp as cm
from conftest import MODULE, ROOT, fake_codex, git, make_repo, run_cli
from model_server import report

EXAMPLE = ROOT / "agents" / "tasks" / "T-001.md"


def mcp_call(repo: Path, tool: str, arguments: dict, codex: str | None = None):
    async def go():
        async with Client(cm.build_server(str(repo), codex)) as client:
            return await client.call_tool(tool, arguments)
    return anyio.run(go)


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- a full and a read-only disk ------------------------------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A tiny file system mounted on `folder` (root can; the test skips where nothing can be mounted)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the read-only folder test covers it")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_is_answered_with_json_on_both_interfaces_and_nothing_half_written(tmp_path):
    repo = make_repo(tmp_path / "repo")
    tasks = repo / "agents" / "tasks"
    with small_tmpfs(tasks, "64k"):
        shutil.copy(EXAMPLE, tasks / "T-001.md")
        with open(tasks / "filler", "wb", buffering=0) as filler:          # fill it to the last byte
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"x" * 1024)
        before = files_of(tasks)
        codex = fake_codex(tmp_path / "bin")         # a Codex that is there: the disk is what fails
        status, out = run_cli("delegate", "--goal", "g " * 2000, "--paths", "src/", cwd=repo, codex=codex)
        assert status == 1 and out["error"]["code"] == "failed"
        message = out["error"]["message"]
        assert "No space left on device" in message and "free some disk space" in message
        assert str(tasks / "T-002.md") in message and "nothing was left half-written" in message
        result = mcp_call(repo, "delegate-task", {"goal": "g " * 2000, "allowedPaths": ["src/"]}, codex)
        error = json.loads(result.content[0].text)["error"]
        assert result.is_error and error["code"] == "failed" and "No space left on device" in error["message"]
        assert files_of(tasks) == before          # no torn record, no temp file left behind


def test_a_read_only_records_folder_is_answered_with_json_on_both_interfaces(tmp_path):
    repo = make_repo(tmp_path / "repo")
    tasks = repo / "agents" / "tasks"
    with small_tmpfs(tasks, "1m"):
        shutil.copy(EXAMPLE, tasks / "T-001.md")
        subprocess.run(["mount", "-o", "remount,ro", str(tasks)], check=True)
        before = files_of(tasks)
        for args, tool, arguments in (
                (["retry", "T-001"], "retry-task", {"taskId": "T-001"}),
                (["delegate", "--goal", "g", "--paths", "src/"], "delegate-task", {"goal": "g", "allowedPaths": ["src/"]})):
            status, out = run_cli(*args, cwd=repo, codex=fake_codex(tmp_path / "bin"))
            assert status == 1 and "Read-only file system" in out["error"]["message"], out
            assert "make it writable" in out["error"]["message"]
            result = mcp_call(repo, tool, arguments, fake_codex(tmp_path / "bin"))
            assert result.is_error and "Read-only file system" in json.loads(result.content[0].text)["error"]["message"]
        assert run_cli("check", "T-001", cwd=repo)[0] == 0          # reading still works
        assert files_of(tasks) == before


# -- a person's edit while Codex runs -------------------------------------------------------------------

@pytest.mark.codex
def test_an_edit_to_a_running_tasks_record_is_kept_and_named(harness):
    h = harness
    go = h.tmp_path / "go"             # Codex's command ends when the test says: an event, not a time
    h.server.push({"run": f"while [ ! -f {go} ]; do sleep 0.05; done; printf 'x = 2\\n' > src/app.py"},
                  {"say": report()})
    h.ok("delegate", "--goal", "Change x to 2", "--paths", "src/")
    h.until_running("T-001", "while")
    path = h.repo / "agents/tasks/T-001.md"
    edited = path.read_text().replace("## Goal\n\nChange x to 2\n",
                                      "## Goal\n\nChange x to 2\n\nAlso: mind the tabs (a person's note).\n", 1)
    path.write_text(edited)
    go.touch()
    out = h.wait("T-001")
    assert out["status"] == "review"
    task = h.task("T-001")
    assert "a person's note" not in task.goal                     # the record is the worker's while it runs
    saved = task.tampered.split("the changed text is saved at ")[1].split()[0]
    assert "Also: mind the tabs (a person's note)." in Path(saved).read_text()
    assert "left unreadable" not in task.tampered and "Goal" in task.tampered
    accepted = h.ok("accept", "T-001")
    assert accepted["action"] == "done", accepted                 # nothing Codex did names the record
    assert any(saved in line for line in accepted["recordsRestored"])


@pytest.mark.codex
def test_a_running_tasks_record_deleted_by_hand_is_recreated_and_the_task_goes_on(harness):
    h = harness
    go = h.tmp_path / "go"
    h.server.push({"run": f"while [ ! -f {go} ]; do sleep 0.05; done; printf 'x = 2\\n' > src/app.py"},
                  {"say": report()})
    h.ok("delegate", "--goal", "Change x to 2", "--paths", "src/")
    h.until_running("T-001", "while")
    (h.repo / "agents/tasks/T-001.md").unlink()
    go.touch()
    out = h.wait("T-001")
    assert out["status"] == "review"
    assert "deleted (recreated from the tool's copy)" in h.task("T-001").tampered
    assert h.ok("accept", "T-001")["action"] == "done"


# -- reading what people write ---------------------------------------------------------------------------

def test_an_editor_saving_in_place_is_read_once_it_has_finished(tmp_path):
    import threading
    repo = make_repo(tmp_path / "repo")
    store = cm.Store(repo)
    task = store.create(cm.new_task("", "Change x", ["src/"]))
    guard = cm.RecordGuard(task.id)
    with store.update(task.id, guard):
        pass                                            # the worker's own text, as it last wrote it
    path = store.path_for_write(task.id)
    edited = path.read_text().replace("Change x", "Change x (the person's words)")
    truncated = threading.Event()

    def editor() -> None:                               # truncate, then write: how many editors save
        with open(path, "w") as handle:
            handle.flush()
            truncated.set()
            time.sleep(0.08)
            handle.write(edited)

    thread = threading.Thread(target=editor)
    thread.start()
    truncated.wait(5)
    with store.update(task.id, guard):                  # the worker's next write, mid-save
        pass
    thread.join()
    assert path.read_text() == guard.last_text and "the person's words" not in guard.last_text
    assert [Path(saved).read_text() for saved in guard.saved] == [edited]


def test_an_unclosed_fence_is_reported_at_its_line():
    text = ("# T-001: x\n\n## Status\n\n- Status: todo\n\n## Goal\n\nDo it:\n\n```sh\nmake all\n\n"
            "## Allowed Paths\n\n- src/\n\n## Verify\n\n```sh\nmake test\n```\n")
    with pytest.raises(cm.MalformedRecord) as error:
        cm.parse_task(text, "T-001", "agents/tasks/T-001.md")
    assert error.value.message.startswith("agents/tasks/T-001.md:11: the code fence opened here is closed only at "
                                          "line 22, so it swallows the '## Allowed Paths' heading at line 14")


@pytest.mark.parametrize("eol, bom", [("\r\n", ""), ("\r\n", "\ufeff"), ("\n", "\ufeff")])
def test_line_endings_and_a_bom_are_kept(tmp_path, eol, bom):
    store = cm.Store(tmp_path)
    task = store.create(cm.new_task("T-0", "goal", ["src/"]))
    path = store.path(task.id)
    original = bom + path.read_text().replace("\n", eol)
    path.write_bytes(original.encode())
    with store.update(task.id) as record:
        record.progress = "edited by the tool"
    after = path.read_bytes().decode()
    assert after.startswith(bom + "# T-001") and after.count("\r\n") == (after.count("\n") if eol == "\r\n" else 0)
    import difflib
    diff = [line for line in difflib.ndiff(original.split(eol), after.split(eol)) if line[:1] in "+-"]
    assert all(line[2:].startswith(("- Updated:", "- Progress:")) for line in diff), diff
    assert "+ - Progress: edited by the tool" in diff


def test_the_tools_copy_of_a_crlf_record_is_taken_byte_for_byte(tmp_path):
    store = cm.Store(tmp_path)
    task = store.create(cm.new_task("T-0", "goal", ["src/"]))
    path = store.path(task.id)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    with store.update(task.id) as record:          # the tool writes it: the record and its copy
        record.progress = "written by the tool"
    assert cm.overwritten(store, task.id) is None
    path.write_bytes(path.read_bytes().replace(b"- `src/`", b"- `.`"))     # anyone else's write
    text, copy = cm.overwritten(store, task.id)
    assert text.encode() == (store.shadow_dir / f"{task.id}.md").read_bytes() and "\r\n" in text
    assert copy.allowed_paths == ["src/"]


def test_a_bare_repository_and_a_git_directory_are_refused(tmp_path):
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    for folder in (bare, make_repo(tmp_path / "repo") / ".git"):
        status, out = run_cli("list", cwd=folder)
        assert status == 2 and "bare repository, which has no working tree" in out["error"]["message"]
        result = mcp_call(tmp_path, "list-tasks", {"cwd": str(folder)})
        assert result.is_error and "no working tree" in result.content[0].text


def test_a_relative_cwd_over_mcp_is_refused_and_a_file_says_so(tmp_path):
    result = mcp_call(tmp_path, "list-tasks", {"cwd": "some/relative/dir"})
    assert result.is_error and "is relative; give an absolute path" in result.content[0].text
    (tmp_path / "file.txt").write_text("x")
    result = mcp_call(tmp_path, "list-tasks", {"cwd": str(tmp_path / "file.txt")})
    assert result.is_error and "is a file, not a directory" in result.content[0].text


def test_duplicate_ids_on_disk_are_reported_not_guessed(tmp_path):
    tasks = tmp_path / "agents" / "tasks"
    tasks.mkdir(parents=True)
    shutil.copy(EXAMPLE, tasks / "T-019.md")
    shutil.copy(EXAMPLE, tasks / "T-19.md")
    shutil.copy(EXAMPLE, tasks / "T-7.md")                      # a lone other spelling is just that task
    listed = cm.list_tasks(tmp_path)
    rows = {row["taskId"]: row for row in listed["tasks"]}
    assert rows["T-019"]["error"] == ("two files claim T-019: agents/tasks/T-019.md, agents/tasks/T-19.md; "
                                      "rename or delete one of them")
    assert rows["T-007"]["status"] == "blocked" and listed["total"] == 2
    status, out = run_cli("check", "T-19", cwd=tmp_path)
    assert status == 1 and "two files claim T-019" in out["error"]["message"]
    assert run_cli("check", "T-7", cwd=tmp_path)[1]["taskId"] == "T-007"
    assert cm.Store(tmp_path).create(cm.new_task("T-0", "g", ["a"])).id == "T-020"


@pytest.mark.codex
def test_allowed_paths_edited_by_hand_are_checked_again_at_accept_and_start(harness):
    h = harness
    h.server.push({"say": report()})
    h.ok("delegate", "--goal", "g", "--paths", "src/")
    h.wait("T-001")
    path = h.repo / "agents/tasks/T-001.md"
    text = path.read_text()
    line = text.split("\n").index("- `src/`") + 1
    path.write_text(text.replace("- `src/`", "- `src/`\n- ../etc"))
    status, out = h.cli("accept", "T-001")
    assert status == 1 and out["error"]["code"] == "malformed_record"
    assert out["error"]["message"].startswith(f"agents/tasks/T-001.md:{line + 1}: Allowed Paths: '../etc' ")
    assert "contains '..'" in out["error"]["message"] and h.task("T-001").status == "review"
    path.write_text(text.replace("- Status: review", "- Status: todo").replace("- `src/`", "- src/**"))
    status, out = h.cli("start", "T-001")
    assert status == 1 and f"T-001.md:{line}: Allowed Paths" in out["error"]["message"]
    assert "glob characters" in out["error"]["message"]
