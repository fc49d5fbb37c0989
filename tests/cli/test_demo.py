"""``outbox-relay demo`` run as a user runs it: a process, with the user's environment.

The demo must never touch a user's data (issue 8, point 1): an exported ``DATABASE_URL`` is left
alone, ``--database-url`` works in a database of the demo's own, and a relay is never started
on an outbox holding rows the demo did not write.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
import pytest

from outbox_relay.db.migrate import migrate
from outbox_relay.testing.postgres import LocalPostgres

if TYPE_CHECKING:
    # For annotations only: test modules do not import conftest at run time.
    from conftest import PgServer

# Whatever the developer running the suite has exported must not leak into the demo's runs.
USER_ENV = ("DATABASE_URL", "INNGEST_EVENT_API_BASE_URL", "INNGEST_EVENT_KEY", "INNGEST_DEV")


def demo(*args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in USER_ENV}
    return subprocess.run(
        [sys.executable, "-m", "outbox_relay", "demo", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def query(dsn: str, statement: LiteralString) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement).fetchall()


def enqueue_real_work(dsn: str) -> None:
    """What a user's database holds: a library row and its pending outbox row, not yet relayed."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(
            "WITH o AS (SELECT outbox.enqueue_track('GBUM71029604', 'Real Song', 'Real Artist', "
            "'Real Album') AS id) INSERT INTO library.tracks (isrc, title, artist, album, "
            "outbox_id) SELECT 'GBUM71029604', 'Real Song', 'Real Artist', 'Real Album', id FROM o"
        )


def snapshot(dsn: str) -> dict[str, Any]:
    """Everything of the user's database the demo could have touched."""
    return {
        "outbox": query(dsn, "SELECT * FROM outbox.messages ORDER BY id"),
        "tracks": query(dsn, "SELECT * FROM library.tracks ORDER BY id"),
        "albums": query(dsn, "SELECT * FROM library.albums ORDER BY id"),
    }


def schemas(dsn: str) -> set[str]:
    return {row[0] for row in query(dsn, "SELECT nspname FROM pg_namespace")}


def demo_databases(admin_dsn: str) -> list[str]:
    rows = query(
        admin_dsn, "SELECT datname FROM pg_database WHERE datname LIKE 'outbox\\_relay\\_demo\\_%'"
    )
    return [row[0] for row in rows]


def test_an_exported_database_url_is_left_alone(database_url: str) -> None:
    enqueue_real_work(database_url)
    before = snapshot(database_url)
    assert query(database_url, "SELECT status FROM outbox.messages") == [("pending",)]

    result = demo(DATABASE_URL=database_url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "DATABASE_URL is set and left alone" in result.stdout
    assert "a throwaway local server on 127.0.0.1:" in result.stdout
    assert "received 6 events" in result.stdout
    # The pending row is still pending, untouched to the last column; no demo rows beside it.
    assert snapshot(database_url) == before


def test_an_exported_database_url_gets_no_schemas(fresh_database_url: str) -> None:
    before = schemas(fresh_database_url)
    result = demo(DATABASE_URL=fresh_database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert schemas(fresh_database_url) == before
    assert not {"outbox", "library"} & before


def test_database_url_flag_works_in_a_database_of_its_own(
    database_url: str, pg_server: PgServer
) -> None:
    enqueue_real_work(database_url)
    before = snapshot(database_url)

    result = demo("--database-url", database_url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "YOUR server" in result.stdout and "(--database-url)" in result.stdout
    assert "database outbox_relay_demo_" in result.stdout
    assert "received 6 events" in result.stdout
    assert snapshot(database_url) == before
    # Its own database is gone again.
    assert demo_databases(pg_server.admin_dsn) == []


@pytest.fixture
def own_server() -> Iterator[LocalPostgres]:
    """A server of this test's own: it migrates template1, which no other test may see."""
    with LocalPostgres(fast=True) as pg:
        yield pg


def test_database_url_flag_leaves_a_server_as_it_found_it_or_refuses(
    own_server: LocalPostgres,
) -> None:
    admin = own_server.dsn
    roles = "SELECT rolname FROM pg_roles WHERE rolname = 'outbox_relay_role'"
    assert query(admin, roles) == []

    ran = demo("--database-url", admin)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # The cluster-wide role its migration created went with its database.
    assert query(admin, roles) == []
    assert demo_databases(admin) == []
    assert schemas(admin) == schemas(own_server.dsn_for("template1"))

    # A template1 with outbox rows hands them to every new database: the demo must refuse.
    template1 = own_server.dsn_for("template1")
    asyncio.run(migrate(template1))
    enqueue_real_work(template1)
    before = snapshot(template1)

    refused = demo("--database-url", admin)

    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "refusing to run a relay" in lines[0]
    assert "1 row(s) the demo did not write" in lines[0]
    assert snapshot(template1) == before
    assert demo_databases(admin) == []
