-- What applications run to write: the enqueue helpers (outbox_relay.write.asyncpg, and
-- outbox_relay.write.psycopg through outbox_relay.db.queries.psycopg_form) and the write API.
--
-- Every parameter is cast explicitly so that neither the function's resolution nor the
-- encoding depends on how a driver guesses types: psycopg sends a Python int as int2, int4,
-- int8 or numeric depending on its value, and a str as "unknown". JSON travels as text and is
-- cast to jsonb by the server: the caller may have registered a jsonb codec of its own (or
-- none) on the connection, and text is the one encoding that means the same under every codec.

-- name: enqueue_track
-- isrc, title, artist, album, priority, force, artwork_url → the outbox row's id.
SELECT outbox.enqueue_track($1::text, $2::text, $3::text, $4::text, $5::integer,
                            $6::boolean, $7::text);

-- name: enqueue_track_by_tidal_id
-- tidal_track_id, title, artist, album, priority, force, artwork_url, isrc → the outbox row's
-- id (migration 010: the relay looks the ISRC up in the catalog when none is given).
SELECT outbox.enqueue_track_by_tidal_id($1::text, $2::text, $3::text, $4::text, $5::integer,
                                        $6::boolean, $7::text, $8::text);

-- name: enqueue_album
-- title, artist, tracks (JSON text), artwork_url → the outbox row's id.
SELECT outbox.enqueue_album($1::text, $2::text, $3::text::jsonb, $4::text);

-- name: insert_library_track
-- The write API's library row, linked to its outbox row ($6).
INSERT INTO library.tracks (isrc, title, artist, album, artwork_url, outbox_id)
VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint)
RETURNING id;

-- name: insert_library_album
-- The write API's library row for an album (tracks as JSON text), linked to its outbox row ($5).
INSERT INTO library.albums (title, artist, artwork_url, tracks, outbox_id)
VALUES ($1::text, $2::text, $3::text, $4::text::jsonb, $5::bigint)
RETURNING id;
