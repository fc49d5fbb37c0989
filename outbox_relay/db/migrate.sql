-- The migrator's own bookkeeping (outbox_relay.db.migrate); the migrations themselves are the
-- numbered files of migrations/.

-- name: migrations_lock
-- Serialises concurrent runs: every replica takes the same session-level lock ($1).
SELECT pg_advisory_lock($1::bigint);

-- name: migrations_unlock
SELECT pg_advisory_unlock($1::bigint);

-- name: migrations_bootstrap
-- The record of applied migrations, before any migration runs (so before the schema exists).
CREATE SCHEMA IF NOT EXISTS outbox;
CREATE TABLE IF NOT EXISTS outbox.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_role
-- Who is migrating: migrations that need CREATEROLE are skipped without it (see migrate.py).
SELECT rolname, rolsuper, rolcreaterole, current_database() AS database
FROM pg_catalog.pg_roles
WHERE rolname = current_user;

-- name: migrations_applied
SELECT version, name, checksum FROM outbox.schema_migrations;

-- name: migration_record
-- In the migration's own transaction: the migration and its record commit together.
INSERT INTO outbox.schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: migration_record_script
-- The record that ends the script `outbox-relay migrate --sql NNN` prints for an admin to run
-- with psql (not by this driver, so no parameters): admin_sql writes the values in as literals
-- with psycopg's quoting ({version}, {name}, {checksum}), never by string formatting.
INSERT INTO outbox.schema_migrations (version, name, checksum)
VALUES ({version}, {name}, {checksum})
ON CONFLICT (version) DO NOTHING;
