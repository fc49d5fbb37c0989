"""Applies the numbered plain-SQL files of ``migrations/`` in order.

Each file runs in its own transaction and is recorded in ``outbox.schema_migrations`` with
a checksum. A session-level advisory lock serialises concurrent runs, so every replica can run
``outbox-relay migrate`` at start-up: the first applies, the others wait and find nothing to do.
Migrations are append-only: editing one that was applied is refused.

A migration that needs a privilege the schema's owner may lack declares it in a header line::

    -- outbox-relay: requires CREATEROLE (why, in a few words)

Run by a role without it, ``migrate`` skips that migration (nothing of it is applied or
recorded), applies the others, and says how to finish: run ``migrate`` once as a role that has
the privilege, or have an admin run ``outbox-relay migrate --sql NNN`` through psql. A later
migration that depends on a skipped one declares the same requirement, so it waits with it.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Final

import asyncpg
import structlog
from psycopg import sql

from outbox_relay.db.queries import QUERIES
from outbox_relay.errors import MigrationError

log = structlog.get_logger(__name__)

# Arbitrary but fixed: every replica must take the same lock.
_ADVISORY_LOCK_KEY = 0x6F7574626F78  # "outbox"
_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_REQUIRES = re.compile(r"^-- outbox-relay: requires (?P<privilege>\S+)(?: \((?P<why>[^)]*)\))?\s*$")
# The privileges a migration may require, and how to tell whether the current role has them.
PRIVILEGES: Final = frozenset({"CREATEROLE"})
# Migration 004 was released before the marker existed, and its checksum forbids adding it.
_RELEASED_REQUIREMENTS: Final = {
    4: ("CREATEROLE", "it creates the cluster-wide NOLOGIN role outbox_relay_role"),
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    # The privilege it needs beyond owning the schema (see the module docstring), and why.
    requires: str | None = None
    requires_why: str | None = None

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"


@dataclass(frozen=True, slots=True)
class SkippedMigration:
    """A migration left for a role with ``privilege`` (``role`` lacks it)."""

    label: str
    privilege: str
    why: str | None
    role: str
    database: str

    def notice(self) -> str:
        """One line: what was skipped, why, and the two ways to finish it."""
        version = self.label[:3]
        reason = f" ({self.why})" if self.why else ""
        return (
            f'skipped {self.label}: it needs {self.privilege}, which role "{self.role}" lacks'
            f"{reason}; every other migration is applied. To finish it, run `outbox-relay "
            f"migrate` once as a role with {self.privilege}, or have an admin run: "
            f"outbox-relay migrate --sql {version} | psql -v ON_ERROR_STOP=1 "
            f"--single-transaction -d {self.database}"
        )


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What a run did: the labels applied, and the migrations left for a privileged role."""

    applied: list[str] = field(default_factory=list)
    skipped: list[SkippedMigration] = field(default_factory=list)


def _requirement(version: int, sql: str, file_name: str) -> tuple[str | None, str | None]:
    for line in sql.splitlines():
        match = _REQUIRES.match(line)
        if match is None:
            continue
        if match["privilege"] not in PRIVILEGES:
            raise MigrationError(
                f"{file_name}: requires {match['privilege']}: the privileges a migration may "
                f"require are {', '.join(sorted(PRIVILEGES))}"
            )
        return match["privilege"], match["why"]
    return _RELEASED_REQUIREMENTS.get(version, (None, None))


def migrations_dir() -> Path:
    """The folder holding the migrations: inside an installed wheel, or the repository's."""
    packaged = resources.files("outbox_relay") / "_migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(folder: Path | None = None) -> list[Migration]:
    """Reads and orders the migration files; refuses repeated numbers and stray names.

    Numbers may skip: they are reserved per piece of work (docs in the team's layout brief), so
    009 can land before 008. Each unapplied migration is applied in number order, also one
    numbered below a migration applied earlier (see :func:`migrate_connection`).
    """
    folder = folder or migrations_dir()
    if not folder.is_dir():
        raise MigrationError(f"migrations folder not found: {folder}")
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_lower_snake.sql")
        version, sql = int(match[1]), path.read_text(encoding="utf-8")
        requires, why = _requirement(version, sql, path.name)
        found.append(Migration(version, match[2], sql, requires, why))
    for before, migration in itertools.pairwise(found):
        if migration.version == before.version:
            raise MigrationError(
                f"migrations {before.version:03d}_{before.name} and "
                f"{migration.version:03d}_{migration.name} share a number; each number is used once"
            )
    return found


async def migrate(dsn: str, folder: Path | None = None) -> list[str]:
    """Applies every migration not yet applied; returns the names of those it applied."""
    return (await migrate_with_report(dsn, folder)).applied


async def migrate_with_report(dsn: str, folder: Path | None = None) -> MigrationReport:
    """Like :func:`migrate`; the report also lists the migrations skipped for a privilege."""
    migrations = load_migrations(folder)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        return await migrate_connection(conn, migrations)
    finally:
        await conn.close()


def admin_sql(version: int, folder: Path | None = None) -> str:
    """The SQL an admin runs (one transaction, in psql) to apply and record one migration."""
    found = [m for m in load_migrations(folder) if m.version == version]
    if not found:
        raise MigrationError(f"there is no migration numbered {version:03d}")
    migration = found[0]
    # A script for psql, so the record's values are written out, as literals quoted by psycopg.
    # The template is the package's own text (migrate.sql), never input.
    template = sql.SQL(QUERIES["migration_record_script"])
    record = (
        template.format(
            version=sql.Literal(migration.version),
            name=sql.Literal(migration.name),
            checksum=sql.Literal(migration.checksum),
        ).as_string(None)
        + ";\n"
    )
    need = f" (needs {migration.requires})" if migration.requires else ""
    return (
        f"-- outbox-relay migration {migration.label}{need}, for an admin to run in the\n"
        "-- application's database, in one transaction:\n"
        f"--   outbox-relay migrate --sql {migration.version:03d} | psql -v ON_ERROR_STOP=1 "
        "--single-transaction -d DATABASE\n"
        "-- The last statement records it, so `outbox-relay migrate` then finds it applied.\n"
        f"{migration.sql.rstrip()}\n\n{record}"
    )


async def migrate_connection(
    conn: asyncpg.Connection, migrations: list[Migration]
) -> MigrationReport:
    """Like :func:`migrate_with_report` on an open connection (left open)."""
    await conn.execute(QUERIES["migrations_lock"], _ADVISORY_LOCK_KEY)
    try:
        await conn.execute(QUERIES["migrations_bootstrap"])
        rows = await conn.fetch(QUERIES["migrations_applied"])
        applied = {row["version"]: row for row in rows}
        role = await conn.fetchrow(QUERIES["migrations_role"])
        assert role is not None
        held = {"CREATEROLE"} if role["rolsuper"] or role["rolcreaterole"] else set()
        done: list[str] = []
        skipped: list[SkippedMigration] = []
        for migration in migrations:
            label = migration.label
            previous = applied.get(migration.version)
            if previous is not None:
                if previous["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {label} was changed after it was applied; migrations are "
                        "append-only: restore the file and add a new migration instead"
                    )
                continue
            if migration.requires is not None and migration.requires not in held:
                # Nothing of it runs, nothing is recorded: a run with the privilege applies it
                # later, in number order, like any migration numbered below an applied one.
                skip = SkippedMigration(
                    label, migration.requires, migration.requires_why, role["rolname"],
                    role["database"],
                )  # fmt: skip
                log.warning(
                    "migration_skipped",
                    migration=label,
                    requires=migration.requires,
                    role=role["rolname"],
                    hint=f"run `outbox-relay migrate` as a role with {migration.requires}",
                )
                skipped.append(skip)
                continue
            if applied and migration.version < max(applied):
                # A reserved number that landed after a higher one (parallel work); the two touch
                # different objects by construction of the reservation.
                log.warning(
                    "migration_applied_out_of_order",
                    migration=label,
                    highest_applied=max(applied),
                )
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    QUERIES["migration_record"],
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration_applied", migration=label)
            done.append(label)
        unknown = sorted(set(applied) - {m.version for m in migrations})
        if unknown:
            log.warning(
                "migrations_unknown",
                versions=unknown,
                hint="the database is newer than this release of outbox-relay",
            )
        return MigrationReport(done, skipped)
    finally:
        await conn.execute(QUERIES["migrations_unlock"], _ADVISORY_LOCK_KEY)
