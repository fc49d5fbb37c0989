"""The suite's own session plumbing (tests/conftest.py), run in a child pytest on a copy of it.

A run fails, naming the file, when a test leaves something in the session's temporary folder,
and removes that folder whatever happened: in one process and with xdist workers (each worker
checks its own folder and hands what it found to the controller, which reports it). ``-n auto``
runs one test file (or any run with ``-s``) in the process itself and several on a worker a core.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import outbox_relay

# Slow (child pytest runs, a few seconds each, xdist workers included): CI runs it.
pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = Path(outbox_relay.__file__).resolve().parents[1]

_LEAVES_A_FILE = """
import os
import tempfile
from pathlib import Path


def test_leaves_a_file() -> None:
    assert ("PYTEST_XDIST_WORKER" in os.environ) == (os.environ["EXPECT_WORKERS"] == "yes")
    Path(tempfile.gettempdir(), "forgotten.txt").write_text("nobody removes me")
"""

_TIDY = """
import os
from pathlib import Path


def test_tidy(tmp_path: Path) -> None:
    assert ("PYTEST_XDIST_WORKER" in os.environ) == (os.environ["EXPECT_WORKERS"] == "yes")
    (tmp_path / "mine.txt").write_text("pytest's own folders go with the session")
"""


@pytest.fixture
def child_suite() -> Iterator[Path]:
    """A folder with a copy of the suite's conftest and two test files, one of them untidy."""
    folder = Path(tempfile.mkdtemp(prefix="child-suite-"))
    try:
        shutil.copy(TESTS_DIR / "conftest.py", folder / "conftest.py")
        # the root conftest registers the relay harness as a plugin
        (folder / "relay").mkdir()
        (folder / "relay" / "__init__.py").write_text("")
        shutil.copy(TESTS_DIR / "relay" / "harness.py", folder / "relay" / "harness.py")
        (folder / "test_untidy.py").write_text(_LEAVES_A_FILE)
        (folder / "test_tidy.py").write_text(_TIDY)
        (folder / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
        (folder / "tmp").mkdir()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(folder: Path, *args: str, workers: bool) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Runs pytest on ``folder`` with its own TMPDIR; returns the result and that TMPDIR."""
    tmp = folder / "tmp"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "XDIST_"))  # we may be an xdist worker ourselves
    }
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        TMPDIR=str(tmp),
        EXPECT_WORKERS="yes" if workers else "no",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result, tmp


@pytest.mark.parametrize("numprocesses", ["0", "2"])
def test_a_file_left_behind_fails_the_run_and_the_folder_goes(
    child_suite: Path, numprocesses: str
) -> None:
    result, tmp = _run(child_suite, "-n", numprocesses, workers=numprocesses != "0")
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "2 passed" in result.stdout, output
    assert "files the tests left behind" in result.stdout, output
    named = [line for line in result.stdout.splitlines() if line.endswith("forgotten.txt")]
    assert len(named) == 1, output
    assert list(tmp.iterdir()) == [], "the session's folder (and its workers') must be removed"


def test_auto_runs_one_file_in_process_and_several_on_workers(child_suite: Path) -> None:
    one, tmp = _run(child_suite, "-n", "auto", "test_tidy.py", workers=False)
    assert one.returncode == pytest.ExitCode.OK, one.stdout + one.stderr
    assert list(tmp.iterdir()) == []

    several_cores = len(os.sched_getaffinity(0)) >= 2
    both, tmp = _run(child_suite, "-n", "auto", "-k", "tidy and not untidy", workers=several_cores)
    assert both.returncode == pytest.ExitCode.OK, both.stdout + both.stderr
    assert "1 passed" in both.stdout
    assert "files the tests left behind" not in both.stdout
    assert list(tmp.iterdir()) == []

    # -s asks to see the tests' output, which a worker's would never reach
    shown, _ = _run(child_suite, "-n", "auto", "-s", "-k", "tidy and not untidy", workers=False)
    assert shown.returncode == pytest.ExitCode.OK, shown.stdout + shown.stderr
