"""codex-mcp: hand coding tasks from Claude Code to the OpenAI Codex CLI, and review what comes back.

Claude Code plans and reviews; Codex writes code in its sandbox. This module keeps each task as a
Markdown file a person can read and edit (`agents/tasks/T-001.md`), runs `codex exec --json` in a
detached worker process, one task at a time per repository, and reviews the result on ground truth:
the files that really changed, the report Codex wrote, and a verify command that really ran.

Two ways in, one service layer, the same JSON out:

    codex-mcp delegate | check | accept | rework | retry | cancel | list ...   (the CLI)
    codex-mcp serve                                                          (a stdio MCP server)

Only the MCP server needs a third-party package (`mcp`, imported inside `serve`); everything else is
the standard library, so `python codex_mcp.py --help` works from a copy of this file.

Concurrency: any number of CLI calls, MCP servers and workers may act on one repository at once.
Every read-modify-write of a record holds the repo's store lock for milliseconds and writes
atomically; one Codex run at a time holds the repo's run lock; while Codex runs, the task's worker
is the only writer of its record (others signal it, as cancel does).

Layout, in the order data flows:
  1. Constants and errors
  2. Task records and their Markdown form (parse, render, round trip)
  3. The state machine (one transition table)
  4. Locks, atomic writes and the task store
  5. The Codex runner and the background worker
  6. Review: workspace snapshots, path boundaries, Codex's report, verdicts
  7. Services: one function per tool, shared by the CLI and the MCP server; set-up (the server's
     private environment, doctor, the plugin's Stop hook)
  8. CLI
  9. MCP server
 10. main
"""

import argparse
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, NamedTuple, Optional, TypedDict

# Modules only a Codex run, a snapshot or the server needs (subprocess, signal, threading, shlex,
# hashlib, calendar) are imported inside the functions that use them: `codex-mcp check` must
# start fast (tests/bench measures it against a bare `python -c pass`).

__all__ = [
    "CodexMcpError", "BadInput", "NotFound", "MalformedRecord", "RefusedTransition", "OperationFailed",
    "Task", "parse_task", "render_task", "new_task",
    "TRANSITIONS", "transition",
    "file_lock", "atomic_write", "Store",
    "build_codex_command", "EventDigest", "run_codex", "work",
    "snapshot", "changed_paths", "inside_boundary", "parse_report", "decide",
    "delegate_task", "check_task", "accept_task", "rework_task", "retry_task", "cancel_task",
    "list_tasks", "server_environment", "doctor", "main", "main_exit",
]

VERSION = "0.1.0"

# ====================================================================================================
# 1. Constants and errors
# ====================================================================================================

STATUSES = ("todo", "doing", "review", "done", "blocked")
ACTIVE = ("todo", "doing")             # a worker may be queued or running for these
MAX_REWORKS = 3
DEFAULT_TIMEOUT = 2 * 3600             # hard limit of one Codex run, seconds
DEFAULT_IDLE_TIMEOUT = 15 * 60         # no event from Codex for this long ends the run
VERIFY_TIMEOUT = 15 * 60
PROGRESS_EVERY = 2.0                   # seconds between Progress writes while Codex runs
DELEGATE_WAIT = 10.0                   # how long delegate waits for Codex to announce its thread
MAX_WAIT_SECONDS = 600                 # longer synchronous calls trip Claude Code's watchdog
RESULT_BUDGET = 1500                   # bytes of JSON per result: the caller's context is scarce
TASKS_DIR = "agents/tasks"
TASKS_PARTS = tuple(TASKS_DIR.split("/"))
STATE_DIR = ".codex-mcp"               # agents/tasks/.codex-mcp: locks, queue, run logs, snapshots
SANDBOX = "workspace-write"            # the hard boundary; review enforces the Allowed Paths
TASK_ID = re.compile(r"T-(\d{1,9})")
TEXT_LIMIT = 20_000                    # characters of one caller-supplied text field
REPORT_SECTIONS = ("Summary", "Tests", "Files Changed")


class CodexMcpError(Exception):
    """An error a person can act on. `code` is stable; `exit_status` is what the CLI exits with."""

    code = "failed"
    exit_status = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class BadInput(CodexMcpError):
    """The caller asked for something malformed: fix the arguments and call again."""
    code, exit_status = "bad_input", 2


class NotFound(BadInput):
    code = "not_found"


class MalformedRecord(CodexMcpError):
    """A task file cannot be read; nothing was written. Fix the named line in an editor."""
    code = "malformed_record"


class RefusedTransition(CodexMcpError):
    """The task's status does not allow this step; the message says what does."""
    code = "refused_transition"


class OperationFailed(CodexMcpError):
    """The step was allowed but could not be carried out (a process, a lock, the disk)."""
    code = "failed"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def seconds_since(iso: str) -> Optional[int]:
    import calendar
    try:
        return int(time.time() - calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def one_line(text: str, limit: int = 300) -> str:
    """Fold text into one line, so that nobody's words can add lines to a list they land in."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tail(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


# ====================================================================================================
# 2. Task records and their Markdown form
# ====================================================================================================
#
# A record is a title line, then `## ` sections. The tool owns the sections in SECTIONS; any other
# section, and any wording a person gives an owned section that parses to the same value, is kept
# verbatim. Text that may come from Codex is always written inside a code fence longer than any
# backtick run in it, so no line of it can be read as structure.

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
STRUCTURE_STARTS = ("#", "`", "~", " ")   # the first characters a fence or heading line can have
HEADING = re.compile(r"^## +(.+?)\s*#*\s*$")
BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
META_LINE = re.compile(r"^\s*[-*+]\s+([A-Za-z][A-Za-z ]*?)\s*:\s?(.*)$")
HINT = ("<!-- codex-mcp task record. Edit Goal, Allowed Paths, Constraints, Acceptance Criteria, Verify "
        "or Status in any editor; the tool honours the edit on its next read. -->")


class Section(NamedTuple):
    heading: str
    lines: list           # the body, without the heading line
    line_no: int          # 1-based line of the heading, for error messages


class Document(NamedTuple):
    """The raw shape of a record file, kept so that a rewrite changes only what changed."""
    preamble: list
    sections: list


def split_sections(text: str, where: str) -> Document:
    """Split a record into its preamble and `## ` sections, ignoring headings inside fences."""
    preamble: list = []
    sections: list = []
    body = preamble
    fence: Optional[tuple] = None
    for number, line in enumerate(text.split("\n"), 1):
        if line[:1] not in STRUCTURE_STARTS:     # most lines: no regex needed (list of 10,000 tasks)
            body.append(line)
            continue
        if fence is not None:
            if closes_fence(line, fence[0]):
                fence = None
        else:
            mark = FENCE.match(line)
            heading = HEADING.match(line)
            if mark:
                fence = (mark.group(1), number)
            elif heading:
                sections.append(Section(heading.group(1), [], number))
                body = sections[-1].lines
                continue
        body.append(line)
    if fence is not None:
        raise MalformedRecord(f"{where}:{fence[1]}: this code fence ({fence[0]}) is never closed; "
                              f"expected a closing line of at least {len(fence[0])} '{fence[0][0]}'")
    return Document(preamble, sections)


def closes_fence(line: str, opening: str) -> bool:
    """Whether `line` closes a fence opened with `opening`: the same character, at least as many,
    nothing after (CommonMark's rule, so GitHub and this parser agree on where a block ends)."""
    mark = FENCE.match(line)
    return bool(mark) and mark.group(1)[0] == opening[0] and len(mark.group(1)) >= len(opening) \
        and not mark.group(2).strip()


def fence_for(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_text(value: str, always_fence: bool = False, info: str = "") -> list:
    """Plain text when it cannot be mistaken for structure, else a fenced block."""
    if not value:
        return []
    unsafe = any(line.startswith("#") or FENCE.match(line) for line in value.split("\n"))
    if not (always_fence or unsafe):
        return value.split("\n")
    fence = fence_for(value)
    return [fence + info, *value.split("\n"), fence]


def parse_text(lines: list, where: str, line_no: int) -> str:
    """The inverse of render_text: the inside of a lone fenced block, else the trimmed text."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    body = lines[start:end]
    opening = FENCE.match(body[0]) if len(body) >= 2 else None
    if opening and closes_fence(body[-1], opening.group(1)) \
            and not any(closes_fence(line, opening.group(1)) for line in body[1:-1]):
        return "\n".join(body[1:-1])
    return "\n".join(body)


def parse_bullets(lines: list, where: str, line_no: int) -> list:
    items = []
    for offset, line in enumerate(lines, 1):
        if not line.strip() or line.strip().startswith("<!--"):
            continue
        match = BULLET.match(line)
        if not match:
            raise MalformedRecord(f"{where}:{line_no + offset}: expected a list item ('- ...'), found {line.strip()!r}")
        items.append(match.group(1).strip())
    return items


def parse_paths(lines: list, where: str, line_no: int) -> list:
    return [item.strip("`").strip() for item in parse_bullets(lines, where, line_no)]


def render_paths(paths: list) -> list:
    return [f"- `{path}`" for path in paths]


def render_bullets(items: list) -> list:
    return [f"- {item}" for item in items]


def parse_rounds(lines: list, where: str, line_no: int) -> list:
    """`### Round N` sub-headings, each over a fenced block of that round's review items."""
    rounds: list = []
    current: Optional[list] = None
    for offset, line in enumerate(lines, 1):
        if re.match(r"^### +Round +\d+", line):
            current = []
            rounds.append(current)
        elif current is not None:
            current.append(line)
        elif line.strip():
            raise MalformedRecord(f"{where}:{line_no + offset}: expected '### Round N' before {line.strip()!r}")
    return [parse_text(body, where, line_no) for body in rounds]


def render_rounds(rounds: list) -> list:
    out: list = []
    for number, text in enumerate(rounds, 1):
        out += [f"### Round {number}", "", *render_text(text, always_fence=True), ""]
    return out[:-1]


# The Status section: `- Label: value` lines. (label, attribute, type)
META = (
    ("Status", "status", str), ("Rework Count", "rework_count", int), ("Codex Thread", "thread_id", str),
    ("Created", "created", str), ("Updated", "updated", str), ("Reason", "reason", str),
    ("Model", "model", str), ("Reasoning", "reasoning", str),
    ("Timeout", "timeout", int), ("Idle Timeout", "idle_timeout", int),
    # The process running Codex for the task (its worker, or an accept), and the process group it
    # started (Codex, or the verify command): what check cleans up if the first one dies.
    ("Worker", "worker", str), ("Child Process", "child_process", str), ("Started", "started", str),
    ("Progress", "progress", str), ("Last Event", "last_event", str), ("Commands", "commands", int),
    ("Tokens", "tokens", int), ("Record Tampered", "tampered", str), ("Log", "log", str),
)
META_BY_LABEL = {label.lower(): (attr, kind, label) for label, attr, kind in META}


class Task:
    """One task, as its record file says. Owned sections are attributes; the rest rides in `doc`.

    A plain class, not a dataclass: importing `dataclasses` (it imports `inspect`) was a quarter of
    the CLI's start-up. Immutable defaults live on the class; lists and dicts are made per task."""
    status: str = "todo"
    rework_count: int = 0
    thread_id: str = ""
    created: str = ""
    updated: str = ""
    reason: str = ""
    model: str = ""
    reasoning: str = ""
    timeout: int = DEFAULT_TIMEOUT
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT
    worker: str = ""
    child_process: str = ""
    started: str = ""
    progress: str = ""
    last_event: str = ""
    commands: int = 0
    tokens: int = 0
    tampered: str = ""
    log: str = ""
    goal: str = ""
    constraints: str = ""
    criteria: str = ""
    verify: str = ""
    result: str = ""
    run_log: str = ""
    changes: str = ""
    verification: str = ""

    def __init__(self, id: str, doc: Optional[Document] = None, **values: Any) -> None:
        self.id, self.doc = id, doc
        self.extra_meta: dict = {}          # Status labels the tool does not know, kept as written
        self.allowed_paths: list = []
        self.rounds: list = []
        self.history: list = []
        for name, value in values.items():
            if not hasattr(self, name):
                raise TypeError(f"Task has no attribute {name!r}")
            setattr(self, name, value)

    def meta(self) -> dict:
        values = {label: getattr(self, attr) for label, attr, _ in META}
        return {**values, **self.extra_meta}


META_DEFAULTS = Task(id="").meta()


def parse_meta(lines: list, where: str, line_no: int) -> dict:
    values: dict = {}
    for offset, line in enumerate(lines, 1):
        if not line.strip() or line.strip().startswith("<!--"):
            continue
        match = META_LINE.match(line)
        if not match:
            raise MalformedRecord(f"{where}:{line_no + offset}: expected a '- Label: value' line in Status, "
                                  f"found {line.strip()!r}")
        label, value = match.group(1).strip(), match.group(2).strip()
        attr, kind, label = META_BY_LABEL.get(label.lower(), (None, str, label))
        if kind is int:
            if value and not re.fullmatch(r"\d{1,12}", value):
                raise MalformedRecord(f"{where}:{line_no + offset}: '{label}' must be a whole number, found {value!r}")
            value = int(value or 0)
        if attr == "status" and value not in STATUSES:
            raise MalformedRecord(f"{where}:{line_no + offset}: Status must be one of {', '.join(STATUSES)}, "
                                  f"found {value!r}")
        values[label] = value
    return values


def render_meta(values: dict) -> list:
    lines = []
    for label, value in values.items():
        known = META_BY_LABEL.get(label.lower())
        if value in ("", None) and known and known[0] != "status":
            continue
        if known and known[1] is int and value == 0 and label not in ("Rework Count",):
            continue
        lines.append(f"- {label}: {one_line(str(value), 500)}")
    return lines


def meta_values(lines: list, where: str, line_no: int) -> dict:
    """Parsed Status values with defaults filled, so that equal records compare equal."""
    return {**META_DEFAULTS, **parse_meta(lines, where, line_no)}


# Owned sections in the order they are written: (heading, attribute, parse, render)
SECTIONS = (
    ("Status", None, meta_values, render_meta),
    ("Goal", "goal", parse_text, render_text),
    ("Allowed Paths", "allowed_paths", parse_paths, render_paths),
    ("Constraints", "constraints", parse_text, render_text),
    ("Acceptance Criteria", "criteria", parse_text, render_text),
    ("Verify", "verify", parse_text, lambda v: render_text(v, always_fence=True, info="sh")),
    ("Codex Result", "result", parse_text, lambda v: render_text(v, always_fence=True, info="markdown")),
    ("Codex Run", "run_log", parse_text, lambda v: render_text(v, always_fence=True, info="text")),
    ("Changes", "changes", parse_text, lambda v: render_text(v, always_fence=True, info="text")),
    ("Verification", "verification", parse_text, lambda v: render_text(v, always_fence=True, info="text")),
    ("Review Rounds", "rounds", parse_rounds, render_rounds),
    ("History", "history", parse_bullets, render_bullets),
)
SECTION_INDEX = {heading.lower(): index for index, (heading, *_rest) in enumerate(SECTIONS)}
REQUIRED_SECTIONS = ("Status", "Goal", "Allowed Paths")


def parse_task(text: str, task_id: str, where: str) -> Task:
    """Read a record. Raises MalformedRecord naming the file, the line and what was expected."""
    doc = split_sections(text, where)
    task = Task(id=task_id, doc=doc)
    seen: dict = {}
    for section in doc.sections:
        index = SECTION_INDEX.get(section.heading.lower())
        if index is None:
            continue
        heading, attr, parse, _ = SECTIONS[index]
        if heading in seen:
            raise MalformedRecord(f"{where}:{section.line_no}: a second '## {heading}' section "
                                  f"(the first is at line {seen[heading]}); expected one")
        seen[heading] = section.line_no
        value = parse(section.lines, where, section.line_no)
        if attr is None:
            for label, val in value.items():
                known = META_BY_LABEL.get(label.lower())
                if known:
                    setattr(task, known[0], val)
                else:
                    task.extra_meta[label] = val
        else:
            setattr(task, attr, value)
    for heading in REQUIRED_SECTIONS:
        if heading not in seen:
            raise MalformedRecord(f"{where}: expected a '## {heading}' section; none was found")
    return task


def render_task(task: Task) -> str:
    """Write a record back, keeping every byte a person wrote that still means the same thing."""
    doc = task.doc or Document([f"# {task.id}: {one_line(task.goal, 100)}", "", HINT, ""], [])
    sections = list(doc.sections)
    for index, (heading, attr, parse, render) in enumerate(SECTIONS):
        value = task.meta() if attr is None else getattr(task, attr)
        position = next((i for i, s in enumerate(sections) if s.heading.lower() == heading.lower()), None)
        if position is not None:
            current = sections[position]
            try:
                unchanged = parse(current.lines, "", 0) == value
            except MalformedRecord:
                unchanged = False
            if not unchanged:
                sections[position] = Section(current.heading, ["", *render(value), ""], current.line_no)
        elif value or heading in REQUIRED_SECTIONS:
            later = [i for i, s in enumerate(sections) if SECTION_INDEX.get(s.heading.lower(), -1) > index]
            owned = [i for i, s in enumerate(sections) if s.heading.lower() in SECTION_INDEX]
            at = later[0] if later else (owned[-1] + 1 if owned else len(sections))
            sections.insert(at, Section(heading, ["", *render(value), ""], 0))
    out = list(doc.preamble)
    for section in sections:
        out.append(f"## {section.heading}")
        out.extend(section.lines)
    text = "\n".join(out)
    return text if text.endswith("\n") else text + "\n"


def new_task(task_id: str, goal: str, allowed_paths: list, constraints: str = "", criteria: str = "",
             verify: str = "", model: str = "", reasoning: str = "", timeout: int = DEFAULT_TIMEOUT,
             idle_timeout: int = DEFAULT_IDLE_TIMEOUT) -> Task:
    stamp = now_iso()
    return Task(id=task_id, goal=goal, allowed_paths=list(allowed_paths),
                constraints=constraints, criteria=criteria, verify=verify, model=model, reasoning=reasoning,
                timeout=timeout, idle_timeout=idle_timeout, created=stamp, updated=stamp,
                history=[f"{stamp} created (todo)"])


# ====================================================================================================
# 3. The state machine
# ====================================================================================================

TRANSITIONS = {
    "todo": {"doing": "delegate starts Codex", "blocked": "Codex cannot start, or the task is cancelled"},
    "doing": {"review": "Codex finished its turn",
              "blocked": "Codex failed, timed out, died or was cancelled"},
    "review": {"done": "accept passes", "doing": f"rework (at most {MAX_REWORKS})",
               "blocked": "rework limit reached, or the sandbox denied what the task needs"},
    "blocked": {"todo": "retry"},
    "done": {},
}
# What to do next from each status, in the tools' names (the CLI's commands are the same words).
NEXT_STEP = {
    "todo": "check-task with waitSeconds waits for it to start; it runs when the repo's current task ends",
    "doing": "check-task with waitSeconds (up to 600) waits for Codex to finish; cancel-task stops it",
    "review": "call accept-task to review the result, or rework-task to send it back",
    "blocked": "read reason; fix what it says, then retry-task and delegate-task with fromFile",
    "done": "nothing: the task is finished",
}


def next_step(task: Task) -> str:
    if task.status == "todo" and not task.worker:
        return f"delegate-task with fromFile {task.id} starts it (CLI: delegate --file {task.id})"
    return NEXT_STEP[task.status]


def check_transition(task: Task, new: str, doing: str) -> None:
    """Raise RefusedTransition naming the current status and what may be done from it."""
    if new in TRANSITIONS.get(task.status, {}):
        return
    allowed = "; ".join(f"{target} ({why})" for target, why in TRANSITIONS.get(task.status, {}).items())
    raise RefusedTransition(f"cannot {doing} {task.id}: it is {task.status}, and from {task.status} it can go "
                            f"to: {allowed or 'nowhere'}. Next: {next_step(task)}.", status=task.status)


def require_status(task: Task, expected: str, action: str) -> None:
    """A command is one edge of the table: `rework` is review -> doing, not todo -> doing."""
    if task.status != expected:
        raise RefusedTransition(f"cannot {action} {task.id}: it is {task.status}, and {action} needs a {expected} "
                                f"task. Next: {next_step(task)}.", status=task.status)


def transition(task: Task, new: str, reason: str, doing: str = "change") -> None:
    """Move a task along the table and append the step to its History."""
    check_transition(task, new, doing)
    entry = f"{now_iso()} {task.status} -> {new}: {one_line(reason)}"
    task.status, task.reason = new, one_line(reason)
    task.history = [*task.history, entry]


def note(task: Task, text: str) -> None:
    task.history = [*task.history, f"{now_iso()} {one_line(text)}"]


# ====================================================================================================
# 4. Locks, atomic writes and the task store
# ====================================================================================================

@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `path` (created if missing). Yields False if non-blocking and busy.

    The lock lives as long as the file descriptor, so a process that dies releases it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.name == "nt":
            import msvcrt
            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    if not blocking:
                        yield False
                        return
                    time.sleep(0.05)
        else:
            import fcntl
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
        yield True
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Replace `path` whole or not at all: temp file, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    if os.name != "nt":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def normalize_task_id(task_id: Any) -> str:
    """`T-` and digits, nothing else, so that no id names a path outside agents/tasks/."""
    match = TASK_ID.fullmatch(str(task_id).strip()) if isinstance(task_id, str) else None
    if not match:
        raise BadInput(f"{task_id!r} is not a task id: expected 'T-' followed by digits, like T-001")
    return f"T-{int(match.group(1)):03d}"


def task_number(task_id: str) -> int:
    return int(task_id[2:])


class RecordGuard:
    """While Codex runs, a task's record belongs to its worker: any other change is Codex's.

    Codex may write anywhere in the repo, agents/tasks/ included. The worker keeps the text it last
    wrote; a record that differs when it next reads it is put back, and the change is reported."""

    def __init__(self) -> None:
        self.last_text: Optional[str] = None
        self.last_stat: Optional[tuple] = None
        self.where = ""
        self.changed: dict = {}      # what was edited, each part once however often Codex wrote

    def changed_on_disk(self, path: Path) -> bool:
        """A stat, cheap enough for every event: has anyone written the record since we did?"""
        try:
            info = path.stat()
        except FileNotFoundError:
            return self.last_text is not None
        return self.last_stat is not None and (info.st_size, info.st_mtime_ns, info.st_ino) != self.last_stat

    def check(self, text: str, task_id: str, where: str) -> str:
        if self.last_text is None or text == self.last_text:
            return text
        self.where = where
        self.changed.update(dict.fromkeys(edited_parts(self.last_text, text, task_id, where)))
        return self.last_text

    def summary(self) -> str:
        """"" if nobody touched the record, else what was edited (and has been put back)."""
        return f"{self.where}: {', '.join(self.changed)} (restored)" if self.changed else ""


def edited_parts(ours: str, theirs: str, task_id: str, where: str) -> list:
    try:
        before, after = parse_task(ours, task_id, where), parse_task(theirs, task_id, where)
    except MalformedRecord:
        return ["the whole record (left unreadable)"]
    return [heading for heading, attr, *_ in SECTIONS
            if (before.meta() if attr is None else getattr(before, attr))
            != (after.meta() if attr is None else getattr(after, attr))] or ["formatting"]


class Store:
    """The task records of one repository, under `<repo>/agents/tasks/`.

    Every read-modify-write holds one lock per repository (`.codex-mcp/store.lock`) for a few
    milliseconds; writes are atomic. A record is only rewritten when its text changes."""

    def __init__(self, repo: Any) -> None:
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise BadInput(f"--cwd {repo}: no such directory")
        self.tasks_dir = self.repo / TASKS_DIR
        self.state_dir = self.tasks_dir / STATE_DIR
        self.runs_dir = self.state_dir / "runs"
        self.queue_dir = self.state_dir / "queue"

    def path(self, task_id: str) -> Path:
        return self.tasks_dir / f"{normalize_task_id(task_id)}.md"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.repo).as_posix()

    def ids(self) -> list:
        if not self.tasks_dir.is_dir():
            return []
        names = (entry.name[:-3] for entry in os.scandir(self.tasks_dir) if entry.name.endswith(".md"))
        return sorted((name for name in names if TASK_ID.fullmatch(name)), key=task_number)

    def read_text(self, task_id: str) -> str:
        path = self.path(task_id)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"no task {normalize_task_id(task_id)} in {self.tasks_dir} "
                           f"(list shows the tasks of this repo; --cwd picks another repo)") from None
        except UnicodeDecodeError as error:
            raise MalformedRecord(f"{self.relative(path)}: not UTF-8 text ({error.reason} at byte {error.start}); "
                                  f"fix the file in an editor") from None

    def load(self, task_id: str) -> Task:
        task_id = normalize_task_id(task_id)
        return parse_task(self.read_text(task_id), task_id, self.relative(self.path(task_id)))

    def create(self, task: Task) -> Task:
        """Give the task the next free id and write it; safe against concurrent creators.

        `.codex-mcp/next-id` remembers the next number, so that a repo with thousands of tasks is
        not listed on every create. It is only a hint: missing or unreadable, it is recomputed from
        the files, and an id that exists already (a record written by hand) is skipped."""
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        hint = self.state_dir / "next-id"
        with self.lock("store"):
            try:
                number = int(hint.read_text())
            except (OSError, ValueError):
                ids = self.ids()
                number = task_number(ids[-1]) + 1 if ids else 1
            while self.path(f"T-{number}").exists():
                number += 1
            task.id, task.doc = f"T-{number:03d}", None
            atomic_write(self.path(task.id), render_task(task))
            hint.write_text(f"{number + 1}\n")
        return self.load(task.id)

    @contextlib.contextmanager
    def update(self, task_id: str, guard: Optional[RecordGuard] = None) -> Iterator[Task]:
        """Read, let the caller change, write back only if the text changed; all under the lock."""
        task_id = normalize_task_id(task_id)
        where = self.relative(self.path(task_id))
        with self.lock("store"):
            text = self.read_text(task_id)
            if guard is not None:
                text = guard.check(text, task_id, where)
            task = parse_task(text, task_id, where)
            yield task
            rendered = render_task(task)
            if rendered != text:
                task.updated = now_iso()
                rendered = render_task(task)
                atomic_write(self.path(task_id), rendered)
            if guard is not None:
                info = self.path(task_id).stat()
                guard.last_text, guard.last_stat = rendered, (info.st_size, info.st_mtime_ns, info.st_ino)

    def run_file(self, task_id: str, suffix: str) -> Path:
        return self.runs_dir / f"{task_id}.{suffix}"

    def lock(self, name: str, blocking: bool = True) -> "contextlib.AbstractContextManager[bool]":
        """One of the repo's locks: `store` (every record write), `run` (the Codex run), `accept-T-NNN`."""
        self.make_state_dirs()
        return file_lock(self.state_dir / f"{name}.lock", blocking)

    def make_state_dirs(self) -> None:
        """The tool's own folder, ignored by git so that its files are never committed by accident.
        Made by the first thing that writes there: a lock, or a worker's log."""
        if (self.state_dir / ".gitignore").exists():
            return
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / ".gitignore").write_text("# codex-mcp run logs, snapshots, locks and queue\n*\n")


# ====================================================================================================
# 5. The Codex runner and the background worker
# ====================================================================================================

def toml_string(text: str) -> str:
    # JSON's escapes (\", \\, \n, \uXXXX) are all valid in a TOML basic string.
    return json.dumps(text)


def developer_instructions(task: Task) -> str:
    paths = "\n".join(f"- {path}" for path in task.allowed_paths)
    parts = [
        f"You are working on task {task.id}, handed to you by codex-mcp. Your work will be reviewed against "
        "the files that really changed in the working tree, not against your report.",
        f"Allowed paths: create, modify, delete or rename files ONLY under these (relative to the repository "
        f"root):\n{paths}",
        f"Never touch {TASKS_DIR}/ (the task records): edits there are undone and count against you. Do not "
        "commit, stage or otherwise use git to record changes; leave them in the working tree.",
    ]
    if task.constraints:
        parts.append(f"Constraints:\n{task.constraints}")
    parts.append(
        "End with a final message that has exactly these three Markdown sections:\n"
        "## Summary\nwhat you did and why.\n"
        "## Tests\nthe commands you ran and what they printed (pass/fail counts), or why none ran.\n"
        "## Files Changed\none path per line, relative to the repository root: every file you created, "
        "modified, deleted or renamed.\n"
        "If the sandbox or the approval policy denied something the task needs, say so on a line that "
        "starts with 'SANDBOX DENIED:'.")
    return "\n\n".join(parts)


def start_prompt(task: Task) -> str:
    parts = [f"Task {task.id}: {task.goal}"]
    if task.criteria:
        parts.append(f"Acceptance criteria:\n{task.criteria}")
    if task.verify:
        parts.append(f"The reviewer will run this command in the repository; make it pass:\n{task.verify}")
    if task.rounds:
        earlier = "\n\n".join(f"Round {n}:\n{text}" for n, text in enumerate(task.rounds, 1))
        parts.append(f"An earlier attempt was reviewed with these items; they still apply:\n{earlier}")
    return "\n\n".join(parts)


def rework_prompt(task: Task) -> str:
    return (f"Rework round {len(task.rounds)} of {MAX_REWORKS} for task {task.id}. The review found:\n"
            f"{task.rounds[-1]}\n\nFix exactly these items. Stay inside the allowed paths: "
            f"{', '.join(task.allowed_paths)}. Finish with the Summary, Tests and Files Changed sections again.")


def recovery_prompt(task: Task, request: str) -> str:
    """A new thread must be told everything the lost one knew."""
    parts = [start_prompt(task), "Your earlier conversation on this task was lost. The working tree still "
             "holds the changes made so far."]
    if task.result:
        parts.append(f"Your last report was:\n{task.result}")
    parts.append(f"Now:\n{request}")
    return "\n\n".join(parts)


def completion_prompt(missing: list) -> str:
    return (f"Your final message is missing these sections: {', '.join(missing)}. Reply with only those "
            "sections, as Markdown '## ' headings, about the work you already did. Do not change any files.")


def build_codex_command(codex_cmd: list, task: Task, repo: Path, resume: str = "",
                        sandbox: str = SANDBOX) -> list:
    """The one place a Codex command line is made.

    `codex exec resume` accepts neither -s nor -C: it runs in the repo as its working directory and
    gets the sandbox as a config override. Without that override a resumed turn would run under
    whatever sandbox the user's config.toml says."""
    argv = [*codex_cmd, "exec"]
    if resume:
        argv += ["resume", resume, "--json", "--skip-git-repo-check", "-c", f"sandbox_mode={toml_string(sandbox)}"]
    else:
        argv += ["--json", "--skip-git-repo-check", "-s", sandbox, "-C", str(repo)]
    argv += ["-c", f"developer_instructions={toml_string(developer_instructions(task))}"]
    if task.model:
        argv += ["-m", task.model]
    if task.reasoning:
        argv += ["-c", f"model_reasoning_effort={toml_string(task.reasoning)}"]
    return argv + ["-"]


LOST_THREAD = re.compile(r"no rollout found|thread not loaded|thread \S+ not found|not found for thread", re.I)


class EventDigest:
    """What the task record keeps of a Codex JSONL stream; fed one event at a time, never the whole."""

    KEEP_COMMANDS = 100

    def __init__(self) -> None:
        self.thread_id = ""
        self.final_message = ""
        self.tokens = 0
        self.commands: list = []
        self.command_count = 0
        self.file_changes: list = []
        self.errors: list = []
        self.diagnostics: list = []
        self.last_event = ""
        self.completed = False
        self.failed = False

    def feed_line(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            if line.strip() and len(self.diagnostics) < 20:
                self.diagnostics.append(clip(line.decode("utf-8", "replace").strip(), 300))
            return
        if isinstance(event, dict):
            self.feed(event)

    def feed(self, event: dict) -> None:
        kind = str(event.get("type", ""))
        self.last_event = kind
        item = event.get("item") if isinstance(event.get("item"), dict) else {}
        if kind == "thread.started":
            self.thread_id = str(event.get("thread_id", ""))
        elif kind == "turn.completed":
            self.completed = True
            usage = event.get("usage") or {}
            self.tokens += sum(v for k, v in usage.items() if isinstance(v, int) and k in
                               ("input_tokens", "output_tokens", "reasoning_output_tokens"))
        elif kind == "turn.failed":
            self.failed = True
            self.errors.append(str((event.get("error") or {}).get("message", "turn failed")))
        elif kind == "error":
            self.failed = True
            self.errors.append(str(event.get("message", "error")))
        elif kind == "item.completed":
            self.feed_item(item)

    def feed_item(self, item: dict) -> None:
        kind = item.get("type")
        if kind == "agent_message":
            self.final_message = str(item.get("text", ""))
        elif kind == "command_execution":
            self.command_count += 1
            self.commands.append(f"$ {one_line(item.get('command', ''), 200)}  [exit {item.get('exit_code')}]")
            del self.commands[:-self.KEEP_COMMANDS]
        elif kind == "file_change":
            for change in item.get("changes") or []:
                if isinstance(change, dict):
                    self.file_changes.append(f"{change.get('kind', 'change')}: {change.get('path', '')}")

    def summary(self) -> str:
        lines = [f"commands run: {self.command_count}"]
        if self.command_count > len(self.commands):
            lines.append(f"(the last {len(self.commands)} shown; the log has all)")
        lines += self.commands
        lines += [f"reported {change}" for change in self.file_changes[:200]]
        lines += [f"error: {one_line(e, 500)}" for e in self.errors]
        lines += [f"not JSON: {d}" for d in self.diagnostics]
        return "\n".join(lines)


class RunOutcome(NamedTuple):
    digest: EventDigest
    returncode: Optional[int]
    stopped: str            # why we stopped Codex ourselves ("" if it ended on its own)
    stderr_tail: str

    @property
    def lost_thread(self) -> bool:
        return self.returncode not in (0, None) and not self.digest.thread_id \
            and bool(LOST_THREAD.search(self.stderr_tail))


def run_verdict(outcome: RunOutcome, codex: str) -> tuple:
    """(status, reason) for a finished Codex run: review, or blocked in Codex's own words."""
    import signal
    digest = outcome.digest
    if outcome.stopped:
        return "blocked", outcome.stopped
    if digest.failed:
        return "blocked", "Codex reported: " + " | ".join(one_line(e, 300) for e in digest.errors[-2:])
    if outcome.returncode and outcome.returncode < 0:
        name = signal.Signals(-outcome.returncode).name if -outcome.returncode in signal.valid_signals() else "?"
        return "blocked", f"{codex} was killed by signal {name}"
    if outcome.returncode:
        err = one_line(outcome.stderr_tail.strip().splitlines()[-1] if outcome.stderr_tail.strip() else "", 300)
        first_error = next((line for line in outcome.stderr_tail.splitlines() if line.lower().startswith("error")),
                           err)
        return "blocked", f"{codex} exited with status {outcome.returncode}: {one_line(first_error, 300)}"
    if not digest.completed:
        return "blocked", "Codex stopped without finishing its turn (no turn.completed event)"
    if not digest.final_message.strip():
        return "blocked", "Codex finished its turn without a final message"
    return "review", "Codex finished its turn"


HAVE_PROC = os.path.exists("/proc/self/stat")     # Linux: process start times and groups are readable


def proc_stat(pid: Any) -> Optional[list]:
    """The fields of /proc/<pid>/stat after the command name (state first), or None if it is
    gone or a zombie. The name is in parentheses and may itself contain spaces and parentheses."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields


def kill_group(pgid: int, grace: float = 3.0) -> None:
    """Stop a process group: SIGTERM, then SIGKILL for whatever is left after `grace` seconds."""
    import signal
    import subprocess
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pgid)], capture_output=True)
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while group_alive(pgid):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        else:
            return


def group_alive(pgid: int) -> bool:
    """Any live member left? A zombie still counts for killpg(pgid, 0), so read /proc where we can."""
    if HAVE_PROC:
        return bool(group_members(pgid, "0"))
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def process_identity(pid: int) -> str:
    """`pid@start-time`: a pid alone may be reused by another program after the first one dies."""
    return f"{pid}@{process_start(pid) or 0}"


def process_start(pid: int) -> str:
    fields = proc_stat(pid)
    return fields[19] if fields else ""


def group_members(pgid: int, since: str) -> list:
    """Live processes of process group `pgid` started no earlier than `since` (Linux /proc).

    Codex's shell commands share its group and outlive it when it is killed; a group id can be
    reused only by processes started later than ours, so the start time tells ours apart."""
    members = []
    for name in os.listdir("/proc") if HAVE_PROC else ():
        fields = proc_stat(name) if name.isdigit() else None
        if fields and int(fields[2]) == pgid and int(fields[19]) >= int(since or 0):
            members.append(int(name))
    return members


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the process that started it dies (Linux only), so a
    worker or accept killed with -9 leaves no Codex and no verify command behind."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)   # PR_SET_PDEATHSIG, SIGKILL


DIE_WITH_PARENT = die_with_parent if os.name == "posix" else None   # Popen refuses preexec_fn on Windows


def process_alive(identity: str) -> bool:
    pid_text, _, start = identity.partition("@")
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if HAVE_PROC:
        current = process_start(pid)
        return bool(current) and (start in ("", "0") or current == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_codex(argv: list, prompt: str, repo: Path, log_path: Path, timeout: float, idle_timeout: float,
              on_start: Callable[[int], None], on_event: Callable[[EventDigest], None],
              should_stop: Callable[[], str]) -> RunOutcome:
    """Run one Codex turn; its JSONL goes to `log_path` and, line by line, into a digest.

    Codex writes its stdout straight into the log, which we follow as it grows: the raw log costs
    no copy, and no pipe can be held open by Codex's helpers after it exits. `on_event` is called
    as lines arrive (the caller rate-limits its writes); `should_stop` returns a reason to stop
    Codex early (a cancel). Timeouts and stops kill Codex's whole process group."""
    import subprocess
    digest = EventDigest()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stderr_path = log_path.with_suffix(".stderr")
    with open(log_path, "ab") as log, open(stderr_path, "wb") as stderr:
        start = log.seek(0, os.SEEK_END)
        try:
            process = subprocess.Popen(argv, cwd=repo, stdin=subprocess.PIPE, stdout=log, stderr=stderr,
                                       start_new_session=True, preexec_fn=DIE_WITH_PARENT)
        except OSError as error:
            missing = isinstance(error, FileNotFoundError)
            reason = (f"the Codex CLI was not found ({argv[0]!r} is not on PATH): install it with "
                      "'npm install -g @openai/codex' or point --codex-cmd / CODEX_CMD at it") if missing \
                else f"could not start {argv[0]!r}: {error}"
            return RunOutcome(digest, None, reason, "")
        on_start(process.pid)
        send_prompt(process, prompt)
        stopped = follow_events(process, log_path, start, digest, timeout, idle_timeout, on_event, should_stop)
        if stopped:
            kill_group(process.pid)
        returncode = process.wait()
        kill_group(process.pid, grace=0.5)   # no helper Codex started may outlive the task
    return RunOutcome(digest, returncode, stopped, tail(stderr_path.read_text(errors="replace"), 4000))


def send_prompt(process: "subprocess.Popen", prompt: str) -> None:
    """The prompt goes on stdin, which is then closed: left open, Codex would wait for more."""
    try:
        process.stdin.write(prompt.encode())
        process.stdin.close()
    except BrokenPipeError:
        pass


def follow_events(process: "subprocess.Popen", log_path: Path, start: int, digest: EventDigest, timeout: float,
                  idle_timeout: float, on_event: Callable, should_stop: Callable) -> str:
    """Read the log from `start` as Codex appends to it, until Codex has exited and all it wrote
    is read. Returns a reason if we must stop Codex early, else ""."""
    started = last_output = time.monotonic()
    pending = b""
    with open(log_path, "rb") as log:
        log.seek(start)
        while True:
            exited = process.poll() is not None      # checked first: then an empty read means done
            chunk = log.read(1 << 20)
            now = time.monotonic()
            if chunk:
                last_output = now
                lines = chunk.split(b"\n")
                lines[0] = pending + lines[0]
                pending = lines.pop()
                for line in lines:
                    digest.feed_line(line)
            elif exited:
                break
            if now - started > timeout:
                return f"hard timeout: Codex ran longer than {int(timeout)} s (the task's Timeout)"
            if now - last_output > idle_timeout:
                return f"idle timeout: no event from Codex for {int(idle_timeout)} s (the task's Idle Timeout)"
            reason = should_stop()
            if reason:
                return reason
            on_event(digest)
            if not chunk:
                time.sleep(0.05)
    if pending:
        digest.feed_line(pending)
    return ""


class Worker:
    """One task's background run: wait for the repo, run Codex, record what happened.

    Started detached (`codex_mcp.py _work`), so it outlives the CLI call or the MCP server that
    started it. While it lives, it is the only writer of its task's record; SIGTERM cancels it."""

    def __init__(self, store: Store, task_id: str, mode: str, codex_cmd: list) -> None:
        self.store, self.task_id, self.mode, self.codex_cmd = store, task_id, mode, codex_cmd
        self.guard = RecordGuard()
        self.cancelled = ""
        self.identity = process_identity(os.getpid())
        self.last_write = 0.0
        self.thread_announced = False

    def stop_reason(self) -> str:
        return self.cancelled

    def on_cancel(self, *_: Any) -> None:
        self.cancelled = "cancelled: the run was stopped by cancel"

    def run(self) -> None:
        import signal
        signal.signal(signal.SIGTERM, self.on_cancel)
        entry = self.store.queue_dir / self.task_id
        try:
            self.enqueue(entry)
            with self.wait_turn(entry) as turn:
                if turn:
                    self.run_turn()
                else:
                    self.finish_blocked("cancelled while queued, before Codex started")
        finally:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
            with self.store.update(self.task_id) as task:    # e.g. after an early return
                if task.worker == self.identity:
                    task.worker = ""

    # -- the queue: one Codex run per repo, in id order -----------------------------------------

    def enqueue(self, entry: Path) -> None:
        self.store.queue_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(entry, self.identity)
        with self.store.update(self.task_id) as task:
            task.worker = self.identity

    @contextlib.contextmanager
    def wait_turn(self, entry: Path) -> Iterator[bool]:
        said = ""
        while not self.cancelled:
            head = queue_head(self.store)
            if head == self.task_id:
                with self.store.lock("run", blocking=False) as mine:
                    if mine:
                        yield True
                        return
            waiting_for = head if head and head != self.task_id else "the Codex run already in this repo"
            if waiting_for != said:
                said = waiting_for
                with self.store.update(self.task_id) as task:
                    task.progress = f"queued: waiting for {waiting_for} to finish"
            time.sleep(0.2)
        yield False

    # -- one run -------------------------------------------------------------------------------

    def run_turn(self) -> None:
        task = self.store.load(self.task_id)
        if self.mode == "start" and task.status != "todo" or self.mode == "rework" and task.status != "doing":
            return  # changed by hand or cancelled while queued: nothing to run
        before = snapshot(self.store.repo)
        with self.store.update(self.task_id, self.guard) as task:
            if task.status == "todo":
                transition(task, "doing", "delegate: Codex started", "start")
                task.thread_id = ""
            task.started, task.progress, task.tampered = now_iso(), "starting Codex", ""
            task.commands = task.tokens = 0
            task.log = self.store.relative(self.store.run_file(task.id, "jsonl"))
        outcome, recovered = self.turn(task)
        self.finish(outcome, before, recovered)

    def turn(self, task: Task) -> tuple:
        hooks = dict(on_start=self.on_codex_start, on_event=self.on_event, should_stop=self.stop_reason)
        if self.mode == "rework":
            return resumed_turn(self.store, task, rework_prompt(task), self.codex_cmd, **hooks)
        return codex_turn(self.store, task, start_prompt(task), self.codex_cmd, **hooks), ""

    def on_codex_start(self, pid: int) -> None:
        with self.store.update(self.task_id, self.guard) as task:
            task.child_process = process_identity(pid)
            task.progress = "Codex started"

    def on_event(self, digest: EventDigest) -> None:
        announce = digest.thread_id and not self.thread_announced   # delegate is waiting for it
        tampered = self.guard.changed_on_disk(self.store.path(self.task_id))  # put it back at once
        if not (announce or tampered) and time.monotonic() - self.last_write < PROGRESS_EVERY:
            return
        self.thread_announced = bool(digest.thread_id)
        self.last_write = time.monotonic()
        with self.store.update(self.task_id, self.guard) as task:
            task.thread_id = digest.thread_id or task.thread_id
            task.last_event, task.commands, task.tokens = digest.last_event, digest.command_count, digest.tokens
            elapsed = seconds_since(task.started) or 0
            task.progress = (f"running {elapsed} s: {digest.command_count} commands, "
                             f"last event {digest.last_event or 'none yet'}")

    def finish(self, outcome: RunOutcome, before: dict, recovered: str) -> None:
        after = snapshot(self.store.repo, before)
        record_changes(self.store, self.task_id, before, after)
        status, reason = run_verdict(outcome, self.codex_cmd[0])
        digest = outcome.digest
        with self.store.update(self.task_id, self.guard) as task:
            task.thread_id = digest.thread_id or task.thread_id
            task.result = digest.final_message or task.result
            task.run_log = digest.summary()
            task.last_event, task.commands = digest.last_event, digest.command_count
            task.tokens = digest.tokens
            task.changes = render_changes(load_changes(self.store, task.id))
            task.child_process = task.worker = ""
            task.progress = f"finished: {reason}"
            task.tampered = self.guard.summary()
            if recovered:
                note(task, recovered)
            transition(task, status, reason, "finish")

    def finish_blocked(self, reason: str) -> None:
        with self.store.update(self.task_id) as task:
            task.worker, task.progress = "", f"finished: {reason}"
            if task.status in ("todo", "doing"):
                transition(task, "blocked", reason, "cancel")


def work(repo: Any, task_id: str, mode: str, codex_cmd: list) -> None:
    """The detached worker's entry point (`codex_mcp.py _work`)."""
    store = Store(repo)
    worker = Worker(store, normalize_task_id(task_id), mode, codex_cmd)
    try:
        worker.run()
    except Exception as error:  # the record must say why, or check would only see a dead worker
        worker.finish_blocked(f"the worker failed: {type(error).__name__}: {one_line(str(error), 300)}")
        raise


def queue_head(store: Store) -> str:
    """The first task in the repo's run queue (running, or next to run); entries of dead workers
    are dropped on the way. "" if the queue is empty."""
    live = []
    for path in store.queue_dir.iterdir() if store.queue_dir.is_dir() else ():
        if not TASK_ID.fullmatch(path.name):
            continue
        with contextlib.suppress(FileNotFoundError):
            if process_alive(path.read_text().strip()):
                live.append(path.name)
            else:
                path.unlink()
    return min(live, key=task_number, default="")


def spawn_worker(store: Store, task_id: str, mode: str, codex_cmd: list) -> str:
    """Start a detached worker (a new session, so it outlives us); return its identity."""
    import shlex
    import subprocess
    import threading
    store.make_state_dirs()
    argv = [sys.executable, str(Path(__file__).resolve()), "_work", "--cwd", str(store.repo),
            "--codex-cmd", shlex.join(codex_cmd), "--mode", mode, task_id]
    with open(store.run_file(task_id, "worker.log"), "ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                   start_new_session=True, cwd=store.repo)
    # Reap it when it ends, so a long-lived parent (the MCP server) leaves no zombie behind.
    threading.Thread(target=process.wait, daemon=True).start()
    return process_identity(process.pid)


def codex_turn(store: Store, task: Task, prompt: str, codex_cmd: list, resume: str = "",
               sandbox: str = SANDBOX, on_start: Callable = lambda pid: None,
               on_event: Callable = lambda digest: None, should_stop: Callable = lambda: "") -> RunOutcome:
    """One Codex turn for a task: a new thread, or `resume` one; its events go to the task's run log."""
    argv = build_codex_command(codex_cmd, task, store.repo, resume=resume, sandbox=sandbox)
    return run_codex(argv, prompt, store.repo, store.run_file(task.id, "jsonl"), task.timeout,
                     task.idle_timeout, on_start, on_event, should_stop)


def resumed_turn(store: Store, task: Task, prompt: str, codex_cmd: list, **options: Any) -> tuple:
    """Continue the task's Codex thread; if Codex lost it, start a new one told the whole story.

    `options` are codex_turn's. Returns (outcome, note): the note says `thread recovered: <old> ->
    <new>` when that happened."""
    outcome = codex_turn(store, task, prompt, codex_cmd, resume=task.thread_id, **options) \
        if task.thread_id else None
    if outcome is not None and not outcome.lost_thread:
        return outcome, ""
    old = task.thread_id or "none"
    outcome = codex_turn(store, task, recovery_prompt(task, prompt), codex_cmd, **options)
    return outcome, f"thread recovered: {old} -> {outcome.digest.thread_id or 'none'}"


# ====================================================================================================
# 6. Review: workspace snapshots, path boundaries, Codex's report, verdicts
# ====================================================================================================
#
# What Codex says it changed is a claim; what changed on disk is the fact. Each Codex run of a task
# is bracketed by two snapshots of the workspace (taken while the worker holds the repo's run lock,
# so no other task's run is mixed in). The paths that changed in a run are added to the task's
# `touched` map: first content seen -> latest content. A path whose latest content equals its first
# is no longer a change (a rework that reverted a file clears it).

HASH_BUDGET = 256 * 1024 * 1024        # bytes hashed per snapshot beyond what git already knows
HASH_FILE_LIMIT = 64 * 1024 * 1024     # larger files are compared by size and mtime


def start_git(repo: Path, *args: str) -> Callable[[], Optional[list]]:
    """Start a git command now and read its NUL-separated output later: it runs on the other
    core while we walk the tree. The reader returns None if git is missing or fails (no repo)."""
    import subprocess
    try:
        process = subprocess.Popen(["git", "-C", str(repo), *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    except OSError:
        return lambda: None

    def output() -> Optional[list]:
        out, _ = process.communicate()
        if process.returncode != 0:
            return None
        return [part.decode("utf-8", "surrogateescape") for part in out.split(b"\0") if part]
    return output


def clean_blobs(staged: Optional[list], dirty: Optional[list]) -> dict:
    """path -> git blob id, for tracked files whose working copy matches the index (no hashing)."""
    blobs = {}
    for line in staged or []:
        info, _, path = line.partition("\t")
        mode, blob, stage = info.split()
        if stage == "0" and mode != "160000":
            blobs[path] = blob
    for path in dirty or []:
        blobs.pop(path, None)
    return blobs


def blob_id(path: str, size: int) -> str:
    """Git's blob id of a file, so that our hashes and git's compare equal."""
    import hashlib
    digest = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot(repo: Path, reference: Optional[dict] = None) -> dict:
    """path -> [kind, mode, size, mtime_ns, content id] for every file and symlink in the workspace.

    Leaves out `.git` folders and agents/tasks/ (the records are guarded separately). Ignored and
    untracked files count: a written `.env` is a change. `reference` (an earlier snapshot) lets
    files whose size and mtime did not change keep their content id without being read again;
    without one, git's index supplies the ids of clean tracked files."""
    if reference is None:
        staged = start_git(repo, "ls-files", "-s", "-z")
        dirty = start_git(repo, "diff-files", "--name-only", "--relative", "-z")
    found = walk(repo)
    blobs = {} if reference is not None else clean_blobs(staged(), dirty())
    budget, root, known = [HASH_BUDGET], str(repo), reference or {}
    return {rel: ["link", 0, 0, 0, item] if isinstance(item, str) else
            file_entry(root, rel, item, blobs, known.get(rel), budget) for rel, item in found.items()}


def walk(repo: Path) -> dict:
    """rel path -> stat result (files) or link target (symlinks), without following links."""
    found: dict = {}
    stack = [(str(repo), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            listing = list(os.scandir(folder))
        except OSError:
            continue
        for entry in listing:
            rel = prefix + entry.name
            if entry.name == ".git" or rel == TASKS_DIR:
                continue
            try:
                if entry.is_symlink():
                    found[rel] = os.readlink(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel + "/"))
                elif entry.is_file(follow_symlinks=False):
                    found[rel] = entry.stat(follow_symlinks=False)
            except OSError:
                continue
    return found


def file_entry(root: str, rel: str, info: os.stat_result, blobs: dict, known: Optional[list],
               budget: list) -> list:
    mode = info.st_mode & 0o777
    if known and known[0] == "file" and known[2] == info.st_size and known[3] == info.st_mtime_ns:
        content = known[4]
    elif rel in blobs:
        content = blobs[rel]
    elif info.st_size <= HASH_FILE_LIMIT and budget[0] >= info.st_size:
        budget[0] -= info.st_size
        try:
            content = blob_id(root + os.sep + rel, info.st_size)
        except OSError:
            content = ""
    else:
        content = ""
    return ["file", mode, info.st_size, info.st_mtime_ns, content]


def same_entry(a: Optional[list], b: Optional[list]) -> bool:
    if a is None or b is None:
        return a is b
    if a[0] != b[0] or a[1] != b[1]:
        return False
    if a[0] == "link":
        return a[4] == b[4]
    if a[4] and b[4]:
        return a[4] == b[4]
    return a[2] == b[2] and a[3] == b[3]


def changed_paths(before: dict, after: dict) -> dict:
    """path -> (before entry or None, after entry or None) for every path that differs."""
    changed = {path: (before.get(path), entry) for path, entry in after.items()
               if before.get(path) != entry and not same_entry(before.get(path), entry)}
    changed.update((path, (entry, None)) for path, entry in before.items() if path not in after)
    return changed


def load_touched(store: Store, task_id: str) -> dict:
    try:
        return json.loads(store.run_file(task_id, "touched.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def record_changes(store: Store, task_id: str, before: dict, after: dict) -> None:
    touched = load_touched(store, task_id)
    for path, (old, new) in changed_paths(before, after).items():
        touched[path] = [touched[path][0] if path in touched else old, new]
    atomic_write(store.run_file(task_id, "touched.json"), json.dumps(touched))


def load_changes(store: Store, task_id: str) -> list:
    """The task's real changes, first content -> now: [{path, change, from?, link?}], sorted."""
    changes = {path: pair for path, pair in load_touched(store, task_id).items() if not same_entry(*pair)}
    added = {path for path, (old, new) in changes.items() if old is None}
    deleted = {path for path, (old, new) in changes.items() if new is None}
    by_content = {changes[path][0][4]: path for path in deleted if changes[path][0][4]}
    out = []
    for path in sorted(changes):
        old, new = changes[path]
        item: dict = {"path": path}
        if path in added and new[4] in by_content and new[0] == "file":
            item.update(change="renamed", **{"from": by_content.pop(new[4])})
        elif path in added:
            item["change"] = "added"
        elif path in deleted:
            item["change"] = "deleted"
        elif old[0] != new[0]:
            item["change"] = "type"
        elif old[1] != new[1] and old[4] == new[4]:
            item["change"] = "mode"
        else:
            item["change"] = "modified"
        if new and new[0] == "link":
            item["link"] = new[4]
        out.append(item)
    renamed_from = {item["from"] for item in out if "from" in item}
    return [item for item in out if not (item["change"] == "deleted" and item["path"] in renamed_from)]


def change_names(item: dict) -> list:
    """The paths one change touches: both names of a rename."""
    return [item["from"], item["path"]] if "from" in item else [item["path"]]


def change_paths(changes: list) -> list:
    return [path for item in changes for path in change_names(item)]


def render_changes(changes: list, out_of_bounds: tuple = ()) -> str:
    if not changes:
        return "no files changed"
    counts: dict = {}
    for item in changes:
        counts[item["change"]] = counts.get(item["change"], 0) + 1
    files = "1 file" if len(changes) == 1 else f"{len(changes)} files"
    lines = [f"{files}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))]
    for item in changes:
        name = json.dumps(item["path"]) if re.search(r"[\x00-\x1f]", item["path"]) else item["path"]
        line = f"{item['change']:<9} {item.get('from', '') + ' -> ' if 'from' in item else ''}{name}"
        if "link" in item:
            line += f" (symlink to {item['link']})"
        if item["path"] in out_of_bounds or item.get("from") in out_of_bounds:
            line += "  [OUTSIDE ALLOWED PATHS]"
        lines.append(line)
    return "\n".join(lines)


# -- path boundaries (pure) ------------------------------------------------------------------------

def path_parts(path: str) -> tuple:
    return tuple(part for part in PurePosixPath(path).parts if part not in ("", "."))


def tool_path(parts: tuple) -> bool:
    """Is this .git or the task records (or a folder holding them)? Never Codex's to change."""
    return parts[:1] == (".git",) or parts[:len(TASKS_PARTS)] == TASKS_PARTS \
        or bool(parts) and TASKS_PARTS[:len(parts)] == parts


def inside_boundary(path: str, allowed: list) -> bool:
    """True if `path` equals an allowed path or lies under one, compared component by component,
    so that `src/auth/` admits `src/auth/x.py` and not `src/auth_evil/x.py`."""
    parts = path_parts(path)
    if parts[:len(TASKS_PARTS)] == TASKS_PARTS:
        return False
    return any(parts[:len(path_parts(a))] == path_parts(a) for a in allowed)


def link_target(path: str, target: str) -> Optional[str]:
    """Where a symlink at `path` points, relative to the repo root; None if it leaves the repo."""
    if target.startswith("/"):
        return None
    joined = os.path.normpath(os.path.join(os.path.dirname(path), target)).replace(os.sep, "/")
    return None if joined == ".." or joined.startswith("../") else joined


def out_of_bounds(changes: list, allowed: list) -> list:
    outside = []
    for item in changes:
        outside += [path for path in change_names(item) if not inside_boundary(path, allowed)]
        if "link" in item and item["path"] not in outside:
            target = link_target(item["path"], item["link"])
            if target is None or not inside_boundary(target, allowed):
                outside.append(item["path"])
    return sorted(set(outside))


def validate_allowed_path(raw: Any, repo: Path) -> str:
    """Refuse allowed paths that are absolute, climb with `..`, leave the repo or name tool files."""
    if not isinstance(raw, str) or not raw.strip():
        raise BadInput(f"allowed path {raw!r} is empty: give paths relative to the repo root, like src/auth/")
    path = text_arg("allowed path", raw).replace("\\", "/")
    if re.search(r"[\x00-\x1f]", path):
        raise BadInput(f"allowed path {raw!r} contains control characters")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise BadInput(f"allowed path {raw!r} is absolute: give it relative to the repo root")
    if ".." in PurePosixPath(path).parts:
        raise BadInput(f"allowed path {raw!r} contains '..': allowed paths must stay inside the repo")
    parts = path_parts(path)
    if tool_path(parts):
        raise BadInput(f"allowed path {raw!r} would let Codex change .git or {TASKS_DIR}/, which only "
                       f"this tool may write")
    resolved = (repo / path).resolve()
    if resolved != repo and repo not in resolved.parents:
        raise BadInput(f"allowed path {raw!r} leads outside the repo (through a symlink)")
    return path if parts else "."


def validate_allowed_paths(paths: Any, repo: Path) -> list:
    if isinstance(paths, str):
        paths = [p for p in paths.split(",") if p.strip()]
    if not isinstance(paths, list) or not paths:
        raise BadInput("allowed paths are required: a list of paths relative to the repo root, like src/auth/")
    return list(dict.fromkeys(validate_allowed_path(p, repo) for p in paths))


# -- Codex's report (pure) -------------------------------------------------------------------------

REPORT_ALIASES = {
    "Summary": ("summary", "overview", "summary of changes", "摘要", "总结", "概要", "概述"),
    "Tests": ("tests", "test", "testing", "test results", "tests run", "test report", "verification",
              "测试", "测试结果", "测试情况"),
    "Files Changed": ("files changed", "changed files", "files modified", "modified files", "files",
                      "file changes", "修改文件", "文件变更", "变更文件", "修改的文件", "改动文件"),
}
ALIAS_TO_SECTION = {alias: name for name, aliases in REPORT_ALIASES.items() for alias in aliases}


def report_heading(line: str) -> Optional[tuple]:
    """(section, inline text) if the line opens a report section: `## Tests`, `**Tests:**`,
    `Tests: 3 passed`, `2. Tests`, `### 测试` ... A bare word counts only alone on its line."""
    text = line.strip()
    hashes = re.match(r"^#{1,6}\s*", text)
    text = re.sub(r"^\d+[.)、]\s*", "", text[hashes.end():] if hashes else text)
    bold = re.match(r"^(\*\*|__)", text)
    plain = re.sub(r"\*\*|__", "", text).strip()
    match = re.match(r"^([^:：]+?)\s*(?:([:：])\s*(.*))?$", plain)
    if not match or match.group(1).strip().lower() not in ALIAS_TO_SECTION:
        return None
    if not (hashes or bold or match.group(2) or plain.lower() == match.group(1).lower()):
        return None
    return ALIAS_TO_SECTION[match.group(1).strip().lower()], (match.group(3) or "").strip()


def parse_report(message: str) -> dict:
    """Split Codex's final message into Summary, Tests and Files Changed (text, stripped)."""
    found: dict = {}
    current: Optional[str] = None
    fence = ""
    for line in message.split("\n"):
        mark = FENCE.match(line)
        if fence:
            if closes_fence(line, fence):
                fence = ""
        elif mark:
            fence = mark.group(1)
        heading = None if fence or mark else report_heading(line)
        if heading:
            current = heading[0]
            found.setdefault(current, [])
            if heading[1]:
                found[current].append(heading[1])
        elif current is not None:
            if re.match(r"^\s{0,3}#{1,6}\s", line):
                current = None
            else:
                found[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


def missing_sections(report: dict) -> list:
    return [name for name in REPORT_SECTIONS
            if not re.sub(r"[\s*_`\-]|\(?none\)?|n/?a", "", report.get(name, ""), flags=re.I)
            and not (name == "Files Changed" and re.search(r"\bnone\b|无", report.get(name, ""), re.I))]


def declared_files(text: str, repo: Path) -> list:
    """The paths listed under Files Changed: bullets, backticks, status letters and notes stripped."""
    paths = []
    for line in text.split("\n"):
        line = re.sub(r"^\s*(?:[-*+]|\d+[.)])\s*", "", line).strip()
        line = re.sub(r"^(?:\[?(?:A|M|D|R|added|modified|deleted|created|renamed|new)\]?[:\s]\s*)", "", line,
                      flags=re.I)
        if not line or re.fullmatch(r"\(?none\)?\.?|无", line, re.I):
            continue
        quoted = re.findall(r"`([^`]+)`", line)
        candidates = quoted or [re.split(r"\s+(?:-|—|–|\(|:)\s*|\s+", line)[0]]
        if "->" in line or "→" in line:
            candidates = [c.strip(" `") for c in re.split(r"->|→", line)]
            candidates = [c.split()[0] if c.split() else c for c in candidates]
        for candidate in candidates:
            candidate = candidate.strip().strip("`'\"").rstrip(":,;.")
            if candidate.startswith(str(repo) + "/"):
                candidate = candidate[len(str(repo)) + 1:]
            candidate = candidate[2:] if candidate.startswith("./") else candidate
            if candidate:
                paths.append(candidate)
    return list(dict.fromkeys(paths))


SANDBOX_DENIAL = re.compile(
    r"^.*(?:SANDBOX DENIED:|(?:sandbox|approval polic(?:y|ies))\b[^\n]{0,120}?"
    r"\b(?:denied|blocked|prevented|not (?:allowed|permitted)|refused|rejected)\b).*$", re.I | re.M)


def permission_denial(message: str) -> str:
    """Codex's own words when it says the sandbox or approval policy stopped it; else ""."""
    match = SANDBOX_DENIAL.search(message)
    return one_line(match.group(0).strip(), 400) if match else ""


class ReviewFacts:
    """What review has found so far; filled in pipeline order, turned into a verdict by decide()."""

    def __init__(self, denial: str = "", missing: tuple = (), completion_tried: bool = False,
                 tampered: str = "", undeclared: tuple = (), declared: tuple = (), verify_failure: str = "",
                 rework_count: int = 0) -> None:
        self.denial = denial
        self.missing = list(missing)
        self.completion_tried = completion_tried
        self.tampered = tampered
        self.undeclared = list(undeclared)          # outside the boundary, not in Files Changed
        self.declared = list(declared)              # outside the boundary, in Files Changed
        self.verify_failure = verify_failure        # output tail of a failed verify command
        self.rework_count = rework_count


class Verdict(NamedTuple):
    action: str             # done | rework | blocked | boundary_confirmation | complete (ask Codex first)
    reason: str
    items: list = []        # review items, when action is rework (never mutated)


def decide(facts: ReviewFacts) -> Verdict:
    """The verdict from the facts, in the pipeline's order: permission, completeness, boundary, verify."""
    if facts.denial:
        return Verdict("blocked", f"the sandbox or approval policy denied what the task needs "
                                  f"(a rework cannot fix that): {facts.denial}")
    if facts.missing:
        if not facts.completion_tried:
            return Verdict("complete", f"the report lacks {', '.join(facts.missing)}")
        return Verdict("blocked", f"the report still lacks {', '.join(facts.missing)} after a completion request")
    items = []
    if facts.tampered:
        items.append(f"Do not touch {TASKS_DIR}/ again: the task records are not yours to change. Your edits "
                     f"were undone ({facts.tampered}).")
    if facts.undeclared:
        items.append("Revert exactly these paths to how they were before the task (they are outside the "
                     f"allowed paths and were not in your Files Changed): {', '.join(facts.undeclared)}")
    if not items and facts.declared:
        return Verdict("boundary_confirmation", "Codex changed paths outside the allowed paths and said so: "
                       f"{', '.join(facts.declared)}. Approve them (approvePaths) or ask for a rework.")
    if not items and facts.verify_failure:
        items.append(f"The verify command failed. Make it pass. Its output ended with:\n{facts.verify_failure}")
    if not items:
        return Verdict("done", "the report is complete and every change is inside the allowed paths")
    what = "record tampering" if facts.tampered else "undeclared changes outside the allowed paths" \
        if facts.undeclared else "the verify command failed"
    if facts.rework_count >= MAX_REWORKS:
        return Verdict("blocked", f"{what}, and the rework limit ({MAX_REWORKS}) is used up", items)
    return Verdict("rework", f"{what}: sent back to Codex (rework {facts.rework_count + 1} of {MAX_REWORKS})",
                   items)


def files_changed_mismatch(declared: list, changes: list) -> dict:
    real = set(change_paths(changes))
    said = set(declared)
    mismatch = {}
    unchanged = sorted(p for p in said - real if not any(r.startswith(p.rstrip("/") + "/") for r in real))
    unreported = sorted(p for p in real - said if not any(p.startswith(s.rstrip("/") + "/") for s in said))
    if unchanged:
        mismatch["reportedButUnchanged"] = unchanged
    if unreported:
        mismatch["changedButUnreported"] = unreported
    return mismatch


def run_verify(command: str, repo: Path, on_start: Callable[[int], None],
               timeout: float = VERIFY_TIMEOUT) -> dict:
    """Run the task's verify command in the repo; its exit status is the fact behind 'tests pass'.

    It runs in a process group of its own, recorded through `on_start`, so that a killed accept's
    verify (and whatever the command started) can be stopped by the next check."""
    import subprocess
    started = time.monotonic()
    process = subprocess.Popen(command, shell=True, cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=DIE_WITH_PARENT)
    on_start(process.pid)
    try:
        out, _ = process.communicate(timeout=timeout)
        output, status = out.decode("utf-8", "replace"), process.returncode
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        out, _ = process.communicate()
        output, status = out.decode("utf-8", "replace") + f"\n[timed out after {int(timeout)} s]", None
    finally:
        kill_group(process.pid, grace=0.5)
    return {"command": command, "exitStatus": status, "passed": status == 0,
            "seconds": round(time.monotonic() - started, 1), "outputTail": tail(output.strip(), 1500)}


# ====================================================================================================
# 7. Services: one function per tool, shared by the CLI and the MCP server
# ====================================================================================================
#
# Each returns a JSON-ready dict with the contract's field names, kept small (the caller's context
# window is the scarce resource) and naming the next step. Errors are CodexMcpError subclasses.

class Progress(TypedDict, total=False):
    note: str
    lastEvent: str
    commands: int
    tokens: int
    elapsedSeconds: Optional[int]


class DelegateResult(TypedDict, total=False):
    taskId: str
    threadId: Optional[str]
    status: str
    filePath: str
    reason: Optional[str]
    progress: Optional[str]
    next: str


class CheckResult(TypedDict, total=False):
    taskId: str
    status: str
    reworkCount: int
    goal: str
    codexThreadId: Optional[str]
    lastCodexResultSummary: Optional[str]
    lastCodexTestReport: Optional[str]
    progress: Progress
    reason: Optional[str]
    filePath: str
    next: str
    codexResult: str          # the rest only with detail
    codexRun: str
    changes: str
    verification: str
    reviewRounds: list[str]
    history: list[str]
    log: str


class AcceptResult(TypedDict, total=False):
    taskId: str
    action: str               # done | rework | blocked | boundary_confirmation
    reason: str
    status: str
    reworkCount: int
    threadId: Optional[str]
    reviewItems: list[str]
    changedFiles: list[str]
    changedFilesOmitted: int
    outOfBoundsOmitted: int
    diffStat: str
    outOfBounds: list[str]
    missingSections: list[str]
    recordTampered: str
    filesChangedMismatch: dict[str, Any]     # reportedButUnchanged, changedButUnreported (+ ...Omitted)
    verify: dict[str, Any]
    next: str


class ReworkResult(TypedDict, total=False):
    taskId: str
    threadId: Optional[str]
    status: str
    reworkCount: int
    next: str


class RetryResult(TypedDict, total=False):
    taskId: str
    status: str
    previousReason: str
    next: str


class CancelResult(TypedDict, total=False):
    taskId: str
    status: str
    reason: str
    next: str


class ListedTask(TypedDict, total=False):
    taskId: str
    status: Optional[str]
    reworkCount: int
    goal: str
    updated: str
    error: str


class ListResult(TypedDict):
    tasks: list[ListedTask]
    count: int


def codex_command_from(value: Any) -> list:
    """--codex-cmd / CODEX_CMD may carry arguments: split like a shell would."""
    import shlex
    text = value or os.environ.get("CODEX_CMD") or "codex"
    try:
        argv = shlex.split(text) if isinstance(text, str) else list(text)
    except ValueError as error:
        raise BadInput(f"--codex-cmd {text!r}: {error}") from None
    if not argv:
        raise BadInput("--codex-cmd is empty: give the Codex command, like 'codex'")
    return argv


def text_arg(name: str, value: Any, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise BadInput(f"{name} must be text, not {type(value).__name__}")
    if "\x00" in value:
        raise BadInput(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{name} is not valid UTF-8 text (check the terminal's or file's encoding)") from None
    if len(value) > TEXT_LIMIT:
        raise BadInput(f"{name} is {len(value)} characters; at most {TEXT_LIMIT} are accepted "
                       f"(put long material in a file in the repo and name it)")
    if required and not value.strip():
        raise BadInput(f"{name} is required and may not be empty")
    return value.strip()


def seconds_arg(name: str, value: Any, default: int, upper: int = 7 * 24 * 3600) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= upper:
        raise BadInput(f"{name} must be a number of seconds between 1 and {upper}, not {value!r}")
    return int(value)


def list_arg(name: str, value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        value = [part for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{name} must be a list of strings")
    return [text_arg(name, v) for v in value if v.strip()]


def queued_worker(store: Store, task_id: str) -> str:
    try:
        return (store.queue_dir / task_id).read_text().strip()
    except OSError:
        return ""


def refresh(store: Store, task_id: str) -> Task:
    """Load a task; if the process running Codex for it died, clean up and say so (a todo/doing
    task becomes blocked with the reason).

    While a task's worker is in the repo's run queue, the worker is the truth: Codex can write the
    record, so a finished status there before the worker has ended can only be forged (the worker
    puts the record back)."""
    task = store.load(task_id)
    runner = queued_worker(store, task.id) if task.status not in ACTIVE else ""
    if runner and process_alive(runner):
        task.status, task.reason = "doing", "Codex is running (its worker is alive)"
        return task
    if not task.worker or process_alive(task.worker):
        return task
    with store.update(task.id) as task:
        if task.worker and not process_alive(task.worker):
            pid = task.worker.partition("@")[0]
            stop_child(task)
            task.worker, task.child_process = "", ""
            if task.status in ACTIVE:
                task.progress = "finished: the worker died"
                transition(task, "blocked", f"the worker process ({pid}) died while the task was {task.status} "
                                            "(killed, or the machine restarted); Codex was stopped", "block")
            else:
                note(task, f"the process ({pid}) running a Codex request or the verify command for this "
                           f"{task.status} task died; what it started was stopped")
    return task


def stop_child(task: Task) -> None:
    """Kill what is left of a child whose owner died: Codex or a verify command, and what it started."""
    if not task.child_process:
        return
    pid_text, _, start = task.child_process.partition("@")
    import signal
    for pid in group_members(int(pid_text), start):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def repo_holder(store: Store) -> str:
    """What a new task in this repo would wait for: the queue's head, or "" if the repo is free."""
    head = queue_head(store)
    if head or not (store.state_dir / "run.lock").exists():
        return head
    with store.lock("run", blocking=False) as free:
        return "" if free else "the Codex run already in this repo"


def progress_view(task: Task) -> dict:
    view = {"note": task.progress, "lastEvent": task.last_event, "commands": task.commands,
            "tokens": task.tokens}
    if task.status == "doing" and task.started:
        view["elapsedSeconds"] = seconds_since(task.started)
    return {key: value for key, value in view.items() if value not in ("", None)}


def task_view(store: Store, task: Task, detail: bool = False) -> dict:
    report = parse_report(task.result)
    view = {
        "taskId": task.id, "status": task.status, "reworkCount": task.rework_count,
        "goal": clip(task.goal, 200), "codexThreadId": task.thread_id or None,
        "lastCodexResultSummary": clip(report.get("Summary", ""), 300) or None,
        "lastCodexTestReport": clip(report.get("Tests", ""), 300) or None,
        "progress": progress_view(task), "reason": task.reason or None,
        "filePath": store.relative(store.path(task.id)), "next": next_step(task),
    }
    if detail:
        view.update(codexResult=task.result, codexRun=task.run_log, changes=task.changes,
                    verification=task.verification, reviewRounds=task.rounds, history=task.history[-20:],
                    log=task.log)
    return view


def delegate_task(repo: Any, goal: Any = None, allowed_paths: Any = None, constraints: Any = None,
                  criteria: Any = None, verify: Any = None, model: Any = None, reasoning: Any = None,
                  timeout: Any = None, idle_timeout: Any = None, from_file: Any = None,
                  codex_cmd: Any = None) -> DelegateResult:
    """Create a task (or take a todo one from its file) and start Codex on it in the background.

    Returns {taskId, threadId, status, filePath, next} as soon as Codex announced its thread, or at
    once with status todo when another task holds the repo."""
    store = Store(repo)
    command = codex_command_from(codex_cmd)
    if from_file is not None:
        if goal or allowed_paths:
            raise BadInput("give either fromFile (an existing task) or goal and allowedPaths (a new one), not both")
        task = ready_task(store, normalize_task_id(from_file))
    else:
        task = store.create(new_task(
            "T-0", text_arg("goal", goal, required=True), validate_allowed_paths(allowed_paths, store.repo),
            text_arg("constraints", constraints), text_arg("acceptanceCriteria", criteria),
            text_arg("verify", verify), text_arg("model", model), text_arg("reasoning", reasoning),
            seconds_arg("timeout", timeout, DEFAULT_TIMEOUT),
            seconds_arg("idle timeout", idle_timeout, DEFAULT_IDLE_TIMEOUT)))
    busy = repo_holder(store)
    identity = spawn_worker(store, task.id, "start", command)
    with store.update(task.id) as record:
        if record.status == "todo" and not record.worker:
            record.worker = identity
            if busy and not record.progress.startswith("queued"):
                record.progress = f"queued: waiting for {busy} to finish"
    if not busy:
        wait_until(store, task.id, lambda t: t.thread_id or t.status not in ACTIVE
                   or t.progress.startswith("queued"), DELEGATE_WAIT)
    task = refresh(store, task.id)
    return {"taskId": task.id, "threadId": task.thread_id or None, "status": task.status,
            "filePath": store.relative(store.path(task.id)), "reason": task.reason or None,
            "progress": task.progress or None, "next": next_step(task)}


def ready_task(store: Store, task_id: str) -> Task:
    """A todo task, with a goal and valid allowed paths, that no worker is already running."""
    task = refresh(store, task_id)
    require_status(task, "todo", "delegate")
    if task.worker:
        raise RefusedTransition(f"{task.id} is already queued or starting (worker {task.worker}); "
                                "check-task follows it", status=task.status)
    text_arg(f"{task.id} Goal", task.goal, required=True)
    paths = validate_allowed_paths(task.allowed_paths, store.repo)
    if paths != task.allowed_paths:
        with store.update(task.id) as record:
            record.allowed_paths = paths
    return store.load(task.id)


def wait_until(store: Store, task_id: str, done: Callable[[Task], Any], seconds: float,
               on_change: Optional[Callable[[Task], None]] = None, sleep: Callable = time.sleep) -> Task:
    """Poll a record until `done(task)` or the time is up; re-read only when the file changed."""
    deadline = time.monotonic() + seconds
    path = store.path(task_id)
    seen, last_refresh = None, 0.0
    task = refresh(store, task_id)
    while not done(task) and time.monotonic() < deadline:
        sleep(min(0.05, max(0.0, deadline - time.monotonic())))   # a stat: cheap to do often
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp != seen or time.monotonic() - last_refresh > 2.0:
            seen, last_refresh = stamp, time.monotonic()
            before = (task.status, task.progress)
            task = refresh(store, task_id)
            if on_change and (task.status, task.progress) != before:
                on_change(task)
    return task


def check_task(repo: Any, task_id: Any, wait_seconds: Any = 0, detail: bool = False,
               on_change: Optional[Callable[[Task], None]] = None, sleep: Callable = time.sleep) -> CheckResult:
    """The task's status, progress and last result; with wait_seconds, wait for it to leave todo/doing."""
    store = Store(repo)
    task_id = normalize_task_id(task_id)
    wait = 0 if wait_seconds in (None, 0) else seconds_arg("waitSeconds", wait_seconds, 0, MAX_WAIT_SECONDS)
    task = wait_until(store, task_id, lambda t: t.status not in ACTIVE, wait, on_change, sleep)
    return task_view(store, task, bool(detail))


def list_tasks(repo: Any) -> ListResult:
    """Every task of the repo: id, status, rework count, goal, updated; dead workers are detected."""
    store = Store(repo)
    tasks = []
    for task_id in store.ids():
        try:
            task = refresh(store, task_id)
        except MalformedRecord as error:
            tasks.append({"taskId": task_id, "status": None, "error": error.message})
            continue
        tasks.append({"taskId": task.id, "status": task.status, "reworkCount": task.rework_count,
                      "goal": clip(one_line(task.goal), 80), "updated": task.updated})
    return {"tasks": tasks, "count": len(tasks)}


def retry_task(repo: Any, task_id: Any) -> RetryResult:
    """blocked -> todo. The rework budget starts again: a person has looked and chosen to go on."""
    store = Store(repo)
    require_status(refresh(store, normalize_task_id(task_id)), "blocked", "retry")
    with store.update(normalize_task_id(task_id)) as task:
        require_status(task, "blocked", "retry")
        stop_child(task)
        was = task.reason or "no reason recorded"
        if task.rework_count:
            note(task, f"rework budget reset (was {task.rework_count} of {MAX_REWORKS})")
        task.rework_count = 0
        task.worker = task.child_process = task.progress = ""
        transition(task, "todo", f"retry (it was blocked: {was})", "retry")
    return {"taskId": task.id, "status": task.status, "previousReason": was, "next": next_step(task)}


def cancel_task(repo: Any, task_id: Any) -> CancelResult:
    """Stop a queued or running task: Codex's process group is killed; the task becomes blocked."""
    import signal
    store = Store(repo)
    task = refresh(store, normalize_task_id(task_id))
    if task.status not in ACTIVE:
        raise RefusedTransition(f"cannot cancel {task.id}: it is {task.status}; cancel stops only a todo or "
                                f"doing task. Next: {next_step(task)}.",
                                status=task.status)
    if task.worker and process_alive(task.worker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(task.worker.partition("@")[0]), signal.SIGTERM)
        task = wait_until(store, task.id, lambda t: t.status not in ACTIVE, 15)
    if task.status in ACTIVE:
        with store.update(task.id) as task:
            if task.status in ACTIVE:
                stop_child(task)
                task.worker = task.child_process = ""
                task.progress = "finished: cancelled"
                transition(task, "blocked", "cancelled: the run was stopped by cancel", "cancel")
    return {"taskId": task.id, "status": task.status, "reason": task.reason, "next": next_step(task)}


def rework_task(repo: Any, task_id: Any, review_items: Any, codex_cmd: Any = None) -> ReworkResult:
    """review -> doing: resume the task's Codex thread with numbered review items (at most 3 rounds)."""
    store = Store(repo)
    items = list_arg("reviewItems", review_items)
    if not items:
        raise BadInput("reviewItems is required: one or more things Codex must fix")
    return start_rework(store, normalize_task_id(task_id), items, codex_command_from(codex_cmd))


def start_rework(store: Store, task_id: str, items: list, command: list) -> dict:
    require_status(refresh(store, task_id), "review", "rework")    # refused before anything is written
    with store.update(task_id) as task:
        require_status(task, "review", "rework")
        if task.rework_count >= MAX_REWORKS:
            transition(task, "blocked", f"a rework was asked for, but the limit ({MAX_REWORKS}) is used up",
                       "block")
    if task.status == "blocked":
        raise RefusedTransition(f"{task.id} has had {MAX_REWORKS} reworks, the most allowed; it is now blocked. "
                                "Review it by hand, then retry-task (which resets the budget) if it should go on.",
                                status="blocked")
    with store.update(task_id) as task:
        task.rework_count += 1
        task.rounds = [*task.rounds, "\n".join(f"{n}. {item}" for n, item in enumerate(items, 1))]
        transition(task, "doing", f"rework {task.rework_count} of {MAX_REWORKS}: {len(items)} items", "rework")
        task.progress = "rework queued"
    identity = spawn_worker(store, task_id, "rework", command)
    with store.update(task_id) as task:
        if task.status == "doing" and not task.worker:
            task.worker = identity
    return {"taskId": task.id, "threadId": task.thread_id or None, "status": task.status,
            "reworkCount": task.rework_count, "next": NEXT_STEP["doing"]}


def accept_task(repo: Any, task_id: Any, approve_paths: Any = None, codex_cmd: Any = None) -> AcceptResult:
    """Review a task in `review`: permission, completeness, boundary, verify; then act on the verdict.

    Returns {taskId, action, reason, status, ...}; action is done, rework (already sent back),
    blocked, or boundary_confirmation (approve the listed paths or ask for a rework)."""
    store = Store(repo)
    task_id = normalize_task_id(task_id)
    approve = list_arg("approvePaths", approve_paths)
    command = codex_command_from(codex_cmd)
    require_status(refresh(store, task_id), "review", "accept")    # refused before anything is written
    with store.lock(f"accept-{task_id}", blocking=False) as free:
        if not free:
            raise OperationFailed(f"another accept of {task_id} is running; wait for it, then check-task")
        require_status(refresh(store, task_id), "review", "accept")
        if approve:
            approve_boundary(store, task_id, validate_allowed_paths(approve, store.repo))
        return review(store, task_id, command)


def approve_boundary(store: Store, task_id: str, paths: list) -> None:
    with store.update(task_id) as task:
        task.allowed_paths = list(dict.fromkeys([*task.allowed_paths, *paths]))
        note(task, f"approved paths outside the original boundary: {', '.join(paths)}")


def review(store: Store, task_id: str, command: list) -> dict:
    task = store.load(task_id)
    facts = ReviewFacts(denial=permission_denial(task.result), tampered=task.tampered,
                        rework_count=task.rework_count)
    report = parse_report(task.result)
    facts.missing = missing_sections(report)
    if decide(facts).action == "complete":
        task = request_completion(store, task, facts.missing, command)
        report, facts.completion_tried = parse_report(task.result), True
        facts.missing = missing_sections(report)
    changes = load_changes(store, task_id)
    declared = declared_files(report.get("Files Changed", ""), store.repo)
    outside = out_of_bounds(changes, task.allowed_paths)
    facts.declared = [p for p in outside if p in declared]
    facts.undeclared = [p for p in outside if p not in declared]
    verdict = decide(facts)
    verification = None
    if verdict.action == "done" and task.verify:
        verification = run_verify(task.verify, store.repo, track_child(store, task_id))
        facts.verify_failure = "" if verification["passed"] else verification["outputTail"]
        verdict = decide(facts)
    return apply_verdict(store, task_id, verdict, facts, changes, declared, verification, command)


def track_child(store: Store, task_id: str) -> Callable[[int], None]:
    """An on_start callback for a child this process runs for a task outside the worker (a
    completion request, a verify command): recorded, so that check can stop it if we are killed."""
    def on_start(pid: int) -> None:
        with store.update(task_id) as record:
            record.worker, record.child_process = process_identity(os.getpid()), process_identity(pid)
    return on_start


def request_completion(store: Store, task: Task, missing: list, command: list) -> Task:
    """Ask Codex, on the same thread and with a read-only sandbox, for the missing report sections."""
    outcome, recovered = resumed_turn(store, task, completion_prompt(missing), command, sandbox="read-only",
                                      on_start=track_child(store, task.id))
    status, reason = run_verdict(outcome, command[0])
    with store.update(task.id) as record:
        record.worker = record.child_process = ""
        if recovered:
            note(record, recovered)
            record.thread_id = outcome.digest.thread_id or record.thread_id
        if status == "review":
            record.result = f"{record.result.rstrip()}\n\n{outcome.digest.final_message.strip()}"
        note(record, f"completion requested for {', '.join(missing)}: "
                     f"{'answered' if status == 'review' else 'failed: ' + reason}")
    return store.load(task.id)


def apply_verdict(store: Store, task_id: str, verdict: Verdict, facts: ReviewFacts, changes: list,
                  declared: list, verification: Optional[dict], command: list) -> dict:
    outside = facts.declared + facts.undeclared
    with store.update(task_id) as task:
        task.worker = task.child_process = ""
        task.changes = render_changes(changes, tuple(outside))
        if verification:
            task.verification = (f"$ {verification['command']}\nexit status: {verification['exitStatus']} "
                                 f"({verification['seconds']} s)\n{verification['outputTail']}")
        if verdict.action == "done":
            passed = "; the verify command passed" if verification else "; no verify command is set"
            transition(task, "done", f"accepted: {verdict.reason}{passed}", "accept")
        elif verdict.action == "blocked":
            transition(task, "blocked", verdict.reason, "block")
        elif verdict.action == "boundary_confirmation":
            note(task, f"boundary confirmation needed: {', '.join(outside)}")
        if facts.tampered and verdict.action != "boundary_confirmation":
            task.tampered = ""
    result = {"taskId": task_id, "action": verdict.action, "reason": verdict.reason, "status": task.status}
    if verdict.action == "rework":
        started = start_rework(store, task_id, verdict.items, command)
        result.update(status=started["status"], reworkCount=started["reworkCount"], threadId=started["threadId"],
                      reviewItems=[clip(item, 200) for item in verdict.items])
    result["changedFiles"] = [f"{c['change']} {c.get('from', '') + ' -> ' if 'from' in c else ''}{c['path']}"
                              for c in changes]
    result["diffStat"] = render_changes(changes).split("\n")[0]
    if outside:
        result["outOfBounds"] = outside
    if facts.missing:
        result["missingSections"] = facts.missing
    if facts.tampered:
        result["recordTampered"] = clip(facts.tampered, 300)
    mismatch = files_changed_mismatch(declared, changes)
    if mismatch:
        result["filesChangedMismatch"] = mismatch
    if verification:
        result["verify"] = {"passed": verification["passed"], "exitStatus": verification["exitStatus"],
                            "outputTail": tail(verification["outputTail"], 400)}
    result["next"] = {
        "done": "nothing: the task is finished", "rework": NEXT_STEP["doing"],
        "blocked": "read reason; fix it by hand or retry-task, then delegate-task with fromFile",
        "boundary_confirmation": "accept-task with approvePaths to allow these paths, or rework-task to "
                                 "have them reverted"}[verdict.action]
    return fit_result(result)


def fit_result(result: dict, budget: int = RESULT_BUDGET) -> dict:
    """Halve the longest list in the result (top level or one down) until the JSON fits the caller's
    context budget; each cut says how much it left out. The task record keeps everything."""
    def lists() -> Iterator[tuple]:
        for key, value in result.items():
            if isinstance(value, list) and key != "reviewItems":
                yield result, key
            elif isinstance(value, dict):
                yield from ((value, inner) for inner, v in value.items() if isinstance(v, list))

    while len(json.dumps(result, ensure_ascii=False).encode()) > budget:
        candidates = [(holder, key) for holder, key in lists() if len(holder[key]) > 2]
        if not candidates:
            break
        holder, key = max(candidates, key=lambda hk: len(json.dumps(hk[0][hk[1]], ensure_ascii=False)))
        keep = len(holder[key]) // 2
        holder[f"{key}Omitted"] = holder.get(f"{key}Omitted", 0) + len(holder[key]) - keep
        holder[key] = holder[key][:keep]
    return result


# -- Set-up: the server's environment, doctor, the plugin's Stop hook ------------------------------
#
# Only `serve` needs a package beyond the standard library. When the Python running us lacks it and
# CODEX_MCP_ENV_DIR names a directory (the plugin's launcher, bin/codex-mcp, always sets one), serve
# builds a private virtual environment there once and re-executes itself in it. The build runs in a
# detached process, so a first start that Claude Code gives up on (it waits 30 s) does not stop it,
# and in a folder of its own that is renamed into place only when complete, so a build killed anyway
# leaves nothing a later start would trust: that start clears the leftovers and builds again.
# Later starts go straight to the environment's Python.

MCP_REQUIREMENT = "mcp>=2,<3"
ENV_READY = "codex-mcp-ready"         # written last into a complete environment; bin/codex-mcp looks for it
ENV_BUILD_TIMEOUT = 600               # seconds for one step of a build (creating the venv, installing mcp)
DOCTOR_TIMEOUT = 60                   # seconds for one probe command (codex --version, claude mcp list, ...)


def say(text: str) -> None:
    """A line for the person reading the server's log: stdout is the MCP protocol, so stderr."""
    print(f"codex-mcp: {text}", file=sys.stderr, flush=True)


def probe(argv: list, cwd: Optional[Path] = None, timeout: float = DOCTOR_TIMEOUT) -> tuple:
    """(exit status, stdout, stderr) of a command; status None when it could not run or timed out."""
    import subprocess
    try:
        done = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, "", str(error)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def mcp_version() -> str:
    """The version of the mcp 2.x package this Python can import, or "" if it has none."""
    import importlib.metadata
    try:
        version = importlib.metadata.version("mcp")
    except importlib.metadata.PackageNotFoundError:
        return ""
    return version if version.split(".")[0] == "2" else ""


def env_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def env_ready(venv: Path) -> bool:
    """Complete, and its Python still runs (a venv's python links to the one that built it)."""
    return (venv / ENV_READY).is_file() and os.access(env_python(venv), os.X_OK)


def env_builder() -> str:
    """How a private environment would be built here: "uv", "venv" (venv + pip), or "" (no way)."""
    import importlib.util
    import shutil
    if shutil.which("uv"):
        return "uv"
    # Debian and Ubuntu ship the venv module without ensurepip unless python3-venv is installed.
    return "venv" if importlib.util.find_spec("ensurepip") else ""


def build_steps(builder: str, target: Path) -> list:
    import shutil
    python = str(env_python(target))
    if builder == "uv":
        uv = shutil.which("uv") or "uv"
        return [[uv, "venv", "--quiet", "--python", sys.executable, str(target)],
                [uv, "pip", "install", "--quiet", "--python", python, MCP_REQUIREMENT]]
    return [[sys.executable, "-m", "venv", str(target)],
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", MCP_REQUIREMENT]]


def server_environment(env_dir: Path) -> Path:
    """The Python of the private environment in `env_dir`, built first if needed. Raises OperationFailed.

    The build runs in a detached process of its own: if Claude Code gives up on this start (30 s) and
    kills the server, the build still finishes, and the next start finds the environment ready."""
    import subprocess
    venv = env_dir / "venv"
    if env_ready(venv):
        return env_python(venv)
    env_dir.mkdir(parents=True, exist_ok=True)
    log = env_dir / "build.log"
    say(f"this Python ({sys.executable}) has no 'mcp' package: building a private environment in {venv} "
        f"(once; 20-30 s with pip, needs the package index; it finishes even if this start is cut short)")
    with open(log, "ab") as out:
        start = out.tell()
        builder = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_build-env", str(env_dir)],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    builder.wait()
    with open(log, "rb") as built:
        built.seek(start)
        said = built.read().decode("utf-8", "replace")
    sys.stderr.write(said)
    if not env_ready(venv):
        raise OperationFailed(f"building the server's environment in {venv} failed (log: {log}): "
                              f"{tail(said.strip(), 1500)}")
    return env_python(venv)


def build_environment(env_dir: Path) -> None:
    """`codex-mcp _build-env DIR`: build the private environment under the directory's lock, unless a
    build that held the lock before has finished it. Raises OperationFailed."""
    import shutil
    venv = env_dir / "venv"
    with file_lock(env_dir / "venv.lock"):          # a second server starting meanwhile waits for this build
        if env_ready(venv):
            return
        for leftover in [p for p in (venv, *env_dir.glob("venv.building-*")) if p.exists()]:
            say(f"removing {leftover}, left by an unfinished build")
            shutil.rmtree(leftover, ignore_errors=True)
        builder = env_builder()
        if not builder:
            raise OperationFailed(
                f"this Python ({sys.executable}) has no 'mcp' package and cannot build an environment for it "
                "(no ensurepip): install python3-venv (Debian/Ubuntu: sudo apt install python3-venv), or uv, "
                f"or pip install '{MCP_REQUIREMENT}'")
        building = env_dir / f"venv.building-{os.getpid()}"
        say(f"building with {'uv' if builder == 'uv' else 'venv and pip'} in {building}")
        started = time.monotonic()
        for step in build_steps(builder, building):
            run_build_step(step)
        (building / ENV_READY).write_text(f"{MCP_REQUIREMENT}\n{sys.executable}\n", encoding="utf-8")
        os.replace(building, venv)      # a venv's interpreter finds its packages relative to itself
        say(f"private environment ready in {time.monotonic() - started:.1f} s")


def run_build_step(argv: list) -> None:
    status, out, err = probe(argv, timeout=ENV_BUILD_TIMEOUT)
    if status != 0:
        outcome = "could not run" if status is None else f"exited {status}"
        raise OperationFailed(f"building the server's environment failed: {' '.join(argv)} {outcome}: "
                              f"{tail(err or out, 1500)}; or pip install '{MCP_REQUIREMENT}' into {sys.executable}")


def serve_elsewhere(missing: ImportError) -> Path:
    """Where to re-execute `serve` when this Python cannot import the MCP SDK. Raises OperationFailed."""
    env_dir = os.environ.get("CODEX_MCP_ENV_DIR")
    if not env_dir:
        raise OperationFailed(f"the MCP server needs the 'mcp' package ({missing}): "
                              f"pip install '{MCP_REQUIREMENT}'; or start it with bin/codex-mcp serve from a "
                              "checkout, or with CODEX_MCP_ENV_DIR set, to build a private environment; or with "
                              "uvx --from <checkout or git URL> codex-mcp serve")
    venv = Path(env_dir) / "venv"
    if Path(sys.prefix).resolve() == venv.resolve():    # already inside it: rebuilding is the user's call
        raise OperationFailed(f"the private environment {venv} cannot import the MCP SDK ({missing}): "
                              f"delete {venv} and start again")
    return server_environment(Path(env_dir))


# Doctor: one function per check, each returning {name, ok, detail, fix?}; `fix` is a command a person
# can run. Checks never raise: a broken machine is what doctor is for.

class Check(TypedDict, total=False):
    name: str
    ok: bool
    detail: str
    fix: str
    skipped: bool


class DoctorResult(TypedDict, total=False):
    ok: bool
    checks: list[Check]
    failed: list[str]


def check(name: str, ok: bool, detail: str, fix: str = "") -> Check:
    result: Check = {"name": name, "ok": ok, "detail": one_line(detail, 600)}
    if fix and not ok:
        result["fix"] = fix
    return result


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    return check("python", sys.version_info >= (3, 10), f"Python {version} at {sys.executable}",
                 "install Python 3.10 or newer")


def check_mcp(env_dir: Optional[str]) -> Check:
    version = mcp_version()
    if version:
        return check("mcp", True, f"mcp {version} in this Python: serve runs here")
    fix = f"{sys.executable} -m pip install '{MCP_REQUIREMENT}'"
    if not env_dir:
        return check("mcp", False, "this Python has no mcp 2.x package, which `serve` needs", fix)
    venv = Path(env_dir) / "venv"
    if env_ready(venv):
        return check("mcp", True, f"serve uses its private environment {venv}")
    builder = env_builder()
    if builder:
        how = "uv" if builder == "uv" else "venv and pip (20-30 s)"
        return check("mcp", True, f"this Python has no mcp 2.x; serve builds a private environment in {venv} "
                                  f"on its first start, with {how}; it needs the package index")
    return check("mcp", False, f"this Python has no mcp 2.x and cannot build a private environment (no ensurepip)",
                 f"sudo apt install python3-venv, or install uv, or {fix}")


def check_codex(codex: list) -> Check:
    import shutil
    fix = "npm install -g @openai/codex (or pass --codex-cmd / set CODEX_CMD to your Codex command)"
    path = shutil.which(codex[0])
    if not path:
        return check("codex", False, f"{codex[0]!r} is not on PATH", fix)
    status, out, err = probe([*codex, "--version"])
    if status != 0:
        return check("codex", False, f"{' '.join(codex)} --version failed: {err or out}", fix)
    return check("codex", True, f"{out.splitlines()[-1] if out else 'codex'} at {path}")


def codex_provider() -> tuple:
    """(provider, its env_key or "", config path) from Codex's config.toml; provider "" for the default."""
    config = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex") / "config.toml"
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return "", "", config
    # Python 3.10 has no tomllib; the two keys we read are plain `key = "value"` lines.
    top = re.split(r"(?m)^\s*\[", text, maxsplit=1)[0]
    found = re.search(r'(?m)^\s*model_provider\s*=\s*["\']([^"\']+)', top)
    provider = found.group(1) if found else ""
    table = re.search(rf'(?ms)^\s*\[model_providers\.{re.escape(provider)}\]\s*$(.*?)(?=^\s*\[|\Z)', text)
    env_key = re.search(r'(?m)^\s*env_key\s*=\s*["\']([^"\']+)', table.group(1)) if table else None
    return provider, env_key.group(1) if env_key else "", config


def check_codex_login(codex: list) -> Check:
    status, out, err = probe([*codex, "login", "status"])
    if status == 0:
        return check("codex-login", True, out or "logged in")
    provider, env_key, config = codex_provider()
    if provider and provider != "openai":
        if env_key and not os.environ.get(env_key):
            return check("codex-login", False, f"model provider {provider!r} in {config} reads its key from "
                                               f"${env_key}, which is not set", f"export {env_key}=<your key>")
        return check("codex-login", True,
                     f"not logged in, but model provider {provider!r} is configured in {config}")
    said = (out or err).splitlines()[-1:] or ["no answer"]
    return check("codex-login", False, f"{' '.join(codex)} login status: {said[0]}",
                 f"{codex[0]} login   (or configure a model provider in {config})")


def check_git(repo: Path) -> Check:
    status, out, err = probe(["git", "--version"])
    if status != 0:
        return check("git", False, f"git is not usable: {err or out}",
                     "install git (https://git-scm.com/downloads)")
    inside, _, _ = probe(["git", "-C", str(repo), "rev-parse", "--is-inside-work-tree"])
    where = "a git work tree" if inside == 0 else "not a git repository (codex-mcp works there too)"
    return check("git", True, f"{out}; {repo} is {where}")


def check_sandbox(codex: list) -> Check:
    """Run a trivial command under Codex's own sandbox, with both profiles codex-mcp relies on: a write
    in the workspace must succeed under :workspace, and be refused under :read-only."""
    import shutil
    import tempfile
    fix = ("run a task's commands where Codex's sandbox can start (Linux: Landlock and seccomp allowed, e.g. not "
           "in an unprivileged container); try: codex sandbox -P :workspace -C /tmp -- true; or upgrade Codex: "
           "npm install -g @openai/codex")
    workspace = Path(tempfile.mkdtemp(prefix="codex-mcp-doctor-"))
    try:
        status, out, err = probe([*codex, "sandbox", "-P", ":workspace", "-C", str(workspace), "--",
                                  "/bin/sh", "-c", "echo ok > inside"], cwd=workspace)
        if status != 0 or not (workspace / "inside").is_file():
            return check("sandbox", False, f"Codex could not run a command under its workspace sandbox "
                                           f"(exit {status}): {tail(err or out, 400)}", fix)
        probe([*codex, "sandbox", "-P", ":read-only", "-C", str(workspace), "--",
               "/bin/sh", "-c", "echo no > refused"], cwd=workspace)
        if (workspace / "refused").exists():
            return check("sandbox", False, "Codex's sandbox did not refuse a write under its read-only profile: "
                                           "it runs commands without confinement", fix)
        return check("sandbox", True, "a write in the workspace succeeded under :workspace and was refused "
                                      "under :read-only")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def check_tasks_dir(repo: Path) -> Check:
    import tempfile
    tasks = repo / TASKS_DIR
    if not repo.is_dir():
        return check("agents/tasks", False, f"{repo} is not a directory",
                     "run doctor from your repository, or --cwd DIR")
    if not tasks.is_dir():
        existing = next(p for p in (tasks, *tasks.parents) if p.exists())
        ok = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
        return check("agents/tasks", ok, f"{tasks} does not exist yet; the first delegate creates it"
                                         + ("" if ok else f", but {existing} is not writable"),
                     f"chmod u+w {existing}")
    try:
        with tempfile.NamedTemporaryFile(dir=tasks, prefix=".doctor-"):
            pass
    except OSError as error:
        return check("agents/tasks", False, f"cannot write in {tasks}: {error}", f"chmod u+w {tasks}")
    return check("agents/tasks", True, f"{tasks} is writable")


def check_claude(repo: Path) -> Check:
    import shutil
    claude = shutil.which("claude")
    if not claude:
        result = check("claude", True, "the claude CLI is not on PATH: not checked")
        result["skipped"] = True
        return result
    root = Path(__file__).resolve().parent
    install = (f"claude plugin marketplace add {root} && claude plugin install codex-mcp@codex-mcp"
               if (root / ".claude-plugin" / "plugin.json").is_file() else
               f"claude mcp add codex-mcp -s user -- {sys.executable} {Path(__file__).resolve()} serve")
    status, out, err = probe([claude, "mcp", "list"], cwd=repo, timeout=120)
    if status is None:
        return check("claude", False, f"claude mcp list did not answer: {err}", "claude mcp list")
    # e.g. "plugin:codex-mcp:codex-mcp: /path/bin/codex-mcp serve - ✔ Connected"
    found = [line for line in out.splitlines() if re.match(r"^(plugin:[^:\s]+:)?codex-mcp: ", line)]
    if not found:
        return check("claude", False, "codex-mcp is not registered with Claude Code here", install)
    line = found[0]
    if "Connected" in line and "✘" not in line:
        return check("claude", True, line)
    if "approval" in line.lower():      # a project .mcp.json server nobody has approved yet
        return check("claude", False, line, "run claude in this project and approve codex-mcp, or add "
                                            '"enabledMcpjsonServers": ["codex-mcp"] to .claude/settings.local.json')
    return check("claude", False, line, "see why the server fails: claude --debug mcp, or run its command (shown "
                                        "above) by hand; then restart Claude Code")


def doctor(repo: Any, codex_cmd: Any = None, env_dir: Optional[str] = None) -> DoctorResult:
    """Check that this machine can run codex-mcp: each check says what it found and, if it failed, the
    command that fixes it. `env_dir` is where serve would build its environment (default
    $CODEX_MCP_ENV_DIR). Never raises for a failed check; `ok` is false when any failed."""
    repo_path = Path(repo or os.getcwd()).resolve()
    codex = codex_command_from(codex_cmd)
    codex_ok = check_codex(codex)
    checks = [check_python(), check_mcp(env_dir or os.environ.get("CODEX_MCP_ENV_DIR")), codex_ok]
    if codex_ok["ok"]:
        checks += [check_codex_login(codex), check_sandbox(codex)]
    checks += [check_git(repo_path), check_tasks_dir(repo_path), check_claude(repo_path)]
    result: DoctorResult = {"ok": all(c["ok"] for c in checks), "checks": checks}
    failed = [c["name"] for c in checks if not c["ok"]]
    if failed:
        result["failed"] = failed
    return result


# The plugin's Stop hook (hooks/hooks.json; off unless CODEX_MCP_HOLD_REVIEW=1): Claude Code runs
# `codex-mcp _hold-review` with the hook's JSON on stdin before it ends a turn. The tasks that count are
# the ones named in this session's transcript next to a codex-mcp tool or a taskId.

def held_reviews(hook_input: dict) -> dict:
    """{"decision": "block", "reason": ...} while a task this session delegated or checked waits in review
    for accept-task; {} otherwise, and always when Claude Code is already going on because of this hook
    (`stop_hook_active`), so that it cannot keep a conversation from ending."""
    if hook_input.get("stop_hook_active"):
        return {}
    try:
        text = Path(hook_input["transcript_path"]).read_text(encoding="utf-8", errors="replace")
        store = Store(hook_input.get("cwd") or os.getcwd())
    except (KeyError, TypeError, OSError, CodexMcpError):
        return {}
    named = "\n".join(line for line in text.splitlines() if "taskId" in line or "codex-mcp" in line)
    waiting = []
    for task_id in sorted(set(re.findall(r"\bT-\d{1,9}\b", named)), key=task_number):
        with contextlib.suppress(CodexMcpError, OSError):
            if store.load(task_id).status == "review":
                waiting.append(task_id)
    if not waiting:
        return {}
    return {"decision": "block", "reason": (
        f"{', '.join(waiting)} {'waits' if len(waiting) == 1 else 'wait'} in review: call accept-task for "
        f"{'it' if len(waiting) == 1 else 'each'} and act on its action, or tell the user why you leave it "
        "(codex-mcp's Stop hook, on because CODEX_MCP_HOLD_REVIEW=1)")}


# ====================================================================================================
# 8. CLI
# ====================================================================================================

EXIT_CODES = """exit status: 0 success; 1 the operation failed (a refused transition, a malformed record,
a process that could not run); 2 bad input (unknown task, bad id, bad arguments).
Output is one JSON object on stdout; errors are {"error": {"code": ..., "message": ...}}."""


class CliParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise BadInput(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    # The global options are accepted before or after the command (`check T-001 --pretty`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pretty", action="store_true", default=argparse.SUPPRESS,
                        help="indented JSON (default: compact)")
    common.add_argument("--cwd", default=argparse.SUPPRESS, metavar="DIR",
                        help="the repository (default: the current directory)")
    common.add_argument("--codex-cmd", default=argparse.SUPPRESS, metavar="CMD",
                        help="the Codex command, may carry arguments (default: $CODEX_CMD or 'codex')")
    parser = CliParser(prog="codex-mcp", parents=[common], epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Hand coding tasks to the Codex CLI and review the result. Tasks live in "
                                   "agents/tasks/T-NNN.md.")
    parser.add_argument("--version", action="version", version=f"codex-mcp {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common],
                                   epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)

    delegate = command("delegate", "create a task and start Codex on it (or --file T-001 to start a todo task)")
    delegate.add_argument("--goal", help="what Codex should do")
    delegate.add_argument("--paths", help="comma-separated paths Codex may change, e.g. src/auth/,src/types.ts")
    delegate.add_argument("--constraints", help="rules Codex must keep")
    delegate.add_argument("--criteria", help="acceptance criteria")
    delegate.add_argument("--verify", help="a shell command accept runs in the repo; it must exit 0")
    delegate.add_argument("--model", help="Codex model for this task")
    delegate.add_argument("--reasoning", help="reasoning effort for this task (e.g. low, medium, high)")
    delegate.add_argument("--timeout", type=int, help=f"hard limit of one Codex run, seconds ({DEFAULT_TIMEOUT})")
    delegate.add_argument("--idle-timeout", type=int,
                          help=f"stop Codex after this many seconds without an event ({DEFAULT_IDLE_TIMEOUT})")
    delegate.add_argument("--file", metavar="TASK_ID", help="start an existing todo task instead")
    delegate.add_argument("--wait", action="store_true",
                          help="wait until Codex finishes (review or blocked), with progress on stderr")
    check = command("check", "show a task's status, progress and last result")
    check.add_argument("task_id")
    check.add_argument("--wait", type=float, default=0, metavar="N",
                       help=f"wait up to N seconds (at most {MAX_WAIT_SECONDS}) for the task to leave todo/doing")
    check.add_argument("--detail", action="store_true", help="include the full Codex message, commands, changes")
    accept = command("accept", "review a task in review: report, boundary, verify; then done/rework/blocked")
    accept.add_argument("task_id")
    accept.add_argument("--approve-paths", metavar="PATHS",
                        help="comma-separated paths outside the boundary to allow (after boundary_confirmation)")
    rework = command("rework", f"send a task back to Codex with review items (at most {MAX_REWORKS} times)")
    rework.add_argument("task_id")
    rework.add_argument("--items", required=True, action="append",
                        help="comma-separated review items; repeat --items for items that contain commas")
    command("retry", "return a blocked task to todo (resets the rework budget)").add_argument("task_id")
    command("cancel", "stop a queued or running task (it becomes blocked)").add_argument("task_id")
    command("list", "list the tasks of the repository")
    command("serve", "run the stdio MCP server (needs the mcp package; see CODEX_MCP_ENV_DIR in the README)")
    doctor_cmd = command("doctor", "check this machine's set-up: Python, mcp, the Codex CLI, its login and sandbox, "
                                   "git, agents/tasks, Claude Code's registration; exit 1 if a check failed")
    doctor_cmd.add_argument("--env-dir", metavar="DIR",
                            help="where serve keeps its private environment (default: $CODEX_MCP_ENV_DIR)")
    hidden = commands.add_parser("_work", parents=[common])     # the detached worker; not for people
    hidden.add_argument("--mode", choices=("start", "rework"), required=True)
    hidden.add_argument("task_id")
    commands.add_parser("_hold-review", parents=[common])       # the plugin's Stop hook; JSON on stdin
    commands.add_parser("_build-env", parents=[common]).add_argument("env_dir")    # serve's detached build
    commands._choices_actions = [a for a in commands._choices_actions if a.dest != "_work"]
    return parser


def print_progress(task: Task) -> None:
    print(f"{task.id} {task.status}: {task.progress or task.reason}", file=sys.stderr, flush=True)


def cli_rework_items(values: list) -> list:
    return [item.strip() for value in values for item in (value.split(",") if len(values) == 1 else [value])
            if item.strip()]


def run_command(args: argparse.Namespace) -> Optional[dict]:
    repo, codex_cmd = args.cwd, args.codex_cmd
    if args.command == "delegate":
        result = delegate_task(repo, args.goal, args.paths, args.constraints, args.criteria, args.verify,
                               args.model, args.reasoning, args.timeout, args.idle_timeout, args.file, codex_cmd)
        if args.wait:
            store = Store(repo)
            wait_until(store, result["taskId"], lambda t: t.status not in ACTIVE, float("inf"), print_progress)
            result.update(task_view(store, refresh(store, result["taskId"])))
        return result
    if args.command == "check":
        return check_task(repo, args.task_id, args.wait, args.detail, print_progress if args.wait else None)
    if args.command == "accept":
        return accept_task(repo, args.task_id, args.approve_paths, codex_cmd)
    if args.command == "rework":
        return rework_task(repo, args.task_id, cli_rework_items(args.items), codex_cmd)
    if args.command == "retry":
        return retry_task(repo, args.task_id)
    if args.command == "cancel":
        return cancel_task(repo, args.task_id)
    if args.command == "list":
        return list_tasks(repo)
    if args.command == "serve":
        serve(repo, codex_cmd)
        return None
    if args.command == "doctor":
        return doctor(repo, codex_cmd, args.env_dir)
    if args.command == "_build-env":
        build_environment(Path(args.env_dir))
        return None
    if args.command == "_hold-review":
        try:
            return held_reviews(json.loads(sys.stdin.read() or "{}"))
        except ValueError:
            return {}
    if args.command == "_work":
        work(repo, args.task_id, args.mode, codex_command_from(codex_cmd))
        return None
    raise BadInput("no command given: try codex-mcp --help")


# ====================================================================================================
# 9. MCP server
# ====================================================================================================

SERVER_INSTRUCTIONS = """\
codex-mcp hands coding tasks to the Codex CLI and reviews the result on ground truth (the files that
really changed, the report, a verify command), so you need not re-read the whole diff.
1. delegate-task {goal, allowedPaths, ...} starts Codex in the background and returns a taskId at once.
2. check-task {taskId, waitSeconds: 600} waits for Codex. A call still running after about two minutes is
   moved to the background by Claude Code, which wakes you when it returns: prefer one long wait to polling.
3. When status is review, accept-task. action: done = finished; rework = already sent back to Codex (wait
   with check-task again); boundary_confirmation = Codex changed, and declared, paths outside allowedPaths:
   accept-task with approvePaths to allow them, or rework-task to revert them; blocked = read reason.
4. rework-task {taskId, reviewItems} sends your own review items back (at most 3 rounds).
5. retry-task returns a blocked task to todo; delegate-task {fromFile: taskId} runs it again.
cancel-task stops a run; list-tasks lists a repo's tasks. Each task is a Markdown file, agents/tasks/T-NNN.md."""

TOOL_DESCRIPTIONS = {
    "delegate-task": "Hand a coding task to Codex. Creates agents/tasks/T-NNN.md and starts Codex in the "
                     "background (workspace-write sandbox); returns {taskId, threadId, status, filePath} within "
                     "seconds. Status todo means another task holds this repo; it starts by itself. Give goal "
                     "and allowedPaths for a new task, or fromFile to start an existing todo task. Next: "
                     "check-task with waitSeconds.",
    "check-task": "Status, progress and last result of a task. With waitSeconds (at most 600) it waits for the "
                  "task to leave todo/doing, sending progress notifications; use one long wait rather than "
                  "polling. detail=true adds the full Codex message, commands and changes.",
    "accept-task": "Review a task in status review: Codex's report must be complete, every real change inside "
                   "allowedPaths, and the verify command must pass. Returns {taskId, action, reason, status}: "
                   "done; rework (already sent back: check-task again); boundary_confirmation (call again with "
                   "approvePaths, or rework-task); blocked. Not idempotent: it can start a rework.",
    "rework-task": "Send a task in review back to Codex on the same thread with numbered review items (at most "
                   "3 reworks; a fourth blocks the task). Returns {taskId, threadId, status, reworkCount}. "
                   "Next: check-task with waitSeconds.",
    "retry-task": "Return a blocked task to todo (its rework budget starts again). Returns {taskId, status}. "
                  "Next: delegate-task with fromFile to run it.",
    "cancel-task": "Stop a queued or running task: Codex is killed and the task becomes blocked "
                   "(retry-task brings it back).",
    "list-tasks": "List the tasks of a repository: taskId, status, reworkCount, goal, updated.",
}


def serve(cwd: Optional[str] = None, codex_cmd: Optional[str] = None) -> None:
    """Run the stdio MCP server until the client closes the connection."""
    try:
        server = build_server(cwd, codex_cmd)
    except ImportError as error:
        python = serve_elsewhere(error)
        say(f"serving with {python}")
        os.execv(python, [str(python), str(Path(__file__).resolve()), "--cwd", cwd or os.getcwd(), "serve",
                          *(["--codex-cmd", codex_cmd] if codex_cmd else [])])
    server.run("stdio")


def schema_type(hint: Any) -> Any:
    """Rebuild the result TypedDicts with typing_extensions: before Python 3.12 pydantic cannot
    derive an output schema from typing.TypedDict, and the CLI must not import typing_extensions."""
    import typing

    import typing_extensions
    if typing.is_typeddict(hint):
        fields = {name: schema_type(value) for name, value in typing.get_type_hints(hint).items()}
        return typing_extensions.TypedDict(hint.__name__, fields, total=hint.__total__)
    if typing.get_origin(hint) is list:
        return list[schema_type(typing.get_args(hint)[0])]
    return hint


def build_server(cwd: Optional[str] = None, codex_cmd: Optional[str] = None) -> Any:
    """The MCP server object: thin async wrappers that run the service functions in threads."""
    import functools
    import threading
    from typing import Annotated

    import anyio
    import anyio.from_thread
    import anyio.to_thread
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations
    from pydantic import Field

    default_repo = cwd or os.getcwd()
    server = MCPServer("codex-mcp", instructions=SERVER_INSTRUCTIONS, version=VERSION)

    async def call(fn: Callable, cwd: Optional[str], *args: Any) -> Any:
        """Run a service in a thread (waits never block the server), in `cwd` or the server's repo."""
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, cwd or default_repo, *args),
                                                  abandon_on_cancel=True)
        except CodexMcpError as error:
            raise ToolError(json.dumps(error.to_json(), ensure_ascii=False)) from None

    def tool(name: str, read_only: bool = False, idempotent: bool = False) -> Callable:
        return server.tool(name=name, description=TOOL_DESCRIPTIONS[name], structured_output=True,
                           annotations=ToolAnnotations(read_only_hint=read_only, idempotent_hint=idempotent,
                                                       destructive_hint=False, open_world_hint=False))

    Cwd = Annotated[Optional[str], Field(description="repository root; default: the server's working directory")]
    TaskId = Annotated[str, Field(description="task id, like T-001")]

    @tool("delegate-task")
    async def delegate(
        goal: Annotated[Optional[str], Field(description="what Codex should do (required unless fromFile)")] = None,
        allowedPaths: Annotated[Optional[list[str]], Field(
            description="paths Codex may change, relative to the repo root (required unless fromFile)")] = None,
        constraints: Annotated[Optional[str], Field(description="rules Codex must keep")] = None,
        acceptanceCriteria: Annotated[Optional[str], Field(description="what done means")] = None,
        cwd: Cwd = None,
        verify: Annotated[Optional[str], Field(description="shell command accept-task runs; must exit 0")] = None,
        fromFile: Annotated[Optional[str], Field(description="start this existing todo task instead")] = None,
        model: Annotated[Optional[str], Field(description="Codex model for this task")] = None,
        reasoning: Annotated[Optional[str], Field(description="reasoning effort: low, medium, high")] = None,
        timeoutSeconds: Annotated[Optional[int], Field(
            description=f"hard limit of one Codex run (default {DEFAULT_TIMEOUT})")] = None,
        idleTimeoutSeconds: Annotated[Optional[int], Field(
            description=f"stop Codex after this long without an event (default {DEFAULT_IDLE_TIMEOUT})")] = None,
    ) -> schema_type(DelegateResult):
        return await call(delegate_task, cwd, goal, allowedPaths, constraints, acceptanceCriteria,
                          verify, model, reasoning, timeoutSeconds, idleTimeoutSeconds, fromFile, codex_cmd)

    @tool("check-task", read_only=True, idempotent=True)
    async def check(
        taskId: TaskId, ctx: Context, cwd: Cwd = None,
        waitSeconds: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS, description=(
            "wait up to this many seconds for the task to leave todo/doing (0: answer at once)"))] = 0,
        detail: Annotated[bool, Field(description="include the full Codex message, commands and changes")] = False,
    ) -> schema_type(CheckResult):
        stop = threading.Event()
        started = time.monotonic()
        last_report = [0.0]

        def report(message: str) -> None:
            with contextlib.suppress(Exception):
                anyio.from_thread.run(ctx.report_progress, round(time.monotonic() - started, 1),
                                      float(waitSeconds), message)
            last_report[0] = time.monotonic()

        def sleep(seconds: float) -> None:
            if stop.wait(seconds):
                raise OperationFailed("the wait was cancelled by the client")
            if time.monotonic() - last_report[0] > 5:
                report("waiting for Codex")

        try:
            return await call(check_task, cwd, taskId, waitSeconds, detail,
                              lambda task: report(f"{task.status}: {task.progress or task.reason}"), sleep)
        finally:
            stop.set()

    @tool("accept-task")
    async def accept(
        taskId: TaskId, cwd: Cwd = None,
        approvePaths: Annotated[Optional[list[str]], Field(
            description="paths outside allowedPaths to allow, after a boundary_confirmation")] = None,
    ) -> schema_type(AcceptResult):
        return await call(accept_task, cwd, taskId, approvePaths, codex_cmd)

    @tool("rework-task")
    async def rework(
        taskId: TaskId,
        reviewItems: Annotated[list[str], Field(description="the specific things Codex must fix")],
        cwd: Cwd = None,
    ) -> schema_type(ReworkResult):
        return await call(rework_task, cwd, taskId, reviewItems, codex_cmd)

    @tool("retry-task")
    async def retry(taskId: TaskId, cwd: Cwd = None) -> schema_type(RetryResult):
        return await call(retry_task, cwd, taskId)

    @tool("cancel-task")
    async def cancel(taskId: TaskId, cwd: Cwd = None) -> schema_type(CancelResult):
        return await call(cancel_task, cwd, taskId)

    @tool("list-tasks", read_only=True, idempotent=True)
    async def list_all(cwd: Cwd = None) -> schema_type(ListResult):
        return await call(list_tasks, cwd)

    return server


# ====================================================================================================
# 10. main
# ====================================================================================================

def main(argv: Optional[list] = None) -> int:
    """Run the CLI; print one JSON object; return the exit status (0, 1 or 2)."""
    pretty = False
    try:
        args = build_parser().parse_args(argv)
        pretty = getattr(args, "pretty", False)
        args.cwd = getattr(args, "cwd", None) or os.getcwd()
        args.codex_cmd = getattr(args, "codex_cmd", None)
        result = run_command(args)
    except CodexMcpError as error:
        result, status = error.to_json(), error.exit_status
    except KeyboardInterrupt:
        result, status = {"error": {"code": "interrupted", "message": "interrupted"}}, 1
    else:
        if result is None:
            return 0
        status = 1 if result.get("ok") is False else 0     # doctor: a failed check
    print(json.dumps(result, ensure_ascii=False, indent=2 if pretty else None))
    return status


def main_exit() -> None:
    """The console script's entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
