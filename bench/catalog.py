"""The catalog lookup's cost: commit → accepted for albums added by TIDAL id, and B1 unchanged.

``python -m bench.catalog [--latency 0.1] [--albums 5] [--rows 20000] [--repeat 3]`` runs on
this machine: a throwaway PostgreSQL (durable defaults), the Event API stand-in as a process,
the catalog stand-in (``outbox_relay.testing.tidal``, in this process) answering every request
after ``--latency`` seconds, and relays as processes with every default a user gets (catalog
pace 4 requests a second, 2 in flight).

- **albums**: albums of 12 and 100 tracks, each added once by ISRC and once by TIDAL id (fresh
  ids, so every lookup goes to the catalog; the token is fetched by a warm-up album first);
  commit (the writer's clock as it sends the committing statement: an awake relay can deliver a
  track before COMMIT's reply is back, so the clock after it could read below zero) → received
  by the Event API stand-in, p50/p99 over every track of ``--albums`` albums, and the last
  track. Albums arrive ``--gap`` seconds apart
  (default 1.5 s, as users add them): the pace's burst of 5 requests refills in 1.25 s; back to
  back (``--gap 0``), 100-track albums are paced at 4 requests (80 ids) a second. The
  difference between the two modes is what the lookup adds.
- **B1 with and without a catalog**: ``--rows`` tracks with ISRCs drained by the raw limit, by a
  relay without catalog credentials and by one with them (same run, medians of ``--repeat``),
  against the minimal receiver: batches that need no lookup must not be slower, so relay/limit
  and the relay's CPU per row should not move.
``--smoke`` runs everything tiny. On a shared machine absolute numbers drift; ratios less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.run import (
    Bench,
    Control,
    Receiver,
    ReceiverControl,
    StandIn,
    drain_once,
    median,
    percentile,
    seed_qdrant,
)
from outbox_relay.db.migrate import migrate
from outbox_relay.testing.postgres import LocalPostgres
from outbox_relay.testing.tidal import CatalogStandIn, album_tracks


async def album_latencies(
    bench: Bench,
    conn: asyncpg.Connection,
    catalog: CatalogStandIn,
    *,
    size: int,
    by_id: bool,
    serial: int,
) -> tuple[list[float], float]:
    """One album → (commit → received of each track in ms, commit → last in ms)."""
    tracks = album_tracks(
        size, first_id=600_000_000 + serial * 1000, isrc_prefix=f"QZB{serial:02d}"
    )
    catalog.add(tracks)
    listing = [
        {"tidalTrackId": t.id, "title": t.title} if by_id else {"isrc": t.isrc, "title": t.title}
        for t in tracks
    ]
    await bench.control.reset()
    committed = time.time()  # sent, not returned: see the module's docstring
    await conn.execute(
        "SELECT outbox.enqueue_album('Bench Album', 'Artist', $1::jsonb)", json.dumps(listing)
    )
    await bench.control.wait_events(size, timeout=60)
    received = await bench.control.received()
    latencies = [(at - committed) * 1000 for at in received.values()]
    return latencies, max(latencies)


async def albums(
    bench: Bench, catalog: CatalogStandIn, rounds: int, gap: float
) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with (
        bench.database() as dsn,
        bench.running([bench.spawn_relay(dsn, **catalog.environment())]),
    ):
        conn = await asyncpg.connect(dsn)
        try:
            serial = 0
            # warm-up: the token, the connections, the relay's first batch
            await album_latencies(bench, conn, catalog, size=3, by_id=True, serial=serial)
            for size in (12, 100):
                for by_id in (False, True):
                    every: list[float] = []
                    last: list[float] = []
                    for _ in range(rounds):
                        # Albums arrive apart, as users add them: the pace's burst refills.
                        await asyncio.sleep(gap)
                        serial += 1
                        tracks, slowest = await album_latencies(
                            bench, conn, catalog, size=size, by_id=by_id, serial=serial
                        )
                        every += tracks
                        last.append(slowest)
                    mode = "by_id" if by_id else "by_isrc"
                    figures[f"{mode}_{size}_p50_ms"] = percentile(every, 50)
                    figures[f"{mode}_{size}_p99_ms"] = percentile(every, 99)
                    figures[f"{mode}_{size}_last_ms"] = median(last)
                figures[f"lookup_cost_{size}_p50_ms"] = (
                    figures[f"by_id_{size}_p50_ms"] - figures[f"by_isrc_{size}_p50_ms"]
                )
        finally:
            await conn.close()
    figures["catalog_requests"] = len(catalog.requests)
    figures["catalog_max_in_flight"] = catalog.max_in_flight
    figures["catalog_token_requests"] = catalog.token_requests
    return figures


async def b1_with_catalog(
    bench: Bench, catalog: CatalogStandIn, rows: int, repeat: int
) -> dict[str, float]:
    """Against the minimal receiver (bench.run's B1 ``minimal``): rows/s, and each process's
    CPU µs per row, which the machine's load moves far less than wall-clock speed."""
    url = bench.receiver.base_url
    control = bench.receiver_control
    runs: dict[str, list[tuple[float, float]]] = {"limit": [], "relay": [], "with_catalog": []}
    for _ in range(repeat):
        async with bench.database() as dsn:
            raw = bench.spawn_raw(dsn, base_url=url)
            runs["limit"].append(await drain_once(bench, dsn, [raw], rows, control))
        async with bench.database() as dsn:
            relay = bench.spawn_relay(dsn, base_url=url)
            runs["relay"].append(await drain_once(bench, dsn, [relay], rows, control))
        async with bench.database() as dsn:
            relay = bench.spawn_relay(dsn, base_url=url, **catalog.environment())
            runs["with_catalog"].append(await drain_once(bench, dsn, [relay], rows, control))
    speed = {name: median([r[0] for r in values]) for name, values in runs.items()}
    cpu = {name: median([r[1] for r in values]) for name, values in runs.items()}
    return {
        "rows": rows,
        "limit_rows_per_s": speed["limit"],
        "relay_rows_per_s": speed["relay"],
        "relay_with_catalog_rows_per_s": speed["with_catalog"],
        "relay/limit": speed["relay"] / speed["limit"],
        "relay_with_catalog/limit": speed["with_catalog"] / speed["limit"],
        "relay_cpu_us_per_row": cpu["relay"],
        "relay_with_catalog_cpu_us_per_row": cpu["with_catalog"],
        "cpu_with/without": cpu["with_catalog"] / cpu["relay"],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="outbox-bench-catalog-"))
    pg = LocalPostgres(fast=False)
    await asyncio.to_thread(pg.start)
    standin = StandIn.start()
    receiver = Receiver.start()
    catalog = CatalogStandIn(latency=args.latency)
    await catalog.start()
    try:
        template = "bench_template"
        dsn = await asyncio.to_thread(pg.create_database, template)
        await migrate(dsn)
        qdrant_seed = tmp / "qdrant-seed"
        await seed_qdrant(qdrant_seed, args.rows)
        async with aiohttp.ClientSession() as http:
            bench = Bench(
                pg,
                standin,
                Control(standin.control_url, http),
                receiver,
                ReceiverControl(receiver.base_url, http),
                http,
                tmp,
                qdrant_seed,
                template,
            )
            report: dict[str, Any] = {
                "machine": f"{platform.python_version()}, {platform.platform()}",
                "catalog_latency_s": args.latency,
                "albums": await albums(bench, catalog, args.albums, args.gap)
                if args.only in (None, "albums")
                else {},
                "B1": await b1_with_catalog(bench, catalog, args.rows, args.repeat)
                if args.only in (None, "b1")
                else {},
            }
    finally:
        await catalog.stop()
        receiver.stop()
        standin.stop()
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(tmp, ignore_errors=True)  # the relays' logs and Qdrant copies
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        "outbox-relay catalog benchmark",
        f"machine: {report['machine']}; catalog stand-in latency {report['catalog_latency_s']} s",
    ]
    for section in ("albums", "B1"):
        for name, value in report[section].items():
            shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
            lines.append(f"{section:7s} {name:32s} {shown:>12s}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.catalog", description=__doc__)
    parser.add_argument("--latency", type=float, default=0.1, help="catalog answer time (s)")
    parser.add_argument("--albums", type=int, default=5, help="albums per size and mode")
    parser.add_argument("--rows", type=int, default=20_000, help="B1 rows")
    parser.add_argument("--repeat", type=int, default=3, help="B1 runs (median)")
    parser.add_argument(
        "--gap", type=float, default=1.5, help="seconds between albums (the burst refills)"
    )
    parser.add_argument("--only", choices=("albums", "b1"), help="one part only")
    parser.add_argument("--smoke", action="store_true", help="everything tiny")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.albums, args.rows, args.repeat = 1, 1000, 1
    report = asyncio.run(run(args))
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
