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
        claimed = await writer.fetch(QUERIES["claim"], 10, uuid.uuid4(), "r", 30.0)
        assert len(claimed) == 2  # the album and its fanned-out track
        empty = await writer.fetch(QUERIES["claim"], 10, uuid.uuid4(), "r", 30.0)
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
