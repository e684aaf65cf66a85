"""Shared fixtures: real git repos in temp dirs, the CLI as a subprocess, and the real Codex CLI
driven by the scripted model server (tests/model_server.py) with a private CODEX_HOME."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import codex_mcp  # noqa: E402
from model_server import ModelServer  # noqa: E402

CODEX_VERSION = "0.171.0"
MODULE = str(ROOT / "codex_mcp.py")


def find_pinned(variable: str, command: str, version: str) -> str:
    """A pinned CLI: $variable, or `command` on PATH if it is that version; "" when neither is."""
    for candidate in (os.environ.get(variable), shutil.which(command)):
        if not candidate:
            continue
        try:
            out = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version in out:
            return candidate
    return ""


def find_codex() -> str:
    return find_pinned("CODEX_BIN", "codex", CODEX_VERSION)


@pytest.fixture(scope="session")
def codex_bin() -> str:
    path = find_codex()
    if not path:
        why = (f"the real Codex CLI {CODEX_VERSION} is not installed: run "
               f"`npm install @openai/codex@{CODEX_VERSION}` and set CODEX_BIN to node_modules/.bin/codex")
        if os.environ.get("CODEX_MCP_REQUIRE_CODEX"):
            pytest.fail(why)
        pytest.skip(why)
    return path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_repo(path: Path) -> Path:
    (path / "src").mkdir(parents=True)
    (path / "src" / "app.py").write_text("x = 1\n")
    (path / "README.md").write_text("demo\n")
    (path / ".gitignore").write_text(".env\n")
    git(path, "init", "-q")
    git(path, "add", ".")
    git(path, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def run_cli(*args: str, cwd: Path, env: dict | None = None, codex: str = "codex", timeout: float = 120):
    """Run the CLI as a user would; return (exit status, parsed JSON)."""
    done = subprocess.run([sys.executable, MODULE, "--cwd", str(cwd), "--codex-cmd", codex, *args],
                          capture_output=True, text=True, env=env, timeout=timeout)
    try:
        out = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        raise AssertionError(f"not JSON on stdout: {done.stdout!r}\nstderr: {done.stderr}")
    return done.returncode, out


def processes_under(folder: Path) -> list:
    """Live processes whose working directory or command line is inside `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd.startswith(str(folder)) or str(folder) in cmd):
            found.append((int(entry.name), cmd.strip()))
    return found


class Harness:
    """One repo, one scripted model server, one private CODEX_HOME, the real Codex CLI."""

    def __init__(self, tmp_path: Path, repo: Path, server: ModelServer, codex: str) -> None:
        self.tmp_path, self.repo, self.server, self.codex = tmp_path, repo, server, codex
        self.home = tmp_path / "codex-home"
        server.write_config(self.home)
        self.env = dict(os.environ, CODEX_HOME=str(self.home))

    def cli(self, *args: str, repo: Path | None = None, timeout: float = 120):
        return run_cli(*args, cwd=repo or self.repo, env=self.env, codex=self.codex, timeout=timeout)

    def ok(self, *args: str, repo: Path | None = None) -> dict:
        status, out = self.cli(*args, repo=repo)
        assert status == 0, out
        return out

    def wait(self, task_id: str, repo: Path | None = None, seconds: int = 180) -> dict:
        """check --wait until the task leaves todo/doing."""
        status, out = self.cli("check", task_id, "--wait", str(seconds), repo=repo, timeout=seconds + 60)
        assert status == 0, out
        if out["status"] in ("todo", "doing"):          # say where it stood, for the failure report
            detail = self.ok("check", task_id, "--detail", repo=repo)
            raise AssertionError(f"{task_id} still {out['status']} after {seconds} s: "
                                 f"{json.dumps(detail)[:4000]}")
        return out

    def until_running(self, task_id: str, words: str, seconds: float = 60) -> None:
        """Wait for the event, not for a time: until `check` says Codex is running a command with
        `words` in it."""
        deadline = time.monotonic() + seconds
        while "now `" not in (note := self.ok("check", task_id)["progress"].get("note", "")) or words not in note:
            assert time.monotonic() < deadline, f"{task_id} never ran {words!r}: {note}"
            time.sleep(0.1)

    def record(self, task_id: str, repo: Path | None = None) -> str:
        return ((repo or self.repo) / "agents" / "tasks" / f"{task_id}.md").read_text()

    def task(self, task_id: str, repo: Path | None = None) -> "codex_mcp.Task":
        return codex_mcp.Store(repo or self.repo).load(task_id)


@pytest.fixture
def harness(tmp_path: Path, repo: Path, codex_bin: str):
    with ModelServer() as server:
        yield Harness(tmp_path, repo, server, codex_bin)
    leftovers = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leftovers = processes_under(tmp_path)
        if not leftovers:
            break
        time.sleep(0.2)
    for pid, _ in leftovers:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture(autouse=True)
def private_state_home(tmp_path_factory, monkeypatch):
    """Plain folders keep the tool's state under $XDG_STATE_HOME: never the real home in tests."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))


def fake_codex(folder: Path, body: str = "exit 1") -> str:
    """A stand-in for the Codex CLI that answers `--version` like the real one and runs `body`
    otherwise: for a Codex that starts and then fails. (The real one cannot be made to fail so.)"""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "codex"
    script.write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "codex-cli {CODEX_VERSION}"; exit 0; }}\n{body}\n')
    script.chmod(0o755)
    return str(script)
