-- The library of the reference write API (`outbox-relay api`): what users add.
-- Applications with their own schema ignore these tables and call outbox.enqueue_* from
-- their own transactions; the API shows the pattern end to end.

CREATE SCHEMA IF NOT EXISTS library;

CREATE TABLE library.tracks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    isrc        text,
    title       text        NOT NULL,
    artist      text        NOT NULL,
    album       text        NOT NULL,
    artwork_url text,
    outbox_id   bigint      NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE library.albums (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title       text        NOT NULL,
    artist      text        NOT NULL,
    artwork_url text,
    tracks      jsonb       NOT NULL,
    outbox_id   bigint      NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX tracks_isrc_idx ON library.tracks (upper(btrim(isrc)));
