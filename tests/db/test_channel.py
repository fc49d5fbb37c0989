"""The NOTIFY channel is named once in Python, and the schema uses that same name.

Migrations are append-only, so the name written in the wake-up function (migration 018) cannot be
replaced by a reference to the constant; this test is what keeps the two from drifting apart.
"""

from __future__ import annotations

import asyncio
import re

import asyncpg

from outbox_relay.db.admin import requeue_dead
from outbox_relay.db.connection import NOTIFY_CHANNEL

_PG_NOTIFY = re.compile(r"pg_notify\s*\(\s*'(?P<channel>[^']*)'", re.IGNORECASE)


async def test_every_function_of_the_schema_notifies_the_python_channel(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT p.proname, p.prosrc FROM pg_proc AS p "
            "JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE n.nspname IN ('outbox', 'library') AND p.prosrc ILIKE '%pg_notify%'"
        )
    finally:
        await conn.close()
    channels = {
        (row["proname"], match["channel"])
        for row in rows
        for match in _PG_NOTIFY.finditer(row["prosrc"])
    }
    # Every pg_notify of the schema names its channel as a literal, and it is ours.
    assert sum(row["prosrc"].lower().count("pg_notify") for row in rows) == len(channels)
    assert {channel for _function, channel in channels} == {NOTIFY_CHANNEL}
    assert ("wake_sleeping_relays", NOTIFY_CHANNEL) in channels


async def _wait_for(received: asyncio.Queue[str], what: str) -> None:
    async with asyncio.timeout(5):
        while await received.get() != what:
            pass


async def test_an_enqueue_and_a_requeue_both_wake_a_listener_on_the_channel(
    database_url: str,
) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    writer = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(
            NOTIFY_CHANNEL, lambda *args: received.put_nowait(f"{args[2]}:{args[3]}")
        )
        row_id = await writer.fetchval("SELECT outbox.enqueue_track('USRC17607839', 't', 'a', 'b')")
        await _wait_for(received, f"{NOTIFY_CHANNEL}:")
        await writer.execute(
            "UPDATE outbox.messages SET status = 'dead', processed_at = now() WHERE id = $1",
            row_id,
        )
        assert await requeue_dead(writer, ids=[row_id]) == [row_id]
        await _wait_for(received, f"{NOTIFY_CHANNEL}:")
    finally:
        await writer.close()
        await listener.close()
