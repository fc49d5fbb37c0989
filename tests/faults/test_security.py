"""The relay as a role that may only touch the outbox, and no secret in any of its log lines.

``migrations/004_relay_role.sql`` creates ``outbox_relay_role``; a LOGIN role that is a member
of it (with a password in its DSN) runs a relay process end to end — tracks, an album, a
rejection, an Event API outage and recovery, lost database connections, retention — with every
secret the relay knows set to a recognisable value, and its whole output is searched for them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.parse
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from psycopg import sql

from outbox_relay.testing.inngest import Refuse, Reject, Status5xx

from .conftest import Fleet, refused_port

# Slow (long fault tests): CI runs them, -m "not slow" leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture
def relay_login(database_url: str) -> Iterator[tuple[str, str]]:
    """A LOGIN role in ``outbox_relay_role`` with a password; yields (its DSN, the password)."""
    name = f"relay_login_{secrets.token_hex(4)}"
    password = f"pg-secret-{secrets.token_hex(8)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE outbox_relay_role").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    parts = urllib.parse.urlsplit(database_url)
    netloc = f"{name}:{password}@{parts.hostname}:{parts.port}"
    try:
        yield urllib.parse.urlunsplit(parts._replace(netloc=netloc)), password
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


async def test_relay_role_runs_a_relay_end_to_end_and_no_secret_reaches_the_logs(
    fleet: Fleet, relay_login: tuple[str, str]
) -> None:
    dsn, db_password = relay_login
    secret_values = {
        "INNGEST_EVENT_KEY": f"evtkey-{secrets.token_hex(12)}",
        "OUTBOX_ADMIN_TOKEN": f"admintoken-{secrets.token_hex(12)}",
        "QDRANT_API_KEY": f"qdrantkey-{secrets.token_hex(12)}",
    }
    relay = await fleet.start(
        name="restricted",
        dsn=dsn,
        # A Qdrant server that refuses: the existence check fails (and logs) with the key set.
        QDRANT_URL=f"http://127.0.0.1:{refused_port()}",
        OUTBOX_QDRANT_TIMEOUT="0.3",
        OUTBOX_MAX_ATTEMPTS="1",
        OUTBOX_RETENTION_SECONDS="1",
        OUTBOX_REFRESH_INTERVAL="0.3",
        OUTBOX_LOG_LEVEL="debug",
        **secret_values,
    )
    conn = await fleet.conn()  # the superuser: the test's own view of the database

    # tracks, an album, and a rejected event
    await fleet.standin.inject(Reject(ids=frozenset({"track-ingestion-USSEC0000003"})))
    await fleet.enqueue_tracks(10, prefix="USSEC")
    await conn.execute(
        "SELECT outbox.enqueue_album('Rumours', 'Fleetwood Mac', $1::jsonb)",
        json.dumps(
            [{"isrc": "USWB10002390", "title": "Dreams"}, {"isrc": "USWB10002391", "title": "Go"}]
        ),
    )
    await fleet.standin.wait_for_events(11, timeout=20)
    await fleet.standin.clear()

    # an outage of each kind, and recovery
    for fault in (Refuse(), Status5xx(502, body="html")):
        await fleet.standin.inject(fault)
        await fleet.enqueue_tracks(5, prefix=f"USO{fault.kind[:2].upper()}")
        await asyncio.sleep(1.5)
        await fleet.standin.clear()
    # the relay's database connections dropped under it
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name LIKE 'outbox-relay%' AND datname = current_database()"
    )
    await fleet.enqueue_tracks(5, prefix="USAFT")
    await fleet.wait_drained(timeout=30)

    dead = await conn.fetch("SELECT event_id, last_error FROM outbox.dead_letters")
    assert [r["event_id"] for r in dead] == ["track-ingestion-USSEC0000003"]
    # retention deletes what is finished (the dead row stays)
    async with asyncio.timeout(30):
        while await conn.fetchval(  # noqa: ASYNC110 - polls the database, which has no event
            "SELECT count(*) FROM outbox.messages WHERE status <> 'dead'"
        ):
            await asyncio.sleep(0.2)
    assert fleet.standin.event_count >= 10 - 1 + 2 + 10 + 5
    assert relay.proc.poll() is None, relay.output()

    output = relay.output()
    assert '"retention_deleted"' in output
    assert '"inngest_recovered"' in output
    assert '"qdrant_error"' in output
    assert "permission denied" not in output
    for name, value in {**secret_values, "DATABASE_URL password": db_password}.items():
        assert value not in output, f"{name} appears in the relay's output"


async def test_relay_role_is_refused_everything_outside_the_outbox(
    fleet: Fleet, relay_login: tuple[str, str]
) -> None:
    dsn, _ = relay_login
    await fleet.enqueue_tracks(1, prefix="USPRV")
    conn = await asyncpg.connect(dsn)
    try:
        # what the relay does is allowed
        assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 1
        assert await conn.execute("UPDATE outbox.messages SET claimed_by = 'me'") == "UPDATE 1"
        assert await conn.fetchval("SELECT count FROM outbox.summary LIMIT 1") is not None
        # anything else is not
        refused = [
            "SELECT * FROM library.tracks",
            "SELECT * FROM library.albums",
            "UPDATE library.tracks SET title = 'x'",
            "DELETE FROM library.tracks",
            "DELETE FROM library.albums",
            "INSERT INTO library.tracks (title, artist, album, outbox_id) VALUES ('a','b','c',1)",
            "DELETE FROM outbox.schema_migrations",
            "UPDATE outbox.schema_migrations SET name = 'x'",
            "CREATE TABLE outbox.sneaky (id int)",
            "CREATE TABLE library.sneaky (id int)",
            "ALTER TABLE outbox.messages ADD COLUMN sneaky int",
            "DROP TABLE outbox.messages",
            "TRUNCATE outbox.messages",
        ]
        for statement in refused:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        assert not await conn.fetchval(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'outbox_relay_role'"
        )
    finally:
        await conn.close()
