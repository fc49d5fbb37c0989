"""``python -m bench.ui --smoke`` builds its table, serves the page and times every page.

No thresholds here: on a shared machine speeds are noise (the full run's figures, with 1M
finished and 100k pending rows, are in docs/performance.md). This keeps the benchmark alive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_admin_page_benchmark_times_every_page(tmp_path: Path) -> None:
    out = tmp_path / "ui.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.ui", "--smoke", f"--json={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["messages_rows"] == 2000 + 200 + 20
    assert len(figures["pages"]) == 13
    for page, timing in figures["pages"].items():
        assert 0 < timing["median_ms"] <= timing["p95_ms"] <= timing["max_ms"], page
