-- The wake-up gate of migration 011, called by the enqueue functions instead of a trigger
-- (issue 10 §4; the argument is in docs/wakeups.md).
--
-- A statement trigger with a transition table made every INSERT into outbox.messages set up a
-- tuplestore and an after-trigger event, run a PL/pgSQL trigger and a query over the captured
-- rows: about 15 µs a write (measured per statement with pg_stat_statements: the outbox INSERT
-- took 83 µs with the trigger, 66 µs without, 8 writers and a relay draining), 4-5 % of the
-- application's write transaction in benchmark B3. The same gate called from the enqueue
-- functions costs about 2 µs: two advisory-lock calls and, only while no relay is awake, the
-- notification.
--
-- The gate is the same (GATE shared until commit, then BUSY tried), taken after the row is
-- inserted, in the same transaction, so the argument of docs/wakeups.md holds unchanged. The
-- enqueue functions are the way to write outbox rows (DESIGN.md); a row inserted into
-- outbox.messages by hand no longer wakes a sleeping relay by itself: an awake relay, or the
-- next poll (OUTBOX_POLL_INTERVAL), finds it, and such a writer can call
-- outbox.wake_sleeping_relays() in its transaction to be found at once. The relay's own fan-out
-- INSERT (the claim) never needed a wake-up; the trigger had to filter it out.

DROP TRIGGER messages_notify ON outbox.messages;
DROP FUNCTION outbox.notify_enqueued();

CREATE FUNCTION outbox.wake_sleeping_relays() RETURNS void
    LANGUAGE plpgsql VOLATILE AS
$$
BEGIN
    -- GATE first, held to commit: a relay that stops claiming waits for this transaction.
    PERFORM pg_advisory_xact_lock_shared(outbox.wakeup_lock_class(), 1);
    -- BUSY free: no relay is awake, so wake one. (A shared try-lock conflicts only with a
    -- relay's exclusive hold, never with other writers; it is released at once.)
    IF pg_try_advisory_lock_shared(outbox.wakeup_lock_class(), 2) THEN
        PERFORM pg_advisory_unlock_shared(outbox.wakeup_lock_class(), 2);
        PERFORM pg_notify('outbox_relay', '');
    END IF;
END;
$$;

COMMENT ON FUNCTION outbox.wake_sleeping_relays() IS
    'outbox-relay: wakes a sleeping relay at commit unless one is awake (docs/wakeups.md); the enqueue functions call it.';

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
    PERFORM outbox.wake_sleeping_relays();
    RETURN new_id;
END;
$$;

CREATE OR REPLACE FUNCTION outbox.enqueue_track_by_tidal_id(
    tidal_track_id text,
    title          text,
    artist         text,
    album          text,
    priority       integer DEFAULT NULL,
    force          boolean DEFAULT false,
    artwork_url    text    DEFAULT NULL,
    isrc           text    DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS
$$
DECLARE
    new_id bigint;
BEGIN
    IF NOT coalesce(
           tidal_track_id ~ '^[0-9]{1,20}$'
           AND (isrc IS NULL OR length(isrc) <= 64)
           AND length(title) <= 1000 AND btrim(title, E' \t\n\r\f\x0B') <> ''
           AND length(artist) <= 1000 AND btrim(artist, E' \t\n\r\f\x0B') <> ''
           AND length(album) <= 1000 AND btrim(album, E' \t\n\r\f\x0B') <> ''
           AND (artwork_url IS NULL
                OR (length(artwork_url) <= 2048 AND artwork_url ~* '^https?://[^[:space:]]+$'))
           AND (priority IS NULL OR priority BETWEEN -600 AND 600),
           false) THEN
        PERFORM outbox.check_tidal_id('enqueue_track', 'tidal_track_id', tidal_track_id);
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

    INSERT INTO outbox.messages
        (kind, isrc, tidal_id, title, artist, album, artwork_url, priority, force)
    VALUES ('track', enqueue_track_by_tidal_id.isrc, enqueue_track_by_tidal_id.tidal_track_id,
            enqueue_track_by_tidal_id.title, enqueue_track_by_tidal_id.artist,
            enqueue_track_by_tidal_id.album, enqueue_track_by_tidal_id.artwork_url,
            enqueue_track_by_tidal_id.priority, coalesce(enqueue_track_by_tidal_id.force, false))
    RETURNING id INTO new_id;
    PERFORM outbox.wake_sleeping_relays();
    RETURN new_id;
END;
$$;

CREATE OR REPLACE FUNCTION outbox.enqueue_album(
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
        IF track ? 'tidalTrackId' AND jsonb_typeof(track -> 'tidalTrackId') <> 'null' THEN
            IF jsonb_typeof(track -> 'tidalTrackId') <> 'string' THEN
                RAISE EXCEPTION 'enqueue_album: %.tidalTrackId must be a string of digits or null',
                                field
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            PERFORM outbox.check_tidal_id('enqueue_album', field || '.tidalTrackId',
                                          track ->> 'tidalTrackId');
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
    PERFORM outbox.wake_sleeping_relays();
    RETURN new_id;
END;
$$;
