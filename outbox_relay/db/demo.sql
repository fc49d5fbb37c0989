-- What `outbox-relay demo` shows of the outbox, and asks of a server before it uses it
-- (outbox_relay.cli.demo).

-- name: demo_skipped_tracks
SELECT id, coalesce(isrc, '-') AS isrc, title, skip_reason
FROM outbox.messages
WHERE status = 'skipped' AND kind = 'track'
ORDER BY id;

-- name: demo_summary
SELECT status, count, oldest_age FROM outbox.summary;

-- name: demo_pending_count
SELECT count(*) FROM outbox.messages WHERE status = 'pending';

-- name: demo_outbox_rows
-- Rows the demo did not write: it asks right after creating and migrating its own database.
SELECT count(*) FROM outbox.messages;

-- name: demo_relay_role_exists
-- Migration 004 creates this cluster-wide role when missing; the demo removes a role it created.
SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'outbox_relay_role');

-- name: demo_drop_relay_role
DROP ROLE IF EXISTS outbox_relay_role;
