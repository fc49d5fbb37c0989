"""``python -m bench.worker --smoke`` runs the worker's benchmark end to end (no thresholds: on a
shared machine speeds are noise); this keeps the benchmark alive in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_worker_benchmark_smoke_reports_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "worker.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker", "--smoke", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["burst"]["tracks"] == 5 and figures["steady"]["tracks"] == 5
    assert figures["burst"]["ingestions_per_s"] > 0
    assert figures["steady"]["commit_to_indexed_p99_ms"] > 0
    assert set(figures["where_time_goes"]["steps"]) >= {
        "record-indexing",
        "build-document",
        "embed-document",
        "upsert-point",
        "record-indexed",
    }
