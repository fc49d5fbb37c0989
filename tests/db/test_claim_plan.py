"""The claim query walks ``messages_claim_idx``, whatever the table holds.

EXPLAINs exactly ``QUERIES["claim"]`` after a fresh ANALYZE on a table where almost every row
is pending, and on one where almost none is (many done rows). Both the custom plan (the first
executions of a prepared statement) and the generic plan (what a prepared statement settles on
after five executions) must use the partial index and never scan the table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from outbox_relay.db.queries import QUERIES

TOKEN = uuid.UUID("5b0f6a54-8d4e-4c2b-9a57-3f1e2d6c7b8a")

SEED = """
INSERT INTO outbox.messages (kind, isrc, title, artist, album, status, processed_at)
SELECT 'track', 'PLAN' || lpad(i::text, 8, '0'), 'Song', 'Artist', 'Album', $3,
       CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
FROM generate_series($1::int, $2::int) AS i
"""


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _plan(
    conn: asyncpg.Connection, mode: str, floor: tuple[datetime | None, int | None] = (None, None)
) -> list[dict[str, Any]]:
    await conn.execute(f"SET plan_cache_mode = {mode}")
    raw = await conn.fetchval(
        "EXPLAIN (FORMAT JSON) " + QUERIES["claim"], 500, uuid.uuid4(), "plan-test", 30.0, *floor
    )
    document = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return list(_nodes(document[0]["Plan"]))


@pytest.mark.parametrize(
    ("pending", "done"),
    [(20_000, 50), (50, 50_000)],
    ids=["almost-all-pending", "almost-none-pending"],
)
@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize("floored", [False, True], ids=["full", "floored"])
async def test_the_claim_uses_its_partial_index(
    database_url: str, pending: int, done: int, mode: str, floored: bool
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SEED, 1, done, "published")
        await conn.execute(SEED, done + 1, done + pending, "pending")
        await conn.execute("ANALYZE outbox.messages")
        floor = (datetime.now(UTC) - timedelta(minutes=1), 1000) if floored else (None, None)
        nodes = await _plan(conn, mode, floor)
    finally:
        await conn.close()

    described = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    assert any(
        n["Node Type"] in ("Index Scan", "Index Only Scan")
        and n.get("Index Name") == "messages_claim_idx"
        for n in nodes
    ), described
    assert not any(
        n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan") and n.get("Relation Name") == "messages"
        for n in nodes
    ), described


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
async def test_record_outcomes_looks_rows_up_by_primary_key(database_url: str, mode: str) -> None:
    """Finish finds its rows by primary key and never loops over the batch once per row."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SEED, 1, 50_000, "published")
        await conn.execute(SEED, 50_001, 50_500, "pending")
        await conn.execute("UPDATE outbox.messages SET claim_token = $1 WHERE id > 50000", TOKEN)
        await conn.execute("ANALYZE outbox.messages")
        await conn.execute(f"SET plan_cache_mode = {mode}")
        ids = list(range(50_001, 50_501))
        raw = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + QUERIES["record_outcomes"],
            TOKEN,
            ["published"] * 500,
            ids,
            ["e"] * 500,
            ["i"] * 500,
            [None] * 500,
            [None] * 500,
            5,
            [0.0] * 500,
        )
    finally:
        await conn.close()
    document = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    nodes = list(_nodes(document[0]["Plan"]))
    described = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    assert not any(
        n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan") and n.get("Relation Name") == "messages"
        for n in nodes
    ), described
    assert not any(n["Node Type"] == "Nested Loop" and "Join Filter" in n for n in nodes), described


@pytest.mark.parametrize(
    ("pending", "done"),
    [(20_000, 20_000), (50, 50_000)],
    ids=["large-backlog", "almost-none-pending"],
)
async def test_the_gauges_never_scan_the_table(database_url: str, pending: int, done: int) -> None:
    """The relay's gauges, as its maintenance session runs them, walk partial indexes only:
    the oldest pending row is one index probe, whatever the backlog (a parallel scan of the
    whole table used to take 0.6 s a refresh with 1M pending rows)."""
    conn = await asyncpg.connect(
        database_url, server_settings={"max_parallel_workers_per_gather": "0"}
    )
    try:
        await conn.execute(SEED, 1, done, "published")
        await conn.execute(SEED, done + 1, done + pending, "pending")
        await conn.execute("ANALYZE outbox.messages")
        raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + QUERIES["gauges"])
    finally:
        await conn.close()
    document = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    nodes = list(_nodes(document[0]["Plan"]))
    described = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    on_messages = [n for n in nodes if n.get("Relation Name") == "messages"]
    assert on_messages, described
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in on_messages), described
    assert "Gather" not in {n["Node Type"] for n in nodes}, described
    # min(created_at) is a probe of the new index, not an aggregate over every pending row
    assert any(
        n.get("Index Name") == "messages_pending_created_idx" and n["Node Type"] != "Aggregate"
        for n in nodes
    ), described
