-- Tracks identified by their TIDAL catalog id, and the relay's cache of catalog answers.
--
-- A library write may know a track only by its catalog id (an album's track listing carries
-- no ISRCs). The write stays instant: the row keeps the id, and the relay asks the catalog's
-- batch endpoint for the ISRC (GET /tracks?filter[id]=<= 20 ids) before its Qdrant check,
-- outside any application transaction. What the catalog answered is kept here, so a repeat
-- costs no request; an id it did not return is kept too (isrc NULL), so an unknown id is not
-- asked for again until the relay's OUTBOX_CATALOG_UNKNOWN_TTL has passed.

-- The catalog id of a track row: given by enqueue_track_by_tidal_id, or by an album track's
-- "tidalTrackId" when the claim fans the album out. Catalog ids are decimal digits.
ALTER TABLE outbox.messages
    ADD COLUMN tidal_id text,
    ADD CONSTRAINT messages_tidal_id_check CHECK (tidal_id ~ '^[0-9]{1,20}$');

CREATE TABLE outbox.catalog_tracks (
    tidal_id     text        NOT NULL,
    country_code text        NOT NULL,
    -- NULL: the catalog did not return this id (unknown, or not available in the country)
    isrc         text,
    title        text,
    looked_up_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tidal_id, country_code),
    CONSTRAINT catalog_tracks_tidal_id_check CHECK (tidal_id ~ '^[0-9]{1,20}$')
);

COMMENT ON TABLE outbox.catalog_tracks IS
    'outbox-relay: what the TIDAL catalog returned per track id and country (isrc NULL: unknown id).';

-- The relay reads and writes the cache (an upsert: INSERT ... ON CONFLICT DO UPDATE).
GRANT SELECT, INSERT, UPDATE ON outbox.catalog_tracks TO outbox_relay_role;

CREATE FUNCTION outbox.check_tidal_id(fn text, field text, value text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS
$$
BEGIN
    IF value IS NULL OR value !~ '^[0-9]{1,20}$' THEN
        RAISE EXCEPTION '%: % must be a TIDAL track id of 1 to 20 digits (got %)',
                        fn, field, coalesce(quote_literal(left(value, 40)), 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- One track by catalog id; an ISRC, when the caller knows it, is used as given and no lookup
-- is made. Validates like enqueue_track (the same fast path), plus the id.
CREATE FUNCTION outbox.enqueue_track_by_tidal_id(
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
    RETURN new_id;
END;
$$;

COMMENT ON FUNCTION outbox.enqueue_track_by_tidal_id IS
    'Enqueue one track known by its TIDAL id (the relay looks its ISRC up); returns the row id.';

-- enqueue_album as in 001, and an album track may carry "tidalTrackId" (a string of digits)
-- instead of, or beside, its "isrc".
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
    RETURN new_id;
END;
$$;
