-- The operator's web page (outbox_relay/http/ui.py): one or two statements a page, each walking
-- an index (tests/db/test_ui_plans.py EXPLAINs every one). Pagination is by keyset, never OFFSET.
-- Indexes: migrations 001/003/006 (outbox), 002/008/009 (library), 012, 016, 017 (this page's own).

-- name: ui_overview
-- Everything the overview shows, in one statement. Exact counts where an operator acts on them
-- (pending, due, dead: walks of small partial indexes); the finished statuses are the planner's
-- estimate (reltuples × the status column's most-common-value frequencies), since counting a
-- million finished rows exactly would cost more than the whole page may.
-- per_minute: events published in each of the last 60 minutes (messages_finished_idx);
-- replicas: who finished the last 1,000 rows, and when each last did (the same index, backwards).
SELECT (SELECT count(*) FROM outbox.messages
        WHERE status = 'pending' AND created_at IS NOT NULL)                       AS pending,
       (SELECT count(*) FROM outbox.messages
        WHERE status = 'pending' AND next_attempt_at <= now())                     AS pending_due,
       (SELECT count(*) FROM outbox.messages WHERE status = 'dead')                AS dead,
       (SELECT extract(epoch FROM now() - min(created_at))::float8
        FROM outbox.messages
        WHERE status = 'pending' AND created_at IS NOT NULL)                       AS oldest_pending_age,
       (SELECT greatest(reltuples, 0)::float8 FROM pg_class
        WHERE oid = 'outbox.messages'::regclass)                                   AS estimated_rows,
       (SELECT jsonb_object_agg(u.value, u.freq)
        FROM pg_stats AS s,
             unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS u(value, freq)
        WHERE s.schemaname = 'outbox' AND s.tablename = 'messages'
          AND s.attname = 'status')                                                AS status_freqs,
       (SELECT coalesce(jsonb_object_agg(minute, n), '{}'::jsonb)
        FROM (SELECT (extract(epoch FROM now() - processed_at) / 60)::int AS minute,
                     count(*) AS n
              FROM outbox.messages
              WHERE status = 'published' AND processed_at > now() - interval '1 hour'
              GROUP BY 1) AS m)                                                    AS per_minute,
       (SELECT coalesce(jsonb_agg(r ORDER BY r.last_finished_at DESC), '[]'::jsonb)
        FROM (SELECT claimed_by AS replica, max(processed_at) AS last_finished_at,
                     count(*) AS rows_finished
              FROM (SELECT claimed_by, processed_at
                    FROM outbox.messages
                    WHERE status IN ('published', 'skipped', 'fanned_out')
                    ORDER BY processed_at DESC
                    LIMIT 1000) AS recent
              GROUP BY claimed_by) AS r)                                           AS replicas;

-- name: ui_dead_page
-- Dead letters, newest first, after keyset cursor $1 (an id; the first page passes the largest
-- bigint), $2 rows, optionally only those whose last error is exactly $3.
SELECT id, kind, parent_id, isrc, title, artist, album, attempts, last_error, event_id,
       created_at, processed_at, tracks, error_history
FROM outbox.messages
WHERE status = 'dead' AND id < $1::bigint
  AND ($3::text IS NULL OR last_error = $3::text)
ORDER BY id DESC
LIMIT $2::int;

-- name: ui_dead_errors
-- The errors of the 10,000 newest dead letters, most frequent first, each with how many rows
-- and the newest id (the "requeue all with this error" button requeues up to that id, so a
-- row that dies after the operator looked is not requeued unseen).
SELECT last_error, count(*) AS n, max(id) AS up_to
FROM (SELECT last_error, id
      FROM outbox.messages
      WHERE status = 'dead'
      ORDER BY id DESC
      LIMIT 10000) AS recent
GROUP BY last_error
ORDER BY n DESC, up_to DESC
LIMIT 20;

-- name: ui_dead_count_ids
-- How many of the ids $1 are dead now: the confirmation's number.
SELECT count(*) FROM outbox.messages WHERE status = 'dead' AND id = ANY ($1::bigint[]);

-- name: ui_dead_count_error
-- How many dead letters have exactly the error $1 and an id up to $2: the confirmation's number.
SELECT count(*) FROM outbox.messages
WHERE status = 'dead' AND id <= $2::bigint AND last_error = $1::text;

-- name: ui_requeue_error
-- Dead letters whose last error is exactly $1, with an id up to $2, back to pending with fresh
-- attempts. Rows no longer dead are left alone, so repeating it requeues nothing more. As
-- requeue_dead: the last error is no longer current and stays in error_history (migration 007).
UPDATE outbox.messages
SET status = 'pending', attempts = 0, next_attempt_at = now(), processed_at = NULL,
    claim_token = NULL, last_error = NULL
WHERE status = 'dead' AND id <= $2::bigint AND last_error = $1::text
RETURNING id;

-- name: ui_pending_page
-- Pending rows in the order the relay claims them (messages_claim_idx), after keyset cursor
-- ($1, $2) = (next_attempt_at, id), $3 rows; with what says why each one waits.
SELECT id, kind, isrc, title, artist, attempts, next_attempt_at, created_at, last_error,
       claimed_by, claim_token IS NOT NULL AS leased, next_attempt_at <= now() AS due,
       extract(epoch FROM next_attempt_at - now())::float8 AS due_in
FROM outbox.messages
WHERE status = 'pending' AND (next_attempt_at, id) > ($1::timestamptz, $2::bigint)
ORDER BY next_attempt_at, id
LIMIT $3::int;

-- name: ui_pending_counts
-- All pending rows and those due now, from the claim index alone.
SELECT count(*) AS total, count(*) FILTER (WHERE next_attempt_at <= now()) AS due
FROM outbox.messages
WHERE status = 'pending';

-- name: ui_search_title
-- Tracks whose title starts with $1 (lower case), from the library and from the outbox,
-- one line per ISRC (or per row without one), at most $2. The range [$1, $1 || U+10FFFF) in
-- byte order is the prefix; both sides walk a text_pattern_ops index (migration 012).
WITH found AS (
    (SELECT upper(btrim(t.isrc)) AS isrc, t.title, t.artist, t.album, 'library' AS source,
            t.added_at AS at
     FROM library.tracks AS t
     WHERE lower(t.title) ~>=~ $1::text AND lower(t.title) ~<~ ($1::text || chr(1114111))
     ORDER BY lower(t.title) USING ~<~
     LIMIT $2::int)
    UNION ALL
    (SELECT upper(btrim(m.isrc)), m.title, m.artist, m.album, 'outbox', m.created_at
     FROM outbox.messages AS m
     WHERE m.kind = 'track'
       AND lower(m.title) ~>=~ $1::text AND lower(m.title) ~<~ ($1::text || chr(1114111))
     ORDER BY lower(m.title) USING ~<~
     LIMIT $2::int)
)
SELECT DISTINCT ON (coalesce(isrc, title || '/' || artist)) isrc, title, artist, album, source
FROM found
ORDER BY coalesce(isrc, title || '/' || artist), at DESC
LIMIT $2::int;

-- name: ui_track_path
-- A track's whole path by its normalised ISRC $1, in one statement: its library rows (alone,
-- or in an album found by a fanned-out row or by the album's own track list), its outbox rows
-- (newest 50) with their events, its ingestion status and run, and its albums' staging items.
-- The ISRC's outbox rows are read once through messages_isrc_idx, MATERIALIZED: left inline,
-- "newest 50" let the planner walk the primary key backwards filtering on the ISRC (the whole
-- table, for a rare one), and the album lookup walk every fanned-out row of messages_parent_idx.
-- Rows enqueued by TIDAL id alone (isrc NULL) are the ISRC's too when the catalog's newest answer
-- for their id, in any country, is $1 (as library.all_tracks, migration 015): the ids come from
-- catalog_tracks_isrc_idx, their rows from messages_tidal_id_idx (migration 016); their library
-- rows by those rows (tracks_outbox_idx, 017) or by an album's "tidalTrackId" (albums_tracks_idx).
WITH tidal_ids AS (
    -- an array, met with `= ANY`: index probes, as `albums` below
    SELECT ARRAY(
        SELECT DISTINCT c.tidal_id
        FROM outbox.catalog_tracks AS c
        WHERE c.isrc IS NOT NULL AND upper(btrim(c.isrc)) = $1::text
          AND NOT EXISTS (SELECT FROM outbox.catalog_tracks AS n
                          WHERE n.tidal_id = c.tidal_id AND n.isrc IS NOT NULL
                            AND n.looked_up_at > c.looked_up_at
                            AND upper(btrim(n.isrc)) <> $1::text)
    ) AS ids
), rows_of_isrc AS MATERIALIZED (
    SELECT m.id, m.kind, m.parent_id, m.status, m.attempts, m.skip_reason, m.last_error,
           m.event_id, m.inngest_id, m.force, m.claimed_by, m.created_at, m.processed_at,
           m.next_attempt_at, m.title, m.error_history, m.tidal_id
    FROM outbox.messages AS m
    WHERE m.isrc IS NOT NULL AND upper(btrim(m.isrc)) = $1::text
    UNION ALL
    SELECT m.id, m.kind, m.parent_id, m.status, m.attempts, m.skip_reason, m.last_error,
           m.event_id, m.inngest_id, m.force, m.claimed_by, m.created_at, m.processed_at,
           m.next_attempt_at, m.title, m.error_history, m.tidal_id
    FROM outbox.messages AS m
    WHERE m.tidal_id IS NOT NULL AND m.isrc IS NULL
      AND m.tidal_id = ANY ((SELECT ids FROM tidal_ids)::text[])
), albums AS (
    -- an array, met with `= ANY`: always index probes, never a hash join over a whole table
    SELECT ARRAY(
        SELECT a.id
        FROM library.albums AS a
        WHERE a.tracks @> jsonb_build_array(jsonb_build_object('isrc', $1::text))
        UNION
        SELECT a.id
        FROM unnest((SELECT ids FROM tidal_ids)::text[]) AS t(tidal_id)
        JOIN library.albums AS a
          ON a.tracks @> jsonb_build_array(jsonb_build_object('tidalTrackId', t.tidal_id))
        UNION
        SELECT a.id
        FROM library.albums AS a
        WHERE a.outbox_id = ANY (ARRAY(SELECT parent_id FROM rows_of_isrc
                                       WHERE parent_id IS NOT NULL))
    ) AS ids
), library_rows AS (
    SELECT 'track' AS added_as, t.id AS library_id, t.title, t.artist, t.album, t.outbox_id,
           t.added_at
    FROM library.tracks AS t
    WHERE upper(btrim(t.isrc)) = $1::text
    UNION ALL
    -- written without an ISRC, by TIDAL id: through its outbox row (tracks_outbox_idx, 017)
    SELECT 'track', t.id, t.title, t.artist, t.album, t.outbox_id, t.added_at
    FROM library.tracks AS t
    WHERE t.isrc IS NULL
      AND t.outbox_id = ANY (ARRAY(SELECT id FROM rows_of_isrc WHERE tidal_id IS NOT NULL))
    UNION ALL
    SELECT 'album', a.id, e.track ->> 'title',
           coalesce(nullif(btrim(e.track ->> 'artist'), ''), a.artist), a.title, a.outbox_id,
           a.added_at
    FROM library.albums AS a
    CROSS JOIN LATERAL jsonb_array_elements(a.tracks) AS e(track)
    WHERE a.id = ANY ((SELECT ids FROM albums)::bigint[])
      AND (upper(btrim(e.track ->> 'isrc')) = $1::text
           OR (e.track ->> 'isrc' IS NULL
               AND e.track ->> 'tidalTrackId' = ANY ((SELECT ids FROM tidal_ids)::text[])))
), outbox_rows AS (
    SELECT * FROM rows_of_isrc ORDER BY id DESC LIMIT 50
)
SELECT (SELECT coalesce(jsonb_agg(l ORDER BY l.added_at DESC), '[]'::jsonb)
        FROM library_rows AS l)                                                    AS library,
       (SELECT coalesce(jsonb_agg(o ORDER BY o.id DESC), '[]'::jsonb)
        FROM outbox_rows AS o)                                                     AS outbox,
       (SELECT to_jsonb(i) FROM library.track_ingestion AS i WHERE i.isrc = $1::text) AS ingestion,
       (SELECT coalesce(jsonb_agg(s ORDER BY s.id DESC), '[]'::jsonb)
        FROM (SELECT id, staging_path, status, scan_id, artist, album, year, track_count,
                     created_at
              FROM library.staging_items
              WHERE album_id = ANY ((SELECT ids FROM albums)::bigint[])) AS s)                     AS staging,
       library.track_point_id($1::text)                                            AS point_id;

-- name: ui_scan_page
-- Scan runs, newest first, after keyset cursor $1 (an id), $2 rows.
SELECT id, started_at, finished_at, status, trigger, dry_run, host, files_total, files_skipped,
       files_waiting, albums_total, albums_success, albums_failed, recovered, duration_ms, error
FROM library.scan_runs
WHERE id < $1::bigint
ORDER BY id DESC
LIMIT $2::int;

-- name: ui_installed
-- Which migrations this database has: parts of the page that need a later one say so.
SELECT array_agg(version ORDER BY version) FROM outbox.schema_migrations;

-- name: ui_catalog_lookup
-- What the relay's catalog lookup (migration 010) learned about TIDAL track id $1, per
-- country, newest first (outbox.catalog_tracks' primary key starts with tidal_id). Only run
-- where migration 010 is installed.
SELECT isrc, title, country_code, looked_up_at
FROM outbox.catalog_tracks
WHERE tidal_id = $1::text
ORDER BY looked_up_at DESC
LIMIT 10;
