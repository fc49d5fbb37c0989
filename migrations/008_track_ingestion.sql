-- The ingestion worker's record (issue 11): where each track's ingestion stands, and one view
-- that answers "where is this track?" from the library row to the Qdrant point.
--
-- The worker (`outbox-relay worker`) writes library.track_ingestion with its own DSN
-- (DATABASE_URL); the relay's role gets nothing new: the relay never reads it.

CREATE TABLE library.track_ingestion (
    -- normalised (trimmed, upper case), as in the events
    isrc        text        PRIMARY KEY,
    -- indexing: a run is under way (or waits for a retry); indexed: the point is in Qdrant;
    -- failed: the last run gave up (retries spent, or a malformed event)
    status      text        NOT NULL,
    -- the most attempts any step of the latest run has needed so far (1 = none was retried)
    attempts    integer     NOT NULL DEFAULT 0,
    -- the latest run's most recent error; cleared when a run starts and when it indexes
    last_error  text,
    -- Inngest's run id of the latest run, and the id of the event that started it
    run_id      text,
    event_id    text,
    -- whether the latest run was a forced re-ingestion
    forced      boolean     NOT NULL DEFAULT false,
    started_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    indexed_at  timestamptz,

    CONSTRAINT track_ingestion_status_check CHECK (status IN ('indexing', 'indexed', 'failed')),
    CONSTRAINT track_ingestion_isrc_check CHECK (isrc ~ '^[A-Z0-9]{12}$'),
    CONSTRAINT track_ingestion_attempts_check CHECK (attempts >= 0)
);

COMMENT ON TABLE library.track_ingestion IS
    'One row per ISRC: the ingestion worker''s latest run (see library.track_path).';

-- Operators look for what is stuck or failed; indexed rows are the bulk and are not in it.
CREATE INDEX track_ingestion_unfinished_idx ON library.track_ingestion (updated_at)
    WHERE status <> 'indexed';


-- The Qdrant point id of a track (DESIGN.md, "Qdrant point id"): the first 128 bits of
-- SHA-256("6ba7b810-9dad-11d1-80b4-00c04fd430c8" || ISRC) as a UUID. Same as
-- outbox_relay.domain.isrc.point_id; tests/worker/test_migration.py holds the two together.
CREATE FUNCTION library.track_point_id(isrc text) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$
    SELECT substr(encode(sha256(convert_to('6ba7b810-9dad-11d1-80b4-00c04fd430c8' || isrc,
                                           'UTF8')), 'hex'), 1, 32)::uuid
$$;


-- Every track of the reference library, whether added alone or as part of an album, with its
-- ISRC normalised as the relay normalises it and the outbox row that carried it (an album
-- track's own row is the one the relay fanned out of the album's row).
CREATE VIEW library.all_tracks AS
SELECT 'track'::text                   AS added_as,
       t.id                            AS library_id,
       upper(btrim(t.isrc))            AS isrc,
       t.title,
       t.artist,
       t.album,
       t.artwork_url,
       t.outbox_id,
       t.added_at
FROM library.tracks AS t
UNION ALL
SELECT 'album'::text,
       a.id,
       upper(btrim(e.track ->> 'isrc')),
       e.track ->> 'title',
       coalesce(nullif(btrim(e.track ->> 'artist'), ''), a.artist),
       a.title,
       a.artwork_url,
       (SELECT m.id
        FROM outbox.messages AS m
        WHERE m.parent_id = a.outbox_id
          AND upper(btrim(m.isrc)) = upper(btrim(e.track ->> 'isrc'))
        ORDER BY m.id
        LIMIT 1),
       a.added_at
FROM library.albums AS a
CROSS JOIN LATERAL jsonb_array_elements(a.tracks) AS e(track);

COMMENT ON VIEW library.all_tracks IS
    'Every track of library.tracks and library.albums, ISRC normalised.';


-- "Where is this track?": library row -> outbox row -> event id -> Inngest run -> Qdrant point
-- -> status. One row per library track; the outbox columns are null once retention removed the
-- row (OUTBOX_RETENTION_SECONDS), the ingestion columns until the worker has seen the ISRC.
--   SELECT * FROM library.track_path WHERE isrc = 'USRC17607839';
CREATE VIEW library.track_path AS
SELECT l.added_as,
       l.library_id,
       l.isrc,
       l.title,
       l.artist,
       l.album,
       l.added_at,
       l.outbox_id,
       m.status                AS outbox_status,
       m.skip_reason,
       m.last_error            AS outbox_error,
       m.event_id,
       m.inngest_id,
       m.processed_at          AS published_at,
       i.run_id,
       i.status                AS ingestion_status,
       i.attempts,
       i.last_error            AS ingestion_error,
       i.forced,
       CASE WHEN l.isrc ~ '^[A-Z0-9]{12}$' THEN library.track_point_id(l.isrc) END AS point_id,
       i.started_at,
       i.indexed_at,
       i.updated_at            AS ingestion_updated_at
FROM library.all_tracks AS l
LEFT JOIN outbox.messages AS m ON m.id = l.outbox_id
LEFT JOIN library.track_ingestion AS i ON i.isrc = l.isrc;

COMMENT ON VIEW library.track_path IS
    'Where each library track is: outbox row, event, run, Qdrant point, ingestion status.';
