"""What a long-running command is doing, while it does it.

On a terminal a step shows a spinner and its seconds on one line, cleared when the step ends; on
anything else (a pipe, a CI log) a step is one plain line when it starts and a "still ..." line
every few seconds, so no step is silent for long and logs stay readable. The spinner runs in a
thread of its own: a step that blocks the event loop (a synchronous server start) still shows life.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

_UNICODE_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_ASCII_FRAMES = "|/-\\"


class Progress:
    """Prints result lines with :meth:`say` and shows steps with :meth:`step`.

    ``tty`` (default: whether ``stream`` is a terminal) picks the spinner or plain lines;
    ``still_every`` is how often a plain-line step says it is still at work.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        still_every: float = 5.0,
        frame_seconds: float = 0.1,
    ) -> None:
        self._stream = stream or sys.stdout
        self._tty = self._stream.isatty() if tty is None else tty
        self._still_every = still_every
        self._frame_seconds = frame_seconds
        encoding = (getattr(self._stream, "encoding", None) or "").lower()
        self._frames = _UNICODE_FRAMES if encoding.startswith("utf") else _ASCII_FRAMES
        self._lock = threading.Lock()
        self._spinner_shown = False

    def say(self, text: str = "") -> None:
        """Prints one line (or several), above a spinner that may be running."""
        with self._lock:
            self._clear()
            self._stream.write(text + "\n")
            self._stream.flush()

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Shows ``what`` (e.g. "starting PostgreSQL") until the block ends."""
        began = time.monotonic()
        done = threading.Event()
        if not self._tty:
            self.say(f"... {what}")
        ticker = threading.Thread(
            target=self._tick, args=(what, began, done), name="progress", daemon=True
        )
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            with self._lock:
                self._clear()
                self._stream.flush()

    def _tick(self, what: str, began: float, done: threading.Event) -> None:
        frame = 0
        if not self._tty:
            while not done.wait(self._still_every):
                elapsed = time.monotonic() - began
                with self._lock:
                    if not done.is_set():
                        self._stream.write(f"... still {what} ({elapsed:.0f} s)\n")
                        self._stream.flush()
            return
        while True:
            elapsed = time.monotonic() - began
            with self._lock:
                if done.is_set():
                    return
                glyph = self._frames[frame % len(self._frames)]
                self._stream.write(f"\r\033[K{glyph} {what} ({elapsed:.1f} s)")
                self._stream.flush()
                self._spinner_shown = True
            frame += 1
            if done.wait(self._frame_seconds):
                return

    def _clear(self) -> None:
        # Called with the lock held: wipes the spinner's line so the next text starts clean.
        if self._spinner_shown:
            self._stream.write("\r\033[K")
            self._spinner_shown = False
