"""Migrations: ordered, recorded, idempotent, serialised across replicas, append-only."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import asyncpg
import pytest

from outbox_relay.db.migrate import load_migrations, migrate, migrations_dir
from outbox_relay.errors import MigrationError

ALL = ["001_outbox", "002_library", "003_retention_and_history"]


async def test_migrate_applies_all_then_nothing(fresh_database_url: str) -> None:
    assert (await migrate(fresh_database_url))[:3] == ALL
    assert await migrate(fresh_database_url) == []
    conn = await asyncpg.connect(fresh_database_url)
    try:
        rows = await conn.fetch("SELECT version, name FROM outbox.schema_migrations ORDER BY 1")
    finally:
        await conn.close()
    assert [f"{r['version']:03d}_{r['name']}" for r in rows][:3] == ALL


async def test_concurrent_runs_apply_each_migration_once(fresh_database_url: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_database_url) for _ in range(6)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(m for m in {*applied}) and len(applied) == len(set(applied))
    assert set(applied) >= set(ALL)


async def test_an_edited_migration_is_refused(fresh_database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), folder)
    await migrate(fresh_database_url, folder)
    edited = folder / "002_library.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent comment\n")
    with pytest.raises(MigrationError, match="002_library was changed after it was applied"):
        await migrate(fresh_database_url, folder)


def test_repeated_numbers_and_stray_names_are_refused_gaps_are_not(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "003_c.sql").write_text("SELECT 1;")
    # Numbers are reserved per piece of work, so 003 may land before 002.
    assert [m.version for m in load_migrations(tmp_path)] == [1, 3]
    (tmp_path / "003_d.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share a number"):
        load_migrations(tmp_path)
    (tmp_path / "003_c.sql").unlink()
    (tmp_path / "003_d.sql").unlink()
    (tmp_path / "2-bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=re.escape("NNN_lower_snake.sql")):
        load_migrations(tmp_path)


async def test_a_reserved_number_landing_late_is_applied(
    fresh_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "001_a.sql").write_text("CREATE TABLE public.a (id int);")
    (tmp_path / "003_c.sql").write_text("CREATE TABLE public.c (id int);")
    assert await migrate(fresh_database_url, tmp_path) == ["001_a", "003_c"]
    (tmp_path / "002_b.sql").write_text("CREATE TABLE public.b (id int);")
    assert await migrate(fresh_database_url, tmp_path) == ["002_b"]
    assert await migrate(fresh_database_url, tmp_path) == []


async def test_a_failing_migration_leaves_nothing_behind(
    fresh_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "001_good.sql").write_text("CREATE TABLE public.good (id int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE public.half (id int); SELECT 1/0;")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(fresh_database_url, tmp_path)
    conn = await asyncpg.connect(fresh_database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('public.good') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('public.half') IS NULL")
        assert await conn.fetchval("SELECT count(*) FROM outbox.schema_migrations") == 1
    finally:
        await conn.close()


def _move(source: Path, target: Path, *, since: str) -> None:
    for path in sorted(source.glob("0*.sql")):
        if path.name >= since:
            path.rename(target / path.name)


async def test_an_index_built_concurrently_beforehand_is_kept_by_006(
    fresh_database_url: str, tmp_path: Path
) -> None:
    """operations.md: on a large table, build 006's index CONCURRENTLY first; migrate skips it."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), folder)
    _move(folder, tmp_path, since="006")  # hold 006 and what follows back
    await migrate(fresh_database_url, folder)
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute(
            "CREATE INDEX CONCURRENTLY messages_pending_created_idx ON outbox.messages "
            "(created_at) WHERE status = 'pending' AND created_at IS NOT NULL"
        )
        _move(tmp_path, folder, since="006")
        assert "006_pending_age_index" in await migrate(fresh_database_url, folder)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'messages_pending_created_idx'"
            )
            == 1
        )
    finally:
        await conn.close()
