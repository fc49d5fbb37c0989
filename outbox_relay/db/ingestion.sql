-- Every statement the ingestion worker runs, by name (parsed by outbox_relay.worker.store with
-- the same parser as queries.sql). The table and views are migrations/008_track_ingestion.sql.

-- name: record_indexing
-- A run starts: $1 isrc, $2 run id, $3 event id, $4 forced, $5 attempt (1-based).
-- indexed_at is kept: the previous point stays in Qdrant until this run replaces it.
INSERT INTO library.track_ingestion AS t
    (isrc, status, attempts, last_error, run_id, event_id, forced, started_at, updated_at)
VALUES ($1::text, 'indexing', $5::int, NULL, $2::text, $3::text, $4::boolean, now(), now())
ON CONFLICT (isrc) DO UPDATE
SET status     = 'indexing',
    attempts   = EXCLUDED.attempts,
    last_error = NULL,
    run_id     = EXCLUDED.run_id,
    event_id   = EXCLUDED.event_id,
    forced     = EXCLUDED.forced,
    started_at = now(),
    updated_at = now()
RETURNING started_at;

-- name: record_attempt_error
-- A step of run $2 failed on attempt $3 (1-based) with error $4; Inngest will retry it.
-- Only the run that owns the row writes: a late retry of an older run changes nothing.
UPDATE library.track_ingestion
SET attempts   = greatest(attempts, $3::int),
    last_error = $4::text,
    updated_at = now()
WHERE isrc = $1::text AND run_id = $2::text AND status = 'indexing';

-- name: record_attempt
-- A step of run $2 succeeded on attempt $3 (> 1): the run has needed that many attempts.
UPDATE library.track_ingestion
SET attempts   = greatest(attempts, $3::int),
    updated_at = now()
WHERE isrc = $1::text AND run_id = $2::text AND status = 'indexing';

-- name: record_indexed
-- Run $2 wrote the point of $1 (this step on attempt $3): whatever the row said, this run
-- wrote last. attempts keeps the most any step of this run needed.
INSERT INTO library.track_ingestion AS t
    (isrc, status, attempts, last_error, run_id, event_id, forced, started_at, updated_at,
     indexed_at)
VALUES ($1::text, 'indexed', $3::int, NULL, $2::text, $4::text, $5::boolean, now(), now(), now())
ON CONFLICT (isrc) DO UPDATE
SET status     = 'indexed',
    attempts   = CASE WHEN t.run_id = EXCLUDED.run_id
                      THEN greatest(t.attempts, EXCLUDED.attempts)
                      ELSE EXCLUDED.attempts END,
    last_error = NULL,
    run_id     = EXCLUDED.run_id,
    event_id   = EXCLUDED.event_id,
    forced     = EXCLUDED.forced,
    updated_at = now(),
    indexed_at = now()
RETURNING indexed_at;

-- name: record_failed
-- Run $2 (event $3, forced $4) gave up after $5 attempts with error $6. Recorded unless another
-- run owns the row (one in progress, or one that indexed the track): then the row keeps telling
-- where the track is, and the log line and track/ingestion.failed tell of this run.
-- Returns whether the row was written.
INSERT INTO library.track_ingestion AS t
    (isrc, status, attempts, last_error, run_id, event_id, forced, updated_at)
VALUES ($1::text, 'failed', $5::int, $6::text, $2::text, $3::text, $4::boolean, now())
ON CONFLICT (isrc) DO UPDATE
SET status     = 'failed',
    attempts   = greatest(t.attempts, EXCLUDED.attempts),
    last_error = EXCLUDED.last_error,
    run_id     = EXCLUDED.run_id,
    event_id   = coalesce(EXCLUDED.event_id, t.event_id),
    forced     = EXCLUDED.forced,
    updated_at = now()
WHERE t.run_id IS NOT DISTINCT FROM EXCLUDED.run_id OR t.status = 'failed'
RETURNING true AS written;

-- name: library_tracks
-- The library's newest entry for each ISRC of $1 (normalised), for forced re-ingestion.
SELECT DISTINCT ON (isrc) isrc, title, artist, album, artwork_url
FROM library.all_tracks
WHERE isrc = ANY ($1::text[])
ORDER BY isrc, added_at DESC, library_id DESC;

-- name: ingestion_status
-- The status row of each ISRC of $1, for tools and tests.
SELECT isrc, status, attempts, last_error, run_id, event_id, forced, started_at, updated_at,
       indexed_at
FROM library.track_ingestion
WHERE isrc = ANY ($1::text[])
ORDER BY isrc;
