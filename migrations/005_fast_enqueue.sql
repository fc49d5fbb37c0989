-- enqueue_track without the cost of its checks when the arguments are fine.
--
-- Each check of 001 is a PL/pgSQL function run through PERFORM: five nested queries that
-- cost ~45 µs a call, nine times the INSERT itself, and most of what the outbox row adds to an
-- application's write transaction (benchmark B3). One expression now tells, in ~1 µs, that all
-- arguments are valid; only when it cannot tell are the checks of 001 run, so every error
-- still names the field and the rule exactly as before. The expression only ever says "valid"
-- for arguments those checks accept (a NULL anywhere makes it say "check").
CREATE OR REPLACE FUNCTION outbox.enqueue_track(
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
    IF NOT coalesce(
           (isrc IS NULL OR length(isrc) <= 64)
           AND length(title) <= 1000 AND btrim(title, E' \t\n\r\f\x0B') <> ''
           AND length(artist) <= 1000 AND btrim(artist, E' \t\n\r\f\x0B') <> ''
           AND length(album) <= 1000 AND btrim(album, E' \t\n\r\f\x0B') <> ''
           AND (artwork_url IS NULL
                OR (length(artwork_url) <= 2048 AND artwork_url ~* '^https?://[^[:space:]]+$'))
           AND (priority IS NULL OR priority BETWEEN -600 AND 600),
           false) THEN
        -- The ISRC is not rejected here: a track without a valid one is still a library
        -- write; the relay records it as skipped (missing_isrc / invalid_isrc).
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
