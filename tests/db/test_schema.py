"""The outbox schema's behaviour: notifications, the summary view, validation."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import pytest

from outbox_relay.db.connection import NOTIFY_CHANNEL
from outbox_relay.db.queries import QUERIES


async def _listen(dsn: str) -> tuple[asyncpg.Connection, list[str]]:
    conn = await asyncpg.connect(dsn)
    received: list[str] = []
    # a listener is called with (connection, pid, channel, payload)
    await conn.add_listener(NOTIFY_CHANNEL, lambda *args: received.append(args[3]))
    return conn, received


async def _received(
    writer: asyncpg.Connection, listener: asyncpg.Connection, received: list[str]
) -> list[str]:
    """Every payload the listener got until now: a marker sent after them all closes the list.

    Notifications reach a listener in commit order, so once the marker has arrived, every
    notification committed before it has too. No sleeping, no guessing.
    """
    await writer.execute("SELECT pg_notify($1, 'marker')", NOTIFY_CHANNEL)
    async with asyncio.timeout(5):
        while "marker" not in received:
            # A round trip on the listening connection delivers what was already sent to it.
            await listener.fetchval("SELECT 1")
            await asyncio.sleep(0)
    return received


async def test_a_1000_row_insert_sends_one_notification(database_url: str) -> None:
    listener, received = await _listen(database_url)
    writer = await asyncpg.connect(database_url)
    try:
        await writer.execute(
            "SELECT outbox.enqueue_track('USRC1' || lpad(i::text, 7, '0'), 't', 'a', 'b') "
            "FROM generate_series(1, 1000) AS i"
        )
        assert await _received(writer, listener, received) == ["", "marker"]
    finally:
        await writer.close()
        await listener.close()


async def test_the_outbox_row_can_ride_in_the_applications_own_insert(database_url: str) -> None:
    """The README's one-round-trip form: the library row and its linked outbox row in a single
    statement, one notification at commit, nothing if the statement fails."""
    listener, received = await _listen(database_url)
    writer = await asyncpg.connect(database_url)
    insert = (
        "INSERT INTO library.tracks (isrc, title, artist, album, outbox_id) "
        "VALUES ($1, $2, $3, $4, outbox.enqueue_track($1, $2, $3, $4)) RETURNING outbox_id"
    )
    try:
        outbox_id = await writer.fetchval(insert, "usrc17607839", "Song", "Artist", "Album")
        row = await writer.fetchrow(
            "SELECT m.isrc, t.isrc AS library_isrc FROM outbox.messages m "
            "JOIN library.tracks t ON t.outbox_id = m.id WHERE m.id = $1",
            outbox_id,
        )
        assert tuple(row) == ("usrc17607839", "usrc17607839")  # the relay normalises it
        with pytest.raises(asyncpg.DataError, match="enqueue_track: title"):
            await writer.fetchval(insert, "USRC17607840", " ", "Artist", "Album")
        assert await writer.fetchval("SELECT count(*) FROM outbox.messages") == 1
        assert await writer.fetchval("SELECT count(*) FROM library.tracks") == 1
        assert await _received(writer, listener, received) == ["", "marker"]
    finally:
        await writer.close()
        await listener.close()


async def test_claims_and_fan_outs_send_no_notification(database_url: str) -> None:
    """Otherwise every claim would wake every relay, whose claims would wake them again."""
    writer = await asyncpg.connect(database_url)
    await writer.execute(
        """SELECT outbox.enqueue_album('A', 'B', '[{"isrc": "USRC17600001", "title": "t"}]')"""
    )
    listener, received = await _listen(database_url)
    try:
        claimed = await writer.fetch(QUERIES["claim"], 10, uuid.uuid4(), "r", 30.0, None, None)
        assert len(claimed) == 2  # the album and its fanned-out track
        empty = await writer.fetch(QUERIES["claim"], 10, uuid.uuid4(), "r", 30.0, None, None)
        assert empty == []
        assert await _received(writer, listener, received) == ["marker"]
    finally:
        await writer.close()
        await listener.close()


async def test_summary_has_a_row_for_every_status(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT status, count FROM outbox.summary")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        ("pending", 0),
        ("published", 0),
        ("skipped", 0),
        ("dead", 0),
        ("fanned_out", 0),
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("outbox.enqueue_track('x', E'\\t\\n', 'a', 'b')", "title must be a non-empty string"),
        ("outbox.enqueue_track('x', 't', 'a', 'b', -601)", "priority must be an integer"),
        ("outbox.enqueue_track('x', 't', repeat('a', 1001), 'b')", "artist must be at most 1000"),
        ("outbox.enqueue_album('a', 'b', '\"x\"')", "tracks must be a JSON array (got string)"),
        ("outbox.enqueue_album('a', 'b', NULL)", "tracks must be a JSON array (got null)"),
        ("outbox.enqueue_album('a', 'b', '[1]')", "tracks[0] must be an object"),
        (
            "outbox.enqueue_album('a', 'b', '[{\"title\": \"t\", \"isrc\": 5}]')",
            "tracks[0].isrc must be a string or null",
        ),
    ],
)
async def test_enqueue_functions_name_the_field_and_rule(
    database_url: str, call: str, message: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.PostgresError, match=re.escape(message)):
            await conn.execute(f"SELECT {call}")
        assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0
    finally:
        await conn.close()


async def test_a_title_made_of_letters_v_is_not_whitespace(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT outbox.enqueue_track('x', 'vvv', 'v', 'v')") == 1
    finally:
        await conn.close()


# -- wake-ups only for a sleeping relay (migrations 011 and 018, docs/wakeups.md) ------------------

# Each enqueue function, writing one application row for a given ISRC.
_ENQUEUES = {
    "enqueue_track": "SELECT outbox.enqueue_track($1, 't', 'a', 'b')",
    "enqueue_track_by_tidal_id": (
        "SELECT outbox.enqueue_track_by_tidal_id('77646169', 't', 'a', 'b', isrc => $1)"
    ),
    "enqueue_album": (
        "SELECT outbox.enqueue_album('t', 'a', jsonb_build_array("
        "jsonb_build_object('isrc', $1::text, 'title', 't')))"
    ),
}


async def _wake_ups(
    writer: asyncpg.Connection, listener: asyncpg.Connection, received: list[str], sql: str, *args
) -> int:
    """Notifications sent by one write: the list up to a fresh marker sent after it."""
    before = len(received)
    await writer.execute(sql, *args)
    marker = f"marker-{len(received)}-{args}"
    await writer.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, marker)
    async with asyncio.timeout(5):
        while marker not in received:
            await listener.fetchval("SELECT 1")  # delivers what was already sent to it
    return received[before:].count("")


@pytest.mark.parametrize("function", list(_ENQUEUES))
async def test_a_write_wakes_the_relays_only_while_none_is_awake(
    database_url: str, function: str
) -> None:
    listener, received = await _listen(database_url)
    writer = await asyncpg.connect(database_url)
    relay = await asyncpg.connect(database_url)

    async def wake_ups_for(isrc: str) -> int:
        return await _wake_ups(writer, listener, received, _ENQUEUES[function], isrc)

    try:
        assert await wake_ups_for("USGATE000001") == 1  # no relay awake: wake one
        assert await relay.fetchval(QUERIES["relay_awake"]) is True  # a relay drains
        assert await wake_ups_for("USGATE000002") == 0  # no commit waits on a wake-up
        assert await relay.fetchval(QUERIES["relay_step_down"], True) is True  # and sleeps
        assert await wake_ups_for("USGATE000003") == 1
    finally:
        for conn in (writer, relay, listener):
            await conn.close()


async def test_a_row_inserted_by_hand_wakes_a_relay_only_when_asked(database_url: str) -> None:
    """Wake-ups come from the enqueue functions (migration 018), not from a trigger: a row
    inserted into outbox.messages directly is found by an awake relay or the next poll, or wakes
    a sleeping one if its transaction calls outbox.wake_sleeping_relays()."""
    listener, received = await _listen(database_url)
    writer = await asyncpg.connect(database_url)
    insert = (
        "INSERT INTO outbox.messages (kind, isrc, title, artist, album) "
        "VALUES ('track', $1, 't', 'a', 'b')"
    )
    try:
        assert await _wake_ups(writer, listener, received, insert, "USHAND000001") == 0
        by_hand_and_asked = (
            f"WITH inserted AS ({insert} RETURNING id) SELECT outbox.wake_sleeping_relays()"
        )
        assert await _wake_ups(writer, listener, received, by_hand_and_asked, "USHAND000002") == 1
        assert await writer.fetchval("SELECT count(*) FROM outbox.messages") == 2
    finally:
        await writer.close()
        await listener.close()


async def test_one_relay_at_a_time_is_the_awake_one(database_url: str) -> None:
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        assert await first.fetchval(QUERIES["relay_awake"]) is True
        assert await second.fetchval(QUERIES["relay_awake"]) is False
        await first.close()  # a relay that dies drops BUSY with its session
        assert await second.fetchval(QUERIES["relay_awake"]) is True
    finally:
        await second.close()


async def test_a_relay_stepping_down_waits_for_writers_that_saw_it_awake(
    database_url: str,
) -> None:
    """The race the gate closes: a writer that skipped its notification because the relay was
    awake commits after the relay's last claim. The relay learns the gate is clear only once
    that writer has ended, so its sweep starts after the commit and sees the row."""
    relay = await asyncpg.connect(database_url)
    writer = await asyncpg.connect(database_url)
    late = await asyncpg.connect(database_url)
    try:
        assert await relay.fetchval(QUERIES["relay_awake"]) is True
        transaction = writer.transaction()
        await transaction.start()
        await writer.execute("SELECT outbox.enqueue_track('USGATE000010', 't', 'a', 'b')")
        assert await relay.fetchval(QUERIES["relay_step_down"], True) is False
        # A writer that comes after the step-down is not waited for: it notifies instead, and
        # never blocks on the relay.
        async with asyncio.timeout(2):
            await late.execute("SELECT outbox.enqueue_track('USGATE000011', 't', 'a', 'b')")
        assert await relay.fetchval(QUERIES["relay_gate_clear"]) is False
        await transaction.commit()
        assert await relay.fetchval(QUERIES["relay_gate_clear"]) is True
        visible = await relay.fetchval(
            "SELECT count(*) FROM outbox.messages WHERE isrc LIKE 'USGATE%' AND status = 'pending'"
        )
        assert visible == 2
    finally:
        for conn in (relay, writer, late):
            await conn.close()


async def test_a_rolled_back_write_leaves_the_gate_clear(database_url: str) -> None:
    relay = await asyncpg.connect(database_url)
    writer = await asyncpg.connect(database_url)
    try:
        assert await relay.fetchval(QUERIES["relay_awake"]) is True
        transaction = writer.transaction()
        await transaction.start()
        await writer.execute("SELECT outbox.enqueue_track('USGATE000020', 't', 'a', 'b')")
        await transaction.rollback()
        assert await relay.fetchval(QUERIES["relay_step_down"], True) is True
    finally:
        for conn in (relay, writer):
            await conn.close()
