"""The progress display of long commands (``outbox_relay.cli.progress``)."""

from __future__ import annotations

import io
import threading

from outbox_relay.cli.progress import Progress


def test_a_terminal_sees_a_spinner_with_seconds_then_a_clean_line() -> None:
    stream = io.StringIO()
    progress = Progress(stream, tty=True, frame_seconds=0.01)
    drawn = threading.Event()
    with progress.step("starting PostgreSQL"):
        # Wait (with a deadline) until the spinner has drawn a few frames.
        for _ in range(500):
            if stream.getvalue().count("starting PostgreSQL") >= 3:
                drawn.set()
                break
            drawn.wait(0.01)
    progress.say("PostgreSQL   ready")
    text = stream.getvalue()
    assert drawn.is_set(), text
    assert "\r\033[K" in text and " s)" in text
    # The step's line is wiped before the result line, which stands alone.
    assert text.endswith("\r\033[KPostgreSQL   ready\n")


def test_elsewhere_a_step_is_a_plain_line_and_a_still_line_now_and_then() -> None:
    stream = io.StringIO()
    progress = Progress(stream, tty=False, still_every=0.02)
    with progress.step("migrating"):
        for _ in range(500):
            if "still migrating" in stream.getvalue():
                break
            threading.Event().wait(0.01)
    progress.say("done")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "... migrating"
    assert lines[1].startswith("... still migrating (")
    assert lines[-1] == "done"
    assert "\r" not in stream.getvalue() and "\033" not in stream.getvalue()
