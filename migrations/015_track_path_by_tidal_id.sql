-- library.all_tracks (and so library.track_path) follows tracks added by TIDAL id alone.
--
-- Migration 008 linked a library track to its ingestion by the ISRC written with it, and an
-- album track to its fanned-out outbox row by that ISRC too. A track added by its catalog id
-- (migration 010) has no ISRC at write time: the relay looks it up later and keeps it in
-- outbox.catalog_tracks, never in the library row nor in outbox.messages.isrc. Such a track had
-- no ISRC, no outbox row and no ingestion status in the view. Now:
--   - an album track without an ISRC in its listing is linked to its fanned-out row by its
--     "tidalTrackId", and takes the ISRC the catalog returned for that id;
--   - a track added alone without an ISRC takes the ISRC the catalog returned for its outbox
--     row's tidal_id (once retention removed that row, the library row alone cannot tell).
-- The cache is per country; the view takes the newest ISRC any country returned for the id
-- (a track's ISRC does not depend on the country it is available in). The columns are those of
-- migration 008, so library.track_path is unchanged and follows.

CREATE OR REPLACE VIEW library.all_tracks AS
SELECT 'track'::text                   AS added_as,
       t.id                            AS library_id,
       coalesce(upper(btrim(t.isrc)),
                (SELECT upper(btrim(c.isrc))
                 FROM outbox.messages AS m
                 JOIN outbox.catalog_tracks AS c ON c.tidal_id = m.tidal_id
                 WHERE m.id = t.outbox_id AND c.isrc IS NOT NULL
                 ORDER BY c.looked_up_at DESC
                 LIMIT 1)) AS isrc,
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
       coalesce(upper(btrim(e.track ->> 'isrc')),
                (SELECT upper(btrim(c.isrc))
                 FROM outbox.catalog_tracks AS c
                 WHERE c.tidal_id = e.track ->> 'tidalTrackId' AND c.isrc IS NOT NULL
                 ORDER BY c.looked_up_at DESC
                 LIMIT 1)),
       e.track ->> 'title',
       coalesce(nullif(btrim(e.track ->> 'artist'), ''), a.artist),
       a.title,
       a.artwork_url,
       (SELECT m.id
        FROM outbox.messages AS m
        WHERE m.parent_id = a.outbox_id
          AND (upper(btrim(m.isrc)) = upper(btrim(e.track ->> 'isrc'))
               OR (e.track ->> 'isrc' IS NULL
                   AND m.tidal_id = e.track ->> 'tidalTrackId'))
        ORDER BY m.id
        LIMIT 1),
       a.added_at
FROM library.albums AS a
CROSS JOIN LATERAL jsonb_array_elements(a.tracks) AS e(track);

COMMENT ON VIEW library.all_tracks IS
    'Every track of library.tracks and library.albums, ISRC normalised (looked up by TIDAL id when none was written).';
