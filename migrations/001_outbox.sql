-- The transactional outbox: one row per library write that needs ingestion.
--
-- A row is written in the application's own transaction (outbox.enqueue_track /
-- outbox.enqueue_album), so it commits or rolls back with the library write.
-- The relay claims pending rows, publishes them to Inngest and records the outcome here,
-- so every question an operator has ("what is pending and why?") is a SELECT away.

CREATE SCHEMA IF NOT EXISTS outbox;

CREATE TABLE outbox.messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- 'track': one event. 'album': fanned out by the relay into one track row per track.
    kind             text        NOT NULL,
    -- the album row a track row was fanned out from
    parent_id        bigint,
    -- as the writer gave it; the relay trims, upper-cases and validates it
    isrc             text,
    title            text,
    artist           text        NOT NULL,
    album            text        NOT NULL,
    artwork_url      text,
    priority         integer,
    force            boolean     NOT NULL DEFAULT false,
    -- album rows only: [{"isrc": ..., "title": ..., "artist": ...}, ...]
    tracks           jsonb,

    -- pending → published | skipped | dead; an album row goes straight to fanned_out
    status           text        NOT NULL DEFAULT 'pending',
    -- attempts charged by Inngest rejecting the event; outages never charge one
    attempts         integer     NOT NULL DEFAULT 0,
    -- when a pending row may be claimed. A claim moves it forward by the lease, so the rows
    -- of a relay that died become claimable again once the lease expires.
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- the current claim: only the holder of this token may record an outcome
    claim_token      uuid,
    claimed_by       text,
    -- clock time of the insert, as close to the commit as SQL can see
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    processed_at     timestamptz,
    -- why a row was skipped: missing_isrc, invalid_isrc, already_indexed, no_tracks
    skip_reason      text,
    last_error       text,
    -- the event id sent (track-ingestion-<ISRC>[-<row id>]) and the id Inngest returned for it
    event_id         text,
    inngest_id       text,

    CONSTRAINT messages_kind_check CHECK (kind IN ('track', 'album')),
    CONSTRAINT messages_status_check
        CHECK (status IN ('pending', 'published', 'skipped', 'dead', 'fanned_out')),
    CONSTRAINT messages_shape_check CHECK (
        (kind = 'track' AND title IS NOT NULL AND tracks IS NULL)
        OR (kind = 'album' AND tracks IS NOT NULL AND isrc IS NULL)
    ),
    CONSTRAINT messages_priority_check CHECK (priority BETWEEN -600 AND 600)
)
-- The table is a queue: rows are updated once or twice and then rest. Vacuum it early so
-- dead tuples from claims do not pile up in the claim index.
WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);

COMMENT ON TABLE outbox.messages IS
    'Transactional outbox of track/ingestion.requested events; see outbox.summary.';

-- Claiming walks this index in order and stops after one batch, so its cost does not depend
-- on how many published/skipped rows the table holds: they are not in it.
CREATE INDEX messages_claim_idx ON outbox.messages (next_attempt_at, id)
    WHERE status = 'pending';

CREATE INDEX messages_dead_idx ON outbox.messages (id) WHERE status = 'dead';

CREATE INDEX messages_parent_idx ON outbox.messages (parent_id) WHERE parent_id IS NOT NULL;


-- One notification per statement, not per row: a 1,000-row insert wakes the relay once.
-- The payload is empty so that PostgreSQL folds every notification of a transaction into one
-- (a transaction of many enqueue_track calls also wakes the relay once, at commit).
-- A statement-level trigger fires even when the statement inserted nothing, and the relay's
-- claim statement holds an INSERT (the album fan-out); so the trigger looks at the rows really
-- inserted and ignores the relay's own fan-out rows. Otherwise every claim, even an empty one,
-- would wake every relay, whose claims would wake them again.
CREATE FUNCTION outbox.notify_enqueued() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE parent_id IS NULL) THEN
        PERFORM pg_notify('outbox_relay', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_notify
    AFTER INSERT ON outbox.messages
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.notify_enqueued();


-- Raises a clear error naming the field and the rule when a text argument is unusable.
CREATE FUNCTION outbox.check_text(fn text, field text, value text, max_length integer,
                                  required boolean DEFAULT true) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS
$$
BEGIN
    -- btrim's default trims spaces only; a title of a tab or a newline is empty too.
    -- (\x0B is the vertical tab: E'' strings have no \v.)
    IF value IS NULL OR btrim(value, E' \t\n\r\f\x0B') = '' THEN
        IF required THEN
            RAISE EXCEPTION '%: % must be a non-empty string', fn, field
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass the ' || field || ' as it should appear in the event.';
        END IF;
        RETURN;
    END IF;
    IF length(value) > max_length THEN
        RAISE EXCEPTION '%: % must be at most % characters (got %)',
                        fn, field, max_length, length(value)
            USING ERRCODE = 'string_data_right_truncation';
    END IF;
END;
$$;

CREATE FUNCTION outbox.check_artwork_url(fn text, value text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS
$$
BEGIN
    PERFORM outbox.check_text(fn, 'artwork_url', value, 2048, false);
    IF value IS NOT NULL AND value !~* '^https?://[^[:space:]]+$' THEN
        RAISE EXCEPTION '%: artwork_url must be an http(s) URL without spaces', fn
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;


CREATE FUNCTION outbox.enqueue_track(
    isrc        text,
    title       text,
    artist      text,
    album       text,
    priority    integer DEFAULT NULL,
    force       boolean DEFAULT false,
    artwork_url text    DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS
$$
DECLARE
    new_id bigint;
BEGIN
    -- The ISRC is not rejected here: a track without a valid one is still a library write;
    -- the relay records it as skipped (missing_isrc / invalid_isrc) where operators can see it.
    PERFORM outbox.check_text('enqueue_track', 'isrc', isrc, 64, false);
    PERFORM outbox.check_text('enqueue_track', 'title', title, 1000);
    PERFORM outbox.check_text('enqueue_track', 'artist', artist, 1000);
    PERFORM outbox.check_text('enqueue_track', 'album', album, 1000);
    PERFORM outbox.check_artwork_url('enqueue_track', artwork_url);
    IF priority NOT BETWEEN -600 AND 600 THEN
        RAISE EXCEPTION 'enqueue_track: priority must be an integer from -600 to 600 (got %)',
                        priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO outbox.messages (kind, isrc, title, artist, album, artwork_url, priority, force)
    VALUES ('track', enqueue_track.isrc, enqueue_track.title, enqueue_track.artist,
            enqueue_track.album, enqueue_track.artwork_url, enqueue_track.priority,
            coalesce(enqueue_track.force, false))
    RETURNING id INTO new_id;
    RETURN new_id;
END;
$$;

COMMENT ON FUNCTION outbox.enqueue_track IS
    'Enqueue one track/ingestion.requested event in the caller''s transaction; returns the row id.';


CREATE FUNCTION outbox.enqueue_album(
    title       text,
    artist      text,
    tracks      jsonb,
    artwork_url text DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS
$$
DECLARE
    new_id   bigint;
    track    jsonb;
    position integer := 0;
    field    text;
BEGIN
    PERFORM outbox.check_text('enqueue_album', 'title', title, 1000);
    PERFORM outbox.check_text('enqueue_album', 'artist', artist, 1000);
    PERFORM outbox.check_artwork_url('enqueue_album', artwork_url);
    IF tracks IS NULL OR jsonb_typeof(tracks) <> 'array' THEN
        RAISE EXCEPTION 'enqueue_album: tracks must be a JSON array (got %)',
                        coalesce(jsonb_typeof(tracks), 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_array_length(tracks) > 10000 THEN
        RAISE EXCEPTION 'enqueue_album: tracks must hold at most 10000 tracks (got %)',
                        jsonb_array_length(tracks)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR track IN SELECT value FROM jsonb_array_elements(tracks) LOOP
        field := format('tracks[%s]', position);
        IF jsonb_typeof(track) <> 'object' THEN
            RAISE EXCEPTION 'enqueue_album: % must be an object with isrc, title and artist',
                            field
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF jsonb_typeof(track -> 'title') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'enqueue_album: %.title must be a non-empty string', field
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF track ? 'isrc' AND jsonb_typeof(track -> 'isrc') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'enqueue_album: %.isrc must be a string or null', field
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF track ? 'artist' AND jsonb_typeof(track -> 'artist') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'enqueue_album: %.artist must be a string or null', field
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM outbox.check_text('enqueue_album', field || '.title', track ->> 'title', 1000);
        PERFORM outbox.check_text('enqueue_album', field || '.isrc', track ->> 'isrc', 64, false);
        PERFORM outbox.check_text('enqueue_album', field || '.artist', track ->> 'artist', 1000,
                                  false);
        position := position + 1;
    END LOOP;

    INSERT INTO outbox.messages (kind, title, artist, album, artwork_url, tracks)
    VALUES ('album', NULL, enqueue_album.artist, enqueue_album.title, enqueue_album.artwork_url,
            enqueue_album.tracks)
    RETURNING id INTO new_id;
    RETURN new_id;
END;
$$;

COMMENT ON FUNCTION outbox.enqueue_album IS
    'Enqueue an album in the caller''s transaction; the relay fans it out into one event per track.';


-- One row per status, including statuses that have no rows, so dashboards and scripts can
-- rely on the shape.
CREATE VIEW outbox.summary AS
SELECT s.status,
       coalesce(c.count, 0)                      AS count,
       c.oldest_created_at,
       date_trunc('millisecond', now() - c.oldest_created_at) AS oldest_age
FROM (VALUES ('pending', 1), ('published', 2), ('skipped', 3), ('dead', 4), ('fanned_out', 5))
         AS s(status, ord)
LEFT JOIN (SELECT status, count(*) AS count, min(created_at) AS oldest_created_at
           FROM outbox.messages
           GROUP BY status) AS c USING (status)
ORDER BY s.ord;

COMMENT ON VIEW outbox.summary IS 'Count and age of the oldest row, per status.';

CREATE VIEW outbox.dead_letters AS
SELECT id, kind, parent_id, isrc, title, artist, album, attempts, last_error, event_id,
       created_at, processed_at
FROM outbox.messages
WHERE status = 'dead'
ORDER BY id;

COMMENT ON VIEW outbox.dead_letters IS
    'Rows Inngest rejected too often; requeue them once the cause is fixed.';
