"""``outbox-relay scan`` as a real process: the summary table, JSON, the progress bar's rules,
and the rate limit."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from outbox_relay.adapters.tags import MutagenTagReader
from outbox_relay.cli.scan import ProgressBar
from outbox_relay.scan.cycle import read_inbound
from outbox_relay.testing.audio import write_album

from .conftest import ScanEnv

# Slow (scan processes): CI runs it, -m "not slow" leaves it out.
pytestmark = pytest.mark.slow


def run_scan(env: ScanEnv, *args: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "INNGEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "outbox_relay", "scan", *args],
        env={**inherited, "DATABASE_URL": env.dsn, "OUTBOX_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_once_prints_the_summary_table_and_no_bar_when_not_a_terminal(scan_env: ScanEnv) -> None:
    write_album(scan_env.inbound / "a", artist="Sierra", album="Tango", year=2012, tracks=4)
    (scan_env.inbound / "readme.txt").write_text("not audio")

    dry = run_scan(scan_env, "--once", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "scan 1: success (dry run: nothing was changed)" in dry.stdout
    assert "would_stage" in dry.stdout and "Sierra" in dry.stdout
    assert "files skipped: not_audio" in dry.stdout
    # Logs go to stderr, the table to stdout; no progress bar on a pipe.
    assert '"scan_summary"' in dry.stderr and '"scan_summary"' not in dry.stdout
    assert "\r" not in dry.stderr and "[####" not in dry.stderr

    real = run_scan(scan_env, "--once", "--json")
    assert real.returncode == 0, real.stderr
    report = json.loads(real.stdout)
    assert (report["result"], report["albums_success"], report["dry_run"]) == ("success", 1, False)
    assert report["albums"][0]["staging_path"].endswith("Sierra/2012 - Tango")


def test_a_failed_run_exits_1_and_dry_run_needs_once(scan_env: ScanEnv) -> None:
    scan_env.sql("DELETE FROM library.libraries WHERE type = 'inbound'")
    failed = run_scan(scan_env, "--once")
    assert failed.returncode == 1
    assert "error: inbound_library: library.libraries must hold exactly one" in failed.stdout
    misuse = run_scan(scan_env, "--dry-run")
    assert misuse.returncode == 2
    assert "--dry-run goes with --once" in misuse.stderr


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    bar = ProgressBar(terminal, width=10)
    bar("reading", 5, 10)
    bar("reading", 10, 10)
    bar.close()
    assert terminal.getvalue().endswith("\rreading  [##########] 10/10\n")
    pipe = io.StringIO()
    quiet = ProgressBar(pipe)
    quiet("reading", 10, 10)
    quiet.close()
    assert pipe.getvalue() == ""


def test_rate_limit_spaces_the_reads(scan_env: ScanEnv) -> None:
    write_album(scan_env.inbound / "a", artist="Uniform", album="Victor", year=2013, tracks=10)
    began = time.monotonic()
    read = read_inbound(
        str(scan_env.inbound), MutagenTagReader(), workers=4, rate_limit=20, settle_seconds=0
    )
    elapsed = time.monotonic() - began
    assert len(read.tagged) == 10
    # 10 reads at 20 a second, the first at once: at least 9 intervals of 50 ms.
    assert elapsed >= 0.44, elapsed


def test_sigterm_lets_the_run_in_progress_finish_then_exits_0(
    scan_env: ScanEnv, tmp_path: Path
) -> None:
    write_album(scan_env.inbound / "a", artist="Whiskey", album="Xray", year=2014, tracks=3)
    scan_env.set("schedule", "* * * * * *")
    scan_env.set("enabled", "true")
    release, log_path = tmp_path / "release", tmp_path / "scan.log"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "INNGEST_"))}
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "outbox_relay", "scan"],
            env={
                **inherited,
                "DATABASE_URL": scan_env.dsn,
                "OUTBOX_LOG_FORMAT": "json",
                "OUTBOX_SCAN_HTTP_HOST": "127.0.0.1",
                "OUTBOX_SCAN_HTTP_PORT": "0",
                "OUTBOX_SCAN_SETTINGS_POLL": "0.2",
                "OUTBOX_SCAN_DEBUG_HOLD": "before_commit",
                "OUTBOX_SCAN_DEBUG_RELEASE": str(release),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while '"scan_debug_hold"' not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.02)
        # Files moved, rows not yet written: SIGTERM now must not leave the album half-done.
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while '"scan_stopping"' not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.02)
        assert proc.poll() is None  # still finishing the run
        release.touch()
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert output.index('"scan_stopping"') < output.index('"scan_summary"')
    assert '"scan_stopped"' in output
    assert scan_env.sql("SELECT status, albums_success FROM library.scan_runs") == [("success", 1)]
    assert scan_env.staged_consistency() == []
