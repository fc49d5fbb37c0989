-- The admin page's track view (ui_track_path) lists the library rows of tracks added by TIDAL id
-- alone, as library.track_path does since migration 015: a single track written without an ISRC
-- is found by its outbox row (whose tidal_id the catalog answered the ISRC for), so
-- library.tracks needs an index on outbox_id; an album track with only "tidalTrackId" is found
-- by albums_tracks_idx (migration 012), `tracks @> '[{"tidalTrackId": "..."}]'`.
-- Partial: only library tracks written without an ISRC are looked up this way.
CREATE INDEX IF NOT EXISTS tracks_outbox_idx ON library.tracks (outbox_id) WHERE isrc IS NULL;
