"""``scripts/bench --smoke`` runs every scenario end to end and reports numbers for each.

No thresholds here: on a shared machine speeds are noise. This proves the benchmark itself
works (real PostgreSQL, the stand-in as a process, relays as processes) so CI keeps it alive.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_reports_every_scenario_with_numbers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # seconds on an idle machine; minutes on a loaded one
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke"
    assert report["machine"]["cores"] >= 1
    assert set(report["scenarios"]) == set(SCENARIOS)
    for name, figures in report["scenarios"].items():
        assert figures, name
        for key, value in figures.items():
            assert isinstance(value, int | float), (name, key, value)
            assert math.isfinite(value) and value >= 0, (name, key, value)
    assert "cores" in done.stdout  # the table names the machine
