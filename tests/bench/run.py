"""Benchmarks for codex-mcp: each figure is a ratio measured inside one run, against a floor
measured the same way on the same machine, because absolute times on shared machines drift.

    python -m tests.bench            # all seven, prints a table, writes tests/bench/results/latest.json
    python tests/bench/run.py startup stream --stream-mb 200

Needs the package installed (`pip install -e '.[test]'`) and, for the Codex benchmarks, the pinned
Codex CLI in $CODEX_BIN (as .ci/run installs it). Not part of the default pytest run.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import codex_mcp as cm  # noqa: E402
from conftest import find_codex, make_repo  # noqa: E402
from model_server import ModelServer, report  # noqa: E402

PY = sys.executable
CONSOLE = str(Path(PY).parent / "codex-mcp")
# An installed codex-mcp runs from byte-code; a shell that sets PYTHONDONTWRITEBYTECODE would make
# every measured start recompile the module, so the measured commands run without it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def median_time(argv: list, runs: int, **kw) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **kw)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def result(name: str, ours: float, floor: float, target: str, limit: float, unit: str = "s", **extra) -> dict:
    ratio = ours / floor if floor else float("inf")
    return {"name": name, "ours": round(ours, 4), "floor": round(floor, 4), "unit": unit,
            "ratio": round(ratio, 2), "target": target, "met": ratio <= limit, **extra}


# -- 1. CLI start-up ---------------------------------------------------------------------------------

def bench_startup(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tasks = Path(tmp) / "agents" / "tasks"
        tasks.mkdir(parents=True)
        shutil.copy(ROOT / "agents/tasks/T-001.md", tasks / "T-001.md")
        command = [CONSOLE] if Path(CONSOLE).exists() else [PY, "-m", "codex_mcp"]
        median_time(command + ["check", "T-001"], 3, cwd=tmp)        # warm the byte-code cache
        floor = median_time([PY, "-c", "pass"], args.runs, cwd=tmp)
        ours = median_time(command + ["check", "T-001"], args.runs, cwd=tmp)
    imports = subprocess.run([PY, "-c", "import codex_mcp, sys; print(sorted(m for m in sys.modules "
                              "if m.split('.')[0] in ('mcp', 'pydantic', 'anyio')))"],
                             capture_output=True, text=True, cwd=str(ROOT)).stdout.strip()
    return result("CLI start-up: codex-mcp check T-001 vs python -c pass", ours, floor, "<= 1.5x", 1.5,
                  mcp_imported=imports != "[]")


# -- 2. server start-up ------------------------------------------------------------------------------

BARE_SERVER = """
from mcp.server.mcpserver import MCPServer
server = MCPServer("bare")

@server.tool()
def ping(text: str) -> str:
    return text

server.run("stdio")
"""

HANDSHAKE = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]


def time_handshake(argv: list, cwd: str) -> float:
    started = time.perf_counter()
    server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, cwd=cwd)
    server.stdin.write("\n".join(json.dumps(m) for m in HANDSHAKE) + "\n")
    server.stdin.flush()
    while json.loads(server.stdout.readline()).get("id") != 2:
        pass
    elapsed = time.perf_counter() - started
    server.stdin.close()
    server.wait()
    return elapsed


def bench_server(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_server.py"
        bare.write_text(BARE_SERVER)
        ours_argv, bare_argv = [PY, "-m", "codex_mcp", "serve"], [PY, str(bare)]
        time_handshake(ours_argv, tmp), time_handshake(bare_argv, tmp)
        floors, ours = [], []
        for _ in range(args.runs // 2 or 1):        # interleaved, so drift hits both alike
            floors.append(time_handshake(bare_argv, tmp))
            ours.append(time_handshake(ours_argv, tmp))
    return result("Server start-up: initialize + tools/list vs a bare one-tool SDK server",
                  statistics.median(ours), statistics.median(floors), "<= 1.2x", 1.2)


# -- 3. orchestration overhead ---------------------------------------------------------------------

def bench_overhead(args) -> dict:
    codex = need_codex()
    floors, ours = [], []
    with tempfile.TemporaryDirectory() as tmp, ModelServer() as server:
        home = Path(tmp) / "home"
        server.write_config(home)
        env = {**os.environ, "CODEX_HOME": str(home)}
        for n in range(args.codex_runs):
            repo = make_repo(Path(tmp) / f"bare{n}")
            bare = [codex, "exec", "--json", "--skip-git-repo-check", "-s", "workspace-write", "-C", str(repo), "-"]
            started = time.perf_counter()
            subprocess.run(bare, input=b"Change x", env=env, capture_output=True, check=True)
            floors.append(time.perf_counter() - started)
            repo = make_repo(Path(tmp) / f"ours{n}")
            started = time.perf_counter()
            done = subprocess.run([CONSOLE, "--cwd", str(repo), "--codex-cmd", codex, "delegate", "--goal", "Change x",
                                   "--paths", "src/", "--wait"], env=env, capture_output=True, text=True)
            ours.append(time.perf_counter() - started)
            assert json.loads(done.stdout)["status"] == "review", done.stdout
    return result("Orchestration: delegate --wait to review vs bare codex exec --json",
                  statistics.median(ours), statistics.median(floors), "<= 1.10x", 1.10)


# -- 4. stream scale ---------------------------------------------------------------------------------

def write_stream(path: Path, megabytes: int) -> int:
    """A recorded-looking Codex stream: commands with output, reasoning, a final message."""
    output = ("test_module.py::test_case PASSED\n" * 24)[:900]
    command = json.dumps({"type": "item.completed", "item": {
        "id": "item_9", "type": "command_execution", "command": "/bin/bash -lc 'pytest -q'",
        "aggregated_output": output, "exit_code": 0, "status": "completed"}}) + "\n"
    reasoning = json.dumps({"type": "item.completed", "item": {"id": "item_8", "type": "reasoning",
                                                               "text": "Thinking about the tests. " * 10}}) + "\n"
    block = (command + reasoning) * 500
    head = json.dumps({"type": "thread.started", "thread_id": "bench-thread"}) + "\n"
    tail = json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": report()}}) + "\n" + \
        json.dumps({"type": "turn.completed", "usage": {"input_tokens": 10, "output_tokens": 5}}) + "\n"
    lines = 0
    with open(path, "w") as out:
        out.write(head)
        while out.tell() < megabytes * 1_000_000:
            out.write(block)
            lines += 1000
        out.write(tail)
    return lines + 3


def floor_parse(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run([PY, "-c", "import json, sys\nfor line in open(sys.argv[1], 'rb'):\n    json.loads(line)\n",
                    str(path)], check=True)
    return time.perf_counter() - started


def peak_memory(pid: int, stop: threading.Event, peak: list) -> None:
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
        except OSError:
            return
        time.sleep(0.02)


def bench_stream(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "events.jsonl"
        lines = write_stream(stream, args.stream_mb)
        fake = Path(tmp) / "recorded-codex"
        fake.write_text(f"#!/bin/sh\ncat > /dev/null\nexec cat {stream}\n")
        fake.chmod(0o755)
        repo = make_repo(Path(tmp) / "repo")
        floor = floor_parse(stream)
        started = time.perf_counter()
        subprocess.run([CONSOLE, "--cwd", str(repo), "--codex-cmd", str(fake), "delegate", "--goal", "stream",
                        "--paths", "src/"], capture_output=True, check=True)
        pid = int(cm.Store(repo).load("T-001").worker.split("@")[0])
        stop, peak = threading.Event(), [0]
        watcher = threading.Thread(target=peak_memory, args=(pid, stop, peak))
        watcher.start()
        while cm.process_alive(cm.Store(repo).load("T-001").worker or "0@"):
            time.sleep(0.02)
        ours = time.perf_counter() - started
        stop.set()
        watcher.join()
        task = cm.Store(repo).load("T-001")
        record = cm.Store(repo).path("T-001").stat().st_size
        assert task.status == "review", task.reason
    return result(f"Stream: {args.stream_mb} MB of events ({lines:,} lines) through the worker vs json.loads loop",
                  ours, floor, "<= 1.3x, worker < 64 MB", 1.3, peak_mb=round(peak[0] / 1024, 1),
                  record_kb=round(record / 1024, 1), memory_met=peak[0] < 64 * 1024)


# -- 5. task scale -----------------------------------------------------------------------------------

def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_tasks(args) -> list:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "one", Path(tmp) / "many"
        small.mkdir(), big.mkdir()
        cm.Store(small).create(cm.new_task("T-0", "one task", ["src/"]))
        store = cm.Store(big)
        store.tasks_dir.mkdir(parents=True)
        template = cm.render_task(cm.new_task("T-1", "a task among many", ["src/"]))
        for n in range(1, args.tasks + 1):
            (store.tasks_dir / f"T-{n:03d}.md").write_text(template.replace("# T-1:", f"# T-{n:03d}:"))

        def create(repo):
            return lambda: cm.Store(repo).create(cm.new_task("T-0", "new", ["src/"]))
        out.append(result(f"Task scale: id allocation with {args.tasks:,} tasks vs 1", timed(create(big), 20),
                          timed(create(small), 20), "<= 2x", 2.0))
        check_small = median_time([CONSOLE, "--cwd", str(small), "check", "T-001"], args.runs)
        check_big = median_time([CONSOLE, "--cwd", str(big), "check", "T-001"], args.runs)
        out.append(result(f"Task scale: codex-mcp check with {args.tasks:,} tasks vs 1", check_big, check_small,
                          "<= 2x", 2.0))
        listing = median_time([CONSOLE, "--cwd", str(big), "list"], 3)
        out.append(result(f"Task scale: codex-mcp list of {args.tasks:,} tasks (absolute)", listing, 1.0,
                          "< 1 s", 1.0))
    return out


# -- 6. workspace scale ------------------------------------------------------------------------------

def bench_workspace(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "big"
        for n in range(args.files):
            folder = repo / f"pkg{n // 500}" / f"sub{(n // 50) % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"mod{n}.py").write_text(f"# module {n}\nVALUE = {n}\n" + "x = 1\n" * (n % 40))
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
        subprocess.run(["git", "-C", str(repo), "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "big"],
                       check=True)
        (repo / "pkg0" / "sub0" / "mod0.py").write_text("changed\n")
        (repo / "new.txt").write_text("new\n")
        git_status = median_time(["git", "-C", str(repo), "status", "--porcelain"], args.runs)
        runs = max(5, args.runs // 3)
        baseline = timed(lambda: cm.snapshot(repo), runs)
        before = cm.snapshot(repo)
        (repo / "pkg1" / "sub1" / "mod555.py").write_text("changed by the run\n")
        review = timed(lambda: cm.changed_paths(before, cm.snapshot(repo, before)), runs)
    return [result(f"Workspace: snapshot + compare after a run, {args.files:,}-file git repo vs git status",
                   review, git_status, "<= 2x", 2.0),
            result(f"Workspace: baseline snapshot before a run, {args.files:,}-file git repo vs git status",
                   baseline, git_status, "<= 2x", 2.0)]


# -- 7. parallelism ----------------------------------------------------------------------------------

def bench_parallel(args) -> dict:
    codex = need_codex()
    turn = 2.0
    with tempfile.TemporaryDirectory() as tmp, ModelServer(default={"say": report(), "delay": turn}) as server:
        home = Path(tmp) / "home"
        server.write_config(home)
        env = {**os.environ, "CODEX_HOME": str(home)}
        one = make_repo(Path(tmp) / "single")
        started = time.perf_counter()
        subprocess.run([CONSOLE, "--cwd", str(one), "--codex-cmd", codex, "delegate", "--goal", "single",
                        "--paths", "src/", "--wait"], env=env, capture_output=True, check=True)
        single = time.perf_counter() - started
        server.requests.clear()
        repos = [make_repo(Path(tmp) / f"repo{r}") for r in range(4)]
        started = time.perf_counter()
        for task in range(2):
            for r, repo in enumerate(repos):
                subprocess.run([CONSOLE, "--cwd", str(repo), "--codex-cmd", codex, "delegate", "--goal",
                                f"repo{r} task{task}", "--paths", "src/"], env=env, capture_output=True, check=True)
        for repo in repos:
            for task_id in ("T-001", "T-002"):
                while cm.check_task(repo, task_id)["status"] in ("todo", "doing"):
                    time.sleep(0.05)
        total = time.perf_counter() - started
        overlaps = 0
        for r in range(4):
            spans = sorted((q["start"], q["end"]) for i, q in enumerate(server.requests)
                           if f"repo{r} task" in server.texts(i))
            overlaps += sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    return result("Parallelism: 8 tasks over 4 repos, 2 s turns, vs 2x one task", total, 2 * single, "about 1x",
                  1.25, overlaps_in_a_repo=overlaps)


def need_codex() -> str:
    codex = find_codex()
    if not codex:
        raise SystemExit("the Codex benchmarks need the pinned Codex CLI: set CODEX_BIN (see .ci/run)")
    return codex


BENCHES = {"startup": bench_startup, "server": bench_server, "overhead": bench_overhead, "stream": bench_stream,
           "tasks": bench_tasks, "workspace": bench_workspace, "parallel": bench_parallel}


def table(rows: list) -> str:
    lines = ["| benchmark | ours | floor | ratio | target | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        extra = "".join(f", {k} {v}" for k, v in row.items() if k in ("peak_mb", "record_kb", "overlaps_in_a_repo"))
        lines.append(f"| {row['name']} | {row['ours']} s | {row['floor']} s | {row['ratio']}x | "
                     f"{row['target']}{extra} | {'yes' if row['met'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", metavar="BENCH", help=f"any of: {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--runs", type=int, default=30, help="repetitions of the quick measurements")
    parser.add_argument("--codex-runs", type=int, default=5, help="repetitions of the Codex cycle")
    parser.add_argument("--stream-mb", type=int, default=1000, help="size of the event stream")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=20_000)
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}; choose from {', '.join(BENCHES)}")
    rows = []
    for name in args.only or BENCHES:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        got = BENCHES[name](args)
        rows.extend(got if isinstance(got, list) else [got])
    print(table(rows))
    out = ROOT / "tests" / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(),
                                                 "python": sys.version.split()[0], "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
