"""``python -m bench.executor`` runs end to end (tiny) and reports every figure as a number.

No thresholds: on a shared machine speeds are noise. This keeps the benchmark alive in CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_executor_benchmark_reports_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "executor.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.executor", "--runs=20", "--steps=2", f"--json={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["runs"] == 20 and figures["requests"] == 20 * 3
    for key, value in figures.items():
        assert isinstance(value, int | float), (key, value)
        assert value >= 0, (key, value)
