"""scripts/bootstrap's progress: what it shows while pip works, and what it shows when pip fails."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pip_progress", ROOT / "scripts" / "pip_progress.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pip_progress = _load()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("line", "package"),
    [
        ("Collecting aiohttp>=3.9 (from outbox-relay==0.1.0)", "aiohttp"),
        ("Collecting psycopg[binary]>=3.1 (from outbox-relay==0.1.0)", "psycopg"),
        ("Collecting yarl", "yarl"),
        ("Requirement already satisfied: yarl>=1.17 in ./.venv/lib (from aiohttp)", "yarl"),
        ("Processing /opt/files/structlog-26.1.0-py3-none-any.whl (from x==1)", "structlog"),
        ("  Downloading aiohttp-3.14.5.whl (1.7 MB)", None),
        ("Installing collected packages: a, b", None),
    ],
)
def test_the_package_being_fetched_is_read_from_pips_output(line: str, package: str | None) -> None:
    assert pip_progress.package_of(line) == package


PIP_OUTPUT = [
    "Obtaining file:///work/outbox-relay",
    "Collecting aiohttp>=3.9 (from outbox-relay==0.1.0)",
    "  Downloading aiohttp-3.14.5.whl (1.7 MB)",
    "Collecting yarl (from aiohttp>=3.9)",
    "Processing /opt/files/structlog-26.1.0-py3-none-any.whl",
    "Installing collected packages: aiohttp, yarl, structlog",
    "Successfully installed aiohttp-3.14.5 yarl-1.0 structlog-26.1.0",
]


def test_elsewhere_than_a_terminal_it_prints_one_plain_line_a_phase() -> None:
    out = io.StringIO()
    progress = pip_progress.Progress(3, out)
    for line in PIP_OUTPUT:
        progress.feed(line)
        progress.tick()  # within the heartbeat interval: nothing more
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["  fetching", "  installing into .venv"]
    assert "3/3 packages" in lines[-1]
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()


def test_a_long_phase_off_a_terminal_says_it_is_still_going() -> None:
    out = io.StringIO()
    progress = pip_progress.Progress(3, out)
    progress.feed(PIP_OUTPUT[1])
    progress._last_line -= pip_progress.HEARTBEAT_SECONDS  # as if 15 s went by without a line
    progress.tick()
    assert out.getvalue().splitlines()[-1].startswith("  still fetching (1/3 packages")


def test_on_a_terminal_one_line_is_rewritten_with_a_spinner_and_a_count() -> None:
    out = Terminal()
    progress = pip_progress.Progress(3, out)
    frames = []
    for line in PIP_OUTPUT[:4]:
        progress.feed(line)
        progress.tick()
        frames.append(out.getvalue().rsplit("\r\033[K", 1)[-1])
    assert "\n" not in out.getvalue()
    assert frames[-1].endswith("[2/3] fetching yarl")
    assert frames[-1][2] in pip_progress.SPINNER
    assert len({frame[2] for frame in frames}) > 1  # the spinner turns
    progress.clear()
    assert out.getvalue().endswith("\r\033[K")


def test_more_packages_than_pinned_raise_the_total_instead_of_overflowing() -> None:
    progress = pip_progress.Progress(1, io.StringIO())
    progress.feed("Collecting a")
    progress.feed("Collecting b")
    assert (progress.fetched, progress.expected) == (2, 2)


@pytest.mark.slow
def test_when_pip_fails_the_end_of_its_log_is_shown_and_its_status_returned(
    tmp_path: Path,
) -> None:
    log = tmp_path / "bootstrap.log"
    missing = tmp_path / "no-such-project"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pip_progress.py"), "--log", str(log),
         "--expect", "1", "--", "--no-index", str(missing)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"pip failed (exit {result.returncode}); the end of {log}:" in result.stderr
    assert str(missing) in result.stderr  # pip's own explanation, from the log
    assert str(missing) in log.read_text()
