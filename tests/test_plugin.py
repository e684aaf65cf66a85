"""The Claude Code plugin, driven by the real Claude Code CLI (pinned: @anthropic-ai/claude-code@2.1.332;
the tests that take `any_claude` also run on the previous pin, 2.1.197, given as CLAUDE_OLD_BIN) offline:
ANTHROPIC_BASE_URL points at the scripted Messages API server in tests/anthropic_server.py, HOME
and CLAUDE_CONFIG_DIR are throwaway folders, non-essential traffic and auto-update are off.

Also: the launcher (bin/codex-mcp) and the private environment it builds, `uvx --from`, and doctor.
The only fakes are the two model servers (no model can be had offline) and, in one doctor test, a
`codex` whose sandbox is broken (a broken sandbox cannot be had on a machine where it works).
Tests that build Python environments install from a local wheelhouse ($CODEX_MCP_WHEELS, filled by
.ci/run), so they need no network either."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from anthropic_server import AnthropicServer, since_last_answer, tool_references, tool_results
from conftest import ROOT, find_pinned, make_repo, processes_under
from model_server import ModelServer, report

CLAUDE_VERSION = "2.1.332"
CLAUDE_OLD_VERSION = "2.1.197"      # the previous pin: the tests that take `any_claude` run on it too
LAUNCHER = ROOT / "bin" / "codex-mcp"
TOOL = "mcp__plugin_codex-mcp_codex-mcp__"
INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}) + "\n"
REQUIRE = os.environ.get("CODEX_MCP_REQUIRE_CODEX") or os.environ.get("CODEX_MCP_REQUIRE_CLAUDE")


def missing(why: str) -> None:
    """A tool the test needs is not installed: a failure in CI, a skip on a developer's machine."""
    if REQUIRE:
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def claude_bin() -> str:
    found = find_pinned("CLAUDE_BIN", "claude", CLAUDE_VERSION)
    if found:
        return found
    missing(f"Claude Code {CLAUDE_VERSION} is not installed: npm install @anthropic-ai/claude-code@{CLAUDE_VERSION} "
            "and set CLAUDE_BIN to node_modules/.bin/claude")


@pytest.fixture(scope="session")
def claude_old_bin() -> str:
    """The previous pinned Claude Code, from CLAUDE_OLD_BIN only: unset, its runs are skipped (.ci/run sets it);
    set to anything but that version, they fail."""
    if not os.environ.get("CLAUDE_OLD_BIN"):
        pytest.skip(f"CLAUDE_OLD_BIN is not set: npm install @anthropic-ai/claude-code@{CLAUDE_OLD_VERSION} in a "
                    "folder of its own and set CLAUDE_OLD_BIN to its node_modules/.bin/claude")
    found = find_pinned("CLAUDE_OLD_BIN", "", CLAUDE_OLD_VERSION)
    assert found, f"CLAUDE_OLD_BIN={os.environ['CLAUDE_OLD_BIN']} is not Claude Code {CLAUDE_OLD_VERSION}"
    return found


@pytest.fixture(params=[CLAUDE_VERSION, CLAUDE_OLD_VERSION])
def any_claude(request) -> str:
    """The pinned Claude Code, then the previous pin: an end-to-end test that takes this runs on both."""
    return request.getfixturevalue("claude_bin" if request.param == CLAUDE_VERSION else "claude_old_bin")


@pytest.fixture(scope="session")
def wheels() -> str:
    path = os.environ.get("CODEX_MCP_WHEELS", "")
    if not path or not list(Path(path).glob("mcp-2*.whl")):
        missing("set CODEX_MCP_WHEELS to a folder of wheels for 'mcp>=2.3,<3' and 'setuptools>=68' "
                "(pip download -d DIR 'mcp>=2.3,<3' 'setuptools>=68'; .ci/run does it)")
    return path


@pytest.fixture(scope="session")
def uv_bin() -> str:
    for candidate in (os.environ.get("UV_BIN"), str(Path(sys.executable).parent / "uv"), shutil.which("uv")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    missing("uv is not installed: pip install uv (it is in the [test] extra), or set UV_BIN")


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory) -> str:
    """One uv cache for the module: the first `uvx --from git+URL` builds the package, later ones reuse it."""
    return str(tmp_path_factory.mktemp("uv-cache"))


def offline_index(wheels: str) -> dict:
    """pip and uv install from the wheelhouse only."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheels, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "UV_NO_INDEX": "1", "UV_FIND_LINKS": wheels, "UV_PYTHON_DOWNLOADS": "never"}


def base_env(**extra: str) -> dict:
    """The test process's environment without any outer Claude Code session's variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLAUDE", "ANTHROPIC", "CODEX_MCP_", "PIP_", "UV_"))}
    env.update(extra)
    return env


def snapshot_checkout(dest: Path) -> Path:
    """A git repository holding this checkout as it is now (tracked and new files, not ignored ones):
    what a user would clone or a git host would serve."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@example.com", "-c", "user.name=t",
                                                 "commit", "-qm", "snapshot"]):
        subprocess.run(["git", "-C", str(dest), *args], check=True, capture_output=True)
    return dest


class GitHttpServer:
    """Bare repositories under `root`, served over git's smart HTTP protocol by `git http-backend` on
    127.0.0.1: Claude Code shallow-clones git marketplaces, which a dumb HTTP server cannot answer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type:
        root = self.root

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._backend()

            def do_POST(self) -> None:
                self._backend()

            def _backend(self) -> None:
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                env = dict(os.environ, GIT_PROJECT_ROOT=str(root), GIT_HTTP_EXPORT_ALL="1", PATH_INFO=path,
                           QUERY_STRING=query, REQUEST_METHOD=self.command, REMOTE_ADDR="127.0.0.1",
                           CONTENT_TYPE=self.headers.get("content-type", ""), CONTENT_LENGTH=str(len(body)),
                           HTTP_CONTENT_ENCODING=self.headers.get("content-encoding", ""),
                           GIT_PROTOCOL=self.headers.get("git-protocol", ""))
                out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
                head, _, payload = out.partition(b"\r\n\r\n") if b"\r\n\r\n" in out else out.partition(b"\n\n")
                headers = [line.split(":", 1) for line in head.decode().splitlines() if ":" in line]
                status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() != "status":
                        self.send_header(key, value.strip())
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


@pytest.fixture(scope="module")
def git_url(tmp_path_factory) -> str:
    """An http:// git URL on 127.0.0.1 serving this checkout."""
    base = tmp_path_factory.mktemp("git-host")
    checkout = snapshot_checkout(base / "work")
    subprocess.run(["git", "clone", "-q", "--bare", str(checkout), str(base / "srv" / "codex-mcp.git")], check=True)
    server = GitHttpServer(base / "srv")
    yield f"{server.url}/codex-mcp.git"
    server.close()


class Claude:
    """The real Claude Code CLI in a throwaway HOME, talking to a scripted model."""

    def __init__(self, binary: str, home: Path, model: AnthropicServer, **env: str) -> None:
        self.binary, self.home, self.model = binary, home, model
        home.mkdir(parents=True, exist_ok=True)
        tools = str(Path(binary).parent)     # claude itself, for doctor's check and nested commands
        # the Python that runs the tests has mcp: the launcher's first choice unless a test says otherwise
        self.env = base_env(HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"), **model.env(),
                            **{"CODEX_MCP_PYTHON": sys.executable, **env})
        self.env["PATH"] = tools + os.pathsep + self.env.get("PATH", "")

    def run(self, *args: str, cwd: Path, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([self.binary, *args], cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert done.returncode == 0, f"claude {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def install(self, source: str, cwd: Path) -> None:
        self.run("plugin", "marketplace", "add", source, cwd=cwd)
        self.run("plugin", "install", "codex-mcp@codex-mcp", cwd=cwd)

    def server_line(self, cwd: Path) -> str:
        """The codex-mcp line of `claude mcp list`, or "" when it is not listed."""
        out = self.run("mcp", "list", cwd=cwd).stdout
        return next((line for line in out.splitlines() if line.startswith("plugin:codex-mcp:codex-mcp:")), "")

    def uninstall(self, cwd: Path) -> None:
        self.run("plugin", "uninstall", "codex-mcp@codex-mcp", cwd=cwd)
        self.run("plugin", "marketplace", "remove", "codex-mcp", cwd=cwd)

    def assert_nothing_registered(self, cwd: Path) -> None:
        assert "codex-mcp" not in self.run("mcp", "list", cwd=cwd).stdout
        assert "codex-mcp" not in self.run("plugin", "list", cwd=cwd).stdout
        assert "codex-mcp" not in self.run("plugin", "marketplace", "list", cwd=cwd).stdout
        settings = self.home / ".claude" / "settings.json"
        assert "codex-mcp" not in (settings.read_text() if settings.exists() else "")
        assert not list((self.home / ".claude" / "plugins" / "data").glob("codex-mcp*"))


@pytest.fixture
def model():
    with AnthropicServer() as server:
        yield server
    assert not server.errors, server.errors


def available_agents(body: dict) -> str:
    """The subagent list Claude Code gave the model (the text after 'Available agent types')."""
    text = json.dumps(body)
    start = text.find("Available agent types")
    assert start >= 0, "no agent list in the request"
    return text[start: text.find("skills are available", start)]


# -- the plugin's shape ----------------------------------------------------------------------------

def test_manifests_and_top_level_layout():
    plugin = json.loads((ROOT / ".claude-plugin" / "plugin.json").read_text())
    market = json.loads((ROOT / ".claude-plugin" / "marketplace.json").read_text())
    assert plugin["name"] == market["name"] == "codex-mcp"
    assert [p["name"] for p in market["plugins"]] == ["codex-mcp"] and market["plugins"][0]["source"] == "./"
    assert plugin["version"] == market["plugins"][0]["version"]
    # agents/ holds task records: read as subagent definitions unless the manifest names none
    assert plugin["agents"] == []
    server = plugin["mcpServers"]["codex-mcp"]
    assert server == {"command": "${CLAUDE_PLUGIN_ROOT}/bin/codex-mcp", "args": ["serve"]}
    assert os.access(LAUNCHER, os.X_OK)
    mode = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s", "bin/codex-mcp"], capture_output=True,
                          text=True).stdout
    assert mode.startswith("100755") or not mode, "bin/codex-mcp must be committed executable"
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                            text=True, check=True).stdout.split()
    allowed = {"pyproject.toml", "codex_mcp.py", "tests", "agents", "README.md", ".ci", ".gitignore", "LICENSE",
               ".claude-plugin", "commands", "skills", "hooks", "bin"}
    assert {name.split("/")[0] for name in listed} <= allowed
    for command in ("delegate", "status", "accept", "rework", "doctor"):
        text = (ROOT / "commands" / f"{command}.md").read_text()
        assert re.search(r"(?m)^allowed-tools: .+", text), command


def test_plugin_validates(claude_bin, tmp_path, model):
    claude = Claude(claude_bin, tmp_path / "home", model)
    market = claude.run("plugin", "validate", str(ROOT), cwd=tmp_path)
    assert "Validation passed" in market.stdout
    manifest = str(ROOT / ".claude-plugin" / "plugin.json")
    plugin = claude.run("plugin", "validate", manifest, cwd=tmp_path)
    assert "Validation passed" in plugin.stdout and "error" not in plugin.stdout.lower()
    # 2.1.332 also prints what the plugin provides and the plugin directory's checks, as "❯" lines like its
    # warnings: read its JSON report, which says the same as the text (--json: same exit codes).
    report = json.loads(claude.run("plugin", "validate", "--json", manifest, cwd=tmp_path).stdout)
    assert report["success"] is True and report["manifest"]["errors"] == report["manifest"]["warnings"] == []
    # The validator reads agents/ whatever the manifest says; its only warnings are about the task records:
    # one each, for the missing frontmatter.
    warned = re.findall(r"Validating agent: (\S+)", plugin.stdout)
    assert warned and all("/agents/tasks/" in path for path in warned)
    assert [(c["file"], c["type"]) for c in report["contents"]] == [(path, "agent") for path in warned]
    assert all(c["errors"] == [] and [w["path"] for w in c["warnings"]] == ["frontmatter"] for c in report["contents"])
    # ... but "agents": [] keeps them out of what the plugin provides (without it: agents codex-mcp:tasks:T-001).
    provides = report["provides"]
    assert provides["agents"] == []
    assert provides["commands"] == sorted(f"codex-mcp:{path.stem}" for path in (ROOT / "commands").glob("*.md"))
    assert provides["skills"] == ["codex-mcp:delegating-to-codex"] and provides["bin"] == ["codex-mcp"]
    assert provides["mcpServers"] == [{"name": "codex-mcp", "type": "stdio",
                                       "target": "${CLAUDE_PLUGIN_ROOT}/bin/codex-mcp", "args": ["serve"]}]
    assert [hook["event"] for hook in provides["hooks"]] == ["Stop", "Stop", "SubagentStop"]   # hold-review, gate
    # The plugin directory's own checks (they do not change the result) find at most the optional icon missing.
    findings = report["directory"]["findings"]
    assert {f["code"] for f in findings} <= {"ICON_MISSING"} and not any(f["blocking"] for f in findings)
    assert plugin.stdout.count("⚠ Found") == len(warned) + bool(findings)      # no other warning in the text


# -- install, connect, uninstall -------------------------------------------------------------------

def test_install_from_local_checkout_connects_runs_doctor_and_uninstalls(any_claude, codex_bin, tmp_path, model):
    project = make_repo(tmp_path / "project")
    # Codex named outright: the folder of an older Claude Code pin need not hold a codex as well
    claude = Claude(any_claude, tmp_path / "home", model, CODEX_CMD=codex_bin)
    claude.install(str(ROOT), cwd=project)
    line = claude.server_line(project)
    assert "✔ Connected" in line and f"{ROOT}/" in line, line     # a local marketplace runs the live checkout

    # /codex-mcp:doctor runs doctor before the model sees anything; its JSON is in the prompt.
    model.default = {"say": "All checks passed."}
    out = claude.run("-p", "/codex-mcp:doctor", cwd=project)
    assert "All checks passed." in out.stdout
    prompt = json.dumps(model.turns[0]["messages"])
    assert '\\"name\\": \\"sandbox\\"' in prompt and '\\"name\\": \\"claude\\"' in prompt
    assert "plugin:codex-mcp:codex-mcp:" in prompt and "Connected" in prompt   # doctor's own claude check

    claude.uninstall(project)
    claude.assert_nothing_registered(project)


def test_install_from_git_url_runs_the_cached_copy(claude_bin, tmp_path, model, git_url):
    project = make_repo(tmp_path / "project")
    claude = Claude(claude_bin, tmp_path / "home", model)
    claude.install(git_url, cwd=project)
    line = claude.server_line(project)
    assert "✔ Connected" in line, line
    cache = claude.home / ".claude" / "plugins" / "cache"
    assert str(cache) in line and str(ROOT) not in line, line
    copy = next(cache.glob("codex-mcp/codex-mcp/*"))
    assert os.access(copy / "bin" / "codex-mcp", os.X_OK) and (copy / "codex_mcp.py").is_file()
    claude.uninstall(project)
    claude.assert_nothing_registered(project)


# -- a real session: delegate, wait, accept ---------------------------------------------------------

class Session:
    """A temp git repo, the plugin installed from the checkout, the real Codex CLI behind a scripted
    Responses server, and Claude Code behind a scripted Messages server.

    The scripted model calls the plugin's tools by name, so Claude Code must offer them in full: 2.1.332
    defers MCP tools behind its ToolSearch tool by default (2.1.197 did too, except for a base URL that is
    not Anthropic's, as here), hence ENABLE_TOOL_SEARCH=false. test_a_model_finds_the_tools_by_searching
    covers the default."""

    def __init__(self, tmp_path: Path, claude_bin: str, codex_bin: str, model: AnthropicServer,
                 codex: ModelServer) -> None:
        self.repo = make_repo(tmp_path / "repo")
        codex_home = tmp_path / "codex-home"
        codex.write_config(codex_home)
        self.claude = Claude(claude_bin, tmp_path / "home", model, CODEX_HOME=str(codex_home), CODEX_CMD=codex_bin,
                             ENABLE_TOOL_SEARCH="false")
        self.claude.install(str(ROOT), cwd=self.repo)
        self.model = model

    def prompt(self, text: str, timeout: float = 300) -> str:
        return self.claude.run("-p", text, cwd=self.repo, timeout=timeout).stdout

    def record(self, task_id: str) -> str:
        return (self.repo / "agents" / "tasks" / f"{task_id}.md").read_text()


def answer(body: dict) -> dict:
    """The JSON a tool returned in the last request (MCP tools answer JSON text; the CLI prints it last)."""
    [result] = tool_results(body)
    assert not result["is_error"], result
    text = result["text"].strip()
    return json.loads(text[text.rfind("\n{") + 1:] if "\n{" in text else text)


@pytest.mark.codex
def test_delegate_command_gets_the_verdict_in_one_synchronous_call_with_claude_p(tmp_path, any_claude, codex_bin,
                                                                                  model):
    """/codex-mcp:delegate as the command says: delegate-task with until "verdict". `claude -p` runs no
    background tasks (2.1.332 declares no tasks extension there; 2.1.197 speaks the old handshake), so
    the call itself answers with the verdict, after Codex's run and the accept, in the command's turn.
    (Interactive, the same call is a background task: tests/test_claude_tasks.py.)"""
    with ModelServer([{"run": "sed -i 's/x = 1/x = 2/' src/app.py", "delay": 1.0},
                      {"say": report(files=["src/app.py"])}]) as codex:
        session = Session(tmp_path, any_claude, codex_bin, model, codex)
        seen: dict = {}

        def finish(body: dict) -> dict:
            [result] = tool_results(body)
            seen["text"] = result["text"]
            seen["verdict"] = answer(body)
            return {"say": f"{seen['verdict']['taskId']} is {seen['verdict']['action']}."}

        model.steps = [
            {"tool": f"{TOOL}delegate-task", "input": {
                "goal": "Set x to 2 in src/app.py", "allowedPaths": ["src/app.py"],
                "verify": "grep -qx 'x = 2' src/app.py", "until": "verdict"}},
            finish]
        out = session.prompt("/codex-mcp:delegate Set x to 2 in src/app.py")

    assert "T-001 is done." in out
    assert seen["verdict"]["action"] == "done" and seen["verdict"]["verify"]["passed"] is True
    assert "background" not in seen["text"]               # the answer itself, not a task handle
    assert "- Status: done" in session.record("T-001")
    assert (session.repo / "src" / "app.py").read_text() == "x = 2\n"

    first = next(turn for turn in model.turns if f"{TOOL}delegate-task" in {t["name"] for t in turn["tools"]})
    text = json.dumps(first)
    assert "<command-name>/codex-mcp:delegate</command-name>" in text
    assert "Set x to 2 in src/app.py" in text and 'until: \\"verdict\\"' in text   # the command's body and arguments
    assert "codex-mcp:delegating-to-codex:" in text                          # the skill is listed to the model
    assert {f"{TOOL}{name}" for name in ("delegate-task", "check-task", "accept-task")} <= {
        tool["name"] for tool in first["tools"]}
    agents = available_agents(first)
    assert "T-001" not in agents and "tasks:" not in agents                  # no task record as a subagent


def test_a_model_finds_the_tools_by_searching(claude_bin, tmp_path, model):
    """Claude Code as a user has it (2.1.332: MCP tools deferred behind ToolSearch): the model is told only
    the tools' names, and a search loads them. What a model asking for this plugin would search for, the
    words of the skill and commands ("delegate", "codex", "review"), finds the tools it needs; the way the
    system prompt says to load one by name ("select:") loads it; and a loaded tool runs."""
    project = make_repo(tmp_path / "project")
    claude = Claude(claude_bin, tmp_path / "home", model)       # ENABLE_TOOL_SEARCH not set: the default
    claude.install(str(ROOT), cwd=project)
    queries = ["delegate", "codex", "review", f"select:{TOOL}list-tasks"]
    found: dict = {}

    def search(number: int):
        def step(body: dict) -> dict:
            if number:
                found[queries[number - 1]] = tool_references(body)
            if number == len(queries):
                return {"tool": f"{TOOL}list-tasks", "input": {}}
            return {"tool": "ToolSearch", "input": {"query": queries[number]}}
        return step

    model.steps = [search(n) for n in range(len(queries) + 1)]
    model.steps.append(lambda body: {"say": f"{answer(body)['count']} tasks so far."})
    out = claude.run("-p", "What have I handed to Codex?", "--allowedTools", f"{TOOL}list-tasks", cwd=project)

    assert "0 tasks so far." in out.stdout
    names = [f"{TOOL}{name}" for name in ("delegate-task", "start-task", "check-task", "accept-task", "rework-task",
                                            "retry-task", "cancel-task", "discard-task", "review-changes",
                                            "list-tasks")]
    # Deferred: never offered in full, only named to the model (in the first request, or in a system message
    # once the server has connected: the first request can go out before it has; ToolSearch waits for it).
    assert "ToolSearch" in {tool["name"] for tool in model.turns[0]["tools"]}
    assert not {tool["name"] for tool in model.turns[0]["tools"]} & set(names)
    assert all(tool.get("defer_loading") for turn in model.turns for tool in turn["tools"] if tool["name"] in names)
    told = json.dumps({key: value for key, value in model.turns[-1].items() if key != "tools"})
    assert all(name in told for name in names)
    assert f"{TOOL}delegate-task" in found["delegate"]
    assert {f"{TOOL}{name}" for name in ("delegate-task", "check-task", "accept-task")} <= set(found["codex"])
    assert all(name in names for name in found["codex"])
    assert {f"{TOOL}review-changes", f"{TOOL}accept-task"} <= set(found["review"])
    assert found[queries[-1]] == [f"{TOOL}list-tasks"]
    loaded = {tool["name"]: tool for tool in model.turns[-1]["tools"]}       # a loaded tool comes with its schema
    assert "allowedPaths" in loaded[f"{TOOL}delegate-task"]["input_schema"]["properties"]


@pytest.mark.codex
def test_accept_command_follows_a_rework_with_a_synchronous_wait(tmp_path, claude_bin, codex_bin, model):
    """/codex-mcp:accept on a task whose verify fails: accept-task sends it back (rework), the model waits
    with check-task waitSeconds, which blocks until Codex is done, and accepts again to done."""
    with ModelServer([{"say": report(files=["src/app.py"])}]) as codex:
        session = Session(tmp_path, claude_bin, codex_bin, model, codex)
        delegated = subprocess.run(
            [str(LAUNCHER), "delegate", "--goal", "Set x to 3", "--paths", "src/app.py",
             # says why it fails: a silent failing verify is accepted today (reported to main)
             "--verify", "grep -qx 'x = 3' src/app.py || { echo 'x is not 3'; exit 1; }", "--wait"],
            cwd=session.repo, env=session.claude.env, capture_output=True, text=True, timeout=120)
        assert json.loads(delegated.stdout)["status"] == "review", delegated.stderr
        codex.push({"run": "sed -i 's/x = 1/x = 3/' src/app.py", "delay": 2.0},    # the rework's turn
                   {"say": report(files=["src/app.py"])})
        times: dict = {}

        def wait(body: dict) -> dict:
            times["rework"] = answer(body)
            times["asked"] = time.monotonic()
            return {"tool": f"{TOOL}check-task", "input": {"taskId": "T-001", "waitSeconds": 600}}

        def accept_again(body: dict) -> dict:
            times["answered"] = time.monotonic()
            times["checked"] = answer(body)
            return {"tool": f"{TOOL}accept-task", "input": {"taskId": "T-001"}}

        model.steps = [{"tool": f"{TOOL}accept-task", "input": {"taskId": "T-001"}}, wait, accept_again,
                       lambda body: {"say": "final action: " + answer(body)["action"]}]
        out = session.prompt("/codex-mcp:accept T-001")
        model.steps = [{"tool": f"{TOOL}check-task", "input": {"taskId": "T-001"}},
                       lambda body: {"say": "status: " + answer(body)["status"]}]
        status = session.prompt("/codex-mcp:status T-001")

    assert "final action: done" in out, (out, times)
    assert "status: done" in status
    assert times["rework"]["action"] == "rework" and times["checked"]["status"] == "review"
    assert times["answered"] - times["asked"] >= 1.5, "check-task returned before Codex finished its turn"
    assert "- Status: done" in session.record("T-001") and "- Rework Count: 1" in session.record("T-001")


# -- the launcher ----------------------------------------------------------------------------------

def test_launcher_runs_the_cli_without_mcp_and_ignores_modules_in_the_current_directory(tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / "json.py").write_text("raise SystemExit('the user json.py was imported')\n")
    link = tmp_path / "links" / "codex-mcp"
    link.parent.mkdir()
    link.symlink_to(LAUNCHER)           # as in ~/.local/bin
    done = subprocess.run([str(link), "list"], cwd=repo, capture_output=True, text=True, timeout=60,
                          env=base_env(CODEX_MCP_PYTHON=sys.executable))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"tasks": [], "count": 0, "total": 0}


def test_launcher_never_starts_a_python_planted_where_a_relative_path_entry_points(tmp_path):
    """A PATH with `.` or an empty entry (`::`) would find a `python3` Codex wrote in the repository,
    before the real one: the launcher drops such entries, so the Stop hook cannot run it."""
    repo = make_repo(tmp_path / "repo")
    marker = tmp_path / "planted-ran"
    for name in ("python3", "python"):
        (repo / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (repo / name).chmod(0o755)
    real = str(Path(sys.executable).parent)
    for path in (f".:{real}:/usr/bin:/bin", f":{real}:/usr/bin:/bin", f"{real}::/usr/bin:/bin"):
        done = subprocess.run([str(LAUNCHER), "list"], cwd=repo, capture_output=True, text=True, timeout=60,
                              env={**base_env(), "PATH": path})
        assert done.returncode == 0 and json.loads(done.stdout)["count"] == 0, (path, done.stderr)
        assert not marker.exists(), path


def test_launcher_without_python_says_what_to_install(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "dirname", "readlink"):      # what the script itself runs, and nothing else
        (bare / tool).symlink_to(shutil.which(tool))
    for command in (["list"], ["serve"]):
        done = subprocess.run(["/bin/sh", str(LAUNCHER), *command], capture_output=True, text=True, timeout=30,
                              env={"PATH": str(bare), "HOME": str(tmp_path)})
        assert done.returncode == 1
        assert "needs Python 3.10 or newer" in done.stderr
        if command == ["list"]:                         # the CLI's contract: JSON on stdout
            assert json.loads(done.stdout)["error"]["code"] == "failed"
        else:                                           # stdout is the MCP protocol: nothing else on it
            assert done.stdout == ""


def bare_python(tmp_path: Path) -> str:
    """A Python 3.10+ without the mcp package, as a new user has."""
    venv = tmp_path / "bare-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import mcp"], capture_output=True).returncode != 0
    return str(python)


def first_answer(argv: list, env: dict, cwd: Path, timeout: float = 120) -> tuple:
    """Start a server, send initialize; return (seconds to the answer, the answer, stderr)."""
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdin.write(INITIALIZE.encode())
    process.stdin.flush()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        line = process.stdout.readline()
        seconds = time.monotonic() - started
        process.stdin.close()
        stderr = process.stderr.read().decode()
        process.wait()
    finally:
        timer.cancel()
    return seconds, json.loads(line) if line else None, stderr


def test_serve_without_mcp_and_without_an_environment_directory_says_what_to_install(tmp_path):
    done = subprocess.run([bare_python(tmp_path), str(ROOT / "codex_mcp.py"), "serve"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=base_env(), stdin=subprocess.DEVNULL)
    error = json.loads(done.stdout)["error"]
    assert done.returncode == 1 and error["code"] == "failed"
    assert "pip install 'mcp>=2.3,<3'" in error["message"] and "CODEX_MCP_ENV_DIR" in error["message"]
    assert not (tmp_path / "venv").exists()


@pytest.mark.slow
def test_launcher_builds_a_private_environment_once_and_recovers_from_an_interrupted_build(tmp_path, wheels):
    data = tmp_path / "plugin-data"
    env = base_env(CODEX_MCP_PYTHON=bare_python(tmp_path), CLAUDE_PLUGIN_DATA=str(data), **offline_index(wheels))
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "uv").exists())
    repo = make_repo(tmp_path / "repo")

    def start_and_kill_during_the_build(also_the_build: bool) -> None:
        server = subprocess.Popen([str(LAUNCHER), "serve"], cwd=repo, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        left = set(data.glob("venv.building-*"))      # an earlier build's folder is not this one's
        deadline = time.monotonic() + 60
        while not set(data.glob("venv.building-*/bin/python")) - {d / "bin" / "python" for d in left} \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGKILL)           # Claude Code giving up on a slow first start
        server.wait()
        for pid, _ in processes_under(data) if also_the_build else ():
            os.kill(pid, signal.SIGKILL)                # a build that dies too (a reboot, say)

    # A build killed halfway (with the start that began it) leaves only its own folder.
    start_and_kill_during_the_build(also_the_build=True)
    assert list(data.glob("venv.building-*")) and not (data / "venv").exists()

    # The next start clears it and builds again; Claude Code gives up on that start too, but the
    # build goes on and finishes without anyone waiting for it.
    start_and_kill_during_the_build(also_the_build=False)
    deadline = time.monotonic() + 120
    while not (data / "venv" / "codex-mcp-ready").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (data / "venv" / "codex-mcp-ready").is_file() and not list(data.glob("venv.building-*"))
    log = (data / "build.log").read_text()
    assert "left by an unfinished build" in log and "private environment ready" in log, log

    seconds, answer_, stderr = first_answer([str(LAUNCHER), "serve"], env, repo)
    assert answer_ and answer_["result"]["serverInfo"]["name"] == "codex-mcp", stderr
    assert "building" not in stderr and not processes_under(data)

    # Later starts go straight to the environment's Python: as quick as starting it by hand.
    python = data / "venv" / "bin" / "python"
    plain = [str(python), str(ROOT / "codex_mcp.py"), "serve"]
    ours, theirs = [], []
    for _ in range(3):
        seconds, answer_, stderr = first_answer([str(LAUNCHER), "serve"], env, repo)
        assert answer_ and "building" not in stderr, stderr
        ours.append(seconds)
        theirs.append(first_answer(plain, env, repo)[0])
    ours.sort()
    theirs.sort()
    assert ours[1] <= theirs[1] * 1.25 + 0.05, (ours, theirs)


@pytest.mark.slow
def test_uvx_from_a_checkout_and_from_a_git_url(tmp_path, uv_bin, wheels, git_url, uv_cache):
    env = base_env(UV_CACHE_DIR=uv_cache, **offline_index(wheels))
    uvx = [uv_bin, "tool", "run"]               # what `uvx` is
    repo = make_repo(tmp_path / "repo")
    for source in (str(ROOT), f"git+{git_url}"):
        seconds, answer_, stderr = first_answer([*uvx, "--from", source, "codex-mcp", "serve"], env, repo,
                                                timeout=180)
        assert answer_ and answer_["result"]["serverInfo"]["name"] == "codex-mcp", stderr
    done = subprocess.run([*uvx, "--from", f"git+{git_url}", "codex-mcp", "list"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=180)
    assert json.loads(done.stdout) == {"tasks": [], "count": 0, "total": 0}, done.stderr


# -- doctor ----------------------------------------------------------------------------------------

def doctor(repo: Path, env: dict, *args: str) -> tuple:
    done = subprocess.run([str(LAUNCHER), "doctor", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=180)
    return done.returncode, json.loads(done.stdout)


def checks(result: dict) -> dict:
    return {c["name"]: c for c in result["checks"]}


def test_doctor_with_codex_missing(tmp_path):
    repo = make_repo(tmp_path / "repo")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if not (Path(p) / "codex").exists() and not (Path(p) / "claude").exists())
    status, result = doctor(repo, base_env(PATH=path, HOME=str(tmp_path), CODEX_MCP_PYTHON=sys.executable))
    assert status == 1 and result["ok"] is False and result["failed"] == ["codex"]
    found = checks(result)
    assert "not on PATH" in found["codex"]["detail"] and "npm install -g @openai/codex" in found["codex"]["fix"]
    assert "sandbox" not in found                     # nothing to run it with
    assert found["python"]["ok"] and found["git"]["ok"] and found["agents/tasks"]["ok"]
    assert found["claude"].get("skipped") is True and found["claude-tasks"].get("skipped") is True


FAKE_CODEX = """#!/bin/sh
# A Codex CLI whose sandbox is broken in the way $BROKEN says; everything else answers like the real one.
case "$1" in
  --version) echo "codex-cli 0.169.0"; exit 0 ;;
  login) echo "Logged in using an API key"; exit 0 ;;
  sandbox)
    [ "$BROKEN" = fails ] && { echo "Error: sandbox: Landlock is not supported by this kernel" >&2; exit 1; }
    while [ "$1" != "--" ]; do shift; done; shift
    exec "$@" ;;    # "open": runs the command with no confinement at all
esac
exit 2
"""


@pytest.mark.parametrize("broken, says", [("fails", "could not run a command"), ("open", "did not refuse")])
def test_doctor_with_a_broken_sandbox(tmp_path, broken, says):
    repo = make_repo(tmp_path / "repo")
    fake = tmp_path / "fake-bin" / "codex"
    fake.parent.mkdir()
    fake.write_text(FAKE_CODEX)
    fake.chmod(0o755)
    path = os.pathsep.join([str(fake.parent)] + [p for p in os.environ["PATH"].split(os.pathsep)
                                                 if not (Path(p) / "claude").exists()])
    status, result = doctor(repo, base_env(PATH=path, HOME=str(tmp_path), BROKEN=broken,
                                           CODEX_MCP_PYTHON=sys.executable))
    assert status == 1 and result["failed"] == ["sandbox"], result
    sandbox = checks(result)["sandbox"]
    assert says in sandbox["detail"] and "codex sandbox" in sandbox["fix"]
    assert checks(result)["codex"]["detail"].startswith("codex-cli 0.169.0")


@pytest.mark.codex
def test_doctor_on_a_healthy_set_up(tmp_path, codex_bin, claude_bin, model):
    repo = make_repo(tmp_path / "repo")
    with ModelServer() as codex:
        codex.write_config(tmp_path / "codex-home")
        claude = Claude(claude_bin, tmp_path / "home", model, CODEX_HOME=str(tmp_path / "codex-home"))
        claude.install(str(ROOT), cwd=repo)
        env = dict(claude.env)
        env["PATH"] = str(Path(codex_bin).parent) + os.pathsep + env["PATH"]
        status, result = doctor(repo, env, "--pretty")
    assert status == 0 and result["ok"] is True and "failed" not in result, result
    found = checks(result)
    assert set(found) == {"python", "mcp", "codex", "codex-login", "sandbox", "git", "confinement", "agents/tasks",
                          "claude", "claude-tasks", "gate"}
    assert found["claude-tasks"]["detail"].startswith(f"Claude Code {CLAUDE_VERSION} runs waiting calls")
    assert found["confinement"]["ok"] and "a temporary folder of its own" in found["confinement"]["detail"]
    assert "model provider 'fake' is configured" in found["codex-login"]["detail"]
    assert "refused under :read-only" in found["sandbox"]["detail"]
    assert "✔ Connected" in found["claude"]["detail"]
    assert not any("fix" in c for c in result["checks"])


def test_doctor_says_an_older_claude_code_answers_synchronously(tmp_path, claude_old_bin):
    repo = make_repo(tmp_path / "repo")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").symlink_to(claude_old_bin)
    path = os.pathsep.join([str(bin_dir)] + [p for p in os.environ["PATH"].split(os.pathsep)
                                             if not (Path(p) / "claude").exists()])
    _, result = doctor(repo, base_env(PATH=path, HOME=str(tmp_path), CODEX_MCP_PYTHON=sys.executable))
    tasks = checks(result)["claude-tasks"]
    assert tasks["ok"] and f"Claude Code {CLAUDE_OLD_VERSION} answers waiting calls synchronously" in tasks["detail"]
    assert "@anthropic-ai/claude-code@latest" in tasks["detail"]


# -- the README, as a new user follows it ------------------------------------------------------------

def readme_section(title: str) -> str:
    """The README's section under a heading (of any level) with this title, to the next heading."""
    text = (ROOT / "README.md").read_text()
    start = re.search(rf"\n#+ {re.escape(title)}\n", text).start()
    end = re.search(r"\n#{2,} ", text[start + 1:])
    return text[start: start + 1 + end.start() if end else None]


@pytest.mark.slow
def test_fresh_clone_following_the_readme_ends_connected(tmp_path, claude_bin, model, wheels, git_url):
    """Clone, then the README's plugin commands verbatim, as a user whose Python has no mcp package:
    the first connection builds the private environment, within Claude Code's own 30 s timeout."""
    section = readme_section("Install as a Claude Code plugin")
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[0].startswith("git clone ") and len(commands) == 3, commands
    claude = Claude(claude_bin, tmp_path / "home", model, CODEX_MCP_PYTHON=bare_python(tmp_path),
                    **offline_index(wheels))
    claude.env["PATH"] = os.pathsep.join(p for p in claude.env["PATH"].split(os.pathsep)
                                         if not (Path(p) / "uv").exists())
    workdir = tmp_path / "work"
    workdir.mkdir()
    for command in commands:
        command = command.replace("<repo-url>", git_url)
        done = subprocess.run(command, shell=True, cwd=workdir, env=claude.env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    project = make_repo(tmp_path / "project")
    line = claude.server_line(project)
    assert "✔ Connected" in line and str(workdir / "codex-mcp") in line, line
    logs = "".join(path.read_text() for path in claude.home.glob(".cache/claude-cli-nodejs/*/mcp-logs-plugin-*/*"))
    assert "building a private environment" in logs and "private environment ready" in logs   # said on stderr
    assert (claude.home / ".claude" / "plugins" / "data" / "codex-mcp-codex-mcp" / "venv" / "codex-mcp-ready").is_file()



def registration_env(claude: Claude, uv_cache: str, uv_bin: str) -> None:
    """A user's shell after the README's install: uv on PATH, no CODEX_MCP_PYTHON, nothing from PyPI."""
    del claude.env["CODEX_MCP_PYTHON"]
    claude.env["UV_CACHE_DIR"] = uv_cache
    claude.env["PATH"] = str(Path(uv_bin).parent) + os.pathsep + claude.env["PATH"]


def readme_block(section: str, language: str) -> str:
    return re.search(rf"```{language}\n(.*?)```", readme_section(section), re.S).group(1)


@pytest.mark.slow
def test_every_registration_form_in_the_readme_connects(tmp_path, claude_bin, model, wheels, uv_bin, git_url,
                                                        uv_cache):
    if not (ROOT / ".venv" / "bin" / "codex-mcp").exists():
        missing("the README's install has not been run in this checkout: "
                "python3 -m venv .venv && .venv/bin/pip install -e .")
    forms = [line for line in readme_block("Register it with Claude Code", "sh").splitlines()
             if line.startswith("claude mcp add")]
    assert len(forms) == 1, forms                  # one recommended line, then the other ways
    forms += [line for line in readme_block("Other ways to run the server", "sh").splitlines()
              if line.startswith("claude mcp add")]
    assert len(forms) == 6, forms
    claude = Claude(claude_bin, tmp_path / "home", model, **offline_index(wheels))
    registration_env(claude, uv_cache, uv_bin)
    claude.env["PATH"] = str(ROOT / ".venv" / "bin") + os.pathsep + claude.env["PATH"]   # the install put it there
    project = make_repo(tmp_path / "project")
    # Each under a name of its own, so that one `claude mcp list` connects them all at once.
    for number, form in enumerate(forms):
        form = form.replace("<repo-url>", git_url).replace("add codex-mcp ", f"add codex-mcp-{number} ")
        done = subprocess.run(form, shell=True, cwd=ROOT, env=claude.env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, (form, done.stderr)
    out = claude.run("mcp", "list", cwd=project, timeout=120).stdout
    for number, form in enumerate(forms):
        line = next((line for line in out.splitlines() if line.startswith(f"codex-mcp-{number}: ")), "")
        assert "✔ Connected" in line, (form, out)


@pytest.mark.slow
def test_project_mcp_json_waits_for_approval_and_doctor_says_how(tmp_path, claude_bin, model, wheels, uv_bin,
                                                                  git_url, uv_cache):
    claude = Claude(claude_bin, tmp_path / "home", model, **offline_index(wheels))
    registration_env(claude, uv_cache, uv_bin)
    project = make_repo(tmp_path / "project")
    (project / ".mcp.json").write_text(readme_block("Register it with Claude Code", "json")
                                       .replace("<repo-url>", git_url))
    assert "⏸ Pending approval" in claude.run("mcp", "list", cwd=project).stdout
    status, result = doctor(project, dict(claude.env, CODEX_MCP_PYTHON=sys.executable))
    assert "enabledMcpjsonServers" in checks(result)["claude"]["fix"]

    def server_line(cwd: Path) -> str:
        return next(line for line in claude.run("mcp", "list", cwd=cwd, timeout=120).stdout.splitlines()
                    if line.startswith("codex-mcp: "))

    # The README's approval without the start-up questions: its line, in the user settings file it names.
    section = readme_section("Register it with Claude Code")
    approval = re.search(r'add `(\{"enabledMcpjsonServers".*?\})` to your user settings, `(~/\.claude/settings\.json)`',
                         section.replace("\n", " "))
    json.loads(approval.group(1))
    # What the README says of .claude/settings.local.json: it counts only in a folder the user has trusted.
    (project / ".claude").mkdir()
    (project / ".claude" / "settings.local.json").write_text(approval.group(1))
    assert "⏸ Pending approval" in server_line(project)
    state = claude.home / ".claude" / ".claude.json"     # where Claude Code records "Yes, I trust this folder"
    recorded = json.loads(state.read_text())
    recorded.setdefault("projects", {}).setdefault(str(project), {})["hasTrustDialogAccepted"] = True
    state.write_text(json.dumps(recorded))
    assert "✔ Connected" in server_line(project)

    other = make_repo(tmp_path / "other")       # not trusted, nothing approved in it
    (other / ".mcp.json").write_text((project / ".mcp.json").read_text())
    assert "⏸ Pending approval" in server_line(other)
    settings = Path(approval.group(2).replace("~", str(claude.home), 1))
    assert settings == Path(claude.env["CLAUDE_CONFIG_DIR"]) / "settings.json"
    settings.write_text(json.dumps({**(json.loads(settings.read_text()) if settings.exists() else {}),
                                    **json.loads(approval.group(1))}))
    assert "✔ Connected" in server_line(other)


def test_launcher_without_python_runs_through_uvx(tmp_path):
    """A fake uvx: a real one cannot run without any Python offline. It shows what the launcher runs."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "dirname", "readlink"):
        (bare / tool).symlink_to(shutil.which(tool))
    (bare / "uvx").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    (bare / "uvx").chmod(0o755)
    done = subprocess.run(["/bin/sh", str(LAUNCHER), "check", "T-001"], capture_output=True, text=True,
                          timeout=30, env={"PATH": str(bare), "HOME": str(tmp_path)})
    assert done.returncode == 0 and done.stdout.split() == ["--from", str(ROOT), "codex-mcp", "check", "T-001"]
    assert "running through uvx" in done.stderr

# -- the opt-in Stop hook ----------------------------------------------------------------------------

def transcript(tmp_path: Path, *lines: dict) -> str:
    path = tmp_path / "transcript.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def test_hold_review_names_only_this_sessions_tasks_in_review_and_lets_go_the_second_time(tmp_path):
    import codex_mcp as cm
    tasks = tmp_path / "agents" / "tasks"
    tasks.mkdir(parents=True)
    example = (ROOT / "agents" / "tasks" / "T-001.md").read_text()
    for task_id, status in (("T-001", "review"), ("T-002", "review"), ("T-003", "done")):
        (tasks / f"{task_id}.md").write_text(example.replace("T-001", task_id)
                                             .replace("- Status: blocked", f"- Status: {status}"))
    mentioned = transcript(tmp_path, {"message": {"content": [{"type": "tool_result", "content": '{"taskId": "T-001"}'}]}},
                           {"message": {"content": "codex-mcp check T-003 --wait 600"}},
                           {"message": {"content": "a user talking about T-002 elsewhere"}})
    hook = {"transcript_path": mentioned, "cwd": str(tmp_path), "stop_hook_active": False}
    held = cm.held_reviews(hook)
    assert held["decision"] == "block" and held["reason"].startswith("T-001 waits in review: call accept-task")
    assert "T-002" not in held["reason"]
    assert cm.held_reviews({**hook, "stop_hook_active": True}) == {}
    assert cm.held_reviews({**hook, "transcript_path": str(tmp_path / "missing.jsonl")}) == {}
    (tasks / "T-001.md").write_text(example)            # blocked now: nothing waits for accept-task
    assert cm.held_reviews(hook) == {}


@pytest.mark.codex
def test_stop_hook_is_off_by_default_and_when_on_keeps_the_turn_until_accept(tmp_path, claude_bin, codex_bin, model):
    with ModelServer([{"say": report(files=["src/app.py"])}]) as codex:
        session = Session(tmp_path, claude_bin, codex_bin, model, codex)
        allowed = ["--allowedTools", ",".join(f"{TOOL}{name}" for name in ("delegate-task", "check-task",
                                                                          "accept-task"))]
        model.steps = [{"tool": f"{TOOL}delegate-task", "input": {"goal": "Say hello", "allowedPaths": ["src/"]}},
                       {"tool": f"{TOOL}check-task", "input": {"taskId": "T-001", "waitSeconds": 60}},
                       {"say": "Codex has finished."}]
        session.claude.run("-p", "Delegate a greeting to Codex", *allowed, cwd=session.repo)
        assert len(model.turns) - model.waited == 3, [tool_results(t) for t in model.turns]
        assert "- Status: review" in session.record("T-001")      # off: the turn ended

        settings = session.claude.home / ".claude" / "settings.json"
        settings.write_text(json.dumps({**json.loads(settings.read_text()), "env": {"CODEX_MCP_HOLD_REVIEW": "1"}}))
        held: dict = {}

        def accept_when_held(body: dict) -> dict:
            held["text"] = json.dumps(since_last_answer(body))
            return {"tool": f"{TOOL}accept-task", "input": {"taskId": "T-001"}}

        model.steps = [{"tool": f"{TOOL}check-task", "input": {"taskId": "T-001"}},
                       {"say": "I will leave it for now."}, accept_when_held,
                       lambda body: {"say": "accepted: " + answer(body)["action"]}]
        out = session.claude.run("-p", "How is T-001 doing?", *allowed, cwd=session.repo).stdout

    assert "T-001 waits in review: call accept-task" in held["text"]
    assert "accepted: done" in out and "- Status: done" in session.record("T-001")


@pytest.mark.codex
def test_doctor_never_starts_a_server_that_codex_wrote_into_the_projects_mcp_json(tmp_path, claude_bin, codex_bin,
                                                                                model):
    """`claude mcp list` starts every server it lists: run in the project, it would start what the
    project's `.mcp.json` names, a file a task's Codex may have rewritten (under the approved name)."""
    project = make_repo(tmp_path / "project")
    marker = tmp_path / "pwned-by-mcp-json"
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"codex-mcp": {
        "command": str(LAUNCHER), "args": ["serve"]}}}))
    subprocess.run(["git", "-C", str(project), "add", ".mcp.json"], check=True)
    subprocess.run(["git", "-C", str(project), "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "mcp"],
                   check=True)
    planted = json.dumps({"mcpServers": {"codex-mcp": {"command": "sh", "args": ["-c", f"touch {marker}"]}}})
    with ModelServer([{"run": f"printf 'x = 2\\n' > src/app.py && printf '%s' '{planted}' > .mcp.json"},
                      {"say": report(files=["src/app.py"])}]) as codex:
        codex.write_config(tmp_path / "codex-home")
        claude = Claude(claude_bin, tmp_path / "home", model, CODEX_HOME=str(tmp_path / "codex-home"))
        settings = claude.home / ".claude" / "settings.json"       # approved the way the README says
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"enabledMcpjsonServers": ["codex-mcp"]}))
        env = dict(claude.env)
        env["PATH"] = str(Path(codex_bin).parent) + os.pathsep + env["PATH"]
        cli = [sys.executable, str(ROOT / "codex_mcp.py"), "--cwd", str(project), "--codex-cmd", codex_bin]
        subprocess.run([*cli, "delegate", "--goal", "x to 2", "--paths", "src/", "--wait"], env=env, check=True,
                       capture_output=True, timeout=120)
        assert "touch" in (project / ".mcp.json").read_text()            # the plant is there
        status, result = doctor(project, env)
    claude_check = checks(result)["claude"]
    assert not marker.exists(), "doctor started a server Codex wrote"
    assert claude_check["ok"] and "the project's .mcp.json registers codex-mcp (sh -c touch" in claude_check["detail"]
    assert "approved in" in claude_check["detail"] and "not started here" in claude_check["detail"]


@pytest.mark.slow
@pytest.mark.codex
def test_the_readmes_first_screen_word_for_word_reaches_done(tmp_path, codex_bin, wheels, git_url):
    """A new user with a fresh HOME, a Python of their own (outside the project) and the Codex CLI,
    runs the Quick start's lines as they are (the repository's URL filled in), in their repository."""
    block = re.search(r"```sh\n(.*?)```", readme_section("Quick start"), re.S).group(1)
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    assert [line.split()[:2] for line in lines] == [["pip", "install"], ["codex-mcp", "doctor"],
                                                     ["codex-mcp", "delegate"], ["codex-mcp", "accept"]], lines
    python = tmp_path / "python"                       # the user's own Python, not the project's
    subprocess.run([sys.executable, "-m", "venv", str(python)], check=True)
    project = make_repo(tmp_path / "project")
    (project / "src" / "greeting.py").write_text("print('Helo, world')\n")
    subprocess.run(["git", "-C", str(project), "add", "."], check=True)
    subprocess.run(["git", "-C", str(project), "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "greet"],
                   check=True)
    with ModelServer([{"run": "sed -i 's/Helo/Hello/' src/greeting.py"},
                      {"say": report(files=["src/greeting.py"])}]) as codex:
        codex.write_config(tmp_path / "codex-home")
        env = base_env(HOME=str(tmp_path / "home"), CODEX_HOME=str(tmp_path / "codex-home"), **offline_index(wheels))
        env["PATH"] = os.pathsep.join([str(python / "bin"), str(Path(codex_bin).parent), *(
            p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "codex-mcp").exists())])
        (tmp_path / "home").mkdir()
        answers = []
        for line in lines:
            done = subprocess.run(line.replace("<repo-url>", git_url), shell=True, cwd=project, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-2000:])
            answers.append(done.stdout)
    doctor_answer, delegated, accepted = (json.loads(out) for out in answers[1:])
    assert doctor_answer["ok"] is True, doctor_answer
    assert delegated["taskId"] == "T-001" and delegated["status"] == "review", delegated
    assert accepted["action"] == "done" and accepted["changedFiles"] == ["modified src/greeting.py"], accepted
    assert (project / "src" / "greeting.py").read_text() == "print('Hello, world')\n"
