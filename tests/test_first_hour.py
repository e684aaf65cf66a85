"""A new user's first hour: nothing the tool says can hurt, what Codex did can be undone, every next
step can be run as written, and a running task shows what Codex is doing."""

import json
import re
import sys
import time
from pathlib import Path

import pytest

import codex_mcp as cm
from conftest import ROOT, Harness, git, run_cli
from model_server import report

PYTHON = sys.executable


def commit(repo: Path, message: str = "files") -> None:
    git(repo, "add", ".")
    git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", message)


# -- nothing the tool says may hurt ---------------------------------------------------------------------

REMOVING = re.compile(r"git clean|git checkout \.|git checkout -- \.|git reset --hard|git restore \.|git stash|"
                      r"rm -r[f ]|rm -fr|find [^`]*-delete")


def test_no_answer_or_readme_line_suggests_a_command_that_removes_what_it_does_not_list():
    """`git clean -fdX` deletes .venv, .env, node_modules. What the tool suggests touches what it names:
    the revert scripts it writes name every path (and are tested to), `discard-task` restores only
    what it lists."""
    texts = {"codex_mcp.py": (ROOT / "codex_mcp.py").read_text(), "README.md": (ROOT / "README.md").read_text()}
    texts.update({str(p.relative_to(ROOT)): p.read_text() for p in [*ROOT.glob("commands/*.md"),
                                                                    *ROOT.glob("skills/*/SKILL.md")]})
    found = [(name, match.group(0)) for name, text in texts.items() for match in REMOVING.finditer(text)]
    # The revert lines the tool generates for one listed path each (`rm -r -- <path>`) are the one use.
    assert [hit for hit in found if hit != ("codex_mcp.py", "rm -r ")] == []


def test_every_next_step_that_is_a_call_names_the_task_in_both_vocabularies():
    task = cm.new_task("T-004", "g", ["src/"])
    for key in cm.NEXT_STEPS:
        text = cm.next_step(task, key, approvePaths=["README.md"])
        for tool, args in re.findall(r"`([a-z]+-[a-z]+) (\{.*?\})`", text):
            takes = {p.name for p in cm.TOOLS[tool].params}
            assert json.loads(args).get("taskId") == ("T-004" if "taskId" in takes else None), (key, text)
        bare = [t for t in re.findall(r"`([a-z]+-[a-z]+)`", text) if t in cm.TOOLS and t != "delegate-task"]
        assert not bare, (key, text)                         # every tool named is a call, but a new task's
        cli = cm.cli_words(text)
        for command in re.findall(r"`(codex-mcp [^`]*)`", cli):
            word = command.split()[1]
            takes_id = any(p.flag == "TASK_ID" for p in cm.BY_CLI[word].params)
            assert ("T-004" in command) == takes_id, (key, cli)
    assert cm.cli_words(cm.next_step(task, "boundary_confirmation", approvePaths=["README.md", "docs/a b"])) == (
        "`codex-mcp accept T-004 --approve-paths 'README.md,docs/a b'` allows these paths; `codex-mcp rework T-004 "
        "--items 'what Codex must change'` has them reverted")
    assert cm.cli_words(cm.next_step(task, "doing")).startswith("`codex-mcp check T-004 --wait 600` (up to 600)")


def test_a_record_missing_a_section_is_refused_with_the_least_it_needs_ready_to_copy(tmp_path):
    tasks = tmp_path / "agents" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "T-007.md").write_text("# T-007: mine\n\n## Status\n\n- Status: todo\n\n## Goal\n\nDo it.\n")
    status, out = run_cli("start", "T-007", cwd=tmp_path)
    assert status == 1 and out["error"]["code"] == "malformed_record"
    message = out["error"]["message"]
    assert "expected a '## Allowed Paths' section" in message
    template = message.split("ready to copy", 1)[1].split(":\n\n", 1)[1]
    (tasks / "T-007.md").write_text(template)
    assert cm.Store(tmp_path).load("T-007").allowed_paths == ["src/"]       # as it is: a record that reads


# -- with the real Codex ------------------------------------------------------------------------------------

def reach_review(h: Harness, *steps: dict, args: tuple = ()) -> str:
    h.server.push(*steps)
    task_id = h.ok("delegate", "--goal", "Change x to 2", "--paths", "src/", *args)["taskId"]
    assert h.wait(task_id)["status"] == "review"
    return task_id


@pytest.mark.codex
def test_an_empty_folder_made_outside_the_boundary_is_reported_not_asked_about(harness):
    h = harness
    reach_review(h, {"run": "printf 'x = 2\\n' > src/app.py && mkdir -p .plugin-cache/empty logs"},
                 {"say": report()})
    out = h.ok("accept", "T-001")
    assert out["action"] == "done", out
    assert set(out["unjudged"]) == {".plugin-cache/empty/", "logs/"} or \
        set(out["unjudged"]) == {".plugin-cache/empty", "logs"}, out
    assert "2 empty folders it made outside them were not judged" in out["reason"]
    assert "outOfBounds" not in out and "uncertain" not in out


@pytest.mark.codex
def test_check_names_what_codex_is_doing_and_the_files_changed_so_far(harness):
    h = harness
    h.server.push({"run": "printf 'x = 2\\n' > src/app.py && echo more > src/extra.py && sleep 30"},
                  {"say": report(files=["src/app.py", "src/extra.py"])})
    h.ok("delegate", "--goal", "Change x to 2", "--paths", "src/")
    try:
        deadline = time.monotonic() + 60
        while True:
            out = h.ok("check", "T-001", "--detail")
            progress = out["progress"]
            if "sleep 30`" in progress.get("note", "") and len(progress.get("filesChanged", [])) == 2:
                break
            assert time.monotonic() < deadline, out
            time.sleep(0.3)
        assert re.match(r"Codex running \d+ s, 0 commands, now `printf ", progress["note"]), progress
        assert progress["filesChanged"] == ["src/app.py", "src/extra.py"] and progress["elapsedSeconds"] >= 0
        assert "sleep 30" in out["codexRun"]                     # --detail: the commands so far
    finally:
        h.ok("cancel", "T-001")


@pytest.mark.codex
def test_discard_puts_back_codexs_changes_and_keeps_a_persons_edit(harness):
    h = harness
    (h.repo / "docs").mkdir()
    (h.repo / "docs" / "guide.md").write_text("the guide\n")
    commit(h.repo)
    go = h.tmp_path / "go"             # Codex's command ends when the test says: an event, not a time
    h.server.push({"run": f"while [ ! -f {go} ]; do sleep 0.05; done; printf 'x = 2\\n' > src/app.py && "
                          "echo new > src/new.py && echo hacked >> README.md && rm docs/guide.md"},
                  {"say": report(files=["src/app.py", "src/new.py"])})
    h.ok("delegate", "--goal", "Change x to 2", "--paths", "src/")
    h.until_running("T-001", "while")
    (h.repo / "notes.txt").write_text("the person's notes, written while Codex ran\n")
    go.touch()
    assert h.wait("T-001")["status"] == "review"
    (h.repo / "src" / "app.py").write_text("x = 2  # the person's touch, after the run\n")
    out = h.ok("discard", "T-001")
    assert out["status"] == "blocked" and out["reason"].startswith("discarded: put back 3 paths"), out
    assert out["restored"] == ["README.md", "docs/guide.md", "src/new.py"], out
    assert out["kept"] == ["notes.txt", "src/app.py"], out
    assert (h.repo / "README.md").read_text() == "demo\n" and (h.repo / "docs/guide.md").read_text() == "the guide\n"
    assert not (h.repo / "src/new.py").exists()
    assert (h.repo / "src/app.py").read_text() == "x = 2  # the person's touch, after the run\n"
    assert (h.repo / "notes.txt").exists()
    assert "- Status: blocked" in h.record("T-001") and "discarded" in h.task("T-001").reason
    assert "`codex-mcp retry T-001`" in out["next"]
    status, again = h.cli("discard", "T-001")           # blocked: allowed again, and nothing is left to put back
    assert status == 0 and again["reason"].startswith("discarded: put back 0 paths"), again


@pytest.mark.codex
def test_discard_drops_a_worktree_tasks_worktree_and_leaves_the_working_tree_alone(harness):
    h = harness
    reach_review(h, {"run": "printf 'x = 2\\n' > src/app.py && echo more >> README.md"}, {"say": report()},
                 args=("--isolation", "worktree"))
    workspace = h.repo / h.task("T-001").workspace
    assert workspace.is_dir()
    (h.repo / "README.md").write_text("the person's edit meanwhile\n")
    out = h.ok("discard", "T-001")
    assert out["status"] == "blocked" and out["restored"] == ["README.md", "src/app.py"], out
    assert not workspace.exists()
    assert (h.repo / "README.md").read_text() == "the person's edit meanwhile\n"
    assert (h.repo / "src/app.py").read_text() == "x = 1\n"


@pytest.mark.codex
def test_blocked_after_the_reworks_names_what_is_left_and_how_to_put_it_back(harness):
    h = harness
    sloppy = "printf 'x = 2\\n' > src/app.py && echo hacked >> README.md"
    h.server.default = {"say": report()}
    reach_review(h, {"run": sloppy}, {"say": report()})
    for _ in range(cm.MAX_REWORKS):
        h.server.push({"run": "echo again >> README.md"}, {"say": report()})
        assert h.ok("accept", "T-001")["action"] == "rework"
        assert h.wait("T-001")["status"] == "review"
    out = h.ok("accept", "T-001")
    assert out["action"] == "blocked", out
    assert "what Codex changed is still in the working tree (README.md" in out["reason"]
    assert "revert-4.sh` puts back those outside the allowed paths" in out["reason"]
    assert "`codex-mcp discard T-001` puts back all it changed" in out["reason"], out["reason"]
    out = h.ok("discard", "T-001")
    assert (h.repo / "README.md").read_text() == "demo\n" and (h.repo / "src/app.py").read_text() == "x = 1\n"
