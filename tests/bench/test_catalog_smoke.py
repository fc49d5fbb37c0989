"""``python -m bench.catalog --smoke`` runs end to end and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_catalog_benchmark_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.catalog", "--smoke", "--gap", "0", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    albums = report["albums"]
    for size in (12, 100):
        for mode in ("by_isrc", "by_id"):
            assert albums[f"{mode}_{size}_p50_ms"] > 0
    # 1 (warm-up) + 1 (12 tracks) + 5 (100 tracks): one request per 20 ids
    assert albums["catalog_requests"] == 7
    assert albums["catalog_token_requests"] == 1
    assert report["B1"]["relay_with_catalog_rows_per_s"] > 0
