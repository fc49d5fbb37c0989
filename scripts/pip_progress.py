"""Runs ``pip install`` and shows that it is alive (called by scripts/bootstrap).

On a terminal: one line rewritten in place, a spinner, the packages fetched so far out of the
number expected, and the one pip is on. Elsewhere (CI, a pipe): one plain line a phase and a
"still ..." line every 15 s of the same phase. pip's whole output goes to a log file; when pip
fails, the end of that log is printed and pip's exit status returned.

    python scripts/pip_progress.py --log .venv/bootstrap.log --expect 75 -- -e ".[dev]"
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

SPINNER = "|/-\\"
HEARTBEAT_SECONDS = 15.0
TAIL_LINES = 40
_FETCH = re.compile(r"^(Collecting|Processing|Requirement already satisfied:) (\S+)")
_SPEC_END = re.compile(r"[<>=!~\[;@ ]")


def package_of(line: str) -> str | None:
    """The package a line of pip's output starts fetching, if it does."""
    match = _FETCH.match(line)
    if match is None:
        return None
    what = match.group(2)
    if match.group(1) == "Processing":  # a local file: name-version-....whl
        return Path(what).name.split("-", 1)[0]
    return _SPEC_END.split(what, 1)[0]


class Progress:
    """What pip is doing, shown every tick: in place on a terminal, as lines elsewhere."""

    def __init__(self, expected: int, out: TextIO) -> None:
        self.expected = expected
        self.out = out
        self.tty = out.isatty()
        self.fetched = 0
        self.phase = "resolving"
        self.detail = ""
        self.started = time.monotonic()
        self._last_line = self.started
        self._lock = threading.Lock()
        self._frame = 0

    def feed(self, line: str) -> None:
        with self._lock:
            package = package_of(line)
            if package is not None:
                self.fetched += 1
                self.expected = max(self.expected, self.fetched)  # an unpinned extra
                self._set_phase("fetching", package)
            elif line.startswith("Installing collected packages"):
                self._set_phase("installing into .venv", "")
            elif line.startswith("Successfully installed"):
                self._set_phase("done", "")

    def _set_phase(self, phase: str, detail: str) -> None:
        changed = phase != self.phase
        self.phase, self.detail = phase, detail
        if not self.tty and changed and phase != "done":
            self._print_line()

    def tick(self) -> None:
        with self._lock:
            if self.tty:
                self._frame += 1
                spin = SPINNER[self._frame % len(SPINNER)]
                count = f"[{self.fetched}/{self.expected}]"
                text = f"{spin} {count} {self.phase} {self.detail}".rstrip()
                self.out.write(f"\r\033[K  {text}")
                self.out.flush()
            elif time.monotonic() - self._last_line >= HEARTBEAT_SECONDS:
                self._print_line(still=True)

    def _print_line(self, still: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        count = f"{self.fetched}/{self.expected} packages"
        prefix = "still " if still else ""
        self.out.write(f"  {prefix}{self.phase} ({count}, {elapsed:.0f} s)\n")
        self.out.flush()
        self._last_line = time.monotonic()

    def clear(self) -> None:
        with self._lock:
            if self.tty:
                self.out.write("\r\033[K")
                self.out.flush()


def run(pip_args: Sequence[str], log: Path, expected: int, out: TextIO) -> int:
    progress = Progress(expected, out)
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *pip_args]
    done = threading.Event()

    def ticker() -> None:
        while not done.wait(0.1 if progress.tty else 1.0):
            progress.tick()

    thread = threading.Thread(target=ticker, daemon=True)
    with log.open("w") as sink:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        thread.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            progress.feed(line)
        status = proc.wait()
    done.set()
    thread.join()
    progress.clear()
    if status != 0:
        tail = log.read_text().splitlines()[-TAIL_LINES:]
        out.write(f"pip failed (exit {status}); the end of {log}:\n" + "\n".join(tail) + "\n")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True, help="where pip's output is kept")
    parser.add_argument("--expect", type=int, required=True, help="packages expected")
    parser.add_argument("pip_args", nargs="+", help="arguments of pip install (after --)")
    args = parser.parse_args(argv)
    return run(args.pip_args, args.log, max(args.expect, 1), sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
