"""Synthetic inputs for the benchmarks: git repositories of a given size, a gigabyte of ignored
build output, thousands of task records, a recorded-looking Codex event stream. Everything is made
under the benchmark's temporary folder and deleted with it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

GIT_IDENTITY = ["-c", "user.email=bench@example.com", "-c", "user.name=bench", "-c", "commit.gpgSign=false"]


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *GIT_IDENTITY, *args], check=True, capture_output=True).stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    git(repo, "status", "--porcelain")        # refresh the index's stat data, as a person's first status does


def base_files(repo: Path) -> int:
    """The files every benchmark repository has: what the tasks may change (src/), a README, and a
    .gitignore that ignores `.env` (review must still catch a new one)."""
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "app.py").write_text("x = 1\n")
    (repo / "README.md").write_text("demo\n")
    (repo / ".gitignore").write_text(".env\n")
    return 3


def make_small_repo(repo: Path, files: int = 10) -> Path:
    """A committed repository of `files` files."""
    made = base_files(repo)
    for n in range(files - made):
        (repo / "src" / f"mod{n}.py").write_text(f"VALUE = {n}\n")
    commit_all(repo, "small")
    return repo


def make_big_repo(repo: Path, files: int) -> Path:
    """A committed repository of `files` files, laid out like a real project: folders of 25 files,
    100 folders per package (about 4,000 folders at 100,000 files), files of 30 to 400 bytes."""
    made = base_files(repo)
    count = 0
    wanted = files - made
    package = 0
    while count < wanted:
        for module in range(100):
            if count >= wanted:
                break
            folder = repo / f"pkg{package:02d}" / f"mod{module:02d}"
            folder.mkdir(parents=True)
            for n in range(min(25, wanted - count)):
                with open(folder / f"file{n:02d}.py", "w") as handle:
                    handle.write(f"# pkg{package} mod{module} file{n}\nVALUE = {count}\n" + "x = 1\n" * (count % 60))
                count += 1
        package += 1
    commit_all(repo, "big")
    return repo


IGNORED_PATTERNS = "node_modules/\nbuild/\n*.bin\n"


def add_ignored(repo: Path, megabytes: int) -> dict:
    """`megabytes` of git-ignored files, the mix a built project has: 40% dependencies in small
    files (node_modules/: 20 KB files, 20 per package), 30% build output in 10 MB files (build/),
    30% data files of up to 100 MB (`*.bin`, bigger than what review ever hashes). Returns counts."""
    total = megabytes * 1_000_000
    block = os.urandom(1 << 20)

    def write(path: Path, size: int, tag: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"%d\n" % tag)             # every file different
            left = size
            while left > 0:
                handle.write(block[:min(left, len(block))])
                left -= len(block)

    with open(repo / ".gitignore", "a") as handle:
        handle.write(IGNORED_PATTERNS)
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore build output")
    files = 0
    small = int(total * 0.4) // 20_000
    for n in range(small):
        write(repo / "node_modules" / f"pkg{n // 20:04d}" / f"index{n % 20}.js", 20_000, n)
    files += small
    build = max(1, int(total * 0.3) // 10_000_000)
    for n in range(build):
        write(repo / "build" / f"out{n:03d}.o", int(total * 0.3) // build, n)
    files += build
    data = max(1, int(total * 0.3) // 100_000_000)
    for n in range(data):
        write(repo / "data" / f"set{n}.bin", int(total * 0.3) // data, n)
    files += data
    git(repo, "status", "--porcelain")
    return {"files": files, "megabytes": megabytes}


STATUS_MIX = ["done"] * 140 + ["review"] * 20 + ["blocked"] * 20 + ["todo"] * 19 + ["doing"]


def write_records(repo: Path, count: int, render, new_task, live_worker: str) -> None:
    """`count` task records, rendered by the tool itself, updated a minute apart, mostly done;
    one in 200 is doing, with a live worker (this process), so that list keeps it doing."""
    tasks = repo / "agents" / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    for n in range(1, count + 1):
        task = new_task(f"T-{n:03d}", f"synthetic task number {n}: change module {n % 97}", ["src/"])
        task.status = STATUS_MIX[n % len(STATUS_MIX)]
        task.updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + 60 * n))
        if task.status == "doing":
            task.worker = live_worker
        (tasks / f"T-{n:03d}.md").write_text(render(task))


def write_stream(path: Path, megabytes: int, final_message: str) -> int:
    """A recorded-looking Codex stream: commands with output, reasoning, a final message. Returns
    the number of lines."""
    output = ("test_module.py::test_case PASSED\n" * 24)[:900]
    command = json.dumps({"type": "item.completed", "item": {
        "id": "item_9", "type": "command_execution", "command": "/bin/bash -lc 'pytest -q'",
        "aggregated_output": output, "exit_code": 0, "status": "completed"}}) + "\n"
    reasoning = json.dumps({"type": "item.completed", "item": {"id": "item_8", "type": "reasoning",
                                                               "text": "Thinking about the tests. " * 10}}) + "\n"
    block = (command + reasoning) * 500
    head = json.dumps({"type": "thread.started", "thread_id": "bench-thread"}) + "\n"
    tail = json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": final_message}}) + "\n" + \
        json.dumps({"type": "turn.completed", "usage": {"input_tokens": 10, "output_tokens": 5}}) + "\n"
    lines = 0
    with open(path, "w") as out:
        out.write(head)
        while out.tell() < megabytes * 1_000_000:
            out.write(block)
            lines += 1000
        out.write(tail)
    return lines + 3
