"""The claim's floor: bounded claims skip the dead front of the claim index, and every row still
goes out (db/queries.sql's ``claim``; docs/wakeups.md, "The claim's floor").

Each claimed row leaves a dead entry at the front of ``messages_claim_idx`` until VACUUM, and a
claim without a floor walks all of them. These run the real statement and the real store against
PostgreSQL: what a floored claim reads, which rows it may leave for a full claim, and that the
store's full claims (the sweep, one a :data:`FULL_CLAIM_INTERVAL`) pick those up.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
from prometheus_client import CollectorRegistry

from outbox_relay.db.queries import QUERIES
from outbox_relay.metrics import RelayMetrics
from outbox_relay.relay.store import OutboxStore

ENQUEUE = (
    "SELECT outbox.enqueue_track($1 || lpad(i::text, 7, '0'), 't', 'a', 'b') "
    "FROM generate_series(1, $2) AS i"
)
LONG_TRANSACTIONS_ROW = (
    "INSERT INTO outbox.messages (kind, isrc, title, artist, album, next_attempt_at) "
    "VALUES ('track', $1, 't', 'a', 'b', now() - interval '5 seconds') RETURNING id"
)


Floor = tuple[Any, Any]
FULL: Floor = (None, None)


def _floor(rows: list[asyncpg.Record]) -> Floor:
    return rows[0]["floor_at"], rows[0]["floor_id"]


async def _claim(conn: asyncpg.Connection, limit: int, floor: Floor) -> list[asyncpg.Record]:
    return await conn.fetch(QUERIES["claim"], limit, uuid.uuid4(), "floor-test", 30.0, *floor)


async def _finish(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> None:
    """What the relay's outcome does to the index: the row leaves the pending set."""
    await conn.execute(
        "UPDATE outbox.messages SET status = 'published', processed_at = now(), "
        "claim_token = NULL WHERE id = ANY ($1::bigint[])",
        [row["id"] for row in rows],
    )


async def _claim_index_reads(conn: asyncpg.Connection, floor: Floor) -> int:
    """Buffers the claim's scan of messages_claim_idx read (index and heap pages), from EXPLAIN
    ANALYZE in a transaction rolled back, so nothing is claimed."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        raw = await conn.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + QUERIES["claim"],
            10,
            uuid.uuid4(),
            "floor-test",
            30.0,
            *floor,
        )
    finally:
        await transaction.rollback()
    plan = (orjson.loads(raw) if isinstance(raw, str | bytes) else raw)[0]["Plan"]

    def walk(node: dict[str, Any]) -> int:
        own = node["Shared Hit Blocks"] if node.get("Index Name") == "messages_claim_idx" else 0
        return own + sum(walk(child) for child in node.get("Plans", []))

    return walk(plan)


async def _drain_with_floors(conn: asyncpg.Connection, limit: int) -> Floor:
    """Claims and finishes batches of ``limit`` as the relay does, each from the last floor;
    returns the floor after the last full batch."""
    floor = FULL
    while len(rows := await _claim(conn, limit, floor)) == limit:
        await _finish(conn, rows)
        floor = _floor(rows)
    await _finish(conn, rows)
    return floor


async def test_a_floored_claim_does_not_walk_the_rows_claimed_before(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        # No VACUUM during the test: it would remove what the full claim has to walk.
        await conn.execute("ALTER TABLE outbox.messages SET (autovacuum_enabled = false)")
        # 20,000 rows claimed and finished: their dead entries lead the claim index.
        await conn.execute(ENQUEUE, "USOLD", 20_000)
        await _drain_with_floors(conn, 500)
        await conn.execute(ENQUEUE, "USNEW", 10)
        floor = _floor(await _claim(conn, 5, FULL))
        full_reads = await _claim_index_reads(conn, FULL)
        floored_reads = await _claim_index_reads(conn, floor)
    finally:
        await conn.close()
    # Same answer (the 5 rows left), a fraction of the pages: the dead entries are all before
    # the floor. (Pages, not time: the count does not depend on the machine.)
    assert floored_reads * 10 < full_reads, (floored_reads, full_reads)


async def test_rows_of_one_transaction_are_walked_past_by_id(database_url: str) -> None:
    """One transaction's rows share next_attempt_at (its start): the floor's id keeps a drain
    of them from walking every row claimed before, batch after batch."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("ALTER TABLE outbox.messages SET (autovacuum_enabled = false)")
        await conn.execute(ENQUEUE, "USONE", 20_500)  # one statement: one next_attempt_at
        floor = FULL
        for _ in range(40):  # 20,000 rows, the relay's way
            rows = await _claim(conn, 500, floor)
            assert len(rows) == 500
            await _finish(conn, rows)
            floor = _floor(rows)
        full_reads = await _claim_index_reads(conn, FULL)
        floored_reads = await _claim_index_reads(conn, floor)
        rest = await _claim(conn, 1000, floor)
    finally:
        await conn.close()
    assert len(rest) == 500  # nothing skipped
    assert floored_reads * 10 < full_reads, (floored_reads, full_reads)


async def test_the_floor_never_passes_a_row_a_claim_left_behind(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(ENQUEUE, "USFLR", 30)
        first = await _claim(conn, 10, FULL)  # a full batch: 20 rows are left after it
        left = await conn.fetchrow(
            "SELECT next_attempt_at, id FROM outbox.messages WHERE claim_token IS NULL "
            "ORDER BY next_attempt_at, id LIMIT 1"
        )
        assert _floor(first) <= (left["next_attempt_at"], left["id"])
        rest = await _claim(conn, 100, _floor(first))
        assert len(rest) == 20  # nothing left behind
        # Not full: the floor is a second before the claim started, at the latest.
        now = await conn.fetchval("SELECT now()")
        assert _floor(rest)[0] <= now - timedelta(seconds=1)
        assert {(row["floor_at"], row["floor_id"]) for row in rest} == {_floor(rest)}
    finally:
        await conn.close()


async def test_a_long_transactions_row_below_the_floor_goes_out_with_a_full_claim(
    database_url: str,
) -> None:
    """A row carries its transaction's start time: one that committed more than a second after
    it began can land below the floor. Bounded claims may leave it; the sweep and the next full
    claim (at most FULL_CLAIM_INTERVAL later) take it."""
    writer = await asyncpg.connect(database_url)
    # No full claim falls due during the first part: only the sweep may look below the floor.
    store = OutboxStore(
        database_url,
        replica_id="floor",
        lease_seconds=30,
        max_attempts=5,
        full_claim_interval=3600,
    )
    metrics = RelayMetrics(CollectorRegistry(), replica_id="awake")
    awake = OutboxStore(
        database_url,
        replica_id="awake",
        lease_seconds=30,
        max_attempts=5,
        full_claim_interval=0.05,
        metrics=metrics,
    )
    try:
        await writer.execute(ENQUEUE, "USFST", 3)
        _token, first = await store.claim(100)  # the first claim is full; it sets the floor
        assert len(first) == 3
        long_row = await writer.fetchval(LONG_TRANSACTIONS_ROW, "USLONG0000001")
        _token, bounded = await store.claim(100)
        assert list(bounded) == []  # below the floor: not a bounded claim's
        _token, swept = await store.claim(100, wake=False)  # the sweep before sleeping
        assert [row["id"] for row in swept] == [long_row]

        # Without a sweep, while the relay stays awake: its next full claim.
        await writer.execute(ENQUEUE, "USSND", 3)
        _token, second = await awake.claim(100)
        assert len(second) == 3
        late_row = await writer.fetchval(LONG_TRANSACTIONS_ROW, "USLONG0000002")
        deadline = time.monotonic() + 30
        claimed: list[int] = []
        while not claimed and time.monotonic() < deadline:
            _token, rows = await awake.claim(100)
            claimed = [row["id"] for row in rows]
        assert claimed == [late_row]
        # Both kinds counted: bounded claims in between, a full one that found the row.
        assert metrics.claims.labels(scan="full")._value.get() >= 2
        assert metrics.claims.labels(scan="bounded")._value.get() >= 1
    finally:
        await writer.close()
        await store.close()
        await awake.close()
