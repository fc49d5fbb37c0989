"""How fast the admin page answers with a large outbox (issue 14's target: < 100 ms a page).

``python -m bench.ui [--finished 1000000] [--pending 100000] [--repeat 30] [--json FILE]``
starts a PostgreSQL of its own (``LocalPostgres``), migrates it, builds the table once
(``--finished`` published/skipped rows spread over a week from three replicas, ``--pending``
rows waiting for every reason: due, backing off, leased; 1,000 dead letters with five errors;
a library of single tracks and albums, their ingestion rows, scan runs and staging items), runs
VACUUM ANALYZE, and serves the page with the product's own routes
(:func:`outbox_relay.http.admin.add_admin_routes`) on a real port, without a relay loop that
would drain the backlog while it is measured. A signed-in HTTP client then requests each page
``--repeat`` times after three warm-up requests and reports the median, p95 and maximum of the
whole round trip in milliseconds. ``--smoke`` is a tiny run for CI (tests/bench/test_ui_bench.py).

Figures of a run are in docs/performance.md ("The admin page").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry

from outbox_relay.db.migrate import migrate
from outbox_relay.http.admin import add_admin_routes
from outbox_relay.http.server import create_app, start_site
from outbox_relay.http.ui import RelayState
from outbox_relay.testing.postgres import LocalPostgres

TOKEN = "bench-admin-token"
TARGET_MS = 100.0

SEED = [
    # finished rows over a week, by three replicas; one in ten skipped
    """
    INSERT INTO outbox.messages (kind, isrc, title, artist, album, status, processed_at,
                                 claimed_by, event_id, inngest_id, created_at)
    SELECT 'track', 'USFIN' || lpad(i::text, 7, '0'), 'Song ' || i, 'Artist ' || (i % 997),
           'Album ' || (i % 5003),
           CASE WHEN i % 10 = 0 THEN 'skipped' ELSE 'published' END,
           now() - (i % 604800) * interval '1 second',
           'replica-' || (i % 3), 'track-ingestion-USFIN' || lpad(i::text, 7, '0'),
           '01J' || lpad(i::text, 23, '0'),
           now() - (i % 604800) * interval '1 second' - interval '1 second'
    FROM generate_series(1, $1::int) AS i
    """,
    # the backlog: due now (most), backing off after rejections, leased by a relay
    """
    INSERT INTO outbox.messages (kind, isrc, title, artist, album, attempts, last_error,
                                 next_attempt_at, claim_token, claimed_by, created_at)
    SELECT 'track', 'USPEN' || lpad(i::text, 7, '0'), 'Pending ' || i, 'Artist', 'Album',
           CASE WHEN i % 10 = 1 THEN 2 ELSE 0 END,
           CASE WHEN i % 10 = 1 THEN '400: Event data invalid' END,
           CASE WHEN i % 10 = 1 THEN now() + interval '5 minutes'
                WHEN i % 10 = 2 THEN now() + interval '20 seconds'
                ELSE now() - (i % 3600) * interval '1 second' END,
           CASE WHEN i % 10 = 2 THEN gen_random_uuid() END,
           CASE WHEN i % 10 = 2 THEN 'replica-' || (i % 3) END,
           now() - (i % 3600) * interval '1 second'
    FROM generate_series(1, $1::int) AS i
    """,
    """
    INSERT INTO outbox.messages (kind, isrc, title, artist, album, status, attempts,
                                 last_error, processed_at)
    SELECT 'track', 'USDED' || lpad(i::text, 7, '0'), 'Dead ' || i, 'Artist', 'Album', 'dead',
           5, '400: error number ' || (i % 5), now() - i * interval '1 minute'
    FROM generate_series(1, $1::int) AS i
    """,
    """
    INSERT INTO library.tracks (isrc, title, artist, album, outbox_id)
    SELECT 'USFIN' || lpad(i::text, 7, '0'), 'Song ' || i, 'Artist ' || (i % 997),
           'Album ' || (i % 5003), i
    FROM generate_series(1, $1::int) AS i
    """,
    """
    INSERT INTO library.albums (title, artist, tracks, outbox_id)
    SELECT 'Album ' || i, 'Artist',
           (SELECT jsonb_agg(jsonb_build_object('isrc', 'USALB' || lpad((i * 10 + t)::text, 7, '0'),
                                                'title', 'Album track ' || (i * 10 + t)))
            FROM generate_series(0, 9) AS t),
           i
    FROM generate_series(1, $1::int) AS i
    """,
    """
    INSERT INTO library.track_ingestion (isrc, status, attempts, run_id, event_id, started_at,
                                         indexed_at)
    SELECT 'USFIN' || lpad(i::text, 7, '0'), 'indexed', 1, '01R' || lpad(i::text, 23, '0'),
           'track-ingestion-USFIN' || lpad(i::text, 7, '0'), now(), now()
    FROM generate_series(1, $1::int) AS i
    """,
    """
    INSERT INTO library.scan_runs (trigger, dry_run, host, status, started_at, finished_at,
                                   files_total, albums_total, albums_success, duration_ms)
    SELECT 'schedule', false, 'scan-1', 'success', now() - i * interval '1 hour',
           now() - i * interval '1 hour' + interval '30 seconds', 100, 10, 10, 30000
    FROM generate_series(1, $1::int) AS i
    """,
    """
    INSERT INTO library.staging_items (staging_path, scan_id, album_key, artist, album,
                                       track_count, files, album_id, outbox_id)
    SELECT '/staging/Artist/' || i, 1 + i % $2::int, 'key' || i, 'Artist', 'Album ' || i, 10,
           '[]', i, i
    FROM generate_series(1, $1::int) AS i
    """,
]


def _sizes(finished: int, pending: int) -> list[tuple[int, ...]]:
    library = max(finished // 5, 10)
    albums = max(finished // 100, 10)
    scans = max(finished // 200, 10)
    return [
        (finished,),
        (pending,),
        (min(1000, max(pending // 10, 10)),),
        (library,),
        (albums,),
        (library,),
        (scans,),
        (albums, scans),
    ]


async def build(dsn: str, finished: int, pending: int) -> dict[str, float]:
    """The table, once; returns how long each part took."""
    conn = await asyncpg.connect(dsn)
    took: dict[str, float] = {}
    try:
        began = time.perf_counter()
        for statement, args in zip(SEED, _sizes(finished, pending), strict=True):
            await conn.execute(statement, *args)
        took["build_s"] = round(time.perf_counter() - began, 1)
        began = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        took["vacuum_analyze_s"] = round(time.perf_counter() - began, 1)
        took["messages_rows"] = float(await conn.fetchval("SELECT count(*) FROM outbox.messages"))
        took["table_mib"] = round(
            await conn.fetchval("SELECT pg_total_relation_size('outbox.messages')") / 2**20, 1
        )
    finally:
        await conn.close()
    return took


async def serve(dsn: str) -> tuple[web.AppRunner, str]:
    app = create_app(registry=CollectorRegistry(), ready=lambda: {"database": True})
    add_admin_routes(
        app,
        dsn=dsn,
        token=TOKEN,
        registry=CollectorRegistry(),
        relay_state=lambda: RelayState(
            replica_id="bench", checks={"database": True, "listen": True}, event_api_available=True
        ),
    )
    runner, port = await start_site(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{port}/admin/"


async def measure(base: str, repeat: int, finished: int, pending: int) -> dict[str, Any]:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(base + "signin") as response:
            form = await response.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf, "no sign-in form"
        async with http.post(
            base + "signin", data={"csrf": csrf[1], "token": TOKEN}, allow_redirects=False
        ) as response:
            assert response.status == 303, await response.text()

        # cursors deep in the table, as a "Next" link gives them
        async with http.get(base + "pending?limit=200") as response:
            page = await response.text()
        after = re.search(r'pending\?after=([^"&]+)', page)
        mid_finished = max(finished // 2, 1)
        pages = {
            "overview": "",
            "dead letters": "dead",
            "dead letters, one error": "dead?error=400%3A+error+number+3",
            "dead letters, page 2": "dead?before=" + str(finished + pending + 500),
            "pending": "pending",
            "pending, page 2": "pending?after=" + (after[1] if after else ""),
            "search by ISRC (redirect)": f"search?q=usfin{mid_finished:07d}",
            "search by title prefix": "search?q=song+12345",
            "search, no match": "search?q=zzz+nothing",
            "track (single)": f"track?isrc=USFIN{mid_finished:07d}",
            "track (in an album)": "track?isrc=USALB0000105",
            "scans": "scans",
            "scans, page 2": "scans?before=50",
        }
        figures: dict[str, Any] = {}
        for name, path in pages.items():
            timings = []
            for n in range(repeat + 3):
                began = time.perf_counter()
                async with http.get(base + path, allow_redirects=False) as response:
                    await response.read()
                    status = response.status
                elapsed = (time.perf_counter() - began) * 1000
                if status not in (200, 303):
                    raise SystemExit(f"{name}: HTTP {status} for {path}")
                if n >= 3:
                    timings.append(elapsed)
            timings.sort()
            figures[name] = {
                "median_ms": round(statistics.median(timings), 1),
                "p95_ms": round(
                    timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))], 1
                ),
                "max_ms": round(timings[-1], 1),
            }
    return figures


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with LocalPostgres(fast=False) as pg:
        await migrate(pg.dsn)
        built = await build(pg.dsn, args.finished, args.pending)
        print(f"table built: {built}", file=sys.stderr)
        runner, base = await serve(pg.dsn)
        try:
            pages = await measure(base, args.repeat, args.finished, args.pending)
        finally:
            await runner.cleanup()
    return {
        "finished": args.finished,
        "pending": args.pending,
        "repeat": args.repeat,
        **built,
        "pages": pages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (CI)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.smoke:
        args.finished, args.pending, args.repeat = 2000, 200, 3
    figures = asyncio.run(main_async(args))
    print(f"{'page':32} {'median':>8} {'p95':>8} {'max':>8}  (ms; target < {TARGET_MS:.0f})")
    for name, f in figures["pages"].items():
        verdict = "ok" if f["p95_ms"] < TARGET_MS else "OVER"
        print(f"{name:32} {f['median_ms']:8.1f} {f['p95_ms']:8.1f} {f['max_ms']:8.1f}  {verdict}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
