-- What a command checks before it starts (outbox_relay.db.preflight), so that a database that
-- is not migrated is one clear line instead of a failing statement deep inside a loop.

-- name: preflight_schema
-- Whether the outbox exists, and whether this role may read the migrations' record (a relay
-- logged in as a member of outbox_relay_role may not: it never migrates).
SELECT to_regclass('outbox.messages') IS NOT NULL AS has_outbox,
       coalesce(has_table_privilege(to_regclass('outbox.schema_migrations'), 'SELECT'), false)
           AS can_read_record,
       current_user AS role,
       current_database() AS database;

-- name: preflight_applied
SELECT coalesce(array_agg(version ORDER BY version), '{}') AS versions
FROM outbox.schema_migrations;
