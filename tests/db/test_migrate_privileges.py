"""``migrate`` run by a database owner without CREATEROLE, with a real role of that kind.

The role step (migration 004 creates the cluster-wide role ``outbox_relay_role``) is skipped
with a notice naming the SQL an admin runs; every other migration is applied; and a later run
with the privilege, or the admin's SQL, finishes it. Nothing is ever half-applied.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from outbox_relay.db.migrate import admin_sql, load_migrations, migrate, migrate_with_report
from outbox_relay.errors import MigrationError

# Slow (roles and owners on a server of its own): CI runs it, -m "not slow" leaves it out.
pytestmark = pytest.mark.slow

if TYPE_CHECKING:
    # For annotations only: test modules do not import conftest at run time.
    from conftest import PgServer

NOTICE = (
    'outbox-relay migrate: skipped 004_relay_role: it needs CREATEROLE, which role "{role}" '
    "lacks (it creates the cluster-wide NOLOGIN role outbox_relay_role); every other migration "
    "is applied. To finish it, run `outbox-relay migrate` once as a role with CREATEROLE, or "
    "have an admin run: outbox-relay migrate --sql 004 | psql -v ON_ERROR_STOP=1 "
    "--single-transaction -d {database}"
)


@dataclass(frozen=True)
class OwnedDatabase:
    """An empty database owned by ``role``, a LOGIN role without CREATEROLE or SUPERUSER."""

    role: str
    name: str
    owner_dsn: str  # connects as the role
    admin_dsn: str  # the same database as the superuser


@pytest.fixture
def owned_database(pg_server: PgServer) -> Iterator[OwnedDatabase]:
    role = f"owner_{secrets.token_hex(4)}"
    name = f"outbox_test_owned_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        try:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOCREATEROLE NOSUPERUSER NOCREATEDB").format(
                    sql.Identifier(role)
                )
            )
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test server's role cannot create roles")
    try:
        pg_server.create_database(name)
        with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(name), sql.Identifier(role)
                )
            )
        admin_dsn = pg_server.dsn_for(name)
        parts = urllib.parse.urlsplit(admin_dsn)
        host = parts.netloc.rsplit("@", 1)[-1]
        owner_dsn = urllib.parse.urlunsplit(parts._replace(netloc=f"{role}@{host}"))
        yield OwnedDatabase(role, name, owner_dsn, admin_dsn)
    finally:
        pg_server.drop_database(name)
        with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _cli(*args: str, dsn: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if dsn is not None:
        env["DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "outbox_relay", *args],
        env={**env, "OUTBOX_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _applied(dsn: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT version FROM outbox.schema_migrations ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def _notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("{")]


def test_an_owner_without_createrole_gets_every_migration_but_the_role_step(
    owned_database: OwnedDatabase,
) -> None:
    everything = [m.version for m in load_migrations()]
    without_role = [v for v in everything if v != 4]
    notice = NOTICE.format(role=owned_database.role, database=owned_database.name)

    first = _cli("migrate", dsn=owned_database.owner_dsn)

    assert first.returncode == 0, first.stderr
    labels = [m.label for m in load_migrations() if m.version != 4]
    assert first.stdout == f"applied {len(labels)} migration(s): {', '.join(labels)}\n"
    assert _notices(first.stderr) == [notice]
    assert '"event":"migration_skipped"' in first.stderr
    assert _applied(owned_database.admin_dsn) == without_role
    # The outbox works without the role: an application enqueues as the owner.
    with psycopg.connect(owned_database.owner_dsn, autocommit=True) as conn:
        conn.execute("SELECT outbox.enqueue_track('USRC17600001', 't', 'a', 'b')")

    # Run again by the same owner: nothing new, the same notice, still nothing half-done.
    again = _cli("migrate", dsn=owned_database.owner_dsn)
    assert (again.returncode, again.stdout) == (0, "applied 0 migration(s)\n")
    assert _notices(again.stderr) == [notice]

    # A run with the privilege (here the superuser) finishes the role step.
    privileged = _cli("migrate", dsn=owned_database.admin_dsn)
    assert (privileged.returncode, privileged.stdout) == (
        0,
        "applied 1 migration(s): 004_relay_role\n",
    )
    assert _notices(privileged.stderr) == []
    assert _applied(owned_database.admin_dsn) == everything
    with psycopg.connect(owned_database.admin_dsn, autocommit=True) as conn:
        granted = conn.execute(
            "SELECT has_table_privilege('outbox_relay_role', 'outbox.messages', 'UPDATE')"
        ).fetchone()
    assert granted == (True,)
    final = _cli("migrate", dsn=owned_database.owner_dsn)
    assert (final.stdout, _notices(final.stderr)) == ("applied 0 migration(s)\n", [])


def test_the_admin_sql_finishes_the_role_step_and_records_it(
    owned_database: OwnedDatabase,
) -> None:
    assert _cli("migrate", dsn=owned_database.owner_dsn).returncode == 0

    printed = _cli("migrate", "--sql", "004")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == admin_sql(4)
    # What an admin does with psql: the whole script in one transaction, as the superuser.
    with psycopg.connect(owned_database.admin_dsn) as conn:
        conn.execute(printed.stdout.encode())

    assert _applied(owned_database.admin_dsn) == [m.version for m in load_migrations()]
    after = _cli("migrate", dsn=owned_database.owner_dsn)
    assert (after.returncode, after.stdout, _notices(after.stderr)) == (
        0,
        "applied 0 migration(s)\n",
        [],
    )


async def test_a_new_migration_declares_its_privilege_with_a_marker(
    owned_database: OwnedDatabase, tmp_path: Path
) -> None:
    (tmp_path / "001_a.sql").write_text("CREATE TABLE public.a (id int);")
    (tmp_path / "002_role.sql").write_text(
        "-- outbox-relay: requires CREATEROLE (it creates a role)\n"
        "CREATE TABLE public.half (id int);\n"
        "COMMENT ON TABLE public.half IS 'never without its privilege';\n"
    )
    (tmp_path / "003_c.sql").write_text("CREATE TABLE public.c (id int);")

    report = await migrate_with_report(owned_database.owner_dsn, tmp_path)

    assert report.applied == ["001_a", "003_c"]
    assert [(s.label, s.privilege, s.why) for s in report.skipped] == [
        ("002_role", "CREATEROLE", "it creates a role")
    ]
    with psycopg.connect(owned_database.admin_dsn, autocommit=True) as conn:
        # Nothing of the skipped migration ran.
        assert conn.execute("SELECT to_regclass('public.half')").fetchone() == (None,)
    assert await migrate(owned_database.admin_dsn, tmp_path) == ["002_role"]

    (tmp_path / "004_odd.sql").write_text("-- outbox-relay: requires SUPERPOWERS\nSELECT 1;")
    with pytest.raises(MigrationError, match=r"004_odd\.sql: requires SUPERPOWERS"):
        load_migrations(tmp_path)
