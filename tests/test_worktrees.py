"""Worktree tasks: several at once in one repository, each in a git worktree of its own made from the
person's current tree, merged into the working tree on accept."""

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

import codex_mcp as cm
from conftest import Harness, fake_codex, git
from model_server import report

pytestmark = pytest.mark.codex


def delegate(h: Harness, goal: str = "Change x", paths: str = "src/", *extra: str) -> dict:
    return h.ok("delegate", "--goal", goal, "--paths", paths, "--isolation", "worktree", *extra)


def person_state(repo: Path) -> tuple:
    """What the person's repository is: their index, HEAD, branches, stash and status, byte for byte."""
    index = (repo / ".git" / "index").read_bytes()
    status = git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored").splitlines()
    return (index, git(repo, "rev-parse", "HEAD"), git(repo, "for-each-ref"), git(repo, "stash", "list"),
            [line for line in status if "agents/tasks/" not in line])          # the records are the tool's


def worktrees(h: Harness) -> list:
    return [line for line in git(h.repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]


def test_two_worktree_tasks_run_at_once_see_uncommitted_files_and_leave_the_person_alone(harness):
    h = harness
    (h.repo / "src" / "app.py").write_text("x = 1\nuncommitted = True\n")        # the person's work in progress
    (h.repo / "notes.txt").write_text("untracked\n")
    before = person_state(h.repo)
    h.server.default = {"say": report(), "delay": 2.0}
    h.server.push({"run": "cat src/app.py notes.txt > src/seen.txt", "delay": 3.0},
                  {"run": "echo b > src/b.py", "delay": 3.0})
    first, second = delegate(h, "first"), delegate(h, "second")
    assert first["status"] == second["status"] == "doing"
    assert h.wait(first["taskId"])["status"] == "review" and h.wait(second["taskId"])["status"] == "review"
    starts = sorted(r["start"] for r in h.server.requests[:2])
    ends = sorted(r["end"] for r in h.server.requests[:2])
    assert starts[1] < ends[0], "the two worktree tasks did not run at the same time"
    assert person_state(h.repo) == before, "the person's index, HEAD, refs, stash or status changed before accept"
    task = h.task(first["taskId"])
    assert task.isolation == "worktree" and task.base and task.workspace.startswith(".git/codex-mcp/worktrees/w")
    seen = (h.repo / task.workspace / "src" / "seen.txt")
    assert seen.read_text() == "x = 1\nuncommitted = True\nuntracked\n"
    assert len(worktrees(h)) == 3


def test_both_accept_in_turn_and_the_persons_edits_meanwhile_survive(harness):
    h = harness
    (h.repo / "src" / "app.py").write_text("a = 1\nb = 2\nc = 3\nd = 4\n")
    git(h.repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "four lines")
    h.server.push({"run": "sed -i 's/^a = 1$/a = 10/' src/app.py"}, {"say": report()},
                  {"run": "echo new > src/other.py"}, {"say": report(files=["src/other.py"])})
    first = delegate(h, "edit line a")
    h.wait(first["taskId"])
    second = delegate(h, "add a file")
    h.wait(second["taskId"])
    (h.repo / "src" / "app.py").write_text("a = 1\nb = 2\nc = 3\nd = 40\n")       # the person, meanwhile
    (h.repo / "README.md").write_text("the person's readme\n")
    out = h.ok("accept", first["taskId"])
    assert out["action"] == "done" and "applied to your working tree" in out["reason"]
    assert (h.repo / "src/app.py").read_text() == "a = 10\nb = 2\nc = 3\nd = 40\n"
    assert (h.repo / "README.md").read_text() == "the person's readme\n"
    out = h.ok("accept", second["taskId"])
    assert out["action"] == "done"
    assert (h.repo / "src/other.py").read_text() == "new\n" and (h.repo / "src/app.py").read_text().startswith("a = 10")
    assert git(h.repo, "diff", "--cached", "--name-only") == ""                  # applied to the tree, not the index
    assert h.task(first["taskId"]).status == "done"
    assert len(worktrees(h)) == 3                                           # kept in the pool for reuse


def test_a_same_line_conflict_writes_nothing_then_a_rework_resolves_it(harness):
    h = harness
    h.server.push({"run": "printf 'x = 2\\n' > src/app.py"}, {"say": report()})
    task = delegate(h)
    h.wait(task["taskId"])
    (h.repo / "src" / "app.py").write_text("x = 3\n")                         # the person, the same line
    before = (h.repo / "src/app.py").read_bytes()
    out = h.ok("accept", task["taskId"])
    assert out["action"] == "conflict" and out["conflicts"] == ["src/app.py"] and out["status"] == "review"
    assert (h.repo / "src/app.py").read_bytes() == before
    assert "rework" in out["next"]
    workspace = h.repo / h.task(task["taskId"]).workspace
    h.server.push({"run": "grep -c '<<<<<<<' src/app.py; printf 'x = 23\\n' > src/app.py"}, {"say": report()})
    rework = h.ok("rework", task["taskId"], "--items", "keep both: use 23")
    assert rework["status"] == "doing"
    assert h.wait(task["taskId"])["status"] == "review"
    prompt = h.server.texts(len(h.server.requests) - 2)
    assert "conflict markers" in prompt and "src/app.py" in prompt
    run = h.ok("check", task["taskId"], "--detail")["codexRun"]
    assert "grep -c '<<<<<<<' src/app.py" in run
    out = h.ok("accept", task["taskId"])
    assert out["action"] == "done", out
    assert (h.repo / "src/app.py").read_text() == "x = 23\n"
    assert workspace.exists()                                                # back in the pool


def test_adds_deletes_renames_and_modes_apply_exactly(harness):
    h = harness
    (h.repo / "src" / "old.py").write_text("old\n")
    (h.repo / "src" / "gone.py").write_text("gone\n")
    (h.repo / "src" / "tool.sh").write_text("echo\n")
    git(h.repo, "add", ".")
    git(h.repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "files")
    steps = ("echo added > src/added.py && rm src/gone.py && mv src/old.py src/renamed.py && chmod +x src/tool.sh && "
             "ln -s app.py src/link.py && printf '\\x00\\x01binary' > src/blob.bin")
    h.server.push({"run": steps}, {"say": report(files=["src/"])})
    task = delegate(h)
    h.wait(task["taskId"])
    out = h.ok("accept", task["taskId"])
    assert out["action"] == "done", out
    src = h.repo / "src"
    assert (src / "added.py").read_text() == "added\n" and not (src / "gone.py").exists()
    assert (src / "renamed.py").read_text() == "old\n" and not (src / "old.py").exists()
    assert os.stat(src / "tool.sh").st_mode & stat.S_IXUSR
    assert os.readlink(src / "link.py") == "app.py" and (src / "blob.bin").read_bytes() == b"\x00\x01binary"


def test_an_out_of_bounds_write_in_a_worktree_is_caught_as_in_place(harness):
    h = harness
    h.server.push({"run": "printf 'x = 2\\n' > src/app.py && echo hacked >> README.md"}, {"say": report()},
                  {"say": report()})
    task = delegate(h)
    h.wait(task["taskId"])
    out = h.ok("accept", task["taskId"])
    assert out["action"] == "rework" and out["outOfBounds"] == ["README.md"]
    assert (h.repo / "README.md").read_text() == "demo\n"                      # nothing reached the person
    h.wait(task["taskId"])


def test_cancel_and_a_killed_worker_leave_no_worktree_behind(harness):
    h = harness
    h.server.push({"hang": True}, {"hang": True})
    first = delegate(h, "cancel me")
    deadline = time.monotonic() + 20
    while not h.task(first["taskId"]).child_process and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(worktrees(h)) == 2
    assert h.ok("cancel", first["taskId"])["status"] == "blocked"
    assert len(worktrees(h)) == 1 and not list((h.repo / ".git/codex-mcp/worktrees").glob("w*.task"))
    second = delegate(h, "kill my worker")
    while not h.task(second["taskId"]).child_process and time.monotonic() < deadline + 20:
        time.sleep(0.1)
    os.kill(int(h.task(second["taskId"]).worker.split("@")[0]), signal.SIGKILL)
    assert h.ok("check", second["taskId"])["status"] == "blocked"
    assert len(worktrees(h)) == 2                      # check only looks; the next command that writes ...
    assert h.ok("retry", second["taskId"])["status"] == "todo"
    assert len(worktrees(h)) == 1, "a dead worker's worktree was left behind"


def test_a_repository_under_tmp_is_not_writable_from_the_task(harness):
    h = harness
    assert str(h.repo).startswith("/tmp/")
    target = h.repo / "README.md"
    h.server.push({"run": f"echo pwned > {target}; echo pwned > {h.repo}/src/app.py; printf 'x = 2\\n' > src/app.py"},
                  {"say": report()})
    task = delegate(h)
    h.wait(task["taskId"])
    assert target.read_text() == "demo\n" and (h.repo / "src/app.py").read_text() == "x = 1\n"
    assert "Read-only file system" in (h.repo / ".git/codex-mcp/runs" / f"{task['taskId']}.jsonl").read_text()


def test_a_worktree_is_reused_and_moved_to_the_next_base(harness):
    h = harness
    h.server.push({"run": "echo one > src/one.py"}, {"say": report()}, {"run": "ls src > src/listing.txt"},
                  {"say": report()})
    first = delegate(h, "one")
    h.wait(first["taskId"])
    path = h.task(first["taskId"]).workspace
    assert h.ok("accept", first["taskId"])["action"] == "done"
    second = delegate(h, "two")
    h.wait(second["taskId"])
    assert h.task(second["taskId"]).workspace == path                       # the same worktree, moved
    assert "one.py" in (h.repo / path / "src/listing.txt").read_text()     # at the new base
    snapshots = h.repo / ".git/codex-mcp/snapshots"
    assert [p.name for p in snapshots.glob("*.snap")] == [f"worktree-{Path(path).name}.snap"]   # kept, one
    out = h.ok("accept", second["taskId"])
    assert out["action"] == "done" and out["changedFiles"] == ["added src/listing.txt"], out  # not the move


def test_setup_runs_in_each_new_worktree_and_a_failing_one_blocks(harness):
    h = harness
    (h.repo / ".codex-mcp.json").write_text(json.dumps({"worktreeSetup": "echo setting up && touch .setup-ran"}))
    (h.repo / ".gitignore").write_text(".env\n.setup-ran\nnode_modules/\n")
    (h.repo / "node_modules").mkdir()
    (h.repo / "node_modules" / "dep.js").write_text("dep\n")
    git(h.repo, "add", ".")
    git(h.repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "settings")
    h.server.push({"run": "cat node_modules/dep.js && echo x >> node_modules/dep.js; ls -a"}, {"say": report()})
    task = delegate(h)
    assert h.wait(task["taskId"])["status"] == "review"
    record = h.task(task["taskId"])
    assert "setting up" in record.setup_log and (h.repo / record.workspace / ".setup-ran").exists()
    assert (h.repo / "node_modules/dep.js").read_text() == "dep\n", "Codex wrote through to the person's copy"
    (h.repo / ".codex-mcp.json").write_text(json.dumps({"worktreeSetup": "echo broken >&2; exit 3"}))
    git(h.repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "broken setup")
    failed = delegate(h, "second")
    out = h.wait(failed["taskId"])
    assert out["status"] == "blocked" and "setup command failed: broken" in out["reason"]
    assert "exit status 3" in h.task(failed["taskId"]).setup_log


def test_accept_into_a_branch_leaves_the_working_tree_alone(harness):
    h = harness
    h.server.push({"run": "printf 'x = 2\\n' > src/app.py"}, {"say": report()})
    task = delegate(h)
    h.wait(task["taskId"])
    before = person_state(h.repo)[:2]
    out = h.ok("accept", task["taskId"], "--branch")
    assert out["action"] == "done" and out["branch"] == f"codex-mcp/{task['taskId']}"
    assert (h.repo / "src/app.py").read_text() == "x = 1\n"
    assert git(h.repo, "show", f"codex-mcp/{task['taskId']}:src/app.py") == "x = 2\n"
    assert person_state(h.repo)[1] == before[1]


def test_a_plain_folder_refuses_worktree_isolation(tmp_path, codex_bin):
    from conftest import run_cli
    status, out = run_cli("delegate", "--goal", "g", "--paths", "src/", "--isolation", "worktree", cwd=tmp_path)
    assert status == 2 and "needs a git repository" in out["error"]["message"]
    assert not (tmp_path / "agents" / "tasks").exists() or not list((tmp_path / "agents" / "tasks").glob("T-*.md"))
    # a hand-written todo task that asks for a worktree is refused the same way, and stays todo
    record = tmp_path / "agents" / "tasks" / "T-001.md"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(cm.MINIMAL_RECORD["task"].format(id="T-001"))
    status, out = run_cli("start", "T-001", "--isolation", "worktree", cwd=tmp_path, codex=codex_bin)
    assert status == 2 and "needs a git repository" in out["error"]["message"]
    assert "Status: todo" in record.read_text() and "worktree" not in record.read_text()


def test_only_the_reviewed_changes_land_not_what_setup_changed(harness):
    h = harness
    # like `npm install` rewriting a tracked lock file in the new worktree: the environment's, not the task's
    (h.repo / ".codex-mcp.json").write_text(json.dumps({"worktreeSetup": "echo setup-version > README.md"}))
    git(h.repo, "add", ".")
    git(h.repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "settings")
    h.server.push({"run": "printf 'x = 2\\n' > src/app.py"}, {"say": report(files=["src/app.py"])})
    task = delegate(h)
    assert h.wait(task["taskId"])["status"] == "review"
    out = h.ok("accept", task["taskId"])
    assert out["action"] == "done" and out["changedFiles"] == ["modified src/app.py"], out
    assert "applied to your working tree (1 paths)" in out["reason"]
    assert (h.repo / "README.md").read_text() == "demo\n"
    assert (h.repo / "src/app.py").read_text() == "x = 2\n"


def test_a_worktree_task_cannot_rewrite_a_record_through_the_landing(harness):
    h = harness
    h.ok("delegate", "--goal", "other task", "--paths", "docs/", "--verify", "exit 1", "--codex-cmd",
         fake_codex(h.tmp_path / "bin"))
    assert h.wait("T-001")["status"] == "blocked"
    before = h.record("T-001")
    forge = ("sed -i -e 's/^- Status: blocked$/- Status: review/' -e 's/^exit 1$/true/' -e 's|^- `docs/`$|- `.`|' "
             "agents/tasks/T-001.md && printf 'x = 2\\n' > src/app.py")
    h.server.push({"run": forge}, {"say": report(files=["src/app.py"])})
    delegate(h)
    assert h.wait("T-002")["status"] == "review"
    out = h.ok("accept", "T-002")
    assert out["action"] == "done" and "(1 paths)" in out["reason"], out
    assert h.record("T-001") == before
    status, refused = h.cli("accept", "T-001")
    assert status == 1 and refused["error"]["code"] == "refused_transition"


def test_four_worktree_tasks_started_together_each_get_a_worktree_of_their_own(harness):
    """Started as parallel tool calls are: a claim made a moment before its worktree exists is not
    taken for an abandoned one by the next task's clean-up (two tasks in one worktree, and the
    first accept removing the second's work, until this held)."""
    from concurrent.futures import ThreadPoolExecutor
    h = harness
    for n in range(4):
        h.server.route(f"together {n}", {"run": f"echo {n} > src/t{n}.py", "delay": 1.0},
                       {"say": report(files=[f"src/t{n}.py"])})
    with ThreadPoolExecutor(4) as pool:
        ids = [out["taskId"] for out in pool.map(lambda n: delegate(h, f"together {n}"), range(4))]
    for task_id in ids:
        assert h.wait(task_id)["status"] == "review"
    places = [h.task(task_id).workspace for task_id in ids]
    assert len(set(places)) == 4, places
    for task_id in ids:
        out = h.ok("accept", task_id)
        assert out["action"] == "done", out
    assert sorted(p.name for p in (h.repo / "src").glob("t*.py")) == [f"t{n}.py" for n in range(4)]


def test_a_claim_stands_while_its_worker_lives_and_a_release_frees_only_its_own(repo):
    store = cm.Store(repo)
    me = cm.process_identity(os.getpid())
    first, second = (store.create(cm.new_task("", goal, ["src/"], isolation="worktree")) for goal in "ab")
    for task in (first, second):
        with store.update(task.id) as record:
            record.worker = me                       # their workers run (this process stands in)
    claimed = cm.claim_worktree(store, first.id)     # not made yet: its worker is about to
    cm.prune_worktrees(store)
    assert (claimed.parent / f"{claimed.name}.task").read_text() == first.id
    assert cm.claim_worktree(store, second.id) != claimed
    # A claim another task holds now (the first's was released and taken since) stays theirs.
    (claimed.parent / f"{claimed.name}.task").write_text(second.id)
    cm.Worktree.release(store, first.id)
    assert (claimed.parent / f"{claimed.name}.task").read_text() == second.id
