"""Applies the numbered plain-SQL files of ``migrations/`` in order.

Each file runs in its own transaction and is recorded in ``outbox.schema_migrations`` with
a checksum. A session-level advisory lock serialises concurrent runs, so every replica can run
``outbox-relay migrate`` at start-up: the first applies, the others wait and find nothing to do.
Migrations are append-only: editing one that was applied is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg
import structlog

from outbox_relay.db.queries import QUERIES
from outbox_relay.errors import MigrationError

log = structlog.get_logger(__name__)

# Arbitrary but fixed: every replica must take the same lock.
_ADVISORY_LOCK_KEY = 0x6F7574626F78  # "outbox"
_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


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
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    for before, migration in itertools.pairwise(found):
        if migration.version == before.version:
            raise MigrationError(
                f"migrations {before.version:03d}_{before.name} and "
                f"{migration.version:03d}_{migration.name} share a number; each number is used once"
            )
    return found


async def migrate(dsn: str, folder: Path | None = None) -> list[str]:
    """Applies every migration not yet applied; returns the names of those it applied."""
    migrations = load_migrations(folder)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        return await migrate_connection(conn, migrations)
    finally:
        await conn.close()


async def migrate_connection(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    """Like :func:`migrate` on an open connection (left open)."""
    await conn.execute(QUERIES["migrations_lock"], _ADVISORY_LOCK_KEY)
    try:
        await conn.execute(QUERIES["migrations_bootstrap"])
        rows = await conn.fetch(QUERIES["migrations_applied"])
        applied = {row["version"]: row for row in rows}
        done: list[str] = []
        for migration in migrations:
            label = f"{migration.version:03d}_{migration.name}"
            previous = applied.get(migration.version)
            if previous is not None:
                if previous["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {label} was changed after it was applied; migrations are "
                        "append-only: restore the file and add a new migration instead"
                    )
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
        return done
    finally:
        await conn.execute(QUERIES["migrations_unlock"], _ADVISORY_LOCK_KEY)
