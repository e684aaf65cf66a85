"""Review logic without Codex: report parsing, boundaries, snapshots of real folders, verdicts."""

import json
import os
import subprocess
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
    assert cm.missing_sections(cm.parse_report("## Summary\nok\n## Tests\nn/a\n## Files Changed\nNone\n")) == ["Tests"]


def test_headings_inside_code_blocks_do_not_count():
    message = "## Summary\nok\n```\n## Tests\nfake\n```\n## Files Changed\n- a.py\n"
    assert cm.missing_sections(cm.parse_report(message)) == ["Tests"]


def test_declared_files_tolerates_notes_status_letters_and_renames():
    text = ("- `src/a.py` (new)\n- M src/b.py\n- src/c.py - refactored\n* src/old.py -> src/new.py\n"
            "- /repo/src/d.py\n- ./src/e.py: fixed\n")
    assert cm.declared_files(text, Path("/repo")) == ["src/a.py", "src/b.py", "src/c.py", "src/old.py",
                                                      "src/new.py", "src/d.py", "src/e.py"]


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
                                 "agents/tasks/T-001.md", "agents", "a\nb", 5])
def test_bad_allowed_paths_are_refused(tmp_path, raw):
    with pytest.raises(cm.BadInput):
        cm.validate_allowed_path(raw, tmp_path)


def test_allowed_path_through_a_symlink_out_of_the_repo_is_refused(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "out").symlink_to(tmp_path)
    with pytest.raises(cm.BadInput, match="outside the repo"):
        cm.validate_allowed_path("out/x", repo)
    assert cm.validate_allowed_paths("src/, lib/x.py ,src/", repo) == ["src/", "lib/x.py"]
    assert cm.validate_allowed_path("./", repo) == "."


def changes_between(repo: Path, mutate) -> list:
    before = cm.snapshot(repo)
    mutate(repo)
    after = cm.snapshot(repo, before)
    store = cm.Store(repo)
    cm.record_changes(store, "T-001", before, after)
    return cm.load_changes(store, "T-001")


def by_path(changes: list) -> dict:
    return {c["path"]: c for c in changes}


@pytest.mark.parametrize("kind", ["git", "plain"])
def test_snapshot_sees_every_kind_of_change(tmp_path, kind):
    repo = make_repo(tmp_path / "r") if kind == "git" else tmp_path / "r"
    if kind == "plain":
        (repo / "src").mkdir(parents=True)
        (repo / "src" / "app.py").write_text("x = 1\n")
        (repo / "README.md").write_text("demo\n")
    (repo / "src" / "old.py").write_text("old content\n")
    (repo / "src" / "tool.sh").write_text("echo\n")
    (repo / "gone.txt").write_text("bye\n")

    def mutate(r: Path) -> None:
        (r / "src" / "app.py").write_text("x = 2\n")
        (r / "src" / "new.py").write_text("new\n")
        (r / "src" / "old.py").rename(r / "src" / "moved.py")
        (r / "src" / "tool.sh").chmod(0o755)
        (r / "gone.txt").unlink()
        (r / ".env").write_text("SECRET=1\n")
        (r / "src" / "link").symlink_to("../README.md")
        os.utime(r / "README.md")           # touched, same content: not a change
    changes = by_path(changes_between(repo, mutate))
    assert changes["src/app.py"]["change"] == "modified"
    assert changes["src/new.py"]["change"] == "added"
    assert changes["src/moved.py"] == {"path": "src/moved.py", "change": "renamed", "from": "src/old.py"}
    assert changes["src/tool.sh"]["change"] == "mode"
    assert changes["gone.txt"]["change"] == "deleted"
    assert changes[".env"]["change"] == "added"
    assert changes["src/link"]["link"] == "../README.md"
    assert "README.md" not in changes and "src/old.py" not in changes
    outside = cm.out_of_bounds(list(changes.values()), ["src/"])
    assert outside == [".env", "gone.txt", "src/link"]


def test_a_reverted_file_is_no_longer_a_change(repo):
    store = cm.Store(repo)
    original = (repo / "README.md").read_text()
    first = cm.snapshot(repo)
    (repo / "README.md").write_text("changed\n")
    (repo / "stray.txt").write_text("x")
    second = cm.snapshot(repo, first)
    cm.record_changes(store, "T-001", first, second)
    assert {c["path"] for c in cm.load_changes(store, "T-001")} == {"README.md", "stray.txt"}
    (repo / "README.md").write_text(original)           # a rework puts it back
    (repo / "stray.txt").unlink()
    cm.record_changes(store, "T-001", second, cm.snapshot(repo, second))
    assert cm.load_changes(store, "T-001") == []


def test_snapshot_ignores_git_and_task_records(repo):
    before = cm.snapshot(repo)
    (repo / "agents" / "tasks").mkdir(parents=True)
    (repo / "agents" / "tasks" / "T-001.md").write_text("x")
    git(repo, "tag", "v1")
    assert cm.changed_paths(before, cm.snapshot(repo, before)) == {}
    (repo / "agents" / "README.md").write_text("agents are people too")
    assert set(cm.changed_paths(before, cm.snapshot(repo, before))) == {"agents/README.md"}


def test_git_blob_ids_match_git(repo):
    path = repo / "src" / "app.py"
    ours = cm.blob_id(str(path), path.stat().st_size)
    assert ours == subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True).stdout.strip()
    staged = cm.start_git(repo, "ls-files", "-s", "-z")()
    assert cm.clean_blobs(staged, [])["src/app.py"] == ours
    assert cm.clean_blobs(staged, ["src/app.py"]).get("src/app.py") is None   # dirty: must be hashed
    assert cm.snapshot(repo)["src/app.py"][4] == ours


def test_permission_denial_is_found_in_codex_words():
    assert cm.permission_denial("## Summary\nSANDBOX DENIED: writing ~/.npmrc was refused") == \
        "SANDBOX DENIED: writing ~/.npmrc was refused"
    assert "approval policy" in cm.permission_denial("I could not install deps: the approval policy denied it.")
    assert cm.permission_denial("## Summary\nAdded a sandbox helper module.\n## Tests\nok") == ""


FACTS = cm.ReviewFacts


@pytest.mark.parametrize("facts, action", [
    (FACTS(), "done"),
    (FACTS(denial="SANDBOX DENIED: x", missing=["Tests"]), "blocked"),
    (FACTS(missing=["Tests"]), "complete"),
    (FACTS(missing=["Tests"], completion_tried=True), "blocked"),
    (FACTS(undeclared=["x"]), "rework"),
    (FACTS(undeclared=["x"], rework_count=3), "blocked"),
    (FACTS(declared=["x"]), "boundary_confirmation"),
    (FACTS(declared=["x"], undeclared=["y"]), "rework"),
    (FACTS(tampered="agents/tasks/T-001.md was edited"), "rework"),
    (FACTS(verify_failure="1 failed"), "rework"),
    (FACTS(verify_failure="1 failed", rework_count=3), "blocked"),
])
def test_verdicts(facts, action):
    verdict = cm.decide(facts)
    assert verdict.action == action
    if action == "rework":
        assert verdict.items and "rework 1 of 3" in verdict.reason
    if facts.undeclared and action == "rework":
        assert verdict.items[-1].startswith("Revert exactly these paths")
        assert verdict.items[-1].endswith(", ".join(facts.undeclared))


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
    assert digest.thread_id == "abc" and digest.completed and not digest.failed
    assert digest.tokens == 10 and digest.command_count == 1 and digest.final_message == "## Summary\nok"
    assert digest.file_changes == ["add: a.py"] and digest.diagnostics == ["not json at all"]
    assert digest.last_event == "turn.completed"


def test_codex_command_line_new_and_resume():
    task = cm.new_task("T-001", "goal", ["src/"], model="gpt-5", reasoning="high")
    argv = cm.build_codex_command(["codex", "--flag"], task, Path("/r"))
    assert argv[:9] == ["codex", "--flag", "exec", "--json", "--skip-git-repo-check", "-s", "workspace-write",
                        "-C", "/r"]
    assert argv[-1] == "-" and "-m" in argv and 'model_reasoning_effort="high"' in argv
    resume = cm.build_codex_command(["codex"], task, Path("/r"), resume="th-1")
    assert resume[:4] == ["codex", "exec", "resume", "th-1"]
    assert 'sandbox_mode="workspace-write"' in resume and "-s" not in resume and "-C" not in resume
    read_only = cm.build_codex_command(["codex"], task, Path("/r"), resume="th-1", sandbox="read-only")
    assert 'sandbox_mode="read-only"' in read_only
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
