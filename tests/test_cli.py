"""The CLI as a user runs it: one JSON object on stdout, exit 0 / 1 (failed) / 2 (bad input)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import codex_mcp as cm
from conftest import MODULE, ROOT, fake_codex, run_cli

EXAMPLE = ROOT / "agents" / "tasks" / "T-001.md"


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    tasks = tmp_path / "agents" / "tasks"
    tasks.mkdir(parents=True)
    shutil.copy(EXAMPLE, tasks / "T-001.md")
    return tmp_path


def test_readme_walkthrough_check_list_retry_on_the_example(example_repo):
    status, out = run_cli("check", "T-001", cwd=example_repo)
    assert status == 0
    assert set(out) >= {"taskId", "status", "reworkCount", "goal", "codexThreadId", "lastCodexResultSummary",
                        "lastCodexTestReport"}
    assert (out["taskId"], out["status"], out["reworkCount"]) == ("T-001", "blocked", 2)
    assert out["codexThreadId"] == "01a20bba-44c8-7632-baa3-ccf6b5614bd4"
    assert out["lastCodexTestReport"] == "`npm test -- tests/auth`: 14 passed, 0 failed."

    status, out = run_cli("list", cwd=example_repo)
    assert status == 0 and out["count"] == 1
    assert out["tasks"][0]["taskId"] == "T-001" and out["tasks"][0]["status"] == "blocked"

    status, out = run_cli("retry", "T-001", cwd=example_repo)
    assert status == 0 and out["status"] == "todo"
    assert out["previousReason"] == "cancelled: the run was stopped by cancel"
    task = cm.Store(example_repo).load("T-001")
    assert task.status == "todo" and task.rework_count == 0
    assert "rework budget reset (was 2 of 3)" in task.history[-2]
    assert "## Notes\n\nAnything a person writes here" in (example_repo / "agents/tasks/T-001.md").read_text()

    status, out = run_cli("retry", "T-001", cwd=example_repo)
    assert status == 1 and out["error"]["code"] == "refused_transition"
    assert "it is todo" in out["error"]["message"] and "`codex-mcp start T-001` starts it" in out["error"]["message"]


def test_pretty_and_options_after_the_command(example_repo):
    done = subprocess.run([sys.executable, MODULE, "check", "T-001", "--pretty", "--cwd", str(example_repo)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith('{\n  "taskId": "T-001"')


@pytest.mark.parametrize("args, code, status", [
    (["check", "T-404"], "not_found", 2),
    (["check", "../etc/passwd"], "bad_input", 2),
    (["check"], "bad_input", 2),
    (["check", "T-001", "--wait", "-1"], "bad_input", 2),
    (["check", "T-001", "--wait", "soon"], "bad_input", 2),
    (["frobnicate"], "bad_input", 2),
    (["delegate"], "bad_input", 2),
    (["delegate", "--goal", "g"], "bad_input", 2),
    (["delegate", "--goal", "g", "--paths", "/etc"], "bad_input", 2),
    (["delegate", "--goal", "g", "--paths", "src/../../x"], "bad_input", 2),
    (["delegate", "--goal", "g", "--paths", "agents/tasks/"], "bad_input", 2),
    (["delegate", "--goal", "g", "--paths", "src/", "--file", "T-001"], "bad_input", 2),
    (["delegate", "--goal", "g", "--paths", "src/", "--timeout", "0"], "bad_input", 2),
    (["delegate", "--file", "T-001"], "refused_transition", 1),
    (["accept", "T-001"], "refused_transition", 1),
    (["rework", "T-001"], "bad_input", 2),
    (["rework", "T-001", "--items", "fix it"], "refused_transition", 1),
    (["cancel", "T-001"], "refused_transition", 1),
    (["--codex-cmd", "'unterminated", "delegate", "--file", "T-001"], "bad_input", 2),
])
def test_errors_are_json_with_the_documented_exit_status(example_repo, args, code, status):
    before = (example_repo / "agents/tasks/T-001.md").read_bytes()
    done = subprocess.run([sys.executable, MODULE, "--cwd", str(example_repo), *args], capture_output=True, text=True)
    assert done.returncode == status, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["error"]["code"] == code and out["error"]["message"]
    assert "Traceback" not in done.stderr
    assert (example_repo / "agents/tasks/T-001.md").read_bytes() == before
    assert sorted(p.name for p in (example_repo / "agents/tasks").iterdir() if p.suffix == ".md") == ["T-001.md"]


def test_missing_cwd_is_bad_input(tmp_path):
    status, out = run_cli("list", cwd=tmp_path / "nope")
    assert status == 2 and "no such directory" in out["error"]["message"]


def test_delegate_with_codex_missing_or_broken_writes_nothing_and_says_how_to_install(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    broken = fake_codex(tmp_path / "broken", "exit 1")
    Path(broken).write_text("#!/bin/sh\necho 'node: cannot find module' >&2\nexit 3\n")   # not even --version
    for codex, said in (("no-such-codex-binary", "is not on PATH"), (broken, "does not start")):
        status, out = run_cli("delegate", "--goal", "g", "--paths", "src/", cwd=repo, codex=codex)
        assert status == 1 and out["error"]["code"] == "failed", out
        message = out["error"]["message"]
        assert said in message and "npm install -g @openai/codex" in message and "--codex-cmd" in message
        assert "no task was created" in message and not (repo / "agents").exists()


def test_a_codex_that_exits_without_a_word_is_named_with_its_log(tmp_path):
    codex, repo = fake_codex(tmp_path / "bin", "exit 1"), tmp_path / "repo"
    repo.mkdir()
    status, out = run_cli("delegate", "--goal", "g", "--paths", "src/", cwd=repo, codex=codex)
    assert status == 0 and out["taskId"] == "T-001"
    status, out = run_cli("check", "T-001", "--wait", "20", cwd=repo)
    assert out["status"] == "blocked" and "Codex exited with status 1 without a word" in out["reason"], out
    log = out["reason"].split("its output: ", 1)[1].split(" (and ")[0]
    assert Path(log).name == "T-001.jsonl" and Path(log).exists() and "codex-mcp doctor" in out["reason"]
    status, out = run_cli("retry", "T-001", cwd=repo)
    assert out["status"] == "todo"


@pytest.mark.parametrize("launcher", ["module", "script", "console"])
def test_three_ways_to_run(example_repo, launcher):
    command = {"module": [sys.executable, "-m", "codex_mcp"], "script": [sys.executable, MODULE],
               "console": [str(Path(sys.executable).parent / "codex-mcp")]}[launcher]
    if launcher == "console":
        assert Path(command[0]).exists(), "install the package (pip install -e '.[test]') for the console script"
    done = subprocess.run([*command, "list"], capture_output=True, text=True, cwd=example_repo,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks"][0]["taskId"] == "T-001"


def test_help_documents_exit_codes_and_commands():
    done = subprocess.run([sys.executable, MODULE, "--help"], capture_output=True, text=True)
    for word in ("delegate", "check", "accept", "rework", "retry", "cancel", "list", "serve", "--pretty",
                 "--cwd", "--codex-cmd", "exit status", "2 bad input"):
        assert word in done.stdout
    assert "_work" not in done.stdout
    done = subprocess.run([sys.executable, MODULE, "delegate", "--help"], capture_output=True, text=True)
    for flag in ("--goal", "--paths", "--constraints", "--criteria", "--verify", "--model", "--reasoning",
                 "--timeout", "--idle-timeout", "--file", "--wait"):
        assert flag in done.stdout


def test_the_tools_state_lives_in_the_git_directory_and_nothing_is_left_untracked(tmp_path):
    from conftest import git, make_repo
    repo = make_repo(tmp_path / "repo")
    status, out = run_cli("delegate", "--goal", "g", "--paths", "src/", cwd=repo, codex=fake_codex(tmp_path / "bin"))
    run_cli("check", "T-001", "--wait", "20", cwd=repo)
    assert (repo / ".git/codex-mcp/runs").is_dir() and (repo / ".git/codex-mcp/records/T-001.md").is_file()
    untracked = git(repo, "status", "--porcelain", "--untracked-files=all").strip().split("\n")
    assert untracked == ["?? agents/tasks/T-001.md"]


def test_a_record_edit_before_any_run_leaves_nothing_untracked(tmp_path):
    from conftest import git, make_repo
    repo = make_repo(tmp_path / "repo")
    tasks = repo / "agents" / "tasks"
    tasks.mkdir(parents=True)
    shutil.copy(EXAMPLE, tasks / "T-001.md")
    git(repo, "add", ".")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "task")
    assert run_cli("retry", "T-001", cwd=repo)[0] == 0
    assert (repo / ".git/codex-mcp/locks/store.lock").exists()
    assert git(repo, "status", "--porcelain", "--untracked-files=all").split() == ["M", "agents/tasks/T-001.md"]


def test_a_reader_that_stops_early_gets_no_traceback(example_repo):
    for n in range(2, 60):
        (example_repo / "agents/tasks" / f"T-{n:03d}.md").write_text(cm.render_task(cm.new_task(f"T-{n:03d}", "g" * 70, ["s/"])))
    reader = subprocess.Popen(f"{sys.executable} {MODULE} --cwd {example_repo} list --limit 100 --pretty | head -c 10",
                              shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = reader.communicate(timeout=60)
    assert out == '{\n  "tasks' and err == ""


def test_serve_on_a_terminal_says_what_it_waits_for(example_repo):
    import pty
    leader, follower = pty.openpty()
    server = subprocess.Popen([sys.executable, MODULE, "serve"], stdin=follower, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=example_repo)
    os.close(follower)
    deadline = time.monotonic() + 30
    line = b""
    while b"\n" not in line and time.monotonic() < deadline:
        line += server.stderr.read1(200)
    server.kill()
    server.wait()
    os.close(leader)
    assert b"codex-mcp serve: waiting for an MCP client on stdin" in line
