-- Every statement the relay and the tools run, by name. Parsed once by outbox_relay.db.queries.
-- Parameters are positional ($1, ...) and typed here so asyncpg can prepare each statement once.

-- name: claim
-- Claims up to $1 claimable rows for claim token $2 (replica $3) for a lease of $4 seconds,
-- looking only at rows at or after the floor ($5, $6) in claim order (NULLs: all of them).
-- Album rows are fanned out in the same statement: their track rows are inserted already
-- claimed, and the album row itself is finished (fanned_out, or skipped when it has no
-- tracks). So a crash at any point leaves either the album pending or its tracks pending.
--
-- The floor keeps the claim off the dead head of messages_claim_idx: every claimed row leaves
-- its entry behind (the claim moves next_attempt_at, the outcome moves status), at the front
-- of the index, until VACUUM removes it, and autovacuum comes at most once a minute
-- (autovacuum_naptime). Without a floor every claim walked all of them: 0.7 ms a claim right
-- after a vacuum, 3-17 ms some seconds later at 4,500 writes a second. Each claim returns the
-- next floor (floor_at, floor_id; the same on every row): no row it left behind comes before
-- it. That is the earlier of the last row it picked (a full batch leaves rows after it; the id
-- breaks the tie between rows of one transaction, which share next_attempt_at) and one second
-- before the claim's start, because a row committed later carries its transaction's start
-- time (next_attempt_at's default is now()): only a transaction that ran longer than a second
-- can commit a row below the floor, and the relay's full claims (no floor) find those
-- (docs/wakeups.md, "The claim's floor").
WITH picked AS (
    SELECT id, next_attempt_at
    FROM outbox.messages
    WHERE status = 'pending' AND next_attempt_at <= now()
      AND (next_attempt_at, id)
          >= (coalesce($5::timestamptz, '-infinity'), coalesce($6::bigint, 0))
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), next_floor AS (
    SELECT CASE WHEN l.next_attempt_at < f.at THEN l.next_attempt_at ELSE f.at END AS floor_at,
           CASE WHEN l.next_attempt_at < f.at THEN l.id ELSE 0 END AS floor_id
    FROM (SELECT id, next_attempt_at FROM picked
          ORDER BY next_attempt_at DESC, id DESC LIMIT 1) AS l
    CROSS JOIN (SELECT now() - interval '1 second' AS at) AS f
), claimed AS (
    UPDATE outbox.messages AS m
    SET claim_token     = $2::uuid,
        claimed_by      = $3::text,
        next_attempt_at = now() + make_interval(secs => $4::float8),
        status          = CASE
                              WHEN m.kind = 'track' THEN m.status
                              WHEN jsonb_array_length(m.tracks) = 0 THEN 'skipped'
                              ELSE 'fanned_out'
                          END,
        skip_reason     = CASE
                              WHEN m.kind = 'album' AND jsonb_array_length(m.tracks) = 0
                                  THEN 'no_tracks'
                          END,
        processed_at    = CASE WHEN m.kind = 'album' THEN now() END
    -- `= ANY (ARRAY(...))`, not a join with picked: the planner cannot turn it into a hash
    -- join over a sequential scan of the whole table (it did, with many rows: see
    -- tests/db/test_claim_plan.py); it is always a primary-key lookup per claimed row.
    WHERE m.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING m.id, m.kind, m.parent_id, m.isrc, m.title, m.artist, m.album, m.artwork_url,
              m.priority, m.force, m.attempts, m.created_at, m.tracks, m.tidal_id
), fanned AS (
    -- An album track's catalog id (migration 010) survives the fan-out: the relay looks its
    -- ISRC up when the track has none.
    INSERT INTO outbox.messages AS m
        (kind, parent_id, isrc, tidal_id, title, artist, album, artwork_url, created_at,
         claim_token, claimed_by, next_attempt_at)
    SELECT 'track', c.id, t.track ->> 'isrc', t.track ->> 'tidalTrackId', t.track ->> 'title',
           coalesce(nullif(btrim(t.track ->> 'artist'), ''), c.artist),
           c.album, c.artwork_url, c.created_at,
           $2::uuid, $3::text, now() + make_interval(secs => $4::float8)
    FROM claimed AS c
    CROSS JOIN LATERAL jsonb_array_elements(c.tracks) WITH ORDINALITY AS t(track, position)
    WHERE c.kind = 'album'
    ORDER BY c.id, t.position
    RETURNING m.id, m.kind, m.parent_id, m.isrc, m.title, m.artist, m.album, m.artwork_url,
              m.priority, m.force, m.attempts, m.created_at,
              NULL::integer AS track_count, m.tidal_id
)
SELECT id, kind, parent_id, isrc, title, artist, album, artwork_url, priority, force, attempts,
       created_at,
       CASE WHEN kind = 'album' THEN jsonb_array_length(tracks) END AS track_count, tidal_id,
       f.floor_at, f.floor_id
FROM claimed CROSS JOIN next_floor AS f
UNION ALL
SELECT fanned.*, f.floor_at, f.floor_id FROM fanned CROSS JOIN next_floor AS f;

-- name: record_outcomes
-- Records the outcome of a claimed batch in one statement. Per row ($2): 'published',
-- 'skipped', 'failed' (Inngest rejected the event: an attempt is charged and the row is dead
-- after $8 attempts) or 'released' (an outage: no attempt charged, claimable again after its
-- retry_in, 0 but for rows waiting on a paused catalog lookup).
-- Only rows still holding claim token $1 are touched, so a relay whose lease expired and was
-- reclaimed by another replica cannot overwrite the newer outcome.
-- last_error is only ever current (migration 007): a rejection sets it and appends it to
-- error_history; publishing or skipping clears it; a release (an outage) leaves it as it was.
UPDATE outbox.messages AS m
SET status          = CASE u.outcome
                          WHEN 'failed' THEN
                              CASE WHEN m.attempts + 1 >= $8::int THEN 'dead' ELSE 'pending' END
                          WHEN 'released' THEN 'pending'
                          ELSE u.outcome
                      END,
    attempts        = m.attempts + (u.outcome = 'failed')::int,
    next_attempt_at = CASE u.outcome
                          WHEN 'failed' THEN now() + make_interval(secs => u.retry_in)
                          WHEN 'released' THEN now() + make_interval(secs => u.retry_in)
                          ELSE m.next_attempt_at
                      END,
    processed_at    = CASE
                          WHEN u.outcome IN ('published', 'skipped') THEN now()
                          WHEN u.outcome = 'failed' AND m.attempts + 1 >= $8::int THEN now()
                      END,
    claim_token     = NULL,
    event_id        = coalesce(u.event_id, m.event_id),
    inngest_id      = coalesce(u.inngest_id, m.inngest_id),
    skip_reason     = u.skip_reason,
    last_error      = CASE
                          WHEN u.outcome IN ('published', 'skipped') THEN NULL
                          ELSE coalesce(u.error, m.last_error)
                      END,
    error_history   = CASE
                          WHEN u.outcome = 'failed' AND u.error IS NOT NULL THEN
                              m.error_history || jsonb_build_array(jsonb_build_object(
                                  'at', now(), 'attempt', m.attempts + 1, 'error', u.error))
                          ELSE m.error_history
                      END
-- The plan matters (tests/db/test_claim_plan.py): claim_token is NULL in almost every row, so
-- a filter `m.claim_token = $1` makes the planner expect one row from messages and loop over
-- the whole unnest for it, which is quadratic in the batch (measured: 70 ms for 500 rows).
-- Comparing the token as a column of u makes it a join condition instead; `m.id = ANY ($3)`
-- finds the batch's rows by primary key, and the two sides meet in a hash join.
FROM unnest($3::bigint[], $2::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $9::float8[], array_fill($1::uuid, ARRAY[cardinality($3::bigint[])]))
         AS u(id, outcome, event_id, inngest_id, skip_reason, error, retry_in, token)
WHERE m.id = ANY ($3::bigint[]) AND m.id = u.id AND m.claim_token = u.token;

-- name: requeue_dead
-- Dead rows back to pending with fresh attempts: by id ($1, NULL for any) and/or by an error
-- substring ($2, NULL for any). Returns the ids requeued. The last error is no longer current:
-- it is cleared, and stays in error_history (migration 007).
UPDATE outbox.messages
SET status = 'pending', attempts = 0, next_attempt_at = now(), processed_at = NULL,
    claim_token = NULL, last_error = NULL
WHERE status = 'dead'
  AND ($1::bigint[] IS NULL OR id = ANY ($1::bigint[]))
  -- strpos, not LIKE: an operator's "50%" or "a_b" means those characters
  AND ($2::text IS NULL OR strpos(lower(last_error), lower($2::text)) > 0)
RETURNING id;

-- name: statuses_of
-- The status of each of the ids $1 that exists: why `requeue --id` left one alone.
SELECT id, status FROM outbox.messages WHERE id = ANY ($1::bigint[]);

-- name: summary
SELECT status, count, extract(epoch FROM oldest_age)::float8 AS oldest_age_seconds
FROM outbox.summary;

-- name: recent_dead_letters
SELECT id, kind, isrc, title, attempts, last_error, processed_at
FROM outbox.dead_letters
ORDER BY processed_at DESC NULLS LAST, id DESC
LIMIT $1;

-- name: gauges
-- The outbox gauges, refreshed on an interval (never per scrape). Each part walks a partial
-- index of pending or dead rows only, so done history does not make it slower; the oldest
-- pending row is one probe of messages_pending_created_idx, however large the backlog
-- (`created_at IS NOT NULL`, always true, is that index's predicate: see migration 006).
SELECT (SELECT count(*) FROM outbox.messages
        WHERE status = 'pending' AND created_at IS NOT NULL)                        AS pending,
       (SELECT count(*) FROM outbox.messages WHERE status = 'dead')                  AS dead,
       (SELECT extract(epoch FROM now() - min(created_at))::float8
        FROM outbox.messages
        WHERE status = 'pending' AND created_at IS NOT NULL)                        AS oldest_pending_age,
       (SELECT n_dead_tup FROM pg_stat_user_tables
        WHERE relid = 'outbox.messages'::regclass)                                   AS dead_tuples;

-- name: delete_finished
-- Deletes up to $2 published/skipped/fanned-out rows finished more than $1 seconds ago.
-- SKIP LOCKED and a small batch keep each transaction short and replicas out of each other's
-- way; dead rows are never deleted here.
WITH doomed AS (
    SELECT id
    FROM outbox.messages
    WHERE status IN ('published', 'skipped', 'fanned_out')
      AND processed_at < now() - make_interval(secs => $1::float8)
    ORDER BY processed_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM outbox.messages AS m
USING doomed
WHERE m.id = doomed.id;

-- name: ping
-- A round trip that proves a connection still answers (a half-open TCP connection never
-- reports itself).
SELECT 1;

-- name: wake_relays
-- Wakes every listening relay on channel $1 (outbox_relay.db.connection.NOTIFY_CHANNEL). The
-- trigger of outbox.messages only fires on INSERT; an UPDATE that makes rows claimable again
-- (requeueing dead letters) sends this.
SELECT pg_notify($1::text, '');

-- name: relay_awake
-- Takes BUSY on the claiming session when no relay holds it: writers stop notifying while this
-- relay drains (migration 011, docs/wakeups.md). True when this session holds it now.
SELECT outbox.relay_awake();

-- name: relay_step_down
-- Before sleeping: releases BUSY ($1: this session holds it) and tells whether every writer that
-- saw it held has ended (GATE clear); the relay then claims once more before it sleeps.
SELECT outbox.relay_step_down($1::boolean);

-- name: relay_gate_clear
-- Asked again, a moment later, while a writer that saw BUSY held is still in its transaction.
SELECT outbox.relay_gate_clear();

-- name: catalog_cached
-- The cached catalog answers (migration 010) for track ids $1 in country $2: an ISRC, or NULL
-- for an id the catalog did not return, which counts only while younger than $3 seconds.
SELECT tidal_id, isrc, title
FROM outbox.catalog_tracks
WHERE tidal_id = ANY ($1::text[]) AND country_code = $2::text
  AND (isrc IS NOT NULL OR looked_up_at > now() - make_interval(secs => $3::float8));

-- name: catalog_remember
-- Caches one lookup's answers: ids $1 with ISRCs $3 (NULL: not returned) and titles $4, for
-- country $2.
INSERT INTO outbox.catalog_tracks AS c (tidal_id, country_code, isrc, title, looked_up_at)
SELECT u.tidal_id, $2::text, u.isrc, u.title, now()
FROM unnest($1::text[], $3::text[], $4::text[]) AS u(tidal_id, isrc, title)
ON CONFLICT (tidal_id, country_code) DO UPDATE
SET isrc = excluded.isrc, title = excluded.title, looked_up_at = excluded.looked_up_at;
