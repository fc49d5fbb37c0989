"""``python -m bench.scan --smoke`` runs end to end and reports a number for every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scan_benchmark_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "scan.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.scan", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["files"] == 40
    for workers in (1, 4, 8):
        assert figures[f"read_files_per_s_w{workers}"] > 0
        assert figures[f"cycle_files_per_s_w{workers}"] > 0
    assert {k for k in figures if k.startswith("once_peak_rss_mib_")} == {
        "once_peak_rss_mib_10_files",
        "once_peak_rss_mib_20_files",
        "once_peak_rss_mib_40_files",
    }
