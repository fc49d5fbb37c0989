-- The operator's web page (issue 14): the indexes that keep each of its pages one or two index
-- scans however large the outbox grows. Nothing else changes; the relay's role gets no new
-- privilege (docs/operations.md, "The admin page", says what to grant for the library parts).
--
-- CREATE INDEX (not CONCURRENTLY, which cannot run inside the migration's transaction) blocks
-- writes to the table while it builds: on a large outbox, create the two outbox.messages
-- indexes CONCURRENTLY by hand first, with these names and definitions, and this migration
-- skips them (IF NOT EXISTS), as migration 006 explains.

-- Search by title: a case-insensitive prefix, as a range over lower(title) in byte order
-- (text_pattern_ops), so a prepared statement's generic plan can use it too (LIKE $1 cannot).
CREATE INDEX IF NOT EXISTS messages_title_prefix_idx
    ON outbox.messages (lower(title) text_pattern_ops) WHERE kind = 'track';
CREATE INDEX IF NOT EXISTS tracks_title_prefix_idx
    ON library.tracks (lower(title) text_pattern_ops);

-- A track's whole path: from an album's fanned-out track row (parent_id) to its library row,
-- and from that album to its staging item.
CREATE INDEX IF NOT EXISTS albums_outbox_idx ON library.albums (outbox_id);
CREATE INDEX IF NOT EXISTS staging_items_album_idx ON library.staging_items (album_id);
-- An album whose row has not been fanned out yet (or whose outbox rows retention deleted) is
-- found by its tracks' ISRCs: `tracks @> '[{"isrc": "..."}]'`.
CREATE INDEX IF NOT EXISTS albums_tracks_idx ON library.albums USING gin (tracks jsonb_path_ops);
