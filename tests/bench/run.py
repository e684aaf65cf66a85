"""Benchmarks for codex-mcp: every row of issue 12's table, each figure measured side by side with
its floor in one run (repeats interleaved, medians compared), because absolute times on a shared
2-core machine drift.

    .venv/bin/python -m tests.bench                  # all of it (about 10 minutes); prints the table,
                                                     # writes tests/bench/results/latest.json
    .venv/bin/python -m tests.bench --quick          # the same at reduced sizes (10,000 files, 100 MB
                                                     # ignored, 1,000 records, 100 MB stream, fewer
                                                     # repeats; a few minutes): results/latest-quick.json
                                                     # (a check that everything runs: at 10,000 files the
                                                     # task-cost difference is within the noise)
    .venv/bin/python -m tests.bench task wait        # some benchmarks only: results/latest-partial.json
    .venv/bin/python -m tests.bench --help           # every size and repeat count can be set

Needs the package installed (`pip install -e '.[test]'`: the `codex-mcp` console script beside the
Python that runs this) and the pinned Codex CLI in $CODEX_BIN (as .ci/run installs it), run against
the scripted model server (tests/model_server.py, a model that answers at once) with a private
CODEX_HOME. Everything is built in a temporary folder (`--tmp DIR` chooses where) and deleted at the
end (`--keep` keeps it). The measured commands run as a user's would: PYTHONDONTWRITEBYTECODE, which
some shells (this project's CI machine among them) set, is removed from their environment. Not part
of the default pytest run (nothing here is named test_*.py).

The benchmarks, in the order of issue 12's table (the name selects one):

  task           1. What the tool adds to one task, `delegate` -> `check --wait` -> `accept` (verify
                    `true`), in a 100,000-file git repo minus the same in a 10-file repo, minus what
                    Codex itself spends more in the big repo (its own `git status`; a bare `codex exec`
                    in each repo, every round), against one `git status --porcelain -uall --ignored`
                    in the big repo. Twice: the first task in a repo (the tool's state folder deleted
                    first, so the task takes the first full snapshot) and a later one (the kept
                    snapshot brought up to date).
                 2. The detached worker's peak RSS in those tasks, as it writes it at exit to
                    .git/codex-mcp/runs/T-NNN.worker.log (the 10-file repo's is the floor).
  ignored        3. The same task cycle in a 10-file repo with 1 GB of git-ignored files (dependencies,
                    build output, data files) vs the same repo without, first and later; then a task
                    whose Codex writes a new ignored `.env` outside the boundary: accept must not say
                    done, and must list `.env` in outOfBounds.
  wait           4. How late `check --wait`, MCP `check-task waitSeconds` and `delegate --wait` return
                    after the task leaves doing: from the moment the record file says review (a thread
                    reads it every 5 ms) to the moment the call returns, at 10 files and at 100,000.
                    The worst sample is the figure. Samples taken by `task` and `orchestration` count;
                    `wait` adds tasks until each form has --rounds samples.
  tasks          4b. The verdict as an MCP background task (issue 21): MCP `delegate-task` with until
                    "verdict", from a client of revision 2026-07-28 declaring the tasks extension, which
                    polls tasks/get as Claude Code 2.1.332 does (first 90 ms after the handle, then every
                    pollIntervalMs the server asks for); from the moment the record says done to the
                    answer of the tasks/get that carries the verdict, median of --rounds tasks, with the
                    polls per second of a running task.
  orchestration  5. MCP `delegate-task` + `check-task waitSeconds` (a `codex-mcp serve` started once,
                    spoken to over stdio as Claude Code does) and CLI `delegate --wait` (no number: the
                    worker runs in the CLI's own process), each until review, vs a bare `codex exec
                    --json` of the same turn (the same command line and prompt the tool builds), in a
                    10-file repo that has had a task before.
  startup        6. `codex-mcp check T-001` (the console script, which imports the module from its
                    byte-code cache) and `python codex_mcp.py check T-001` (a copied file, compiled on
                    every start) vs `python -c pass`. The notes add the console script with no usable
                    byte-code cache (PYTHONDONTWRITEBYTECODE=1 and an empty cache folder).
  gate           6b. The review gate at Stop (issue 24) on a tree unchanged since its last review (a
                    stop after nothing new): `codex-mcp gate` with the hook's JSON on stdin vs `git
                    status --porcelain`, at 10 and 100,000 files. No Codex call may happen.
  list           7. `codex-mcp list --status doing --limit 20` with 10,000 records vs one `codex-mcp
                    check` in the same repo: cold (the state folder deleted, so the index is built) and
                    warm. Also `check` with 10,000 records vs with 1.
  server         8. `codex-mcp serve` from spawn to `initialize` answered and `tools/list` answered, vs a
                    bare one-tool `MCPServer` of the same SDK; and, as information, what importing the
                    SDK costs: the parts `serve` loads (`build_server()`), and `mcp.server.mcpserver`.
  stream            1 GB of Codex events (a recorded-looking stream replayed by a fake `codex`) through
                    the worker, `delegate` to `check --wait` returning, vs a `json.loads` loop over the
                    same file; the worker's peak memory and the record's size.
  parallel          8 tasks over 4 repos with 2 s model turns vs 2 x one task: repos run in parallel,
                    tasks of one repo never overlap.
  worktrees         Issue 13: 4 worktree tasks of one repo started together, 3 s model turns, until all
                    four are in review, vs one such task alone. And a worktree task's workspace: a
                    commit of the person's tree, the worktree made and snapshotted (first) or moved to
                    the new base with its kept snapshot brought up to date (reused, from the pool), at
                    10,000 files and at the big repo's size, against one `git status --porcelain
                    -uall --ignored` there.

Each row prints the figure, ours, the floor, the ratio and the target; the notes under the table say
how the medians spread and where the time went. The JSON has every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for extra in (str(ROOT), str(ROOT / "tests")):
    if extra not in sys.path:
        sys.path.insert(0, extra)

import codex_mcp as cm  # noqa: E402
from conftest import find_codex, processes_under  # noqa: E402
from model_server import ModelServer, report  # noqa: E402
from tests.bench.fixtures import (add_ignored, make_big_repo, make_small_repo, write_records,  # noqa: E402
                                  write_stream)
from tests.bench.harness import BenchError, McpClient, StatusWatcher, median, now, run_timed, spread  # noqa: E402

PY = sys.executable
CONSOLE = Path(PY).parent / "codex-mcp"
GOAL = "Change x in src/app.py"
BACKGROUND_GOAL = "Change y in src/app.py, in the background"
PEAK = re.compile(r"peak memory ([\d.]+) MB")

FULL = dict(files=100_000, ignored_mb=1000, records=10_000, stream_mb=1000, rounds=5, runs=20, server_runs=8,
            stream_runs=2, parallel_runs=2)
QUICK = dict(files=10_000, ignored_mb=100, records=1_000, stream_mb=100, rounds=3, runs=10, server_runs=4,
             stream_runs=1, parallel_runs=1)


class Skip(Exception):
    """A benchmark that cannot run here (no Codex CLI); the table says so."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 1 else f"{seconds:.2f} s"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def size_label(files: int) -> str:
    return f"{files:,} files"


# ====================================================================================================
# The run: shared temporary folder, environment, model server, repositories, MCP server
# ====================================================================================================

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="codex-mcp-bench-", dir=args.tmp)).resolve()
        self.env = {key: value for key, value in os.environ.items()
                    if key != "PYTHONDONTWRITEBYTECODE" and not key.startswith("GIT_")}
        self.env["XDG_STATE_HOME"] = str(self.tmp / "state-home")       # never the real home
        self.codex = find_codex()
        self.server: ModelServer | None = None
        self.client: McpClient | None = None
        self.repos: dict = {}
        self.files: dict = {}                 # repo -> how many files it was made with
        self.latency: dict = {}               # (form, size label) -> [seconds]
        self.rows: list = []

    # -- what the Codex benchmarks need ---------------------------------------------------------

    def need_codex(self) -> str:
        if not self.codex:
            raise Skip("needs the pinned Codex CLI: set CODEX_BIN (see .ci/run)")
        if self.server is None:
            self.server = ModelServer().__enter__()
            home = self.tmp / "codex-home"
            self.server.write_config(home)
            self.env["CODEX_HOME"] = str(home)
        return self.codex

    def mcp(self) -> McpClient:
        """One `codex-mcp serve` for the whole run, as Claude Code keeps one (its start-up is row 8)."""
        self.need_codex()
        if self.client is None:
            self.client = McpClient([CONSOLE, "--codex-cmd", self.codex, "serve"], self.env, self.tmp)
            self.client.initialize()
        return self.client

    def repo(self, name: str) -> Path:
        """The named repository, made the first time it is asked for."""
        if name in self.repos:
            return self.repos[name]
        path = self.tmp / name
        started = now()
        if name == "big":
            log(f"making a {self.args.files:,}-file git repository ...")
            make_big_repo(path, self.args.files)
            self.files[path] = self.args.files
        elif name == "ignored":
            log(f"making a 10-file git repository with {self.args.ignored_mb:,} MB of ignored files ...")
            make_small_repo(path)
            self.ignored = add_ignored(path, self.args.ignored_mb)
            self.files[path] = 10
        else:
            make_small_repo(path)
            self.files[path] = 10
        if now() - started > 1:
            log(f"  made in {now() - started:.1f} s")
        self.repos[name] = path
        return path

    def cli(self, repo: Path, *args: str, codex: str | None = None, env: dict | None = None) -> tuple:
        """(seconds, parsed answer) of one CLI command, as a user runs it."""
        elapsed, done = run_timed([CONSOLE, "--cwd", repo, "--codex-cmd", codex or self.codex or "codex", *args],
                                  env=env or self.env)
        try:
            return elapsed, json.loads(done.stdout)
        except ValueError:
            raise BenchError(f"codex-mcp {args[0]}: not JSON: {done.stdout[-300:]!r} {done.stderr[-300:]!r}") from None

    def add_latency(self, form: str, repo: Path, seconds: float) -> None:
        self.latency.setdefault((form, size_label(self.files[repo])), []).append(seconds)

    def add(self, order: float, figure: str, ours: object, floor: float | None, target: str,
            limit: float | None = None, unit: str = "s", absolute: bool = False, met: bool | None = None,
            notes: str = "", data: dict | None = None) -> dict:
        """One row. `limit` bounds the ratio (or, `absolute`, ours itself)."""
        ratio = ours / floor if isinstance(ours, (int, float)) and floor and not absolute else None
        if met is None and limit is not None and isinstance(ours, (int, float)):
            met = (ours if absolute else ratio) <= limit
        row = {"order": order, "figure": figure, "ours": ours, "floor": floor, "unit": unit, "ratio": ratio,
               "target": target, "met": met, "notes": notes, "data": data or {}}
        self.rows.append(row)
        return row

    def close(self) -> None:
        log("cleaning up ...")
        if self.client is not None:
            self.client.close()
            log("  MCP server closed")
        if self.server is not None:
            self.server.__exit__(None, None, None)
            log("  model server stopped")
        deadline = time.monotonic() + 30
        left = processes_under(self.tmp)
        if left:
            log(f"waiting for {len(left)} processes to end: {', '.join(c[:80] for _, c in left[:3])}")
        while left and time.monotonic() < deadline:       # a worker finishing its last write
            time.sleep(0.2)
            left = processes_under(self.tmp)
        started = now()
        for pid, command in left:
            log(f"stopping a process the benchmark left behind: {pid} {command[:120]}")
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        if self.args.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            log(f"deleted {self.tmp} in {now() - started:.0f} s")


# ====================================================================================================
# One task, the ways a caller runs it
# ====================================================================================================

def next_id(repo: Path) -> str:
    folder = repo / "agents" / "tasks"
    numbers = [int(p.name[2:-3]) for p in folder.glob("T-*.md")] if folder.is_dir() else []
    return f"T-{max(numbers, default=0) + 1:03d}"


def record(repo: Path, task_id: str) -> Path:
    return repo / "agents" / "tasks" / f"{task_id}.md"


def state_dir(repo: Path) -> Path:
    return repo / ".git" / "codex-mcp"


def worker_peak(repo: Path, task_id: str) -> float | None:
    try:
        found = PEAK.findall((state_dir(repo) / "runs" / f"{task_id}.worker.log").read_text())
    except OSError:
        return None
    return float(found[-1]) if found else None


def expect(answer: dict, key: str, value: str, doing: str) -> None:
    if answer.get(key) != value:
        raise BenchError(f"{doing}: expected {key} {value!r}, got {json.dumps(answer)[:600]}")


def task_cycle(b: Bench, repo: Path, first: bool, accept: bool = True) -> dict:
    """delegate -> check --wait -> accept (verify `true`), as three CLI calls. `first` deletes the
    tool's state folder before, so the task takes the repo's first snapshot."""
    if first:
        shutil.rmtree(state_dir(repo), ignore_errors=True)
    task_id = next_id(repo)
    watcher = StatusWatcher(record(repo, task_id))
    try:
        started = now()
        delegate_s, answer = b.cli(repo, "delegate", "--goal", GOAL, "--paths", "src/", "--verify", "true")
        expect(answer, "taskId", task_id, "delegate")
        waiting = now()
        wait_s, checked = b.cli(repo, "check", task_id, "--wait")
        returned = now()
        expect(checked, "status", "review", "check --wait")
        accept_s, accepted = b.cli(repo, "accept", task_id) if accept else (0.0, {})
        total = now() - started
    finally:
        watcher.stop()
    if accept:
        expect(accepted, "action", "done", "accept")
    if watcher.at is not None and watcher.at > waiting:      # the wait really waited
        b.add_latency("check --wait", repo, returned - watcher.at)
    return {"total": total, "delegate": delegate_s, "wait": wait_s, "accept": accept_s,
            "peak_mb": worker_peak(repo, task_id)}


def bare_turn(b: Bench, repo: Path) -> float:
    """A bare `codex exec --json` of the turn the tool would run: its command line and prompt."""
    task = cm.new_task("T-001", GOAL, ["src/"], verify="true")
    temp = Path(tempfile.mkdtemp(prefix="bare-turn-", dir=b.tmp))    # the run's own, as the tool's
    argv = cm.build_codex_command([b.codex], task, repo, temp)
    elapsed, _ = run_timed(argv, env={**b.env, "TMPDIR": str(temp)}, cwd=repo,
                           input=cm.start_prompt(task).encode())
    shutil.rmtree(temp, ignore_errors=True)
    return elapsed


def mcp_cycle(b: Bench, repo: Path) -> float:
    """MCP delegate-task, then check-task waitSeconds 600 (asking for progress, as Claude Code
    does), until review."""
    client = b.mcp()
    task_id = next_id(repo)
    watcher = StatusWatcher(record(repo, task_id))
    try:
        started = now()
        answer = client.call("delegate-task", {"goal": GOAL, "allowedPaths": ["src/"], "verify": "true",
                                               "cwd": str(repo)})
        expect(answer, "taskId", task_id, "delegate-task")
        waiting = now()
        checked = client.call("check-task", {"taskId": task_id, "cwd": str(repo), "waitSeconds": 600}, progress=True)
        returned = now()
    finally:
        watcher.stop()
    expect(checked, "status", "review", "check-task")
    if watcher.at is not None and watcher.at > waiting:
        b.add_latency("MCP check-task waitSeconds", repo, returned - watcher.at)
    return returned - started


def delegate_wait_cycle(b: Bench, repo: Path) -> float:
    """CLI `delegate --wait` (no number: the worker runs in the CLI's own process) until review."""
    task_id = next_id(repo)
    watcher = StatusWatcher(record(repo, task_id))
    try:
        started = now()
        _, answer = b.cli(repo, "delegate", "--goal", GOAL, "--paths", "src/", "--verify", "true", "--wait")
        returned = now()
    finally:
        watcher.stop()
    expect(answer, "status", "review", "delegate --wait")
    if watcher.at is not None:
        b.add_latency("delegate --wait", repo, returned - watcher.at)
    return returned - started


def git_status(repo: Path, env: dict) -> float:
    elapsed, _ = run_timed(["git", "-C", repo, "status", "--porcelain", "-uall", "--ignored"], env=env)
    return elapsed


def rotate(items: list, n: int) -> list:
    k = n % len(items)
    return items[k:] + items[:k]


# ====================================================================================================
# 1, 2. What the tool adds to a task in a 100k-file repo; the worker's memory
# ====================================================================================================

def bench_task(b: Bench) -> None:
    b.need_codex()
    small, big = b.repo("small"), b.repo("big")
    log("task: warming up (Codex's first start, the page cache) ...")
    for repo in (small, big):
        bare_turn(b, repo)
        task_cycle(b, repo, first=True)
    samples: dict = {key: [] for key in ("status", "bare_small", "bare_big", "small_first", "small_later",
                                         "big_first", "big_later")}
    for n in range(b.args.rounds):
        log(f"task: round {n + 1} of {b.args.rounds}")
        samples["status"].append(median([git_status(big, b.env) for _ in range(3)]))
        for name, repo in rotate([("small", small), ("big", big)], n):
            samples[f"bare_{name}"].append(bare_turn(b, repo))
            samples[f"{name}_first"].append(task_cycle(b, repo, first=True))
            samples[f"{name}_later"].append(task_cycle(b, repo, first=False))
    status = median(samples["status"])
    codex_delta = [bb - bs for bb, bs in zip(samples["bare_big"], samples["bare_small"])]
    for kind, order in (("first", 1.0), ("later", 1.1)):
        bigs, smalls = samples[f"big_{kind}"], samples[f"small_{kind}"]
        raw = [bg["total"] - sm["total"] for bg, sm in zip(bigs, smalls)]
        added = [r - d for r, d in zip(raw, codex_delta)]
        ratios = [a / s for a, s in zip(added, samples["status"])]
        phases = ", ".join(f"{phase} {fmt_time(median([x[phase] for x in bigs]))} vs "
                           f"{fmt_time(median([x[phase] for x in smalls]))}" for phase in ("delegate", "wait", "accept"))
        b.add(order, f"Task in a {b.args.files:,}-file repo minus a 10-file repo ({kind} task: "
              + ("first full snapshot" if kind == "first" else "kept snapshot, find -newercc") +
              "), vs git status --porcelain -uall --ignored",
              median(added), status, "<= 3x", 3.0,
              notes=f"raw difference {fmt_time(median(raw))} ({fmt_ratio(median(raw) / status)} git status) minus "
                    f"Codex's own difference (bare codex exec in each repo) {fmt_time(median(codex_delta))}; "
                    f"per-round ratios {spread(ratios)}; whole task "
                    f"{fmt_time(median([x['total'] for x in bigs]))} vs {fmt_time(median([x['total'] for x in smalls]))}"
                    f" ({phases}, big vs small)",
              data={"added": added, "raw": raw, "codex_delta": codex_delta, "git_status": samples["status"],
                    "big": bigs, "small": smalls})
    for kind, order in (("first", 2.0), ("later", 2.1)):
        peaks = [x["peak_mb"] for x in samples[f"big_{kind}"] if x["peak_mb"] is not None]
        floor = [x["peak_mb"] for x in samples[f"small_{kind}"] if x["peak_mb"] is not None]
        if not peaks:
            raise BenchError("the worker wrote no peak memory line to its worker.log")
        b.add(order, f"Worker peak RSS, {kind} task in the {b.args.files:,}-file repo (floor: the 10-file repo's)",
              max(peaks), max(floor) if floor else None, "<= 64 MB", 64.0, unit="MB", absolute=True,
              notes=f"the worst of {len(peaks)} tasks; all: {', '.join(f'{p:.0f}' for p in peaks)} MB",
              data={"big": peaks, "small": floor})


# ====================================================================================================
# 3. A gigabyte of ignored files
# ====================================================================================================

def bench_ignored(b: Bench) -> None:
    b.need_codex()
    plain, heavy = b.repo("plain"), b.repo("ignored")
    log("ignored: warming up ...")
    for repo in (plain, heavy):
        task_cycle(b, repo, first=True)
    samples: dict = {key: [] for key in ("plain_first", "plain_later", "ignored_first", "ignored_later")}
    for n in range(b.args.rounds):
        log(f"ignored: round {n + 1} of {b.args.rounds}")
        for name, repo in rotate([("plain", plain), ("ignored", heavy)], n):
            samples[f"{name}_first"].append(task_cycle(b, repo, first=True))
            samples[f"{name}_later"].append(task_cycle(b, repo, first=False))
    what = f"{b.args.ignored_mb:,} MB ignored ({b.ignored['files']:,} files)"
    for kind, order in (("first", 3.0), ("later", 3.1)):
        ours = [x["total"] for x in samples[f"ignored_{kind}"]]
        floor = [x["total"] for x in samples[f"plain_{kind}"]]
        ratios = [o / f for o, f in zip(ours, floor)]
        b.add(order, f"Task in a 10-file repo with {what} vs without ({kind} task)", median(ours), median(floor),
              "<= 1.2x", 1.2, notes=f"per-round ratios {spread(ratios)}; peak worker memory "
              f"{max(x['peak_mb'] or 0 for x in samples[f'ignored_{kind}']):.0f} MB vs "
              f"{max(x['peak_mb'] or 0 for x in samples[f'plain_{kind}']):.0f} MB",
              data={"ignored": samples[f"ignored_{kind}"], "plain": samples[f"plain_{kind}"]})
    log("ignored: a new ignored .env outside the boundary ...")
    b.server.push({"run": "printf 'TOKEN=secret\\n' > .env"}, {"say": report()})
    task_id = next_id(heavy)
    _, answer = b.cli(heavy, "delegate", "--goal", GOAL, "--paths", "src/", "--verify", "true")
    expect(answer, "taskId", task_id, "delegate")
    _, checked = b.cli(heavy, "check", task_id, "--wait")
    expect(checked, "status", "review", "check --wait")
    created = (heavy / ".env").exists()
    accept_s, accepted = b.cli(heavy, "accept", task_id)
    b.cli(heavy, "check", task_id, "--wait")              # a rework it started runs to its end
    (heavy / ".env").unlink(missing_ok=True)
    caught = accepted.get("action") != "done" and ".env" in accepted.get("outOfBounds", [])
    b.add(3.2, f"New ignored .env outside the boundary, with {what}: still caught",
          f"{accepted.get('action')}, outOfBounds {accepted.get('outOfBounds', [])}", None,
          "not done; .env in outOfBounds", unit="text", met=caught and created,
          notes=f".env written by Codex's command: {'yes' if created else 'NO'}; accept took {fmt_time(accept_s)}; "
                f"reason: {str(accepted.get('reason', ''))[:160]}", data={"accept": accepted})


# ====================================================================================================
# 5. Orchestration with an instant model
# ====================================================================================================

def bench_orchestration(b: Bench) -> None:
    b.need_codex()
    repo = b.repo("orchestration")
    log("orchestration: warming up ...")
    bare_turn(b, repo)
    delegate_wait_cycle(b, repo)
    mcp_cycle(b, repo)
    forms = {"bare": bare_turn, "mcp": mcp_cycle, "cli": delegate_wait_cycle}
    samples: dict = {name: [] for name in forms}
    for n in range(b.args.rounds * 2):
        for name in rotate(list(forms), n):
            samples[name].append(forms[name](b, repo))
    log(f"orchestration: {b.args.rounds * 2} rounds done")
    floor = median(samples["bare"])
    for name, order, figure, limit in (
            ("mcp", 5.0, "MCP delegate-task + check-task waitSeconds, to review, vs bare codex exec --json", 1.25),
            ("cli", 5.1, "CLI delegate --wait (worker in the CLI's process), to review, vs bare codex exec --json", 1.35)):
        ratios = [o / f for o, f in zip(samples[name], samples["bare"])]
        b.add(order, figure, median(samples[name]), floor, f"<= {limit}x", limit,
              notes=f"per-round ratios {spread(ratios)}; 10-file repo, a later task; bare Codex "
                    f"{spread(samples['bare'], fmt_time)}",
              data={"ours": samples[name], "bare": samples["bare"]})


# ====================================================================================================
# 4. How late waits return
# ====================================================================================================

WAIT_FORMS = ("check --wait", "MCP check-task waitSeconds", "delegate --wait")


def bench_wait(b: Bench) -> None:
    b.need_codex()
    run_form = {"check --wait": lambda repo: task_cycle(b, repo, first=False, accept=False),
                "MCP check-task waitSeconds": lambda repo: mcp_cycle(b, repo),
                "delegate --wait": lambda repo: delegate_wait_cycle(b, repo)}
    wanted = b.args.rounds
    order = 4.0
    for repo in (b.repo("orchestration"), b.repo("big")):
        label = size_label(b.files[repo])
        for form in WAIT_FORMS:
            samples = b.latency.setdefault((form, label), [])
            tries = 0
            while len(samples) < wanted and tries < 3 * wanted:
                if tries == 0:
                    log(f"wait: {form} at {label} ({len(samples)} samples so far)")
                run_form[form](repo)
                tries += 1
            if not samples:
                raise BenchError(f"{form} at {label}: no wait really waited (the task was done before it began)")
            b.add(order, f"{form} returns after the record says review, {label}", max(samples), None,
                  "<= 0.5 s", 0.5, absolute=True,
                  notes=f"worst of {len(samples)}; median {fmt_time(median(samples))}",
                  data={"samples": samples})
            order += 0.01


def bench_tasks(b: Bench) -> None:
    """The verdict as an MCP background task: from the record's final write (done) to the answer of
    the tasks/get that carries it, polled as Claude Code 2.1.332 polls; and how often it polls."""
    b.need_codex()
    repo = b.repo("orchestration")
    server = McpClient([CONSOLE, "--codex-cmd", b.codex, "serve"], b.env, b.tmp)   # one era per connection
    client = server.tasks()
    samples, busy = [], 0.0
    try:
        for _ in range(b.args.rounds):
            # A turn of 2 s: one that ends sooner is answered directly (cm.TASK_GRACE), not as a task.
            b.server.route(BACKGROUND_GOAL, {"say": report(), "delay": 2.0})
            started, (arrived, task, written) = now(), background_verdict(client, repo)
            expect(task.get("result", {}).get("structuredContent") or {}, "action", "done", "the verdict")
            busy += arrived - started
            samples.append(arrived - written)
    finally:
        server.close()
    b.add(4.5, "Verdict as an MCP background task: the record says done -> the tasks/get that carries it "
          f"(polled every {cm.TASK_POLL_MS} ms, as the server asks)", median(samples), None, "<= 2 s (median)", 2.0,
          absolute=True, notes=f"worst {fmt_time(max(samples))} of {len(samples)}; {client.polls / busy:.2f} polls/s "
          "per running task", data={"samples": samples, "polls": client.polls, "seconds": busy})


def background_verdict(client: object, repo: Path) -> tuple:
    """delegate-task until "verdict" as a background task, polled to its end: (when the answer came,
    the task, when the record said done)."""
    task_id = next_id(repo)
    watcher = StatusWatcher(record(repo, task_id), final=("done", "blocked"))
    try:
        handle = client.call("delegate-task", {"goal": BACKGROUND_GOAL, "allowedPaths": ["src/"], "verify": "true",
                                               "until": "verdict", "cwd": str(repo)})
        if handle.get("resultType") != "task":
            raise BenchError(f"delegate-task until verdict answered without a task: {json.dumps(handle)[:300]}")
        arrived, task = client.until_done(handle)
    finally:
        watcher.stop()
    return arrived, task, watcher.at


# ====================================================================================================
# 6. CLI start-up
# ====================================================================================================

def bench_startup(b: Bench) -> None:
    repo = make_small_repo(b.tmp / "startup")
    (repo / "agents" / "tasks").mkdir(parents=True)
    shutil.copy(ROOT / "agents" / "tasks" / "T-001.md", repo / "agents" / "tasks" / "T-001.md")
    copy = b.tmp / "copied" / "codex_mcp.py"
    copy.parent.mkdir()
    shutil.copy(ROOT / "codex_mcp.py", copy)
    empty_cache = b.tmp / "empty-pycache"
    no_cache_env = {**b.env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(empty_cache)}
    commands = {"floor": ([PY, "-c", "pass"], b.env),
                "console": ([CONSOLE, "check", "T-001"], b.env),
                "copied": ([PY, copy, "check", "T-001"], b.env),
                "no-cache": ([CONSOLE, "check", "T-001"], no_cache_env)}
    for argv, env in commands.values():       # the console script writes its byte-code cache, as a user's first run does
        for _ in range(3):
            run_timed(argv, env=env, cwd=repo)
    samples: dict = {name: [] for name in commands}
    for n in range(b.args.runs):
        for name in rotate(list(commands), n):
            argv, env = commands[name]
            samples[name].append(run_timed(argv, env=env, cwd=repo)[0])
    floor = median(samples["floor"])
    for name, order, figure in (("console", 6.0, "CLI start-up: codex-mcp check T-001 (console script) vs python -c pass"),
                                ("copied", 6.1, "CLI start-up: python codex_mcp.py check T-001 (a copied file) vs python -c pass")):
        ratios = [o / f for o, f in zip(samples[name], samples["floor"])]
        notes = f"median of {b.args.runs} interleaved runs; per-run ratios {spread(ratios)}"
        if name == "console":
            notes += (f"; with no usable byte-code cache (PYTHONDONTWRITEBYTECODE=1, empty cache folder) "
                      f"{fmt_time(median(samples['no-cache']))} = {fmt_ratio(median(samples['no-cache']) / floor)}")
        else:
            notes += "; a script is compiled on every start (Python caches no byte code for __main__)"
        b.add(order, figure, median(samples[name]), floor, "<= 1.5x", 1.5, notes=notes,
              data={"ours": samples[name], "floor": samples["floor"], "no_cache": samples["no-cache"]})


def bench_gate(b: Bench) -> None:
    """The review gate at Stop on a tree that has not changed since its last review: what every
    further stop costs (a git status and a fingerprint), vs a bare git status, at 10 and at
    100,000 files."""
    for order, name in ((6.5, "orchestration"), (6.6, "big")):
        repo = b.repo(name)
        (repo / "src" / "gate-change.py").write_text("x = 1\n")     # a change the gate reviewed before
        store = cm.Store(repo)
        cm.atomic_write(store.state_dir / "gate.json", json.dumps({"fingerprint": cm.tree_fingerprint(store)}))
        hook = json.dumps({"session_id": "bench", "cwd": str(repo), "hook_event_name": "Stop"}).encode()
        env = {**b.env, "CODEX_MCP_GATE": "1"}
        forms = {"ours": lambda: run_timed([CONSOLE, "gate"], env=env, cwd=repo, input=hook),
                 "floor": lambda: run_timed(["git", "-C", repo, "status", "--porcelain"], env=b.env)}
        samples: dict = {"ours": [], "floor": []}
        for n in range(b.args.runs):
            for form in rotate(list(forms), n):
                elapsed, done = forms[form]()
                if form == "ours" and done.stdout.strip() != b"{}":
                    raise BenchError(f"the gate did not let an unchanged tree through: {done.stdout[:300]!r}")
                samples[form].append(elapsed)
        (repo / "src" / "gate-change.py").unlink()
        b.add(order, f"Review gate at Stop, tree unchanged since its review, {size_label(b.files[repo])}: "
              "codex-mcp gate vs git status --porcelain", median(samples["ours"]), median(samples["floor"]),
              "<= 1 s; information", 1.0, absolute=True,
              notes=f"median of {b.args.runs}; no Codex call; per-run ratios "
              f"{spread([o / f for o, f in zip(samples['ours'], samples['floor'])])}", data=samples)


# ====================================================================================================
# 7. list with 10,000 records
# ====================================================================================================

def bench_list(b: Bench) -> None:
    count = b.args.records
    repo, one = make_small_repo(b.tmp / "records"), make_small_repo(b.tmp / "one-record")
    log(f"list: writing {count:,} records ...")
    live = cm.process_identity(os.getpid())
    write_records(repo, count, cm.render_task, cm.new_task, live)
    write_records(one, 1, cm.render_task, cm.new_task, live)
    middle = f"T-{count // 2:03d}"
    listing = ["list", "--status", "doing", "--limit", "20"]
    b.cli(repo, *listing), b.cli(repo, "check", middle), b.cli(one, "check", "T-001")
    samples: dict = {key: [] for key in ("cold", "warm", "check", "check_one")}
    answer: dict = {}
    for n in range(b.args.rounds * 2):
        steps = ["list", "check", "check_one"]
        for step in rotate(steps, n):
            if step == "list":
                shutil.rmtree(state_dir(repo))
                cold, answer = b.cli(repo, *listing)
                samples["cold"].append(cold)
                samples["warm"].append(b.cli(repo, *listing)[0])
            elif step == "check":
                samples["check"].append(b.cli(repo, "check", middle)[0])
            else:
                samples["check_one"].append(b.cli(one, "check", "T-001")[0])
    size = len(json.dumps(answer, ensure_ascii=False).encode())
    check = median(samples["check"])
    for key, order, what in (("cold", 7.0, "cold: the index built"), ("warm", 7.1, "warm")):
        ratios = [o / f for o, f in zip(samples[key], samples["check"])]
        b.add(order, f"list --status doing --limit 20, {count:,} records ({what}) vs one check",
              median(samples[key]), check, "<= 3x", 3.0,
              notes=f"per-round ratios {spread(ratios)}; answer {size:,} bytes, {answer.get('count')} of "
                    f"{answer.get('total')} doing", data={"ours": samples[key], "check": samples["check"]})
    b.add(7.2, f"check with {count:,} records vs with 1", check, median(samples["check_one"]), "<= 2x", 2.0,
          data={"ours": samples["check"], "floor": samples["check_one"]})


# ====================================================================================================
# 8. MCP server start-up, and what importing the SDK costs
# ====================================================================================================

BARE_SERVER = """
from mcp.server.mcpserver import MCPServer
server = MCPServer("bare")

@server.tool()
def ping(text: str) -> str:
    return text

server.run("stdio")
"""


def time_handshake(argv: list, env: dict, cwd: Path) -> float:
    """Spawn to `initialize` answered, then `tools/list` answered."""
    started = now()
    client = McpClient(argv, env, cwd)
    try:
        client.initialize()
        tools = client.request("tools/list", {})
        elapsed = now() - started
        if not tools.get("tools"):
            raise BenchError(f"{argv}: tools/list answered no tools")
    finally:
        client.close()
    return elapsed


IMPORTS = {"pass": "pass", "module": "import codex_mcp",
           "serve": "import codex_mcp; codex_mcp.build_server()",
           "mcpserver": "from mcp.server.mcpserver import MCPServer"}


def bench_server(b: Bench) -> None:
    bare = b.tmp / "bare_server.py"
    bare.write_text(BARE_SERVER)
    servers = {"bare": [PY, bare], "ours": [CONSOLE, "serve"]}
    for argv in servers.values():
        time_handshake(argv, b.env, b.tmp)
    samples: dict = {name: [] for name in servers}
    for n in range(b.args.server_runs):
        for name in rotate(list(servers), n):
            samples[name].append(time_handshake(servers[name], b.env, b.tmp))
    ratios = [o / f for o, f in zip(samples["ours"], samples["bare"])]
    imports: dict = {name: [] for name in IMPORTS}
    modules = {}
    for name, code in IMPORTS.items():
        out = run_timed([PY, "-c", f"{code}\nimport sys; print(len(sys.modules))"], env=b.env, cwd=b.tmp)[1]
        modules[name] = int(out.stdout.split()[-1])
    for n in range(b.args.server_runs):
        for name in rotate(list(IMPORTS), n):
            imports[name].append(run_timed([PY, "-c", IMPORTS[name]], env=b.env, cwd=b.tmp)[0])
    serve_cost = median(imports["serve"]) - median(imports["module"])
    high_cost = median(imports["mcpserver"]) - median(imports["pass"])
    b.add(8.0, "MCP server start-up: codex-mcp serve, spawn to initialize + tools/list, vs a bare one-tool MCPServer",
          median(samples["ours"]), median(samples["bare"]), "<= 1.2x", 1.2,
          notes=f"per-round ratios {spread(ratios)}; {b.args.server_runs} interleaved runs",
          data=samples)
    b.add(8.1, "Importing the SDK parts serve uses (build_server(), beyond import codex_mcp), vs python -c pass",
          serve_cost, median(imports["pass"]), "information", None,
          notes=f"{modules['serve'] - modules['module']} modules beyond the CLI's {modules['module']}",
          data={key: imports[key] for key in ("pass", "module", "serve")})
    b.add(8.2, "Importing mcp.server.mcpserver (the high-level server), vs python -c pass", high_cost,
          median(imports["pass"]), "information", None,
          notes=f"{modules['mcpserver'] - modules['pass']} modules beyond python -c pass's {modules['pass']}",
          data={"mcpserver": imports["mcpserver"]})


# ====================================================================================================
# The event stream, and parallel repositories
# ====================================================================================================

def bench_stream(b: Bench) -> None:
    repo = make_small_repo(b.tmp / "stream-repo")
    stream = b.tmp / "events.jsonl"
    log(f"stream: writing {b.args.stream_mb:,} MB of events ...")
    lines = write_stream(stream, b.args.stream_mb, report())
    fake = b.tmp / "recorded-codex"
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && {{ echo codex-cli; exit 0; }}\ncat > /dev/null\n"
                    f"exec cat '{stream}'\n")
    fake.chmod(0o755)
    parse = [PY, "-c", "import json, sys\nfor line in open(sys.argv[1], 'rb'):\n    json.loads(line)\n", stream]
    samples: dict = {"ours": [], "floor": [], "peak_mb": [], "record_kb": []}
    for n in range(b.args.stream_runs):
        for step in rotate(["floor", "ours"], n):
            if step == "floor":
                samples["floor"].append(run_timed(parse, env=b.env)[0])
                continue
            task_id = next_id(repo)
            started = now()
            b.cli(repo, "delegate", "--goal", "stream", "--paths", "src/", codex=str(fake))
            _, checked = b.cli(repo, "check", task_id, "--wait")
            samples["ours"].append(now() - started)
            expect(checked, "status", "review", "check --wait")
            samples["peak_mb"].append(worker_peak(repo, task_id))
            samples["record_kb"].append(record(repo, task_id).stat().st_size / 1024)
            for log_file in (state_dir(repo) / "runs").glob(f"{task_id}.jsonl"):
                log_file.unlink()                      # a gigabyte each
    peak = max(p or 0 for p in samples["peak_mb"])
    b.add(9.0, f"Stream: {b.args.stream_mb:,} MB of events ({lines:,} lines) through the worker, delegate to "
          "check --wait, vs a json.loads loop", median(samples["ours"]), median(samples["floor"]),
          "<= 1.3x; worker <= 64 MB", 1.3, met=median(samples["ours"]) / median(samples["floor"]) <= 1.3 and peak <= 64,
          notes=f"worker peak memory {peak:.0f} MB; record {max(samples['record_kb']):.1f} KB", data=samples)


def bench_parallel(b: Bench) -> None:
    codex = b.need_codex()
    turn = 2.0
    with ModelServer(default={"say": report(), "delay": turn}) as server:
        home = b.tmp / "codex-home-slow"
        server.write_config(home)
        env = {**b.env, "CODEX_HOME": str(home)}
        single = make_small_repo(b.tmp / "single")
        repos = [make_small_repo(b.tmp / f"parallel{r}") for r in range(4)]
        samples: dict = {"single": [], "parallel": [], "overlaps": []}
        for n in range(b.args.parallel_runs):
            log(f"parallel: round {n + 1} of {b.args.parallel_runs}")
            task_id = next_id(single)
            started = now()
            b.cli(single, "delegate", "--goal", f"single {n}", "--paths", "src/", env=env, codex=codex)
            b.cli(single, "check", task_id, "--wait", env=env)
            samples["single"].append(now() - started)
            server.requests.clear()
            ids = {repo: [] for repo in repos}
            started = now()
            for task in range(2):
                for r, repo in enumerate(repos):
                    _, answer = b.cli(repo, "delegate", "--goal", f"round{n} repo{r} task{task}", "--paths", "src/",
                                      env=env, codex=codex)
                    ids[repo].append(answer["taskId"])
            for repo in repos:
                for task_id in ids[repo]:
                    _, checked = b.cli(repo, "check", task_id, "--wait", env=env)
                    expect(checked, "status", "review", "check --wait")
            samples["parallel"].append(now() - started)
            overlaps = 0
            for r in range(4):
                spans = sorted((q["start"], q["end"]) for i, q in enumerate(server.requests)
                               if f"round{n} repo{r} task" in server.texts(i) and "end" in q)
                overlaps += sum(1 for a, c in zip(spans, spans[1:]) if c[0] < a[1])
            samples["overlaps"].append(overlaps)
    ours, floor = median(samples["parallel"]), 2 * median(samples["single"])
    b.add(10.0, f"Parallelism: 8 tasks over 4 repos, {turn:.0f} s model turns, vs 2 x one task", ours, floor,
          "about 1x (<= 1.25x); no overlap inside a repo", 1.25,
          met=ours / floor <= 1.25 and not any(samples["overlaps"]),
          notes=f"overlapping runs inside one repo: {sum(samples['overlaps'])}", data=samples)


# ====================================================================================================
# Issue 13: worktree tasks side by side, and what a worktree costs
# ====================================================================================================

def worktree_workspace(repo: Path, task_id: str) -> float:
    """What a worktree task spends on its workspace before Codex starts, as its worker does it."""
    store = cm.Store(repo)
    started = now()
    base = cm.tree_commit(store.repo, "bench", cm.head_commit(store.repo))
    path = cm.claim_worktree(store, task_id)
    cm.prepare_worktree(store, path, base)
    cm.link_shared(store, path, cm.shared_dependencies(store, cm.repo_settings(store)))
    cm.Worktree(store, path, cm.worktree_name(path)).changes()
    return now() - started


def bench_worktrees(b: Bench) -> None:
    codex = b.need_codex()
    turn = 3.0
    with ModelServer(default={"say": report(), "delay": turn}) as server:
        home = b.tmp / "codex-home-worktrees"
        server.write_config(home)
        env = {**b.env, "CODEX_HOME": str(home)}
        repo = make_small_repo(b.tmp / "worktrees")
        samples: dict = {"one": [], "four": [], "overlapping": []}
        for n in range(b.args.parallel_runs):
            log(f"worktrees: round {n + 1} of {b.args.parallel_runs}")
            for count in rotate([1, 4], n):
                server.requests.clear()
                started = now()
                with ThreadPoolExecutor(count) as pool:          # started together, as parallel tool calls
                    ids = list(pool.map(lambda t: b.cli(repo, "delegate", "--goal", f"round{n} wt{count} task{t}",
                                                        "--paths", "src/", "--isolation", "worktree", env=env,
                                                        codex=codex)[1]["taskId"], range(count)))
                for task_id in ids:
                    expect(b.cli(repo, "check", task_id, "--wait", env=env)[1], "status", "review", "check --wait")
                samples["one" if count == 1 else "four"].append(now() - started)
                if count == 4:
                    spans = [(q["start"], q["end"]) for q in server.requests if "end" in q]
                    samples["overlapping"].append(max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans))
                for task_id in ids:         # done: the worktrees go back to the pool
                    expect(b.cli(repo, "accept", task_id, env=env)[1], "action", "done", "accept")
    ours, floor = median(samples["four"]), median(samples["one"])
    b.add(11.0, f"Worktrees: 4 worktree tasks of one repo started together, {turn:.0f} s model turns, vs one",
          ours, floor, "<= 1.3x; the four runs overlap", 1.3,
          met=ours / floor <= 1.3 and min(samples["overlapping"]) == 4,
          notes=f"model requests in flight at once, at most: {', '.join(map(str, samples['overlapping']))}",
          data=samples)
    for order, name, files in ((11.1, "mid", 10_000), (11.2, "big", b.args.files)):
        if name == "big":
            repo = b.repo("big")
        else:
            repo = b.tmp / "worktrees-10k"
            if not repo.exists():
                log("making a 10,000-file git repository ...")
                make_big_repo(repo, files)
        costs: dict = {"first": [], "reused": [], "status": []}
        for n in range(b.args.rounds):
            log(f"worktrees: workspace cost at {files:,} files, round {n + 1} of {b.args.rounds}")
            shutil.rmtree(state_dir(repo) / "worktrees", ignore_errors=True)
            cm.run_git(repo, "worktree", "prune")
            costs["status"].append(median([git_status(repo, b.env) for _ in range(3)]))
            costs["first"].append(worktree_workspace(repo, "T-900"))
            cm.Worktree.release(cm.Store(repo), "T-900")                 # back to the pool, as after accept
            (repo / "src" / f"edit{n}.py").write_text("edited by the person meanwhile\n")
            costs["reused"].append(worktree_workspace(repo, "T-901"))
            cm.Worktree.release(cm.Store(repo), "T-901", remove=True)
            (repo / "src" / f"edit{n}.py").unlink()
        status = median(costs["status"])
        for kind, extra in (("first", 0.0), ("reused", 0.05)):
            how = "git worktree add + a full snapshot" if kind == "first" else \
                "moved to the new base + its snapshot brought up to date"
            b.add(order + extra, f"Worktree workspace, {kind} ({how}), {files:,}-file repo, vs git status "
                  "--porcelain -uall --ignored",
                  median(costs[kind]), status, "information" if kind == "first" else "a small multiple (<= 5x)",
                  None if kind == "first" else 5.0,
                  notes=f"per-round {spread([c / s for c, s in zip(costs[kind], costs['status'])], fmt_ratio)}",
                  data=costs)


BENCHES = {"task": bench_task, "ignored": bench_ignored, "orchestration": bench_orchestration, "wait": bench_wait,
           "tasks": bench_tasks, "gate": bench_gate,
           "startup": bench_startup, "list": bench_list, "server": bench_server, "stream": bench_stream,
           "parallel": bench_parallel, "worktrees": bench_worktrees}


# ====================================================================================================
# The table
# ====================================================================================================

def fmt_value(value: object, unit: str) -> str:
    if value is None:
        return ""
    if unit == "text" or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.1f} MB" if unit == "MB" else fmt_time(value)


def table(rows: list) -> str:
    lines = ["| figure | ours | floor | ratio | target | met |", "|---|---|---|---|---|---|"]
    notes = []
    for n, row in enumerate(sorted(rows, key=lambda r: r["order"]), 1):
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        ratio = fmt_ratio(row["ratio"]) if row["ratio"] is not None else ""
        lines.append(f"| {row['figure']} [{n}] | {fmt_value(row['ours'], row['unit'])} | "
                     f"{fmt_value(row['floor'], row['unit'])} | {ratio} | {row['target']} | {met} |")
        if row["notes"]:
            notes.append(f"[{n}] {row['notes']}")
    return "\n".join(lines + [""] + notes)


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["trust"]:                   # issue 23's trust figure: its own runner and options
        from tests.bench.trust import main as trust
        return trust(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", metavar="BENCH", help=f"any of: {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="reduced sizes and repeats, for a fast check")
    parser.add_argument("--files", type=int, help="files of the big repository (100,000; quick 10,000)")
    parser.add_argument("--ignored-mb", type=int, help="megabytes of ignored files (1,000; quick 100)")
    parser.add_argument("--records", type=int, help="task records for list (10,000; quick 1,000)")
    parser.add_argument("--stream-mb", type=int, help="size of the event stream (1,000; quick 100)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the Codex benchmarks (5; quick 3)")
    parser.add_argument("--runs", type=int, help="interleaved runs of the start-up measurements (20; quick 10)")
    parser.add_argument("--server-runs", type=int, help="interleaved MCP server start-ups (8; quick 4)")
    parser.add_argument("--stream-runs", type=int, help="stream runs (2; quick 1)")
    parser.add_argument("--parallel-runs", type=int, help="parallelism rounds (2; quick 1)")
    parser.add_argument("--tmp", help="where to make the temporary folder (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--out", help="the JSON file to write (default: tests/bench/results/latest.json, "
                                      "latest-quick.json with --quick, latest-partial.json for some benchmarks)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.only) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}; choose from {', '.join(BENCHES)}")
    if not CONSOLE.exists():
        parser.error(f"no console script at {CONSOLE}: install the package first (pip install -e '.[test]')")
    selected = [name for name in BENCHES if not args.only or name in args.only]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))      # a stopped run still deletes its folder
    source = ROOT / "codex_mcp.py"
    measured = {"commit": run_timed(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=False)[1].stdout.decode().strip(),
                "codex_mcp.py modified": bool(run_timed(["git", "-C", ROOT, "status", "--porcelain", "codex_mcp.py"],
                                                        check=False)[1].stdout.strip()),
                "codex_mcp.py lines": source.read_text().count("\n"),
                "codex_mcp.py changed during the run": False}
    before = source.read_bytes()
    log(f"measuring codex_mcp.py at {measured['commit']}{' (modified)' if measured['codex_mcp.py modified'] else ''}")
    bench = Bench(args)
    load = os.getloadavg()
    started = now()
    failures = []
    try:
        for name in selected:
            log(f"running {name} ...")
            began = now()
            try:
                BENCHES[name](bench)
            except Skip as why:
                bench.add(99, f"{name}: not run", f"skipped: {why}", None, "-", unit="text")
            except Exception as error:           # one broken benchmark must not lose the others' figures
                traceback.print_exc()
                failures.append(name)
                bench.add(99, f"{name}: failed", f"{type(error).__name__}: {str(error)[:300]}", None, "-",
                          unit="text", met=False)
            log(f"  {name} took {now() - began:.0f} s")
    finally:
        bench.close()
    if source.read_bytes() != before:
        measured["codex_mcp.py changed during the run"] = True
        log("WARNING: codex_mcp.py changed while the benchmarks ran: some figures measure one version, some another")
    text = table(bench.rows)
    print(text)
    out = Path(args.out) if args.out else ROOT / "tests" / "bench" / "results" / (
        "latest-quick.json" if args.quick else "latest.json" if not args.only else "latest-partial.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    codex_version = ""
    if bench.codex:
        codex_version = run_timed([bench.codex, "--version"], check=False)[1].stdout.decode().strip()
    out.write_text(json.dumps({
        "command": " ".join([Path(PY).name, "-m", "tests.bench", *(argv if argv is not None else sys.argv[1:])]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": os.uname().nodename,
        "cpus": os.cpu_count(), "python": sys.version.split()[0], "codex": codex_version,
        "git": run_timed(["git", "--version"])[1].stdout.decode().strip(),
        "measured": measured, "load_before": load, "load_after": os.getloadavg(), "seconds": round(now() - started),
        "sizes": {key: getattr(args, key) for key in FULL}, "table": text,
        "results": sorted(bench.rows, key=lambda r: r["order"])}, indent=1, default=str))
    log(f"wrote {out} after {now() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
