-- What `outbox-relay demo` shows of the outbox, and asks of a server before it uses it
-- (outbox_relay.cli.demo).

-- name: demo_skipped_tracks
SELECT id, coalesce(isrc, 'tidal:' || tidal_id, '-') AS isrc, title, skip_reason
FROM outbox.messages
WHERE status = 'skipped' AND kind = 'track'
ORDER BY id;

-- name: demo_summary
SELECT status, count, oldest_age FROM outbox.summary;

-- name: demo_pending_count
SELECT count(*) FROM outbox.messages WHERE status = 'pending';

-- name: demo_waiting_for_ingestion
-- Published tracks whose ingestion has not ended yet (no run recorded, or one under way).
SELECT count(*)
FROM library.track_path
WHERE outbox_status = 'published' AND coalesce(ingestion_status, 'indexing') = 'indexing';

-- name: demo_catalog_lookups
-- The tracks the demo added by TIDAL id, with the ISRC the relay looked up (migration 010's
-- cache, country $1) and what became of each.
SELECT m.id, m.tidal_id, c.isrc, m.title, m.status, m.skip_reason
FROM outbox.messages AS m
LEFT JOIN outbox.catalog_tracks AS c ON c.tidal_id = m.tidal_id AND c.country_code = $1::text
WHERE m.kind = 'track' AND m.tidal_id IS NOT NULL
ORDER BY m.id;

-- name: demo_outbox_row
SELECT id, status, skip_reason, event_id FROM outbox.messages WHERE id = $1;

-- name: demo_track_path
-- "Where is each track?": every library track's path, in the order the outbox took them.
SELECT outbox_id, isrc, title, outbox_status, skip_reason, event_id, run_id, point_id,
       ingestion_status, attempts
FROM library.track_path
ORDER BY outbox_id NULLS LAST, added_as DESC, library_id;

-- name: demo_outbox_rows
-- Rows the demo did not write: it asks right after creating and migrating its own database.
SELECT count(*) FROM outbox.messages;

-- name: demo_relay_role_exists
-- Migration 004 creates this cluster-wide role when missing; the demo removes a role it created.
SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'outbox_relay_role');

-- name: demo_drop_relay_role
DROP ROLE IF EXISTS outbox_relay_role;
