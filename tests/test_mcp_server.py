"""The MCP server, driven by the official SDK client: in memory, and over stdio as a subprocess."""

import json
import os
import subprocess
import sys
import time

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

import codex_mcp as cm
from conftest import ROOT
from model_server import report

SNAPSHOT = ROOT / "tests" / "snapshots" / "list_tools.json"
TOOLS = {"delegate-task", "start-task", "check-task", "accept-task", "rework-task", "retry-task", "list-tasks",
         "cancel-task", "discard-task", "review-changes"}


def call(server, name: str, args: dict, **kw):
    async def go():
        async with Client(server) as client:
            return await client.call_tool(name, args, **kw)
    return anyio.run(go)


def tools_list(server) -> list:
    async def go():
        async with Client(server) as client:
            return [tool.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for tool in (await client.list_tools()).tools]
    return anyio.run(go)


@pytest.fixture
def example_repo(tmp_path):
    tasks = tmp_path / "agents" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "T-001.md").write_text((ROOT / "agents/tasks/T-001.md").read_text())
    return tmp_path


def test_tools_list_is_pinned_by_a_snapshot(example_repo):
    tools = tools_list(cm.build_server(str(example_repo)))
    assert {t["name"] for t in tools} == TOOLS
    text = json.dumps(tools, indent=2, sort_keys=True) + "\n"
    assert SNAPSHOT.read_text() == text, (
        "the tools/list answer changed; review the diff and regenerate tests/snapshots/list_tools.json")


def test_the_seeds_tools_keep_their_arguments_and_answers(example_repo):
    """The snapshot pins the whole list; this pins the part that is the seed's contract, which no
    regenerated snapshot may drop: its five tools, their arguments and the fields they answer with."""
    tools = {t["name"]: t for t in tools_list(cm.build_server(str(example_repo)))}
    seed = {"delegate-task": ({"goal", "allowedPaths"}, {"constraints", "acceptanceCriteria", "cwd"},
                              {"taskId", "threadId", "status", "filePath"}),
            "check-task": ({"taskId"}, set(), {"taskId", "status", "reworkCount", "goal", "codexThreadId",
                                               "lastCodexResultSummary", "lastCodexTestReport"}),
            "accept-task": ({"taskId"}, set(), {"taskId", "action", "reason", "status"}),
            "rework-task": ({"taskId", "reviewItems"}, set(), {"taskId", "threadId", "status", "reworkCount"}),
            "retry-task": ({"taskId"}, set(), {"taskId", "status"})}
    for name, (required, optional, answers) in seed.items():
        schema = tools[name]["inputSchema"]
        assert set(schema["required"]) == required and required | optional <= set(schema["properties"]), name
        assert answers <= set(tools[name]["outputSchema"]["properties"]), name
    assert {name for name, tool in tools.items() if tool["annotations"]["readOnlyHint"]} == {"check-task", "list-tasks"}


def test_results_are_structured_with_the_same_json_as_text(example_repo):
    server = cm.build_server(str(example_repo))
    result = call(server, "check-task", {"taskId": "T-001"})
    assert not result.is_error
    assert json.loads(result.content[0].text) == result.structured_content
    assert result.structured_content == cm.check_task(example_repo, task_id="T-001")
    assert len(result.content[0].text.encode()) < 1500
    listed = call(server, "list-tasks", {})
    assert listed.structured_content["tasks"][0]["taskId"] == "T-001"
    retried = call(server, "retry-task", {"taskId": "T-001"})
    assert retried.structured_content["status"] == "todo"


def test_cwd_is_per_call(example_repo, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    server = cm.build_server(str(other))
    assert call(server, "list-tasks", {}).structured_content["count"] == 0
    assert call(server, "list-tasks", {"cwd": str(example_repo)}).structured_content["count"] == 1
    missing = call(server, "check-task", {"taskId": "T-001"})
    assert missing.is_error and "not_found" in missing.content[0].text


BAD_CALLS = [
    ("check-task", {"taskId": "../../etc/passwd"}, "bad_input"),
    ("check-task", {"taskId": "T-404"}, "not_found"),
    ("check-task", {"taskId": 12}, "`taskId` must be text, not a number"),
    ("check-task", {}, "`taskId` is required"),
    ("check-task", {"taskId": "T-001", "waitSeconds": 601}, "`waitSeconds` must be a number of seconds from 0 to 600"),
    ("check-task", {"taskId": "T-001", "cwd": "relative/dir"}, "`cwd` 'relative/dir' is relative"),
    ("delegate-task", {"goal": "g"}, "`allowedPaths` is required"),
    ("delegate-task", {"goal": "g", "allowedPaths": ["/etc"]}, "is absolute"),
    ("delegate-task", {"goal": "g", "allowedPaths": "src/"}, "`allowedPaths` must be a list of strings, not text"),
    ("delegate-task", {"allowedPaths": ["src/"]}, "`goal` is required"),
    ("delegate-task", {"goal": "x" * 20001, "allowedPaths": ["src/"]}, "at most 20000"),
    ("delegate-task", {"fromFile": "T-001"}, "unknown argument `fromFile`"),
    ("delegate-task", {"goal": "g", "allowedPaths": ["src/"], "timeoutSeconds": "1h"},
     "`timeoutSeconds` must be a whole number, not text"),
    ("start-task", {"taskId": "T-001"}, "needs a todo task"),
    ("accept-task", {"taskId": "T-001"}, "needs a review task"),
    ("rework-task", {"taskId": "T-001", "reviewItems": []}, "`reviewItems` is required"),
    ("rework-task", {"taskId": "T-001", "reviewItems": ["x"]}, "needs a review task"),
    ("cancel-task", {"taskId": "T-001"}, "cancel stops only"),
    ("unknown-tool", {}, "no tool `unknown-tool`"),
]


@pytest.mark.parametrize("name, args, words", BAD_CALLS)
def test_bad_calls_are_tool_errors_and_change_nothing(example_repo, name, args, words):
    before = sorted((p.name, p.read_bytes()) for p in (example_repo / "agents/tasks").rglob("*") if p.is_file()
                    and p.suffix == ".md")
    result = call(cm.build_server(str(example_repo)), name, args)
    assert result.is_error and words in result.content[0].text, result.content[0].text
    after = sorted((p.name, p.read_bytes()) for p in (example_repo / "agents/tasks").rglob("*") if p.is_file()
                   and p.suffix == ".md")
    assert after == before


def test_server_survives_errors_and_answers_the_next_call(example_repo):
    async def go():
        async with Client(cm.build_server(str(example_repo))) as client:
            for _ in range(3):
                assert (await client.call_tool("check-task", {"taskId": "nope"})).is_error
            return await client.call_tool("list-tasks", {})
    assert anyio.run(go).structured_content["count"] == 1


@pytest.mark.codex
def test_wait_sends_progress_and_returns_when_codex_finishes(harness):
    h = harness
    h.server.default = {"say": report(), "delay": 3}
    os.environ["CODEX_HOME"] = h.env["CODEX_HOME"]
    try:
        server = cm.build_server(str(h.repo), h.codex)
        progress = []

        async def go():
            async with Client(server) as client:
                started = await client.call_tool("delegate-task", {"goal": "g", "allowedPaths": ["src/"]})
                assert started.structured_content["status"] == "doing"

                async def on_progress(value, total, message):
                    progress.append((value, total, message))
                return await client.call_tool("check-task", {"taskId": "T-001", "waitSeconds": 60},
                                              progress_callback=on_progress)
        result = anyio.run(go)
    finally:
        del os.environ["CODEX_HOME"]
    assert result.structured_content["status"] == "review"
    assert progress and all(total == 60 for _, total, _ in progress)
    assert any("review" in (message or "") for _, _, message in progress)


@pytest.mark.codex
def test_cancelled_wait_stops_promptly_and_other_calls_are_answered(harness, monkeypatch):
    h = harness
    h.server.push({"hang": True})
    h.ok("delegate", "--goal", "g", "--paths", "src/")
    ended = []
    real = cm.wait_until

    def watched(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        finally:
            ended.append(time.monotonic())
    monkeypatch.setattr(cm, "wait_until", watched)
    server = cm.build_server(str(h.repo), h.codex)

    async def go():
        async with Client(server) as client:
            timings = {}

            async def long_wait():
                with anyio.move_on_after(1.5):
                    await client.call_tool("check-task", {"taskId": "T-001", "waitSeconds": 120})
                timings["cancelled"] = time.monotonic()

            async def meanwhile():
                await anyio.sleep(0.3)
                started = time.monotonic()
                listed = await client.call_tool("list-tasks", {})
                timings["list"] = time.monotonic() - started
                assert listed.structured_content["tasks"][0]["status"] == "doing"

            async with anyio.create_task_group() as group:
                group.start_soon(long_wait)
                group.start_soon(meanwhile)
            await anyio.sleep(1.0)
            return timings
    timings = anyio.run(go)
    assert timings["list"] < 1.0, "the server did not answer while another call waited"
    assert ended and ended[-1] - timings["cancelled"] < 1.0, "the cancelled wait kept running"
    h.ok("cancel", "T-001")


def stdio_params(h, *extra_env) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "codex_mcp", "--codex-cmd", h.codex, "serve"],
                                 cwd=str(h.repo), env={**h.env, "PYTHONPATH": str(ROOT)})


@pytest.mark.codex
def test_end_to_end_over_stdio_with_the_real_codex(harness):
    h = harness
    h.server.push({"run": "printf 'x = 2\\n' > src/app.py"}, {"say": report(files=["src/app.py"])})
    sizes = {}

    async def go():
        async with Client(stdio_params(h), read_timeout_seconds=120) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert names == TOOLS
            steps = [("delegate-task", {"goal": "Change x to 2", "allowedPaths": ["src/"],
                                        "verify": "grep -q 'x = 2' src/app.py"}),
                     ("check-task", {"taskId": "T-001", "waitSeconds": 60}),
                     ("accept-task", {"taskId": "T-001"}),
                     ("check-task", {"taskId": "T-001"}),
                     ("list-tasks", {})]
            results = {}
            for name, args in steps:
                result = await client.call_tool(name, args)
                assert not result.is_error, result.content[0].text
                sizes[name + str(len(sizes))] = len(result.content[0].text.encode())
                results[name] = result.structured_content
            return results
    results = anyio.run(go)
    assert results["delegate-task"]["threadId"] and results["accept-task"]["action"] == "done"
    assert results["check-task"]["status"] == "done" and results["check-task"]["next"].startswith("nothing")
    assert max(sizes.values()) < 1500, sizes
    assert h.task("T-001").status == "done"


def test_stdout_carries_only_protocol_messages(example_repo):
    lines = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "check-task",
                                                                    "arguments": {"taskId": "T-404"}}}]
    server = subprocess.Popen([sys.executable, "-m", "codex_mcp", "serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=example_repo,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    server.stdin.write("\n".join(map(json.dumps, lines)) + "\n")
    server.stdin.flush()
    replies = [json.loads(server.stdout.readline()) for _ in range(3)]   # every stdout line is JSON-RPC
    server.stdin.close()
    assert server.wait(timeout=30) == 0 and server.stdout.read() == ""
    assert [r.get("id") for r in replies] == [1, 2, 3] and all(r["jsonrpc"] == "2.0" for r in replies)
    assert replies[0]["result"]["instructions"].startswith("codex-mcp hands coding tasks")
    assert replies[2]["result"]["isError"] is True


INSPECTOR = os.environ.get("MCP_INSPECTOR", "")   # "<node 22> <inspector>/build/cli.js", as .ci/run sets it


def inspector(*args: str) -> dict:
    done = subprocess.run([*INSPECTOR.split(), "--cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout[done.stdout.index("{"):])     # after the Inspector's own banner


def test_driven_by_the_mcp_inspector_cli(example_repo):
    if not INSPECTOR:
        why = "set MCP_INSPECTOR to the MCP Inspector's CLI (npm @modelcontextprotocol/inspector@1.0.3, Node >= 22)"
        if os.environ.get("CODEX_MCP_REQUIRE_CODEX"):
            pytest.fail(why)
        pytest.skip(why)
    server = [sys.executable, "-m", "codex_mcp", "--cwd", str(example_repo), "serve"]
    assert {tool["name"] for tool in inspector(*server, "--method", "tools/list")["tools"]} == TOOLS
    called = inspector(*server, "--method", "tools/call", "--tool-name", "list-tasks")
    assert called["structuredContent"]["tasks"][0]["taskId"] == "T-001"


@pytest.mark.codex
def test_delegate_task_takes_per_task_timeouts(harness):
    h = harness
    h.server.push({"hang": True})
    os.environ["CODEX_HOME"] = h.env["CODEX_HOME"]
    try:
        server = cm.build_server(str(h.repo), h.codex)
        out = call(server, "delegate-task", {"goal": "g", "allowedPaths": ["src/"], "idleTimeoutSeconds": 2,
                                             "timeoutSeconds": 600})
        assert not out.is_error, out.content[0].text
        assert (h.task("T-001").timeout, h.task("T-001").idle_timeout) == (600, 2)
        done = call(server, "check-task", {"taskId": "T-001", "waitSeconds": 30})
    finally:
        del os.environ["CODEX_HOME"]
    assert done.structured_content["status"] == "blocked"
    assert done.structured_content["reason"].startswith("idle timeout")
    bad = call(server, "delegate-task", {"goal": "g", "allowedPaths": ["src/"], "timeoutSeconds": 0})
    assert bad.is_error and "`timeoutSeconds` must be a number of seconds from 1 to" in bad.content[0].text


@pytest.mark.codex
def test_every_tool_answers_in_memory(harness):
    """One in-memory session through all eight tools, against the real Codex CLI."""
    h = harness
    h.server.push({"say": report(files=["src/app.py"])}, {"say": report(summary="Reworked.")}, {"hang": True},
                  {"say": report(summary="Second start.")})
    os.environ["CODEX_HOME"] = h.env["CODEX_HOME"]

    async def go():
        async with Client(cm.build_server(str(h.repo), h.codex)) as client:
            async def tool(name, **args):
                result = await client.call_tool(name, args)
                assert not result.is_error, result.content[0].text
                assert json.loads(result.content[0].text) == result.structured_content
                return result.structured_content
            out = {"delegate": await tool("delegate-task", goal="g", allowedPaths=["src/"])}
            await tool("check-task", taskId="T-001", waitSeconds=60)
            out["rework"] = await tool("rework-task", taskId="T-001", reviewItems=["tighten it"])
            out["check"] = await tool("check-task", taskId="T-001", waitSeconds=60, detail=True)
            out["accept"] = await tool("accept-task", taskId="T-001")
            asked = len(h.server.requests)
            await tool("delegate-task", goal="second", allowedPaths=["src/"])
            while len(h.server.requests) == asked:        # cancel once Codex is waiting on the model
                await anyio.sleep(0.05)
            out["cancel"] = await tool("cancel-task", taskId="T-002")
            out["retry"] = await tool("retry-task", taskId="T-002")
            out["start"] = await tool("start-task", taskId="T-002")
            await tool("check-task", taskId="T-002", waitSeconds=60)
            out["list"] = await tool("list-tasks")
            return out
    try:
        out = anyio.run(go)
    finally:
        del os.environ["CODEX_HOME"]
    assert out["delegate"]["taskId"] == "T-001" and out["delegate"]["threadId"]
    assert out["rework"] == {"taskId": "T-001", "threadId": out["delegate"]["threadId"], "status": "doing",
                             "reworkCount": 1, "next": "already sent back to Codex: `check-task {\"taskId\": \"T-001\", \"waitSeconds\": 600}` waits for the rework"}
    assert out["check"]["status"] == "review" and out["check"]["reviewRounds"] == ["1. tighten it"]
    assert "## Summary\nReworked." in out["check"]["codexResult"]
    assert out["accept"]["action"] == "done" and out["accept"]["status"] == "done"
    assert out["cancel"]["status"] == "blocked" and out["cancel"]["reason"].startswith("cancelled")
    assert out["retry"]["status"] == "todo"
    assert out["start"]["status"] in ("doing", "review") and out["start"].get("threadId") != \
        h.task("T-002").history and "progress" in out["start"]
    assert [(t["taskId"], t["status"]) for t in out["list"]["tasks"]] == [("T-002", "review"), ("T-001", "done")], \
        h.record("T-002") + (h.repo / ".git/codex-mcp/runs/T-002.worker.log").read_text()
    assert out["list"]["total"] == 2 and "nextCursor" not in out["list"]
