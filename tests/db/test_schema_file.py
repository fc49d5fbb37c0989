"""``outbox_relay/db/schema.sql`` is the current schema: the catalog the migrations give.

When this fails after you added a migration, regenerate the file with one command:
``scripts/schema`` (it migrates a throwaway database and writes its schema-only dump, see
:mod:`outbox_relay.testing.schema`), then commit the file with the migration.

Both checks compare schema-only ``pg_dump`` outputs exactly; the only lines left out are those
pg_dump itself varies from run to run (its random ``\\restrict`` key and version lines). A
schema-only dump holds no rows, so the migrator's records in ``outbox.schema_migrations`` (which
a database loaded from the file lacks) need no normalising.
"""

from __future__ import annotations

import asyncpg

from outbox_relay.testing.schema import SCHEMA_FILE, dump_schema, render


def test_the_schema_file_is_what_the_migrations_give(database_url: str) -> None:
    # database_url is a clone of the session's template, migrated from empty by the migrator.
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render(dump_schema(database_url)), (
        "outbox_relay/db/schema.sql is stale: run scripts/schema and commit the result"
    )


async def test_loading_the_schema_file_gives_the_catalog_of_the_migrations(
    database_url: str, fresh_database_url: str
) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        # One simple-protocol batch, as psql -f would run it (the file has no psql commands).
        await conn.execute(SCHEMA_FILE.read_text(encoding="utf-8"))
    finally:
        await conn.close()
    assert dump_schema(fresh_database_url) == dump_schema(database_url)
