"""The inbound scan's speed and memory: tag reading, whole cycles, peak RSS as the folder grows.

``python -m bench.scan [--albums 200] [--tracks 50] [--json out.json]`` writes ``albums ×
tracks`` real tagged files (MP3, FLAC, Ogg Vorbis and M4A in turn, ~1–5 KB each, the test
equipment's writers) once, then measures with a real PostgreSQL (``LocalPostgres``, durable
defaults, on disk):

- **tag reading**: files a second for :func:`outbox_relay.scan.cycle.read_inbound` (walk, settle
  check, mutagen in ``workers`` threads), nothing moved, ``workers`` = 1, 4, 8;
- **whole cycle**: files a second for ``run_cycle`` over a fresh copy of the folder (journal,
  moves, fsyncs, one transaction per album), ``workers`` = 1, 4, 8;
- **memory**: the peak RSS of a real ``outbox-relay scan --once`` process (``wait4``'s
  ``ru_maxrss``) over the first 25 %, 50 % and 100 % of the albums.

Each figure is one run (the medians of ``--repeat`` runs with ``--repeat``). ``--smoke`` is tiny.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from outbox_relay.adapters.tags import MutagenTagReader
from outbox_relay.db.migrate import migrate
from outbox_relay.scan.cycle import read_inbound, run_cycle
from outbox_relay.testing.audio import FORMATS, write_album
from outbox_relay.testing.postgres import LocalPostgres

WORKERS = (1, 4, 8)


def make_library(folder: Path, albums: int, tracks: int) -> int:
    for number in range(1, albums + 1):
        write_album(
            folder / f"{number:04d}",
            artist=f"Artist {number % 37}",
            album=f"Album {number}",
            year=1960 + number % 60,
            tracks=tracks,
            formats=FORMATS,
            album_number=number,
        )
    return albums * tracks


def _reset(dsn: str, inbound: Path, staging: Path, template: Path, albums: int | None) -> None:
    shutil.rmtree(inbound, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    inbound.mkdir(parents=True)
    for child in sorted(template.iterdir())[:albums]:
        shutil.copytree(child, inbound / child.name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE library.staging_items, library.scan_journal, library.scan_runs, "
            "library.albums, outbox.messages"
        )


def _rss_of_once(dsn: str) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one ``outbox-relay scan --once`` process."""
    env = {**os.environ, "DATABASE_URL": dsn, "OUTBOX_LOG_LEVEL": "warning"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "outbox_relay", "scan", "--once", "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"scan --once exited {proc.returncode}")
    return usage.ru_maxrss / 1024, seconds


async def measure(albums: int, tracks: int, repeat: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-scan-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    template, inbound, staging = base / "template", base / "inbound", base / "staging"
    figures: dict[str, Any] = {"albums": albums, "tracks_per_album": tracks}
    try:
        began = time.perf_counter()
        files = make_library(template, albums, tracks)
        figures["files"] = files
        figures["bytes"] = sum(p.stat().st_size for p in template.rglob("*") if p.is_file())
        figures["generate_s"] = round(time.perf_counter() - began, 2)
        reader = MutagenTagReader()
        for workers in WORKERS:
            rates = []
            for _ in range(repeat):
                began = time.perf_counter()
                read = read_inbound(
                    str(template), reader, workers=workers, rate_limit=0, settle_seconds=0
                )
                rates.append(len(read.tagged) / (time.perf_counter() - began))
                assert len(read.tagged) == files, (len(read.tagged), read.failed[:3])
            figures[f"read_files_per_s_w{workers}"] = round(statistics.median(rates))
        with LocalPostgres(fast=False) as pg:
            await migrate(pg.dsn)
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO library.libraries (name, type, path) VALUES "
                    "('Inbound', 'inbound', %s), ('Staging', 'staging', %s)",
                    (str(inbound), str(staging)),
                )
                for key, value in {
                    "settle_seconds": "0",
                    "scan_db_data_path": str(base / "scan-db"),
                }.items():
                    conn.execute(
                        "UPDATE library.settings SET value = %s WHERE key = %s",
                        (value, f"staging_scan.{key}"),
                    )
            for workers in WORKERS:
                with psycopg.connect(pg.dsn, autocommit=True) as conn:
                    conn.execute(
                        "UPDATE library.settings SET value = %s WHERE key = 'staging_scan.workers'",
                        (str(workers),),
                    )
                rates = []
                for _ in range(repeat):
                    _reset(pg.dsn, inbound, staging, template, None)
                    began = time.perf_counter()
                    summary = await run_cycle(pg.dsn, reader)
                    rates.append(files / (time.perf_counter() - began))
                    assert summary.albums_success == albums, summary.as_dict()["result"]
                figures[f"cycle_files_per_s_w{workers}"] = round(statistics.median(rates))
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute(
                    "UPDATE library.settings SET value = '4' WHERE key = 'staging_scan.workers'"
                )
            for share in (4, 2, 1):
                count = albums // share
                _reset(pg.dsn, inbound, staging, template, count)
                rss, seconds = _rss_of_once(pg.dsn)
                figures[f"once_peak_rss_mib_{count * tracks}_files"] = round(rss, 1)
                figures[f"once_seconds_{count * tracks}_files"] = round(seconds, 2)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    figures["cores"] = os.cpu_count() or 1
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scan", description=__doc__)
    parser.add_argument("--albums", type=int, default=200)
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="8 albums of 5 tracks")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.albums, args.tracks = 8, 5
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    figures = asyncio.run(measure(args.albums, args.tracks, max(1, args.repeat)))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
