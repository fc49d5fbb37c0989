-- The inbound scan's statements, by name (parsed with outbox_relay.db.queries.parse).
-- Tables: migrations/009_scan.sql. Parameters are positional and typed.

-- name: scan_session
-- Names the run's session, so pg_stat_activity shows it (and the lock it holds).
SET application_name = 'outbox-relay scan';

-- name: scan_settings
SELECT key, value FROM library.settings WHERE key LIKE 'staging\_scan.%' ESCAPE '\';

-- name: scan_libraries
-- Every library of the two types the scan uses; the scan itself insists on exactly one of each.
SELECT id, name, type, path FROM library.libraries
WHERE type IN ('inbound', 'staging') ORDER BY type, id;

-- name: scan_try_lock
-- One run at a time across every process: a session-level advisory lock, held by the run's
-- connection for the whole run and released with it (also when the process dies).
SELECT pg_try_advisory_lock($1::bigint);

-- name: scan_unlock
SELECT pg_advisory_unlock($1::bigint);

-- name: scan_mark_interrupted
-- Runs a killed process left 'running' (only called while holding the lock, so none is live).
UPDATE library.scan_runs
SET status = 'interrupted', finished_at = clock_timestamp(),
    error = 'the process ended before the run finished'
WHERE status = 'running'
RETURNING id;

-- name: scan_run_start
INSERT INTO library.scan_runs (trigger, dry_run, host, inbound_path, staging_path, workers,
                               rate_limit)
VALUES ($1::text, $2::boolean, $3::text, $4::text, $5::text, $6::integer, $7::float8)
RETURNING id;

-- name: scan_run_finish
UPDATE library.scan_runs
SET finished_at = clock_timestamp(), status = $2::text, files_total = $3::integer,
    files_skipped = $4::integer, files_waiting = $5::integer, albums_total = $6::integer,
    albums_success = $7::integer, albums_failed = $8::integer, recovered = $9::integer,
    duration_ms = $10::bigint, error = $11::text
WHERE id = $1::bigint;

-- name: scan_last_success
-- When a run (of any process) last succeeded: the overdue alert's clock survives restarts.
SELECT max(finished_at) FROM library.scan_runs WHERE status IN ('success', 'partial');

-- name: scan_staged_paths
SELECT staging_path FROM library.staging_items WHERE staging_path = ANY ($1::text[]);

-- name: scan_journal_insert
INSERT INTO library.scan_journal (scan_id, staging_path, album, moves)
VALUES ($1::bigint, $2::text, $3::text::jsonb, $4::text::jsonb)
RETURNING id;

-- name: scan_journal_pending
SELECT id, scan_id, staging_path, album::text AS album, moves::text AS moves
FROM library.scan_journal ORDER BY id;

-- name: scan_journal_delete
DELETE FROM library.scan_journal WHERE id = $1::bigint;

-- name: scan_insert_album
-- The library row, as the write API writes an album (outbox_relay/http/write_api.py).
INSERT INTO library.albums (title, artist, artwork_url, tracks, outbox_id)
VALUES ($1::text, $2::text, NULL, $3::text::jsonb, $4::bigint)
RETURNING id;

-- name: scan_insert_staging_item
INSERT INTO library.staging_items (staging_path, scan_id, album_key, artist, album, year,
                                   track_count, files, album_id, outbox_id)
VALUES ($1::text, $2::bigint, $3::text, $4::text, $5::text, $6::integer, $7::integer,
        $8::text::jsonb, $9::bigint, $10::bigint)
RETURNING id;
