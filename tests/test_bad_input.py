"""Bad input through both doors: the CLI and the MCP server answer every one with a JSON error in
their own words and the documented exit status, and change no file. No Codex runs here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client

import codex_mcp as cm
from conftest import MODULE, ROOT

# -- bad input through both doors ------------------------------------------------------------------

BAD = "\udcff\udcfe"   # what Python makes of invalid UTF-8 bytes in argv; JSON can carry it too
BAD_INPUTS = [
    # (name, CLI args, MCP tool, MCP arguments, error code or words)
    ("id traversal", ["check", "../../etc/passwd"], "check-task", {"taskId": "../../etc/passwd"}, "bad_input"),
    ("id absolute", ["check", "/etc/passwd"], "check-task", {"taskId": "/etc/passwd"}, "bad_input"),
    ("id lowercase", ["check", "t-1"], "check-task", {"taskId": "t-1"}, "bad_input"),
    ("id empty", ["check", ""], "check-task", {"taskId": ""}, "bad_input"),
    ("id with suffix", ["check", "T-1.md"], "check-task", {"taskId": "T-1.md"}, "bad_input"),
    ("id too long", ["check", "T-" + "9" * 30], "check-task", {"taskId": "T-" + "9" * 30}, "bad_input"),
    ("id invalid utf-8", ["check", "T-1" + BAD], "check-task", {"taskId": "T-1" + BAD}, "bad_input"),
    ("unknown task", ["check", "T-404"], "check-task", {"taskId": "T-404"}, "not_found"),
    ("corrupted record", ["check", "T-002"], "check-task", {"taskId": "T-002"}, "malformed_record"),
    ("non-utf8 record", ["check", "T-003"], "check-task", {"taskId": "T-003"}, "malformed_record"),
    ("accept corrupted", ["accept", "T-002"], "accept-task", {"taskId": "T-002"}, "malformed_record"),
    ("retry non-utf8", ["retry", "T-003"], "retry-task", {"taskId": "T-003"}, "malformed_record"),
    ("no goal", ["delegate", "--paths", "src/"], "delegate-task", {"allowedPaths": ["src/"]}, "bad_input"),
    ("no paths", ["delegate", "--goal", "g"], "delegate-task", {"goal": "g"}, "bad_input"),
    ("absolute path", ["delegate", "--goal", "g", "--paths", "/etc"], "delegate-task",
     {"goal": "g", "allowedPaths": ["/etc"]}, "bad_input"),
    ("dotdot path", ["delegate", "--goal", "g", "--paths", "src/../.."], "delegate-task",
     {"goal": "g", "allowedPaths": ["src/../.."]}, "bad_input"),
    ("records path", ["delegate", "--goal", "g", "--paths", "agents/tasks"], "delegate-task",
     {"goal": "g", "allowedPaths": ["agents/tasks"]}, "bad_input"),
    ("git path", ["delegate", "--goal", "g", "--paths", ".git/hooks"], "delegate-task",
     {"goal": "g", "allowedPaths": [".git/hooks"]}, "bad_input"),
    ("control chars in path", ["delegate", "--goal", "g", "--paths", "a\nb"], "delegate-task",
     {"goal": "g", "allowedPaths": ["a\nb"]}, "bad_input"),
    ("goal too big", ["delegate", "--goal", "x" * 20001, "--paths", "src/"], "delegate-task",
     {"goal": "x" * 20001, "allowedPaths": ["src/"]}, "bad_input"),
    ("goal invalid utf-8", ["delegate", "--goal", "g" + BAD, "--paths", "src/"], "delegate-task",
     {"goal": "g" + BAD, "allowedPaths": ["src/"]}, "bad_input"),
    ("path invalid utf-8", ["delegate", "--goal", "g", "--paths", "src" + BAD], "delegate-task",
     {"goal": "g", "allowedPaths": ["src" + BAD]}, "bad_input"),
    ("wrong type", ["delegate", "--goal", "g", "--paths", "src/", "--timeout", "soon"], "delegate-task",
     {"goal": "g", "allowedPaths": "src/"}, "bad_input|valid list"),
    ("file and goal", ["delegate", "--file", "T-001", "--goal", "g"], "delegate-task",
     {"fromFile": "T-001", "goal": "g"}, "bad_input"),
    ("file not todo", ["delegate", "--file", "T-001"], "start-task", {"taskId": "T-001"}, "refused_transition"),
    ("start not todo", ["start", "T-001"], "start-task", {"taskId": "T-001"}, "refused_transition"),
    ("wait not a number", ["check", "T-001", "--wait", "soon"], "check-task", {"taskId": "T-001", "waitSeconds": 601},
     "bad_input"),
    ("wait negative", ["check", "T-001", "--wait", "-1"], "check-task", {"taskId": "T-001", "waitSeconds": -1},
     "bad_input"),
    ("wait as text", ["check", "T-001", "--wait", "ten"], "check-task", {"taskId": "T-001", "waitSeconds": "10"},
     "bad_input"),
    ("timeout as text", ["delegate", "--goal", "g", "--paths", "src/", "--timeout", "soon"], "delegate-task",
     {"goal": "g", "allowedPaths": ["src/"], "timeoutSeconds": "soon"}, "bad_input"),
    ("detail as text", ["check", "T-001", "--detail", "yes"], "check-task", {"taskId": "T-001", "detail": "yes"},
     "bad_input"),
    ("id as number", ["check", "1"], "check-task", {"taskId": 1}, "bad_input"),
    ("missing id", ["check"], "check-task", {}, "bad_input"),
    ("glob path", ["delegate", "--goal", "g", "--paths", "src/**"], "delegate-task",
     {"goal": "g", "allowedPaths": ["src/**"]}, "bad_input"),
    ("goal with U+FFFD", ["delegate", "--goal", "g\ufffd", "--paths", "src/"], "delegate-task",
     {"goal": "g\ufffd", "allowedPaths": ["src/"]}, "bad_input"),
    ("path with U+FFFD", ["delegate", "--goal", "g", "--paths", "src\ufffd"], "delegate-task",
     {"goal": "g", "allowedPaths": ["src\ufffd"]}, "bad_input"),
    ("relative cwd", ["--cwd", "no/such/place", "list"], "list-tasks", {"cwd": "no/such/place"}, "bad_input"),
    ("cwd is a file", ["--cwd", "/etc/hostname", "list"], "list-tasks", {"cwd": "/etc/hostname"}, "is a file"),
    ("cwd is a git dir", ["--cwd", "GITDIR", "list"], "list-tasks", {"cwd": "GITDIR"}, "git directory"),
    ("list bad status", ["list", "--status", "nearly"], "list-tasks", {"status": ["nearly"]}, "bad_input"),
    ("list bad limit", ["list", "--limit", "0"], "list-tasks", {"limit": 0}, "bad_input"),
    ("list bad cursor", ["list", "--cursor", "../../x:1"], "list-tasks", {"cursor": "../../x:1"}, "bad_input"),
    ("accept blocked", ["accept", "T-001"], "accept-task", {"taskId": "T-001"}, "refused_transition"),
    ("rework no items", ["rework", "T-001", "--items", " , "], "rework-task", {"taskId": "T-001", "reviewItems": []},
     "bad_input"),
    ("rework blocked", ["rework", "T-001", "--items", "x"], "rework-task", {"taskId": "T-001", "reviewItems": ["x"]},
     "refused_transition"),
    ("cancel blocked", ["cancel", "T-001"], "cancel-task", {"taskId": "T-001"}, "refused_transition"),
    ("retry todo", ["retry", "T-004"], "retry-task", {"taskId": "T-004"}, "refused_transition"),
    ("missing cwd", ["--cwd", "/nonexistent/repo", "list"], "list-tasks", {"cwd": "/nonexistent/repo"}, "bad_input"),
]


@pytest.fixture
def messy_repo(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()                      # a git directory to point `cwd` at (not a repository)
    tasks = tmp_path / "agents" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "T-001.md").write_text((ROOT / "agents/tasks/T-001.md").read_text())
    (tasks / "T-002.md").write_text((ROOT / "agents/tasks/T-001.md").read_text().replace("- Status: blocked",
                                                                                         "- Status: nearly"))
    (tasks / "T-003.md").write_bytes(b"# T-003: \xff\xfe latin-1 \xe9\n\n## Status\n\n- Status: todo\n")
    (tasks / "T-004.md").write_text(cm.render_task(cm.new_task("T-004", "todo task", ["src/"])))
    return tmp_path


def files_of(repo: Path) -> dict:
    return {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name, cli_args, tool, arguments, expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_through_cli_and_mcp(messy_repo, name, cli_args, tool, arguments, expected):
    before = files_of(messy_repo)
    cli_args = [str(messy_repo / ".git") if arg == "GITDIR" else arg for arg in cli_args]
    arguments = {k: str(messy_repo / ".git") if v == "GITDIR" else v for k, v in arguments.items()}
    args = cli_args if cli_args[0] == "--cwd" else ["--cwd", str(messy_repo), *cli_args]
    done = subprocess.run([sys.executable, MODULE, "--codex-cmd", "codex", *args], capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    out = json.loads(done.stdout)
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr.decode(errors="replace")
    assert any(word in json.dumps(out) for word in expected.split("|")), out
    assert out["error"]["message"]

    async def call():
        async with Client(cm.build_server(str(messy_repo))) as client:
            return await client.call_tool(tool, arguments)
    result = anyio.run(call)
    assert result.is_error and any(word in result.content[0].text for word in expected.split("|")), \
        result.content[0].text
    error = json.loads(result.content[0].text)["error"]            # the same shape as the CLI's
    assert error["code"] == out["error"]["code"]
    assert "`--" not in error["message"] and "pydantic" not in error["message"].lower()   # MCP's own words
    assert files_of(messy_repo) == before
