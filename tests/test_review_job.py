"""review-changes: Codex reviews the changes Claude Code made, read-only, as a job with a record."""

import json
import os
import re
import time

import anyio
import pytest
from mcp.client import Client

import codex_mcp as cm
from conftest import Harness, git
from model_server import report

pytestmark = pytest.mark.codex

TWO = {"verdict": "needs changes", "explanation": "The refresh path leaks the token into the log.",
       "findings": [
           {"priority": "P2", "file": "src/app.py", "lines": "3-4", "title": "Magic number",
            "body": "Name the constant."},
           {"priority": "P0", "file": "src/app.py", "lines": "1", "title": "Token written to the log",
            "body": "print(token) sends the secret to stdout, which the CI keeps. Remove it."}]}


def uncommitted(h: Harness) -> None:
    (h.repo / "src" / "app.py").write_text("x = 1\nprint(token)\n")       # what Claude Code changed
    (h.repo / "src" / "new.py").write_text("y = 42\n")


def review(h: Harness, *args: str, answer: dict | str = TWO) -> dict:
    h.server.push({"say": answer if isinstance(answer, str) else json.dumps(answer)})
    out = h.ok("review", *args)
    done = h.wait(out["taskId"])
    return done


def test_uncommitted_changes_reviewed_findings_ordered_and_kept(harness):
    h = harness
    uncommitted(h)
    before = {p: p.read_bytes() for p in h.repo.rglob("*") if p.is_file() and ".git" not in p.parts}
    out = review(h)
    assert out["status"] == "done" and out["kind"] == "review"
    assert out["verdict"] == "needs changes" and out["explanation"].startswith("The refresh path")
    assert [f["priority"] for f in out["findings"]] == ["P0", "P2"]
    assert out["reason"].startswith("review delivered: needs changes (1 P0, 1 P2); the workspace is unchanged")
    assert len(json.dumps(out).encode()) <= cm.RESULT_BUDGET
    request = h.server.requests[0]
    assert request["body"]["text"]["format"]["schema"] == cm.REVIEW_SCHEMA          # --output-schema reached it
    prompt = h.server.texts(0)
    assert "staged, unstaged and untracked" in prompt and "git diff --cached" in prompt and "+print(token)" not in prompt
    record = h.record("T-001")
    assert "- Kind: review" in record and "- Verdict: needs changes" in record and "## Allowed Paths" not in record
    assert "### [P0] Token written to the log" in record and "### [P2] Magic number" in record
    after = {p: p.read_bytes() for p in h.repo.rglob("*") if p.is_file() and ".git" not in p.parts
             and "agents" not in p.parts}
    assert after == {p: b for p, b in before.items()}


def test_many_findings_keep_the_most_severe_whole_and_count_the_rest(harness):
    h = harness
    uncommitted(h)
    findings = [{"priority": f"P{n % 4}", "file": f"src/f{n}.py", "lines": str(n), "title": f"finding {n}",
                 "body": "a long explanation " * 12} for n in range(12)]
    out = review(h, answer={"verdict": "needs changes", "explanation": "many", "findings": findings})
    assert len(json.dumps(out).encode()) <= cm.RESULT_BUDGET
    kept = out["findings"]
    assert kept and out["findingsOmitted"] == 12 - len(kept)
    assert [f["priority"] for f in kept] == sorted(f["priority"] for f in kept) and kept[0]["priority"] == "P0"
    assert all(f["body"] == "a long explanation " * 12 for f in kept)             # whole, not clipped
    everything = h.ok("check", "T-001", "--detail")
    assert len(everything["findings"]) == 12 and "findingsOmitted" not in everything
    assert h.record("T-001").count("### [P") == 12


def test_a_base_review_paths_and_focus_reach_the_prompt(harness):
    h = harness
    git(h.repo, "checkout", "-q", "-b", "feature")
    (h.repo / "src" / "app.py").write_text("x = 3\n")
    git(h.repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "feature work")
    base = git(h.repo, "rev-parse", "HEAD~1").strip()
    out = review(h, "--base", "HEAD~1", "--paths", "src/,README.md", "--focus", "security of the token refresh",
                 answer={"verdict": "correct", "explanation": "Fine.", "findings": []})
    assert out["status"] == "done" and out["verdict"] == "correct" and out["findings"] == [] if "findings" in out \
        else out["verdict"] == "correct"
    prompt = h.server.texts(0)
    assert f"The merge base commit for this comparison is {base}" in prompt and f"git diff {base}" in prompt
    assert "src/, README.md" in prompt and "security of the token refresh" in prompt
    assert "Be adversarial" not in prompt
    status, bad = h.cli("review", "--base", "no-such-branch")
    assert status == 2 and "`--base` 'no-such-branch' is not a branch, tag or commit" in bad["error"]["message"]
    status, bad = h.cli("review", "--base", "--upload-pack=evil")
    assert status == 2


def test_an_adversarial_review_asks_for_ways_it_fails(harness):
    h = harness
    uncommitted(h)
    review(h, "--adversarial")
    instructions = h.server.texts(0)
    assert "Be adversarial: challenge the approach itself" in instructions and "Skip style nits" not in instructions
    assert "- Adversarial: yes" in h.record("T-001")


def test_a_malformed_answer_gets_one_completion_request_then_blocks(harness):
    h = harness
    uncommitted(h)
    h.server.push({"say": "Looks fine to me!"}, {"say": json.dumps(TWO)})
    out = h.ok("review")
    done = h.wait(out["taskId"])
    assert done["status"] == "done" and [f["priority"] for f in done["findings"]] == ["P0", "P2"]
    assert "could not be read (it is not JSON" in h.server.texts(1) or "it is not JSON" in h.server.texts(1)
    assert any("completion requested" in line for line in h.task("T-001").history)

    h.server.push({"say": "still prose"}, {"say": json.dumps({"verdict": "meh", "explanation": "", "findings": []})})
    out = h.ok("review")
    done = h.wait(out["taskId"])
    assert done["status"] == "blocked"
    assert "could not be read after one completion request: verdict must be" in done["reason"]
    assert done["next"].startswith("read reason; `codex-mcp review` again")


def test_a_review_that_tries_to_write_fails_in_the_sandbox_and_says_the_workspace_is_unchanged(harness):
    h = harness
    uncommitted(h)
    h.server.push({"run": "echo fixed > src/app.py; echo planted > NEW.md"}, {"say": json.dumps(TWO)})
    out = h.ok("review")
    done = h.wait(out["taskId"])
    assert done["status"] == "done" and done["reason"].endswith("the workspace is unchanged")
    assert (h.repo / "src/app.py").read_text() == "x = 1\nprint(token)\n" and not (h.repo / "NEW.md").exists()
    run = h.ok("check", out["taskId"], "--detail")["codexRun"]
    log = (h.repo / ".git/codex-mcp/runs" / f"{out['taskId']}.jsonl").read_text()
    told = h.server.texts(1)
    # Codex sometimes denies a command before it spawns and leaves it out of its JSON events
    # (openai/codex#47433): the digest then has no command, but the model was told it failed.
    failed = re.search(r"Read-only file system|denied|rejected|exited with code [12]\b", told)
    assert "exit 1" in run or "exit 2" in run or failed, (run, told[-2000:], log[-3000:])


def test_a_review_can_be_cancelled(harness):
    h = harness
    uncommitted(h)
    h.server.push({"hang": True})
    out = h.ok("review")
    time.sleep(0.5)
    cancelled = h.ok("cancel", out["taskId"])
    assert cancelled["status"] == "blocked" and cancelled["reason"].startswith("cancelled")


def test_a_review_and_a_delegated_task_run_at_once_in_one_repo(harness):
    h = harness
    uncommitted(h)
    h.server.push({"say": report(), "delay": 2.0}, {"say": json.dumps(TWO), "delay": 2.0})
    task = h.ok("delegate", "--goal", "g", "--paths", "src/")
    job = h.ok("review")
    assert task["status"] == "doing" and job["status"] == "doing"
    assert h.wait(task["taskId"])["status"] == "review"
    assert h.wait(job["taskId"])["status"] == "done"
    a, b = sorted(h.server.requests[:2], key=lambda r: r["start"])
    assert b["start"] < a["end"], "the review waited for the task (or the task for the review)"
    assert h.ok("accept", task["taskId"])["action"] in ("done", "boundary_confirmation")


def test_accept_rework_and_retry_on_a_review_are_refused_with_a_next_step(harness):
    h = harness
    uncommitted(h)
    review(h)
    for args in (["accept", "T-001"], ["rework", "T-001", "--items", "x"], ["retry", "T-001"]):
        status, out = h.cli(*args)
        assert status == 1 and out["error"]["code"] == "refused_transition"
        assert "it is a review job" in out["error"]["message"] and "Next: read verdict and findings" in \
            out["error"]["message"]


def test_review_changes_over_mcp(harness):
    h = harness
    uncommitted(h)
    h.server.push({"say": json.dumps(TWO)})
    os.environ["CODEX_HOME"] = h.env["CODEX_HOME"]
    try:
        async def go():
            async with Client(cm.build_server(str(h.repo), h.codex)) as client:
                started = await client.call_tool("review-changes", {"focus": "the token", "adversarial": True})
                assert not started.is_error, started.content[0].text
                done = await client.call_tool("check-task", {"taskId": started.structured_content["taskId"],
                                                             "waitSeconds": 60})
                return done.structured_content
        out = anyio.run(go)
    finally:
        del os.environ["CODEX_HOME"]
    assert out["verdict"] == "needs changes" and out["findings"][0]["title"] == "Token written to the log"
