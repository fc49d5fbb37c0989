"""Every statement of the admin page walks an index, never a whole table.

EXPLAINs exactly ``QUERIES["ui_*"]`` (both the custom plan and the generic plan a prepared
statement settles on) after ANALYZE on tables shaped like production: many finished rows spread
over a week, a backlog, dead letters, library tracks and albums, scan runs, staging items and
ingestion rows. A sequential scan of any of those tables fails the test, and each statement
must use the index it was written for. Timings with 1M finished and 100k pending rows:
``python -m bench.ui`` (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import psycopg
import pytest

from outbox_relay.db.queries import QUERIES
from outbox_relay.db.ui import FIRST_ID

# One xdist worker runs the whole module: the 60,000-row seed (~2 s) is made once, not twice.
pytestmark = pytest.mark.xdist_group("ui_plans")

# The tables the page reads (pg_class and pg_stats of the overview are catalogs, tiny).
TABLES = {
    "messages",
    "tracks",
    "albums",
    "staging_items",
    "scan_runs",
    "track_ingestion",
    "catalog_tracks",
}

SEED = [
    # 60,000 finished rows over a week, 3,000 pending, 300 dead
    """
    INSERT INTO outbox.messages (kind, isrc, title, artist, album, status, processed_at,
                                 claimed_by, event_id)
    SELECT 'track', 'PLAN' || lpad(i::text, 8, '0'), 'Song ' || i, 'Artist', 'Album',
           CASE WHEN i % 10 = 0 THEN 'skipped' ELSE 'published' END,
           now() - (i % 10080) * interval '1 minute', 'replica-' || (i % 3),
           'track-ingestion-PLAN' || lpad(i::text, 8, '0')
    FROM generate_series(1, 60000) AS i
    """,
    """
    INSERT INTO outbox.messages (kind, isrc, title, artist, album, next_attempt_at, attempts)
    SELECT 'track', 'PEND' || lpad(i::text, 8, '0'), 'Waiting ' || i, 'Artist', 'Album',
           now() + (i % 100) * interval '1 second', i % 3
    FROM generate_series(1, 3000) AS i
    """,
    """
    INSERT INTO outbox.messages (kind, isrc, title, artist, album, status, attempts,
                                 last_error, processed_at)
    SELECT 'track', 'DEAD' || lpad(i::text, 8, '0'), 'Dead ' || i, 'Artist', 'Album', 'dead', 5,
           '400: error ' || (i % 7), now()
    FROM generate_series(1, 300) AS i
    """,
    """
    INSERT INTO library.tracks (isrc, title, artist, album, outbox_id)
    SELECT 'PLAN' || lpad(i::text, 8, '0'), 'Song ' || i, 'Artist', 'Album', i
    FROM generate_series(1, 20000) AS i
    """,
    """
    INSERT INTO library.albums (title, artist, tracks, outbox_id)
    SELECT 'Album ' || i, 'Artist',
           jsonb_build_array(jsonb_build_object('isrc', 'ALBM' || lpad(i::text, 8, '0'),
                                                'title', 'Album track ' || i)),
           i
    FROM generate_series(1, 5000) AS i
    """,
    """
    INSERT INTO library.scan_runs (trigger, dry_run, host, status, finished_at)
    SELECT 'schedule', false, 'host', 'success', now() FROM generate_series(1, 3000)
    """,
    """
    INSERT INTO library.staging_items (staging_path, scan_id, album_key, artist, album,
                                       track_count, files, album_id, outbox_id)
    SELECT '/staging/' || i, 1 + i % 3000, 'key' || i, 'Artist', 'Album ' || i, 1, '[]', i, i
    FROM generate_series(1, 5000) AS i
    """,
    """
    INSERT INTO library.track_ingestion (isrc, status, attempts)
    SELECT 'PLAN' || lpad(i::text, 8, '0'), 'indexed', 1 FROM generate_series(1, 20000) AS i
    """,
]

NOW = datetime.now(UTC)

# name -> (arguments, indexes the plan must use)
STATEMENTS: dict[str, tuple[tuple[Any, ...], set[str]]] = {
    "ui_overview": (
        (),
        {
            "messages_pending_created_idx",
            "messages_claim_idx",
            "messages_dead_idx",
            "messages_finished_idx",
        },
    ),
    "ui_dead_page": ((FIRST_ID, 51, None), {"messages_dead_idx"}),
    "ui_dead_errors": ((), {"messages_dead_idx"}),
    "ui_dead_count_ids": (([5, 6, 7],), {"messages_dead_idx"}),
    "ui_dead_count_error": (("400: error 3", 60_500), {"messages_dead_idx"}),
    "ui_requeue_error": (("400: error 3", 60_500), {"messages_dead_idx"}),
    "ui_pending_page": ((NOW, 12, 51), {"messages_claim_idx"}),
    "ui_pending_counts": ((), {"messages_claim_idx"}),
    "ui_search_title": (("song 12", 50), {"messages_title_prefix_idx", "tracks_title_prefix_idx"}),
    "ui_track_path": (
        ("CATA00000042",),
        {
            "messages_isrc_idx",
            "tracks_isrc_idx",
            "albums_tracks_idx",
            "albums_outbox_idx",
            "track_ingestion_pkey",
            "staging_items_album_idx",
            # rows enqueued by TIDAL id alone: the ids the catalog answered the ISRC for, then
            # their rows (migration 016); albums by "tidalTrackId" use albums_tracks_idx too
            "catalog_tracks_isrc_idx",
            "messages_tidal_id_idx",
            # and their library rows, by those rows (migration 017)
            "tracks_outbox_idx",
        },
    ),
    "ui_scan_page": ((FIRST_ID, 51), {"scan_runs_pkey"}),
    "ui_catalog_lookup": (("123456",), {"catalog_tracks_pkey"}),
}
# Statements of parts that a later migration installs: planned only where it is applied.
NEEDS = {"ui_catalog_lookup": 10}
CATALOG_SEED = [
    """
    INSERT INTO outbox.catalog_tracks (tidal_id, country_code, isrc, title)
    SELECT i::text, 'US', 'CATA' || lpad(i::text, 8, '0'), 'Catalog ' || i
    FROM generate_series(1, 20000) AS i
    """,
    # 20,000 rows enqueued by TIDAL id alone (isrc NULL), published under the catalog's ISRC
    """
    INSERT INTO outbox.messages (kind, tidal_id, title, artist, album, status, processed_at,
                                 claimed_by, event_id)
    SELECT 'track', i::text, 'Catalog ' || i, 'Artist', 'Album', 'published',
           now() - (i % 10080) * interval '1 minute', 'replica-' || (i % 3),
           'track-ingestion-CATA' || lpad(i::text, 8, '0')
    FROM generate_series(1, 20000) AS i
    """,
    # their library rows: single tracks written without an ISRC, albums listing "tidalTrackId"
    """
    INSERT INTO library.tracks (isrc, title, artist, album, outbox_id)
    SELECT NULL, title, artist, album, id FROM outbox.messages WHERE tidal_id IS NOT NULL
    """,
    """
    INSERT INTO library.albums (title, artist, tracks, outbox_id)
    SELECT 'Catalog album ' || i, 'Artist',
           jsonb_build_array(jsonb_build_object('tidalTrackId', (20000 + i)::text,
                                                'title', 'Catalog album track ' || i)),
           5000 + i
    FROM generate_series(1, 5000) AS i
    """,
]


# Statements that return a page: their order must come from the index.
PAGED = {"ui_dead_page", "ui_pending_page", "ui_search_title", "ui_scan_page"}


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.fixture(scope="module")
def seeded(template_database: Any, pg_server: Any) -> Iterator[str]:
    """One database seeded once for every statement of this module."""
    name = f"{template_database.name}_ui_plans"
    dsn = pg_server.create_database(name, template=template_database.name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in SEED:
            conn.execute(statement)  # type: ignore[call-overload]
        if conn.execute("SELECT to_regclass('outbox.catalog_tracks')").fetchone() != (None,):
            for statement in CATALOG_SEED:
                conn.execute(statement)  # type: ignore[call-overload]
        conn.execute("VACUUM ANALYZE")
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


def test_every_ui_statement_is_planned_here() -> None:
    assert {name for name in QUERIES if name.startswith("ui_")} - {"ui_installed"} == set(
        STATEMENTS
    )


@pytest.mark.parametrize("name", sorted(STATEMENTS))
@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
async def test_each_page_statement_walks_its_index(seeded: str, name: str, mode: str) -> None:
    args, indexes = STATEMENTS[name]
    conn = await asyncpg.connect(seeded, server_settings={"plan_cache_mode": mode})
    try:
        if name in NEEDS and not await conn.fetchval(
            "SELECT count(*) FROM outbox.schema_migrations WHERE version = $1", NEEDS[name]
        ):
            pytest.skip(f"{name} needs migration {NEEDS[name]:03d}, not on this branch yet")
        # EXPLAIN without ANALYZE plans the requeue without running it
        raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + QUERIES[name], *args)
    finally:
        await conn.close()
    document = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    nodes = list(_nodes(document[0]["Plan"]))
    described = [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"), n.get("Filter"))
        for n in nodes
    ]
    scans = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in TABLES]
    assert not scans, described
    used = {n.get("Index Name") for n in nodes}
    assert indexes <= used, (indexes - used, described)
    if name in PAGED:
        # the index hands rows over in the page's order: a LIMIT stops the walk, nothing
        # sorts every matching row first
        for node in nodes:
            if node["Node Type"] == "Sort":
                below = node.get("Plans", [])
                assert not any(c.get("Relation Name") in TABLES for c in below), described
