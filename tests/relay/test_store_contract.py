"""The fake outbox keeps the real one's contract: one scenario, run against both, same rows.

The fast tier (``test_loop_decisions.py``) trusts :class:`~outbox_relay.testing.fakes.FakeOutbox`
to claim, lease, fan out and record exactly as ``db/queries.sql`` does. This runs one scenario
through the :class:`~outbox_relay.ports.Outbox` port against PostgreSQL and against the fake,
and compares everything each step returns and the whole table after each step: claim order,
album fan-out (artist inherited, no tracks), stale tokens, charged and uncharged outcomes,
retry delays, dead letters after ``max_attempts``, a lease that runs out and is claimed again.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import asyncpg

from outbox_relay.ports import ClaimedRow, Outbox, Outcomes
from outbox_relay.relay.store import OutboxStore
from outbox_relay.testing.fakes import FakeOutbox, OutboxTable

Snapshot = list[tuple[Any, ...]]


class Side(Protocol):
    """One implementation under the scenario: the outbox port, plus a way to write and read
    the table as an application and an operator would."""

    def store(self, replica_id: str, *, lease_seconds: float, max_attempts: int) -> Outbox: ...

    async def enqueue_track(self, isrc: str | None, title: str, **kwargs: Any) -> int: ...

    async def enqueue_album(
        self, title: str, artist: str, tracks: list[dict[str, Any]], artwork_url: str | None
    ) -> int: ...

    async def snapshot(self) -> Snapshot: ...


class PostgresSide:
    def __init__(self, dsn: str, conn: asyncpg.Connection) -> None:
        self._dsn = dsn
        self._conn = conn

    def store(self, replica_id: str, *, lease_seconds: float, max_attempts: int) -> Outbox:
        return OutboxStore(
            self._dsn, replica_id=replica_id, lease_seconds=lease_seconds, max_attempts=max_attempts
        )

    async def enqueue_track(self, isrc: str | None, title: str, **kwargs: Any) -> int:
        row_id: int = await self._conn.fetchval(
            "SELECT outbox.enqueue_track($1, $2, 'Artist', 'Album', $3, $4, $5)",
            isrc,
            title,
            kwargs.get("priority"),
            kwargs.get("force", False),
            kwargs.get("artwork_url"),
        )
        return row_id

    async def enqueue_album(
        self, title: str, artist: str, tracks: list[dict[str, Any]], artwork_url: str | None
    ) -> int:
        row_id: int = await self._conn.fetchval(
            "SELECT outbox.enqueue_album($1, $2, $3::jsonb, $4)",
            title,
            artist,
            json.dumps(tracks),
            artwork_url,
        )
        return row_id

    async def snapshot(self) -> Snapshot:
        rows = await self._conn.fetch(
            """
            SELECT id, kind, parent_id, isrc, title, artist, album, artwork_url, priority, force,
                   status, attempts, claim_token IS NOT NULL, claimed_by,
                   processed_at IS NOT NULL, skip_reason, last_error,
                   jsonb_array_length(error_history), event_id, inngest_id,
                   CASE WHEN next_attempt_at <= now() THEN 'due'
                        WHEN next_attempt_at <= now() + interval '60 seconds' THEN 'soon'
                        ELSE 'later' END,
                   created_at = (SELECT p.created_at FROM outbox.messages AS p
                                 WHERE p.id = m.parent_id)
            FROM outbox.messages AS m
            ORDER BY id
            """
        )
        return [tuple(row) for row in rows]


class FakeSide:
    def __init__(self) -> None:
        self.table = OutboxTable()

    def store(self, replica_id: str, *, lease_seconds: float, max_attempts: int) -> Outbox:
        return FakeOutbox(
            self.table,
            replica_id=replica_id,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
        )

    async def enqueue_track(self, isrc: str | None, title: str, **kwargs: Any) -> int:
        return self.table.enqueue_track(isrc, title, "Artist", "Album", **kwargs)

    async def enqueue_album(
        self, title: str, artist: str, tracks: list[dict[str, Any]], artwork_url: str | None
    ) -> int:
        return self.table.enqueue_album(title, artist, tracks, artwork_url)

    async def snapshot(self) -> Snapshot:
        now = self.table.clock()
        rows = []
        for r in sorted(self.table.rows.values(), key=lambda r: r.id):
            wait = (r.next_attempt_at - now).total_seconds()
            parent = self.table.rows.get(r.parent_id) if r.parent_id is not None else None
            rows.append(
                (
                    r.id, r.kind, r.parent_id, r.isrc, r.title, r.artist, r.album,
                    r.artwork_url, r.priority, r.force, r.status, r.attempts,
                    r.claim_token is not None, r.claimed_by, r.processed_at is not None,
                    r.skip_reason, r.last_error, len(r.error_history), r.event_id, r.inngest_id,
                    "due" if wait <= 0 else "soon" if wait <= 60 else "later",
                    None if parent is None else r.created_at == parent.created_at,
                )
            )  # fmt: skip
        return rows


def _claimed(rows: Sequence[ClaimedRow]) -> list[tuple[Any, ...]]:
    columns = ("id", "kind", "parent_id", "isrc", "title", "artist", "album", "artwork_url")
    more = ("priority", "force", "attempts", "track_count", "tidal_id")
    return sorted(tuple(row[c] for c in (*columns, *more)) for row in rows)


async def _claim_when_due(store: Outbox, limit: int) -> tuple[uuid.UUID, Sequence[ClaimedRow]]:
    """Claims until a claim returns rows (a lease running out), within a deadline."""
    deadline = time.monotonic() + 10
    while True:
        token, rows = await store.claim(limit)
        if rows or time.monotonic() > deadline:
            return token, rows
        await asyncio.sleep(0.02)  # polling for a lease to run out


async def scenario(side: Side) -> list[tuple[str, Any]]:
    """Every step's result and the table after each, as comparable values."""
    steps: list[tuple[str, Any]] = []

    async def step(name: str, value: Awaitable[Any] | Any) -> Any:
        result = await value if isinstance(value, Awaitable) else value
        steps.append((name, result))
        return result

    a = await side.enqueue_track(
        "USRC17607839", "One", priority=5, artwork_url="https://img.example/1.jpg"
    )
    b = await side.enqueue_track(" usrc17607840 ", "Two", force=True)
    await side.enqueue_album(
        "LP",
        "Band",
        [
            {"isrc": "GBAYE0000001", "title": "Side A"},
            {"isrc": None, "title": "Side B", "artist": "   "},
            {"title": "Side C", "artist": "Guest", "tidalTrackId": "75413016"},
        ],
        "https://img.example/lp.jpg",
    )
    await side.enqueue_album("Empty", "Band", [], None)
    c = await side.enqueue_track(None, "Three")
    await step("enqueued", side.snapshot())

    main = side.store("main", lease_seconds=30, max_attempts=2)
    try:
        # Three rows by next_attempt_at: a, b and the album, whose three tracks come along.
        token, rows = await main.claim(3)
        await step("claim 1", _claimed(rows))
        await step("after claim 1", side.snapshot())
        album = next(row["id"] for row in rows if row["kind"] == "album")
        f1, f2, f3 = sorted(row["id"] for row in rows if row["parent_id"] == album)

        outcomes = Outcomes()
        outcomes.published(a, "track-ingestion-USRC17607839", "01INNGEST")
        outcomes.failed(b, "track-ingestion-USRC17607840-2", "400: bad event", 0.0)
        outcomes.skipped(f1, "already_indexed")
        outcomes.released(f2)
        outcomes.failed(f3, "track-ingestion-x", "400: no isrc", 3600.0)
        await step("stale token", main.record_outcomes(uuid.uuid4(), outcomes))
        await step("record 1", main.record_outcomes(token, outcomes))
        await step("record 1 again", main.record_outcomes(token, outcomes))
        await step("after record 1", side.snapshot())

        # Oldest next_attempt_at first: the empty album and c (enqueue time), then b before f2
        # (both due since record 1, by id); f3 waits an hour.
        token, rows = await main.claim(3)
        await step("claim 2", _claimed(rows))
        outcomes = Outcomes()
        outcomes.failed(b, "track-ingestion-USRC17607840-2", "400: bad again", 0.0)
        outcomes.skipped(c, "missing_isrc")
        await step("record 2", main.record_outcomes(token, outcomes))
        await step("after record 2", side.snapshot())

        # A lease that runs out: another replica claims the row, the first holder's outcome
        # no longer lands.
        short = side.store("short", lease_seconds=0.2, max_attempts=2)
        other = side.store("other", lease_seconds=30, max_attempts=2)
        try:
            stale, rows = await short.claim(10)
            await step("short claim", _claimed(rows))
            token, rows = await _claim_when_due(other, 10)
            await step("reclaimed", _claimed(rows))
            lost = Outcomes()
            lost.published(f2, "ev", "01LATE")
            await step("lease lost", short.record_outcomes(stale, lost))
            held = Outcomes()
            held.published(f2, "ev", "01OTHER")
            await step("lease held", other.record_outcomes(token, held))
            await step("empty outcomes", other.record_outcomes(token, Outcomes()))
            await step("nothing due", _claimed((await other.claim(10))[1]))
            await step("end", side.snapshot())
        finally:
            await short.close()
            await other.close()
    finally:
        await main.close()
    return steps


async def test_the_fake_outbox_claims_and_records_as_postgresql_does(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        real = await scenario(PostgresSide(database_url, conn))
    finally:
        await conn.close()
    fake = await scenario(FakeSide())
    for (name, want), (fake_name, got) in zip(real, fake, strict=True):
        assert fake_name == name
        assert got == want, f"step {name!r}: the fake differs from PostgreSQL"

    steps = dict(real)
    # What the contract is, said once more in plain terms (on PostgreSQL's results).
    statuses = {row[0]: row[10] for row in steps["end"]}
    assert sorted(statuses.values()) == [
        "dead", "fanned_out", "pending", "published", "published", "skipped", "skipped",
        "skipped",
    ]  # fmt: skip
    assert steps["stale token"] == 0 and steps["record 1"] == 5 and steps["record 1 again"] == 0
    assert steps["lease lost"] == 0 and steps["lease held"] == 1
    assert steps["nothing due"] == []


async def _sweeps(
    side: PostgresSide | FakeSide, busy_held: Callable[[], Awaitable[bool]]
) -> list[tuple[int, bool, bool, bool]]:
    """A relay's sweep (a claim without taking BUSY first) finding one row, then three: rows
    found, whether the relay holds BUSY after it (as it says, and as ``busy_held`` sees it),
    whether it owes a sweep."""
    store = side.store("sweeper", lease_seconds=30.0, max_attempts=3)
    seen: list[tuple[int, bool, bool, bool]] = []
    try:
        for count in (1, 3):
            for n in range(count):
                await side.enqueue_track(f"USSWP{count}{n:06d}", f"Song {n}")
            _, rows = await store.claim(10, wake=False, awake_after=2)
            seen.append((len(rows), store.awake, await busy_held(), store.owes_sweep))
        await store.step_down()  # (the loop clears owes_sweep itself, after its sweep)
        seen.append((0, store.awake, await busy_held(), store.owes_sweep))
    finally:
        await store.close()
    return seen


async def test_a_sweep_that_finds_a_stream_takes_busy_after_its_claim(database_url: str) -> None:
    """A trickle (one row) leaves the sweeping relay without BUSY, as before; a sweep that
    finds at least ``awake_after`` rows takes BUSY just after its claim (docs/wakeups.md), so
    writers stop notifying while it publishes them. Same on PostgreSQL and on the fake."""
    conn = await asyncpg.connect(database_url)

    async def in_pg_locks() -> bool:  # docs/wakeups.md's query for operators
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = outbox.wakeup_lock_class() AND objid = 2 AND granted"
        )
        return bool(held)

    try:
        real = await _sweeps(PostgresSide(database_url, conn), in_pg_locks)
    finally:
        await conn.close()
    assert real == [(1, False, False, False), (3, True, True, True), (0, False, False, True)]
    fake = FakeSide()

    async def fake_busy() -> bool:
        return fake.table.busy is not None

    assert await _sweeps(fake, fake_busy) == real
