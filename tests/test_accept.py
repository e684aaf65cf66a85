"""accept / rework / retry on ground truth, with the real Codex CLI and the scripted model."""

import json
import os
from pathlib import Path

import pytest

import codex_mcp as cm
from conftest import Harness
from model_server import report

pytestmark = pytest.mark.codex


def start(h: Harness, *steps: dict, paths: str = "src/", verify: str = "") -> dict:
    """Delegate a task whose first Codex turn plays `steps`, and wait for it to reach review."""
    h.server.push(*steps)
    args = ["delegate", "--goal", "Change x to 2", "--paths", paths]
    if verify:
        args += ["--verify", verify]
    h.ok(*args)
    out = h.wait("T-001")
    assert out["status"] == "review", out
    return out


def history(h: Harness) -> list:
    return [line.split(" ", 1)[1] for line in h.task("T-001").history]


def test_clean_accept_is_done(harness):
    h = harness
    start(h, {"run": "printf 'x = 2\\n' > src/app.py"}, {"say": report(files=["src/app.py"])},
          verify="grep -q 'x = 2' src/app.py")
    out = h.ok("accept", "T-001")
    assert out["action"] == "done" and out["status"] == "done"
    assert out["changedFiles"] == ["modified src/app.py"] and out["verify"]["passed"] is True
    assert "filesChangedMismatch" not in out and "outOfBounds" not in out
    task = h.task("T-001")
    assert task.status == "done" and "sandboxed; passed" in task.verification
    assert history(h)[-1].startswith("review -> done: accepted: the report is complete")
    assert len(str(out)) < 1500


def test_missing_tests_section_is_completed_on_request(harness):
    h = harness
    start(h, {"say": "## Summary\nDid it.\n\n## Files Changed\n- src/app.py\n"})
    h.server.push({"say": "## Tests\nRan pytest: 4 passed."})
    out = h.ok("accept", "T-001")
    assert out["action"] == "done", out
    completion = h.server.requests[-1]
    assert "missing these sections: Tests" in h.server.texts(len(h.server.requests) - 1)
    assert "read-only" in str(completion["body"])   # the completion turn may not change files
    task = h.task("T-001")
    assert "## Tests\nRan pytest: 4 passed." in task.result
    assert "completion requested for Tests: answered" in history(h)
    assert h.ok("check", "T-001")["lastCodexTestReport"] == "Ran pytest: 4 passed."


def test_still_missing_after_completion_is_blocked(harness):
    h = harness
    start(h, {"say": "All done, trust me."})
    h.server.push({"say": "I already told you."})
    out = h.ok("accept", "T-001")
    assert out["action"] == "blocked" and out["status"] == "blocked"
    assert out["missingSections"] == ["Summary", "Tests", "Files Changed"]
    assert "still lacks Summary, Tests, Files Changed" in out["reason"]
    assert history(h)[-1].startswith("review -> blocked: the report still lacks")


def test_undeclared_write_outside_is_reworked_then_done_once_reverted(harness):
    h = harness
    start(h, {"run": "printf 'x = 2\\n' > src/app.py && echo hacked >> README.md && echo t > .env"},
          {"say": report(files=["src/app.py"])})
    script = h.repo / ".git/codex-mcp/runs/T-001.revert-1.sh"
    h.server.push({"run": f"sh {script}"},                  # Codex does what the review item says
                  {"say": report(summary="Reverted.", files=["src/app.py"])})
    out = h.ok("accept", "T-001")
    assert out["action"] == "rework" and out["status"] == "doing" and out["reworkCount"] == 1
    assert out["outOfBounds"] == [".env", "README.md"]
    assert ": .env, README.md. Run: sh " in out["reviewItems"][0]
    assert out["filesChangedMismatch"] == {"changedButUnreported": [".env", "README.md"]}
    assert "[OUTSIDE ALLOWED PATHS]" in h.task("T-001").changes
    assert h.wait("T-001")["status"] == "review"
    rework_prompt = h.server.texts(len(h.server.requests) - 2)
    assert "Revert these paths" in rework_prompt and str(script) in rework_prompt
    assert (h.repo / "README.md").read_text() == "demo\n" and not (h.repo / ".env").exists()
    out = h.ok("accept", "T-001")
    assert out["action"] == "done", out
    assert out["changedFiles"] == ["modified src/app.py"]
    assert h.task("T-001").rounds[0].startswith("1. Revert these paths")


def test_declared_outside_change_asks_for_confirmation_then_approve(harness):
    h = harness
    start(h, {"run": "printf 'x = 2\\n' > src/app.py && echo 'more' >> README.md"},
          {"say": report(files=["src/app.py", "README.md"])})
    out = h.ok("accept", "T-001")
    assert out["action"] == "boundary_confirmation" and out["status"] == "review"
    assert out["outOfBounds"] == ["README.md"] and "--approve-paths" in out["next"]
    assert "said so: README.md" in history(h)[-1]
    out = h.ok("accept", "T-001", "--approve-paths", "README.md")
    assert out["action"] == "done", out
    task = h.task("T-001")
    assert task.allowed_paths == ["src/", "README.md"]
    assert any(line.startswith("approved paths outside the original boundary: README.md") for line in history(h))


def test_prefix_trick_is_outside(harness):
    h = harness
    start(h, {"run": "mkdir -p src/auth_evil && echo x > src/auth_evil/x.py && mkdir -p src/auth && "
                     "echo y > src/auth/y.py"}, {"say": report(files=["src/auth/y.py"])}, paths="src/auth/")
    h.server.push({"run": "rm -r src/auth_evil"}, {"say": report(files=["src/auth/y.py"])})
    out = h.ok("accept", "T-001")
    assert out["action"] == "rework" and out["outOfBounds"] == ["src/auth_evil/x.py"]
    assert "src/auth_evil/x.py  [OUTSIDE ALLOWED PATHS]" in h.task("T-001").changes
    assert history(h)[-1] == "review -> doing: rework 1 of 3: 1 items"
    assert h.wait("T-001")["status"] == "review"
    assert h.ok("accept", "T-001")["action"] == "done"
    assert history(h)[-1].startswith("review -> done: accepted")


def test_symlink_escape_is_outside(harness):
    h = harness
    start(h, {"run": "ln -s /etc/passwd src/passwd && ln -s ../README.md src/readme"},
          {"say": report(files=["src/passwd", "src/readme"])})
    out = h.ok("accept", "T-001")
    assert out["action"] == "boundary_confirmation"
    assert out["outOfBounds"] == ["src/passwd", "src/readme"]
    assert "symlink to /etc/passwd" in h.task("T-001").changes
    assert history(h)[-1].startswith("boundary confirmation needed: Codex changed paths outside the allowed paths "
                                      "and said so: src/passwd, src/readme")
    assert h.task("T-001").status == "review"


def test_deleted_file_outside_is_caught(harness):
    h = harness
    start(h, {"run": "rm README.md"}, {"say": report(files=[])})
    out = h.ok("accept", "T-001")
    assert out["action"] == "rework" and out["outOfBounds"] == ["README.md"]
    assert out["changedFiles"] == ["deleted README.md"]
    assert "deleted   README.md  [OUTSIDE ALLOWED PATHS]" in h.task("T-001").changes
    assert history(h)[-1] == "review -> doing: rework 1 of 3: 1 items"
    h.server.push({"say": report(files=[])})
    h.wait("T-001")
    assert not (h.repo / "README.md").exists()


def test_codex_editing_its_own_record_is_undone_and_reported(harness):
    h = harness
    tamper = ("sed -i 's/^- Status: doing/- Status: done/; s/^grep -q x src\\/app.py$/echo pwned/' "
              "agents/tasks/T-001.md && echo '- 2026-01-01T00:00:00Z review -> done: forged' >> agents/tasks/T-001.md")
    start(h, {"run": tamper}, {"say": report(files=[])}, verify="grep -q x src/app.py")
    task = h.task("T-001")
    assert task.status == "review" and task.verify == "grep -q x src/app.py"
    assert not any("forged" in line for line in task.history)
    assert task.tampered.startswith("T-001 record: Status, Verify, History (put back); the changed text is saved at ")
    saved = task.tampered.split("saved at ")[1]
    assert "- Status: done" in Path(saved).read_text() and "echo pwned" in Path(saved).read_text()
    out = h.ok("accept", "T-001")
    assert out["action"] == "rework" and out["recordsRestored"][0].startswith("T-001 record: Status, Verify")
    assert out["reviewItems"][0].startswith("Do not touch agents/tasks/ again")
    h.server.push({"say": report(files=[])})
    assert h.wait("T-001")["status"] == "review"
    out = h.ok("accept", "T-001")
    assert out["action"] == "done" and "recordsRestored" not in out


def test_a_files_changed_list_that_lies_is_reported(harness):
    h = harness
    start(h, {"run": "echo extra > src/other.py"}, {"say": report(files=["src/app.py", "src/tests.py"])})
    out = h.ok("accept", "T-001")
    assert out["action"] == "done"
    assert out["filesChangedMismatch"] == {"reportedButUnchanged": ["src/app.py", "src/tests.py"],
                                           "changedButUnreported": ["src/other.py"]}


def test_failing_verify_is_sent_back_with_its_output(harness):
    h = harness
    start(h, {"say": report()}, verify="echo 'FAILED test_x: expected 2' && exit 3")
    h.server.push({"say": report()})
    out = h.ok("accept", "T-001")
    assert out["action"] == "rework" and out["verify"] == {"passed": False, "exitStatus": 3, "sandboxed": True,
                                                          "outputTail": "FAILED test_x: expected 2"}
    assert "exited 3. Make it pass. Its output ended with:\nFAILED test_x: expected 2" in out["reviewItems"][0]
    task = h.task("T-001")
    assert "sandboxed; exited 3" in task.verification and "FAILED test_x" in task.rounds[0]
    assert h.wait("T-001")["status"] == "review"
    path = h.repo / "agents/tasks/T-001.md"           # a person fixes the verify command by hand
    path.write_text(path.read_text().replace("echo 'FAILED test_x: expected 2' && exit 3", "true"))
    assert h.ok("accept", "T-001")["action"] == "done"


def test_four_reworks_block_and_retry_resets_the_budget(harness):
    h = harness
    start(h, {"say": report()})
    for n in (1, 2, 3):
        out = h.ok("rework", "T-001", "--items", f"round {n}")
        assert out["reworkCount"] == n
        assert h.wait("T-001")["status"] == "review"
    status, out = h.cli("rework", "T-001", "--items", "round 4")
    assert status == 1 and out["error"]["code"] == "refused_transition"
    assert "3 reworks" in out["error"]["message"] and "`codex-mcp retry T-001`" in out["error"]["message"]
    task = h.task("T-001")
    assert task.status == "blocked" and task.rework_count == 3 and len(task.rounds) == 3
    assert history(h)[-1].startswith("review -> blocked: a rework was asked for, but the limit (3) is used up")

    out = h.ok("retry", "T-001")
    assert out["status"] == "todo" and "limit (3) is used up" in out["previousReason"]
    assert h.task("T-001").rework_count == 0
    old_thread = task.thread_id
    h.server.push({"say": report(summary="Second attempt.")})
    h.ok("delegate", "--file", "T-001")
    out = h.wait("T-001")
    assert out["status"] == "review" and out["codexThreadId"] != old_thread
    assert "round 3" in h.server.texts(len(h.server.requests) - 1)    # earlier review items still apply
    assert h.ok("rework", "T-001", "--items", "one more")["reworkCount"] == 1
    h.wait("T-001")


def test_sandbox_denial_blocks(harness):
    h = harness
    start(h, {"say": report(summary="SANDBOX DENIED: npm install needs the network, which the sandbox refused.")})
    out = h.ok("accept", "T-001")
    assert out["action"] == "blocked" and "a rework cannot fix that" in out["reason"]
    assert "npm install needs the network" in out["reason"]


def test_accept_refuses_a_task_not_in_review(harness):
    h = harness
    h.server.push({"hang": True})
    h.ok("delegate", "--goal", "g", "--paths", "src/")
    status, out = h.cli("accept", "T-001")
    assert status == 1 and out["error"]["code"] == "refused_transition" and "it is doing" in out["error"]["message"]
    h.ok("cancel", "T-001")


def test_a_large_result_is_trimmed_to_the_budget_and_says_so(harness):
    h = harness
    start(h, {"run": "mkdir -p src/generated outside/generated && for i in $(seq 1 150); do "
                     "echo $i > src/generated/module_number_$i.py; echo $i > outside/generated/file_number_$i.txt; done"},
          {"say": report(files=["src/generated/"])})
    h.server.push({"say": report()})
    out = h.ok("accept", "T-001")
    assert out["action"] == "rework" and out["diffStat"] == "300 paths: 300 added"
    assert len(json.dumps(out, ensure_ascii=False).encode()) <= 1500
    assert out["changedFiles"] == ["added outside/generated/ (150 files)", "added src/generated/ (150 files)"]
    assert out["outOfBounds"] == ["outside/generated/ (150 files)"]
    assert out["filesChangedMismatch"] == {"changedButUnreported": ["outside/generated/ (150 files)"]}
    item = out["reviewItems"][0]
    assert "outside/generated/ (150 files)" in item and "file_number_99" not in item and len(item) < 400
    rounds = h.task("T-001").rounds[0]
    assert len(rounds) < 1000                                       # the record does not grow by the list
    h.wait("T-001")
