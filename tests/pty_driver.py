"""Drive an interactive terminal program (the real Claude Code) under a pseudo-terminal, and log an MCP
server's stdio wire, for the end-to-end tests in tests/test_claude_tasks.py.

`Terminal` runs a command on a pseudo-terminal of its own (as its controlling terminal), reads what it
prints all the time (a full pty would stall the program), answers the two terminal queries a TUI waits
for (cursor position, device attributes), and keeps the screen the program draws (`Screen`, a small VT
emulator: Claude Code redraws by moving the cursor and writing only the cells that changed, so the
printed stream alone misses letters and spaces). A test types keys and waits for text on the screen.

Run as a script, it is a logging stdio proxy for an MCP server:

    python tests/pty_driver.py proxy LOGFILE -- COMMAND ARGS...

It starts COMMAND, relays the client's lines to it and its lines back, and appends each JSON-RPC line
to LOGFILE as {"t": time, "dir": "c->s" | "s->c" | "proxy", "msg": line} (the first "proxy" line
names the server's pid). When the server dies the proxy exits too, so a killed server looks to the
client like the crash it is. `Wire` reads that log.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import unicodedata
from pathlib import Path
from typing import Callable

CSI = re.compile(r"\x1b\[([0-9;?<>=!]*)([ -/]*)([@-~])")
OTHER_ESCAPE = re.compile(r"\x1b(?:\][^\x07\x1b]*(?:\x07|\x1b\\)|P[^\x1b]*\x1b\\|[()*+][0-9A-Za-z]|[=>78NOMDEHc])")


class Screen:
    """The screen a terminal shows: a grid of cells fed with what the program prints. Enough of a VT
    terminal for Claude Code's renderer, which draws on the alternate screen by moving the cursor and
    writing only the cells that changed (the printed stream alone loses letters)."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.clear()
        self.saved = (0, 0)
        self.top, self.bottom = 0, rows - 1          # the scrolling region
        self.pending = ""                            # an escape sequence cut between two reads

    def clear(self) -> None:
        self.grid = [[" "] * self.cols for _ in range(self.rows)]
        self.row = self.col = 0

    def text(self) -> str:
        return "\n".join("".join(line).replace("\xa0", " ").rstrip() for line in self.grid)

    def feed(self, data: str) -> None:
        data, self.pending = self.pending + data, ""
        i = 0
        while i < len(data):
            ch = data[i]
            if ch == "\x1b":
                match = CSI.match(data, i) or OTHER_ESCAPE.match(data, i)
                if match is None:
                    if len(data) - i < 64:              # unfinished: keep it for the next read
                        self.pending = data[i:]
                        return
                    i += 1
                    continue
                if match.re is CSI:
                    self.csi(match.group(1), match.group(2) + match.group(3))
                else:
                    self.escape(match.group(0))
                i = match.end()
                continue
            self.put(ch)
            i += 1

    def put(self, ch: str) -> None:
        if ch == "\r":
            self.col = 0
        elif ch == "\n":
            self.down(1, scroll=True)
        elif ch == "\b":
            self.col = max(0, self.col - 1)
        elif ch == "\t":
            self.col = min(self.cols - 1, (self.col // 8 + 1) * 8)
        elif ord(ch) < 32 or ord(ch) == 127:
            pass
        else:
            wide = unicodedata.east_asian_width(ch) in ("W", "F")
            if unicodedata.combining(ch):
                return
            if self.col + (2 if wide else 1) > self.cols:   # wrap
                self.col = 0
                self.down(1, scroll=True)
            self.grid[self.row][self.col] = ch
            if wide and self.col + 1 < self.cols:
                self.grid[self.row][self.col + 1] = ""
            self.col += 2 if wide else 1

    def down(self, count: int, scroll: bool = False) -> None:
        for _ in range(count):
            if self.row == self.bottom and scroll:
                del self.grid[self.top]
                self.grid.insert(self.bottom, [" "] * self.cols)
            else:
                self.row = min(self.rows - 1, self.row + 1)

    def escape(self, sequence: str) -> None:
        if sequence == "\x1b7":
            self.saved = (self.row, self.col)
        elif sequence == "\x1b8":
            self.row, self.col = self.saved
        elif sequence == "\x1bM":                     # reverse index
            if self.row == self.top:
                del self.grid[self.bottom]
                self.grid.insert(self.top, [" "] * self.cols)
            else:
                self.row = max(0, self.row - 1)
        elif sequence == "\x1bc":
            self.clear()

    def csi(self, parameters: str, final: str) -> None:
        private = parameters[:1] in ("?", ">", "<", "=", "!")
        numbers = [int(n) if n.isdigit() else 0 for n in parameters.lstrip("?><=!").split(";")] if parameters else []
        first = numbers[0] if numbers else 0
        count = max(1, first)
        if private:
            if final in "hl" and any(n in (47, 1047, 1049) for n in numbers):
                self.clear()                                # the alternate screen, or back: drawn anew
            return
        if final == "A":
            self.row = max(0, self.row - count)
        elif final in "Be":
            self.row = min(self.rows - 1, self.row + count)
        elif final in "Ca":
            self.col = min(self.cols - 1, self.col + count)
        elif final == "D":
            self.col = max(0, self.col - count)
        elif final == "E":
            self.row, self.col = min(self.rows - 1, self.row + count), 0
        elif final == "F":
            self.row, self.col = max(0, self.row - count), 0
        elif final in "G`":
            self.col = min(self.cols - 1, count - 1)
        elif final == "d":
            self.row = min(self.rows - 1, count - 1)
        elif final in "Hf":
            row = numbers[0] if numbers else 1
            col = numbers[1] if len(numbers) > 1 else 1
            self.row, self.col = min(self.rows - 1, max(1, row) - 1), min(self.cols - 1, max(1, col) - 1)
        elif final == "J":
            if first == 0:
                self.grid[self.row][self.col:] = [" "] * (self.cols - self.col)
                for r in range(self.row + 1, self.rows):
                    self.grid[r] = [" "] * self.cols
            elif first == 1:
                for r in range(self.row):
                    self.grid[r] = [" "] * self.cols
                self.grid[self.row][:self.col + 1] = [" "] * (self.col + 1)
            else:
                self.grid = [[" "] * self.cols for _ in range(self.rows)]
        elif final == "K":
            line = self.grid[self.row]
            if first == 0:
                line[self.col:] = [" "] * (self.cols - self.col)
            elif first == 1:
                line[:self.col + 1] = [" "] * (self.col + 1)
            else:
                self.grid[self.row] = [" "] * self.cols
        elif final == "X":
            end = min(self.cols, self.col + count)
            self.grid[self.row][self.col:end] = [" "] * (end - self.col)
        elif final == "P":
            line = self.grid[self.row]
            del line[self.col:self.col + count]
            line.extend([" "] * (self.cols - len(line)))
        elif final == "@":
            line = self.grid[self.row]
            line[self.col:self.col] = [" "] * count
            del line[self.cols:]
        elif final in "LM" and self.top <= self.row <= self.bottom:
            for _ in range(count):
                if final == "L":
                    del self.grid[self.bottom]
                    self.grid.insert(self.row, [" "] * self.cols)
                else:
                    del self.grid[self.row]
                    self.grid.insert(self.bottom, [" "] * self.cols)
        elif final in "ST":
            for _ in range(count):
                if final == "S":
                    del self.grid[self.top]
                    self.grid.insert(self.bottom, [" "] * self.cols)
                else:
                    del self.grid[self.bottom]
                    self.grid.insert(self.top, [" "] * self.cols)
        elif final == "r":
            top = numbers[0] if numbers and numbers[0] else 1
            bottom = numbers[1] if len(numbers) > 1 and numbers[1] else self.rows
            self.top, self.bottom = max(0, top - 1), min(self.rows - 1, bottom - 1)
            self.row = self.col = 0
        elif final == "s":
            self.saved = (self.row, self.col)
        elif final == "u":
            self.row, self.col = self.saved


class Terminal:
    """One program on a pseudo-terminal of `rows` x `cols`, and the screen it draws."""

    def __init__(self, argv: list, env: dict, cwd: Path, rows: int = 50, cols: int = 160,
                 log: Path | None = None) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

        def controlling_terminal() -> None:       # runs in the child, after setsid
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                                        env={**env, "TERM": "xterm-256color"}, start_new_session=True,
                                        preexec_fn=controlling_terminal, close_fds=True)
        os.close(slave)
        self.fd = master
        self.screen = Screen(rows, cols)
        self.changed = threading.Condition()
        self.log = open(log, "ab") if log else None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                data = b""
            if not data:
                with self.changed:
                    self.changed.notify_all()
                return
            if self.log:
                self.log.write(data)
                self.log.flush()
            if b"\x1b[6n" in data:
                self._write(b"\x1b[1;1R")
            if b"\x1b[c" in data or b"\x1b[0c" in data:
                self._write(b"\x1b[?62;c")
            with self.changed:
                self.screen.feed(decoder.decode(data))
                self.changed.notify_all()

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
        except OSError:
            pass

    def alive(self) -> bool:
        return self.process.poll() is None

    def shows(self) -> str:
        """The screen now, line by line."""
        with self.changed:
            return self.screen.text()

    def wait_for(self, pattern: str, timeout: float, gone: bool = False) -> re.Match | None:
        """Wait until the screen shows `pattern` (a regex; with gone=True: until it no longer does)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = rx.search(self.screen.text())
                if bool(found) != gone:
                    return found
                left = deadline - time.monotonic()
                assert left > 0 and self.alive(), \
                    f"{pattern!r} {'still showed' if gone else 'never showed'} (the program is " \
                    f"{'running' if self.alive() else 'gone'}); the screen:\n{self.screen.text()}"
                self.changed.wait(min(left, 1.0))

    def send(self, keys: str) -> None:
        self._write(keys.encode())

    def type(self, text: str, timeout: float = 30) -> None:
        """Type `text` at the prompt and wait for it to show there (keys sent with Enter in one write
        read as a paste: the caller sends Enter after)."""
        self.send(text)
        self.wait_for("❯ " + re.escape(text), timeout)

    def close(self, grace: float = 15) -> None:
        """End the program and its process group (the MCP servers it started), gently first."""
        if self.alive():
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.reader.join(5)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.log:
            self.log.close()


class Wire:
    """The log `proxy` writes: the JSON-RPC messages between Claude Code and the server, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue                    # a line being written
            if entry["dir"] != "proxy":
                try:
                    entry["json"] = json.loads(entry["msg"])
                except ValueError:
                    entry["json"] = {}
            out.append(entry)
        return out

    def requests(self, method: str, task: str | None = None) -> list:
        """The client's requests of `method` (for a task's id, only those about it), in order, each with
        "t" (when sent), "server" (the server process it went to: 0 the first, 1 after a restart...)
        and "answer" (that process's answer to it, None if none came)."""
        found, server, answers = [], -1, {}
        for entry in self.lines():
            if entry["dir"] == "proxy" and entry["msg"].startswith("start child pid"):
                server += 1
            message = entry.get("json", {})
            if entry["dir"] == "s->c" and "id" in message:
                answers[server, message["id"]] = message
            if entry["dir"] == "c->s" and message.get("method") == method and \
                    (task is None or message.get("params", {}).get("taskId") == task):
                found.append({**message, "t": entry["t"], "server": server})
        for request in found:
            request["answer"] = answers.get((request["server"], request.get("id")))
        return found

    def server_pids(self) -> list:
        return [int(re.search(r"start child pid (\d+)", entry["msg"]).group(1)) for entry in self.lines()
                if entry["dir"] == "proxy" and entry["msg"].startswith("start child pid")]

    def wait_for(self, check: Callable[[], object], timeout: float, what: str) -> object:
        deadline = time.monotonic() + timeout
        while not (found := check()):
            assert time.monotonic() < deadline, f"never on the wire: {what}"
            time.sleep(0.1)
        return found


def proxy(log: str, command: list) -> None:
    lock = threading.RLock()            # the signal handlers write too

    def write(direction: str, text: str) -> None:
        with lock, open(log, "a") as out:
            out.write(json.dumps({"t": round(time.time(), 3), "dir": direction, "msg": text}) + "\n")

    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    write("proxy", f"start child pid {child.pid}")
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda n, frame: (write("proxy", f"signal {n}"), child.terminate(), os._exit(0)))

    def server_to_client() -> None:
        for line in child.stdout:
            write("s->c", line.decode(errors="replace").rstrip("\n"))
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
        write("proxy", f"child exit {child.wait()}")
        os._exit(0)

    threading.Thread(target=server_to_client, daemon=True).start()
    for line in sys.stdin.buffer:
        write("c->s", line.decode(errors="replace").rstrip("\n"))
        try:
            child.stdin.write(line)
            child.stdin.flush()
        except OSError:
            break
    write("proxy", "client closed stdin")
    with contextlib.suppress(OSError):
        child.stdin.close()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[1] != "proxy" or "--" not in sys.argv:
        sys.exit("usage: pty_driver.py proxy LOGFILE -- COMMAND ARGS...")
    proxy(sys.argv[2], sys.argv[sys.argv.index("--") + 1:])
