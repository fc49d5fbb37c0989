-- The admin page's track view (ui_track_path) finds the outbox rows of tracks enqueued by TIDAL
-- id alone. Such a row keeps isrc NULL and tidal_id set; the relay publishes it under the ISRC
-- outbox.catalog_tracks holds for that id (migration 010). Migration 015 linked them in
-- library.track_path; the page walks the same link, from the ISRC it is asked about to the ids
-- the catalog answered it for, then to their rows: two index probes, never a table scan.
--
-- CREATE INDEX (not CONCURRENTLY, which cannot run inside the migration's transaction) blocks
-- writes to the table while it builds: on a large outbox, create messages_tidal_id_idx
-- CONCURRENTLY by hand first, with this name and definition, and this migration skips it
-- (IF NOT EXISTS), as migration 006 explains. Both indexes are partial: only rows with a TIDAL
-- id and no ISRC, only answers with an ISRC.
CREATE INDEX IF NOT EXISTS catalog_tracks_isrc_idx
    ON outbox.catalog_tracks (upper(btrim(isrc))) WHERE isrc IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_tidal_id_idx
    ON outbox.messages (tidal_id) WHERE tidal_id IS NOT NULL AND isrc IS NULL;
