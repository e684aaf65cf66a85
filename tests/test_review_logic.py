"""Review logic without Codex: report parsing, boundaries, snapshots of real folders, verdicts."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import codex_mcp as cm
from conftest import git, make_repo


@pytest.mark.parametrize("message", [
    "## Summary\nDid it.\n\n## Tests\n3 passed\n\n## Files Changed\n- src/a.py\n",
    "**Summary:** Did it.\n\n**Tests:** 3 passed\n\n**Files Changed:**\n- src/a.py\n",
    "Summary: Did it.\nTests: 3 passed\nFiles Changed:\n- src/a.py\n",
    "1. Summary\nDid it.\n2. Tests\n3 passed\n3. Files Changed\n- src/a.py\n",
    "### 1. Summary\nDid it.\n### 2) Tests\n3 passed\n### 3. Files changed\n`src/a.py`\n",
    "## 摘要\nDid it.\n## 测试\n3 passed\n## 修改文件\n- src/a.py\n",
    "## 总结\nDid it.\n## 测试结果\n3 passed\n## 文件变更\n- src/a.py\n",
    "**Summary**\nDid it.\n\n**Testing**\n3 passed\n\n**Changed files**\n- src/a.py\n",
])
def test_report_sections_in_the_usual_spellings(message):
    report = cm.parse_report(message)
    assert cm.missing_sections(report) == []
    assert report["Summary"] == "Did it." and report["Tests"] == "3 passed"
    assert cm.declared_files(report["Files Changed"], Path("/repo")) == ["src/a.py"]


def test_empty_or_absent_sections_are_missing():
    assert cm.missing_sections(cm.parse_report("## Summary\nok\n## Tests\n\n## Files Changed\n- a\n")) == ["Tests"]
    assert cm.missing_sections(cm.parse_report("Done! Tests pass.")) == ["Summary", "Tests", "Files Changed"]


@pytest.mark.parametrize("tests", ["none", "None: nothing to run", "n/a", "No tests were run (docs only)", "无"])
def test_a_tests_section_saying_none_is_present_and_says_no_tests_ran(tests):
    report = cm.parse_report(f"## Summary\nok\n## Tests\n{tests}\n## Files Changed\nNone\n")
    assert cm.missing_sections(report) == []
    assert cm.tests_run(report) is False
    assert cm.tests_run(cm.parse_report("## Tests\npytest: 3 passed")) is True


def test_headings_inside_code_blocks_do_not_count():
    message = "## Summary\nok\n```\n## Tests\nfake\n```\n## Files Changed\n- a.py\n"
    assert cm.missing_sections(cm.parse_report(message)) == ["Tests"]


def test_declared_files_tolerates_notes_status_letters_renames_and_spaces():
    text = ("- `src/a.py` (new)\n- M src/b.py\n- src/c.py - refactored\n* src/old.py -> src/new.py\n"
            "- /repo/src/d.py\n- ./src/e.py: fixed\n- docs/my notes.md\n"
            "- SANDBOX DENIED: could not write ~/.npmrc\n")
    assert cm.declared_files(text, Path("/repo")) == ["src/a.py", "src/b.py", "src/c.py", "src/old.py",
                                                      "src/new.py", "src/d.py", "src/e.py", "docs/my notes.md"]


@pytest.mark.parametrize("path, allowed, inside", [
    ("src/auth/x.py", ["src/auth/"], True),
    ("src/auth", ["src/auth/"], True),
    ("src/auth_evil/x.py", ["src/auth/"], False),
    ("src/authx", ["src/auth"], False),
    ("src/types/auth.ts", ["src/types/auth.ts"], True),
    ("src/types/auth.ts.bak", ["src/types/auth.ts"], False),
    ("README.md", ["src/"], False),
    ("anything/at/all", ["."], True),
    ("agents/tasks/T-001.md", ["."], False),
    ("./src/auth/x.py", ["src/auth"], True),
])
def test_boundary_is_component_by_component(path, allowed, inside):
    assert cm.inside_boundary(path, allowed) is inside


def test_symlinks_leaving_the_boundary_are_outside():
    changes = [{"path": "src/ok", "change": "added", "link": "x.py"},
               {"path": "src/up", "change": "added", "link": "../secret.txt"},
               {"path": "src/abs", "change": "added", "link": "/etc/passwd"},
               {"path": "src/far", "change": "added", "link": "../../../outside"}]
    assert cm.out_of_bounds(changes, ["src/"]) == ["src/abs", "src/far", "src/up"]


@pytest.mark.parametrize("raw", ["/etc", "C:/x", "src/../../x", "..", "", "  ", ".git/hooks", "agents/tasks",
                                 "agents/tasks/T-001.md", "agents", "a\nb", 5, "src/**", "src/*.py", "a?b", "[ab]/x"])
def test_bad_allowed_paths_are_refused(tmp_path, raw):
    with pytest.raises(cm.BadInput):
        cm.validate_allowed_path(raw, tmp_path)


def test_glob_characters_are_refused_with_a_clear_error(tmp_path):
    with pytest.raises(cm.BadInput, match="glob characters.*`src/` admits everything under src/"):
        cm.validate_allowed_path("src/**", tmp_path)


def test_allowed_path_through_a_symlink_out_of_the_repo_is_refused(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "out").symlink_to(tmp_path)
    with pytest.raises(cm.BadInput, match="outside the repo"):
        cm.validate_allowed_path("out/x", repo)
    assert cm.validate_allowed_paths("src/, lib/x.py ,src/", repo) == ["src/", "lib/x.py"]
    assert cm.validate_allowed_path("./", repo) == "."


# -- snapshots of real folders -------------------------------------------------------------------------

def workspace(repo: Path) -> "cm.Workspace":
    ws = cm.InPlace(cm.Store(repo))
    assert ws.changes() == {}                     # the first call takes the snapshot
    return ws


def changes_between(repo: Path, mutate, fast: bool = True) -> list:
    ws = workspace(repo)
    mutate(repo)
    changes = run_changes(ws, fast)
    cm.add_changes(ws.store, "T-001", changes, lambda rel, after: "codex")
    return cm.task_changes(ws.store, "T-001")


def run_changes(ws: "cm.Workspace", fast: bool) -> dict:
    snapshot = cm.Snapshot(ws.root, ws.snapshot_folder(), ws.name)
    if not fast:
        snapshot.fast = lambda: False             # every entry compared: what find must agree with
    assert snapshot.load()
    assert (snapshot.finder is not None) == fast
    return cm.update_snapshot(snapshot)


def by_path(changes: list) -> dict:
    return {c["path"]: c for c in changes}


@pytest.mark.parametrize("kind", ["git", "plain"])
@pytest.mark.parametrize("fast", [True, False], ids=["find", "full"])
def test_snapshot_sees_every_kind_of_change(tmp_path, kind, fast):
    repo = make_repo(tmp_path / "r") if kind == "git" else tmp_path / "r"
    if kind == "plain":
        (repo / "src").mkdir(parents=True)
        (repo / "src" / "app.py").write_text("x = 1\n")
        (repo / "README.md").write_text("demo\n")
    (repo / "src" / "old.py").write_text("old content\n")
    (repo / "src" / "tool.sh").write_text("echo\n")
    (repo / "gone.txt").write_text("bye\n")
    (repo / "olddir" / "inner").mkdir(parents=True)
    (repo / "olddir" / "inner" / "f.txt").write_text("f\n")
    (repo / "emptydir").mkdir()

    def mutate(r: Path) -> None:
        (r / "src" / "app.py").write_text("x = 2\n")
        (r / "src" / "new.py").write_text("new\n")
        (r / "src" / "old.py").rename(r / "src" / "moved.py")
        (r / "src" / "tool.sh").chmod(0o755)
        (r / "gone.txt").unlink()
        (r / ".env").write_text("SECRET=1\n")
        (r / "src" / "link").symlink_to("../README.md")
        os.utime(r / "README.md")           # touched, same content: not a change
        import shutil
        shutil.rmtree(r / "olddir")
        (r / "emptydir").rmdir()
        (r / "newdir").mkdir()
    changes = by_path(changes_between(repo, mutate, fast))
    assert changes["src/app.py"]["change"] == "modified"
    assert changes["src/new.py"]["change"] == "added"
    assert changes["src/moved.py"] == {"path": "src/moved.py", "change": "renamed", "from": "src/old.py", "who": "codex"}
    assert changes["src/tool.sh"]["change"] == "mode"
    assert changes["gone.txt"]["change"] == "deleted"
    assert changes[".env"]["change"] == "added"
    assert changes["src/link"]["link"] == "../README.md"
    assert changes["olddir/inner/f.txt"]["change"] == "deleted"
    assert changes["emptydir"] == {"path": "emptydir", "change": "deleted", "who": "codex", "dir": True}
    assert changes["newdir"]["change"] == "added" and changes["newdir"]["dir"]
    assert "olddir" not in changes                       # listed through what was in it
    assert "README.md" not in changes and "src/old.py" not in changes
    outside = cm.out_of_bounds(list(changes.values()), ["src/"])
    assert outside == [".env", "emptydir", "gone.txt", "newdir", "olddir/inner/f.txt", "src/link"]


@pytest.mark.parametrize("fast", [True, False], ids=["find", "full"])
def test_a_content_edit_with_size_and_mtime_put_back_is_a_change(repo, fast):
    path = repo / "src" / "app.py"
    info = path.stat()

    def forge(r: Path) -> None:
        path.write_text("y = 1\n")                       # same size as "x = 1\n"
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (info.st_size, info.st_mtime_ns)
    assert by_path(changes_between(repo, forge, fast))["src/app.py"]["change"] == "modified"


@pytest.mark.parametrize("fast", [True, False], ids=["find", "full"])
def test_every_mode_bit_counts_for_files_and_folders(repo, fast):
    (repo / "tools").mkdir()
    (repo / "tools" / "run").write_text("#!/bin/sh\n")

    def chmod(r: Path) -> None:
        os.chmod(r / "src" / "app.py", 0o4644)         # setuid
        os.chmod(r / "tools" / "run", 0o2644)          # setgid
        os.chmod(r / "tools", 0o1755)                  # sticky, on a folder
    changes = by_path(changes_between(repo, chmod, fast))
    assert {path: c["change"] for path, c in changes.items()} == \
        {"src/app.py": "mode", "tools/run": "mode", "tools": "mode"}


@pytest.mark.parametrize("fast", [True, False], ids=["find", "full"])
def test_nested_git_folders_are_ordinary_paths(repo, fast):
    nested = repo / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(nested, "init", "-q")

    def plant(r: Path) -> None:
        with open(nested / ".git" / "config", "a") as config:
            config.write("[core]\n\tfsmonitor = touch /tmp/codex-mcp-pwned\n")
        (r / "sub").mkdir()
        (r / "sub" / ".git").write_text("gitdir: /elsewhere\n")
    changes = by_path(changes_between(repo, plant, fast))
    assert changes["vendor/lib/.git/config"]["change"] == "modified"
    assert changes["sub/.git"]["change"] == "added"
    assert cm.out_of_bounds(list(changes.values()), ["src/"]) == ["sub/.git", "vendor/lib/.git/config"]


def test_a_reverted_file_is_no_longer_a_change(repo):
    ws = workspace(repo)
    original = (repo / "README.md").read_text()
    (repo / "README.md").write_text("changed\n")
    (repo / "stray.txt").write_text("x")
    cm.add_changes(ws.store, "T-001", ws.changes(), lambda rel, after: "codex")
    assert {c["path"] for c in cm.task_changes(ws.store, "T-001")} == {"README.md", "stray.txt"}
    (repo / "README.md").write_text(original)           # a rework puts it back
    (repo / "stray.txt").unlink()
    cm.add_changes(ws.store, "T-001", ws.changes(), lambda rel, after: "codex")
    assert cm.task_changes(ws.store, "T-001") == []


def test_snapshots_leave_out_the_repositorys_own_git_but_see_the_records(repo):
    ws = workspace(repo)
    (repo / "agents" / "tasks").mkdir(parents=True)
    (repo / "agents" / "tasks" / "T-001.md").write_text("x")
    git(repo, "tag", "v1")
    changes = ws.changes()
    assert set(changes) == {"agents", "agents/tasks", "agents/tasks/T-001.md"}
    assert all(cm.tool_path(cm.path_parts(rel)) for rel in changes)
    (repo / "agents" / "README.md").write_text("agents are people too")
    assert set(ws.changes()) == {"agents/README.md"}
    assert not cm.tool_path(cm.path_parts("agents/README.md"))


def test_tracked_files_take_gits_blob_ids_and_modified_ones_are_hashed(repo):
    (repo / "README.md").write_text("edited, not committed\n")
    (repo / "notes.txt").write_text("untracked\n")
    ws = workspace(repo)
    snapshot = cm.Snapshot(ws.root, ws.snapshot_folder(), ws.name)
    assert snapshot.load()
    snapshot.drop_finder()
    def git_hash(path: Path) -> str:
        return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True).stdout.strip()
    for name in ("src/app.py", "README.md", "notes.txt"):
        assert snapshot.entry(name.encode())[cm.CID] == git_hash(repo / name), name
    kept = ws.store.state_dir / "objects"
    assert (kept / git_hash(repo / "README.md")[:2] / git_hash(repo / "README.md")).read_text() == \
        "edited, not committed\n"


def test_ignored_files_are_not_hashed_but_a_new_one_is_seen(repo):
    (repo / ".gitignore").write_text(".env\nbig/\n")
    (repo / "big").mkdir()
    for n in range(50):
        (repo / "big" / f"blob{n}.bin").write_bytes(os.urandom(1000))
    ws = workspace(repo)
    snapshot = cm.Snapshot(ws.root, ws.snapshot_folder(), ws.name)
    assert snapshot.load()
    snapshot.drop_finder()
    assert snapshot.entry(b"big/blob7.bin")[cm.CID] == "-"          # compared by inode and ctime
    (repo / ".env").write_text("KEY=1\n")
    assert set(ws.changes()) == {".env"}


def test_permission_denial_is_found_in_codex_words():
    assert cm.permission_denial("## Summary\nSANDBOX DENIED: writing ~/.npmrc was refused") == \
        "SANDBOX DENIED: writing ~/.npmrc was refused"
    assert "approval policy" in cm.permission_denial("I could not install deps: the approval policy denied it.")
    assert cm.permission_denial("## Summary\nAdded a sandbox helper module.\n## Tests\nok") == ""


FACTS = cm.ReviewFacts
FAILED_VERIFY = {"command": "pytest -q", "passed": False, "exitStatus": 1, "outputTail": "", "sandboxed": True}


@pytest.mark.parametrize("facts, action", [
    (FACTS(), "done"),
    (FACTS(denial="SANDBOX DENIED: x", missing=["Tests"]), "blocked"),
    (FACTS(missing=["Tests"]), "complete"),
    (FACTS(missing=["Tests"], completion_tried=True), "blocked"),
    (FACTS(by_codex=["x"]), "rework"),
    (FACTS(by_codex=["x"], rework_count=3), "blocked"),
    (FACTS(declared=["x"]), "boundary_confirmation"),
    (FACTS(uncertain=["x"]), "boundary_confirmation"),
    (FACTS(by_verify=["x"]), "boundary_confirmation"),
    (FACTS(declared=["x"], by_codex=["y"]), "rework"),
    (FACTS(records=["agents/tasks/T-002.md was changed"], records_by_codex=True), "rework"),
    (FACTS(records=["agents/tasks/T-002.md was changed"]), "done"),
    (FACTS(verify=FAILED_VERIFY), "rework"),
    (FACTS(verify=FAILED_VERIFY, uncertain=["x"]), "rework"),
    (FACTS(verify=FAILED_VERIFY, rework_count=3), "blocked"),
    (FACTS(verify={"command": "x", "passed": False, "unavailable": "no codex"}), "blocked"),
])
def test_verdicts(facts, action):
    verdict = cm.decide(facts)
    assert verdict.action == action
    if action == "rework":
        assert verdict.items and "rework 1 of 3" in verdict.reason
    if facts.uncertain and action == "rework":
        assert not any("Revert" in item for item in verdict.items)     # never charged to Codex


def test_a_failing_verify_is_named_beside_a_boundary_problem():
    verdict = cm.decide(FACTS(by_codex=["README.md"], verify=FAILED_VERIFY, revert="sh /x/revert.sh"))
    assert verdict.action == "rework"
    assert "undeclared changes outside the allowed paths and the verify command exited 1 with no output" \
        in verdict.reason
    assert verdict.items[0].startswith("Revert these paths") and "Run: sh /x/revert.sh" in verdict.items[0]
    assert verdict.items[1] == "The verify command `pytest -q` exited 1 with no output. Make it pass."


@pytest.mark.parametrize("verify, words", [
    ({"exitStatus": 1, "outputTail": ""}, "exited 1 with no output"),
    ({"exitStatus": 2, "outputTail": "boom"}, "exited 2"),
    ({"exitStatus": None, "timedOut": True, "seconds": 900}, "timed out after 900 s"),
    ({"exitStatus": 143, "signal": "SIGTERM", "outputTail": ""}, "was killed by signal SIGTERM"),
])
def test_verify_results_in_words(verify, words):
    assert cm.verify_words(verify) == words


@pytest.mark.parametrize("path, ignored, judged", [
    (".pytest_cache/v/cache/lastfailed", True, False),
    ("src/__pycache__/app.cpython-311.pyc", True, False),
    ("coverage/lcov-report/index.html", True, False),
    ("target/debug/build/x/output", True, False),
    ("node_modules/.cache/babel/x.json", True, False),
    (".coverage", True, False),
    ("pkg.egg-info/PKG-INFO", True, False),
    (".env", True, True),                      # a secret, ignored or not
    ("target/.env", True, True),
    ("config/prod.key", True, True),
    (".venv/lib/python3.11/site-packages/six.py", True, True),   # dependencies are judged
    ("node_modules/lodash/index.js", True, True),
    ("Cargo.lock", True, False),               # a library that ignores its lock file: cargo writes it
    ("Cargo.lock", False, True),
    ("coverage/report.html", False, True),     # not ignored: the project would commit it
    ("README.md", False, True),
])
def test_which_ignored_output_review_leaves_unjudged(path, ignored, judged):
    assert cm.unjudged(path, ignored) is not judged


def test_hundreds_of_paths_under_one_folder_read_as_one_line():
    paths = [f"build/gen/f{n}.js" for n in range(300)] + ["README.md", "src/app.py"]
    assert cm.group_paths(paths) == ["README.md", "build/gen/ (300 files)", "src/app.py"]
    assert cm.group_paths(["a", "b"]) == ["a", "b"]
    many = [f"d{n}/f{m}.txt" for n in range(40) for m in range(3)]
    grouped = cm.group_paths(many)
    assert len(grouped) == cm.PATH_LINES and grouped[-1].startswith("… and 29 more")
    assert sum(int(g.rsplit("(", 1)[1].split()[0]) for g in grouped) == 120


@pytest.mark.parametrize("command, path, named", [
    ("/bin/bash -lc 'echo hacked >> README.md'", "README.md", True),
    ("/bin/bash -lc \"printf 'x' > src/app.py\"", "src/app.py", True),
    ("/bin/bash -lc 'cd src && echo > app.py'", "src/app.py", True),        # by its last part
    ("/bin/bash -lc 'rm -rf build/*'", "build/out/a.js", True),            # a folder above it
    ("/bin/bash -lc 'echo x > /tmp/r/README.md'", "README.md", True),       # absolute
    ("/bin/bash -lc 'python tools/gen.py'", "README.md", False),
    ("/bin/bash -lc 'cat .'", "README.md", False),
])
def test_what_a_command_names(command, path, named):
    assert cm.names_path(command, path) is named


def test_attribution_needs_the_command_to_run_when_the_path_changed():
    entry = ("f", 0o644, 3, 0, int(100.0 * 1e9), 1, "-")        # changed at t=100 s
    read_only = [(10.0, 11.0, "cat README.md", False)]          # Codex read it long before
    assert not cm.attributed("README.md", entry, read_only)
    writing = [(99.5, 100.2, "echo x >> README.md", False)]
    assert cm.attributed("README.md", entry, writing)
    assert cm.attributed("README.md", entry, [(1.0, 2.0, "README.md", True)])   # a file change names it
    assert cm.attributed("README.md", None, [(10.0, 11.0, "rm -f README.md", False)])   # a deletion: no date
    assert not cm.attributed("README.md", None, read_only)      # reading it cannot have removed it
    assert not cm.attributed("README.md", entry, [(99.5, 100.2, "grep -n x README.md", False)])   # read meanwhile
    assert not cm.attributed("README.md", entry, [])


def test_revert_commands_put_back_what_was_there(tmp_path):
    objects = tmp_path / "objects"
    (objects / "ab").mkdir(parents=True)
    (objects / "ab" / ("ab" * 20)).write_text("original\n")
    touched = {
        "README.md": [["f", 0o644, 9, 0, 0, 1, "ab" * 20], ["f", 0o644, 7, 0, 0, 1, "cd" * 20], "codex"],
        "new/evil.sh": [None, ["f", 0o755, 3, 0, 0, 2, "ef" * 20], "codex"],
        "tool": [["f", 0o755, 3, 0, 0, 3, "12" * 20], ["f", 0o4755, 3, 0, 0, 3, "12" * 20], "codex"],
        ".env": [["f", 0o600, 3, 0, 0, 4, "-"], ["f", 0o600, 5, 0, 0, 4, "-"], "codex"],
    }
    items = cm.change_items(touched)
    lines, lost = cm.revert_commands(items, touched, objects, git=True)
    assert lost == [".env"]
    assert f"cp -- {objects / 'ab' / ('ab' * 20)} README.md" in lines
    assert "rm -- new/evil.sh" in lines and "chmod 755 -- tool" in lines
    assert lines.index("rm -- new/evil.sh") < lines.index(f"cp -- {objects / 'ab' / ('ab' * 20)} README.md")


def test_a_revert_script_never_runs_shell_syntax_in_a_file_name(tmp_path):
    """The revert scripts are run by people, outside the sandbox: names Codex chose are data."""
    import subprocess
    root, objects = tmp_path / "ws", tmp_path / "objects"
    names = ["$(touch pwned1)", "a;touch pwned2", "`touch pwned3`", "-rf", "new\nline", "sp ace/'q\"uote"]
    touched = {}
    for number, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("Codex's\n")
        cid = f"{number:02d}" * 20
        (objects / cid[:2]).mkdir(parents=True, exist_ok=True)
        (objects / cid[:2] / cid).write_text("before\n")
        touched[name] = [["f", 0o644, 7, 0, 0, number, cid], ["f", 0o644, 8, 0, 0, number, "ff" * 20], "codex"]
    touched["$(touch pwned4)"] = [None, ["f", 0o644, 8, 0, 0, 9, "ee" * 20], "codex"]
    (root / "$(touch pwned4)").write_text("added by Codex\n")
    lines, lost = cm.revert_commands(cm.change_items(touched), touched, objects, git=False)
    assert lost == []
    script = tmp_path / "revert.sh"
    script.write_text("set -e\n" + "\n".join(lines) + "\n")
    subprocess.run(["sh", str(script)], cwd=root, check=True)
    assert [(root / name).read_text() for name in names] == ["before\n"] * len(names)
    assert not (root / "$(touch pwned4)").exists()
    assert not list(tmp_path.rglob("pwned*")), "a file name ran as a command"


def test_files_changed_mismatch_both_ways():
    changes = [{"path": "src/a.py", "change": "modified"}, {"path": "src/b.py", "change": "added"}]
    assert cm.files_changed_mismatch(["src/a.py", "src/c.py"], changes) == {
        "reportedButUnchanged": ["src/c.py"], "changedButUnreported": ["src/b.py"]}
    assert cm.files_changed_mismatch(["src/"], changes) == {}


def test_event_digest_tolerates_unknown_and_garbage():
    digest = cm.EventDigest()
    for line in [b'{"type":"thread.started","thread_id":"abc"}', b"not json at all", b"",
                 b'{"type":"item.completed","item":{"type":"file_change","changes":[{"path":"a.py","kind":"add"}]}}',
                 b'{"type":"brand.new.event","weird":[1,2]}', b'[1,2,3]',
                 b'{"type":"item.completed","item":{"type":"command_execution","command":"ls","exit_code":0}}',
                 b'{"type":"item.completed","item":{"type":"agent_message","text":"## Summary\\nok"}}',
                 b'{"type":"turn.completed","usage":{"input_tokens":7,"output_tokens":3,"cached_input_tokens":99}}']:
        digest.feed_line(line)
    assert digest.thread_id == "abc" and digest.completed and not digest.failure
    assert digest.tokens == 10 and digest.command_count == 1 and digest.final_message == "## Summary\nok"
    assert digest.file_changes == ["add: a.py"] and digest.diagnostics == ["not json at all"]
    assert digest.last_event == "turn.completed"


def test_reconnects_are_not_progress_and_not_failures():
    digest = cm.EventDigest()
    digest.feed({"type": "thread.started", "thread_id": "t"})
    seen = digest.progress_at
    time.sleep(0.02)
    digest.feed({"type": "error", "message": "Reconnecting... 1/5 (stream disconnected before completion)"})
    assert digest.progress_at == seen and digest.reconnects == 1 and not digest.errors
    digest.feed({"type": "item.completed", "item": {"type": "agent_message", "text": "## Summary\nok"}})
    digest.feed({"type": "turn.completed", "usage": {}})
    assert digest.progress_at > seen
    assert cm.run_verdict(cm.RunOutcome(digest, 0, "", ""), "codex") == ("review", "Codex finished its turn")


@pytest.mark.parametrize("failure, reconnects, stopped, words", [
    ("stream disconnected before completion: stream closed", 2, "", "the network or the model service failed"),
    ("exceeded retry limit, last status: 429 Too Many Requests", 0, "", "the network or the model service failed"),
    ("We’re currently experiencing high demand, which may cause temporary errors.", 5, "", "network or the model"),
    ("unexpected status 401 Unauthorized: bad key", 0, "", "could not log in to the model service"),
    ("", 3, "idle timeout: no progress from Codex for 5 s (the task's Idle Timeout)", "the network or the model "
     "service is down"),
    ("The model refused", 0, "", "Codex reported: The model refused"),
])
def test_run_failures_say_whose_fault_they_are(failure, reconnects, stopped, words):
    digest = cm.EventDigest()
    digest.failure, digest.reconnects = failure, reconnects
    digest.last_reconnect = "Reconnecting... waiting for network"
    status, reason = cm.run_verdict(cm.RunOutcome(digest, 1 if failure else None, stopped, ""), "codex")
    assert status == "blocked" and words in reason
    if "network" in words:
        assert "`retry-task`, then `start-task`, runs it again" in reason
    assert reason.count(failure or "idle timeout") == 1          # a reason never repeats itself


def test_codex_command_line_new_and_resume():
    task = cm.new_task("T-001", "goal", ["src/"], model="gpt-5", reasoning="high")
    argv = cm.build_codex_command(["codex", "--flag"], task, Path("/r"), Path("/t/scratch"))
    assert argv[:9] == ["codex", "--flag", "exec", "--json", "--skip-git-repo-check", "-s", "workspace-write",
                        "-C", "/r"]
    assert argv[-1] == "-" and "-m" in argv and 'model_reasoning_effort="high"' in argv
    resume = cm.build_codex_command(["codex"], task, Path("/r"), Path("/t/scratch"), resume="th-1")
    assert resume[:4] == ["codex", "exec", "resume", "th-1"]
    assert 'sandbox_mode="workspace-write"' in resume and "-s" not in resume and "-C" not in resume
    read_only = cm.build_codex_command(["codex"], task, Path("/r"), Path("/t/scratch"), resume="th-1",
                                       sandbox="read-only")
    assert 'sandbox_mode="read-only"' in read_only
    for line in (argv, resume, read_only):     # /tmp and $TMPDIR closed in every run; one folder of its own
        assert {"sandbox_workspace_write.exclude_slash_tmp=true", "sandbox_workspace_write.exclude_tmpdir_env_var=true",
                'sandbox_workspace_write.writable_roots=["/t/scratch"]'} <= set(line)
    instructions = next(a for a in argv if a.startswith("developer_instructions="))
    assert "- src/" in instructions.encode().decode("unicode_escape")


def test_events_split_across_reads_are_reassembled(tmp_path):
    """Codex writes its log as we read it: a line may arrive in pieces, or a read may hold no newline."""
    import subprocess
    import sys
    events = [{"type": "thread.started", "thread_id": "t"},
              {"type": "item.completed", "item": {"type": "agent_message", "text": "x" * 3_000_000}},
              {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 2}}]
    source = tmp_path / "events.json"
    source.write_text(json.dumps(events))
    writer = ("import json, sys, time\n"
              "for e in json.load(open(sys.argv[1])):\n"
              "    line = json.dumps(e) + '\\n'\n"
              "    for i in range(0, len(line), 700_001):\n"
              "        sys.stdout.write(line[i:i + 700_001]); sys.stdout.flush(); time.sleep(0.06)\n")
    log = tmp_path / "run.jsonl"
    log.write_bytes(b'{"type":"from an earlier run"}\n')
    outcome = cm.run_codex([sys.executable, "-c", writer, str(source)], "", tmp_path, log, 60, 60,
                           lambda pid: None, lambda digest: None, lambda: "")
    digest = outcome.digest
    assert outcome.returncode == 0 and digest.thread_id == "t" and digest.completed
    assert digest.final_message == "x" * 3_000_000 and digest.tokens == 3 and digest.diagnostics == []


def test_report_and_record_agree_on_where_a_fence_ends():
    message = "## Summary\nok\n```\n~~~\n## Tests\nfake\n```` trailing\n```\n## Files Changed\n- a.py\n"
    assert cm.missing_sections(cm.parse_report(message)) == ["Tests"]
    assert cm.closes_fence("````", "```") and not cm.closes_fence("~~~", "```")
    assert not cm.closes_fence("``` python", "```") and not cm.closes_fence("``", "```")
    body = ["```", "~~~", "## Status", "````` extra", "```"]
    assert cm.parse_text(body, "", 0) == "~~~\n## Status\n````` extra"


def test_a_folder_is_grouped_once_however_its_files_are_nested():
    paths = [f"target/a/x{n}" for n in range(30)] + [f"target/b{n}" for n in range(30)] + \
        [f"target/c/d/e{n}" for n in range(40)] + ["Cargo.lock"]
    grouped = cm.group_paths(paths, 3)
    assert grouped == ["Cargo.lock", "target/ (100 files)"]


def test_a_change_outside_the_allowed_paths_is_never_hidden_in_a_folder():
    items = [{"path": f"build/f{n}.js", "change": "added"} for n in range(300)] + \
        [{"path": "build/evil.sh", "change": "added"}, {"path": "new/b.py", "from": "old/b.py", "change": "renamed"}]
    text = cm.render_changes(items, outside=("build/evil.sh",))
    assert "added     build/evil.sh  [OUTSIDE ALLOWED PATHS]" in text
    assert "added     build/ (300 files)" in text
    assert "renamed   old/b.py -> new/b.py" in text


def test_a_change_made_while_find_walks_is_seen_now_or_by_the_next_update(repo):
    ws = workspace(repo)
    snapshot = cm.Snapshot(ws.root, ws.snapshot_folder(), ws.name)
    assert snapshot.load() and snapshot.finder is not None
    for process, _ in snapshot.finder.started:   # find has walked past every file ...
        process.wait()
    time.sleep(0.01)
    (repo / "src" / "app.py").write_text("changed behind find's back\n")   # ... then one changes
    assert "src/app.py" not in cm.update_snapshot(snapshot)      # too late for this update ...
    assert "src/app.py" in ws.changes()                          # ... so the next one has it


def test_worktrees_claimed_at_once_get_different_names_before_any_is_made(repo):
    store = cm.Store(repo)
    first, second = cm.claim_worktree(store, "T-001"), cm.claim_worktree(store, "T-002")
    assert first.name != second.name and not first.exists()
    cm.Worktree.release(store, "T-001")
    assert cm.claim_worktree(store, "T-003").name != second.name         # still held by T-002
