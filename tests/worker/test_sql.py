"""Migration 008 in SQL: the status table's rules, the point-id function, and the view that
answers "where is this track?" for a track added alone and one added with an album (and, since
migration 015, for tracks added by TIDAL id whose ISRC the relay looked up)."""

from __future__ import annotations

import asyncpg
import pytest

from outbox_relay.domain.isrc import point_id
from outbox_relay.ports import CatalogTrack, Outcomes
from outbox_relay.relay.store import CatalogCacheStore, OutboxStore
from outbox_relay.worker.store import IngestionStore, RunRef


async def test_the_sql_point_id_is_the_python_rule(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for isrc in ("USRC11700001", "USRC17607839", "GBAYE0000001"):
            assert str(await conn.fetchval("SELECT library.track_point_id($1)", isrc)) == (
                point_id(isrc)
            )
    finally:
        await conn.close()


async def test_status_and_isrc_are_checked(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError, match="track_ingestion_status_check"):
            await conn.execute(
                "INSERT INTO library.track_ingestion (isrc, status) VALUES ('USRC17607839', 'done')"
            )
        with pytest.raises(asyncpg.CheckViolationError, match="track_ingestion_isrc_check"):
            await conn.execute(
                "INSERT INTO library.track_ingestion (isrc, status) "
                "VALUES ('usrc17607839', 'failed')"
            )
    finally:
        await conn.close()


async def test_track_path_follows_a_track_from_library_row_to_point(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    store = IngestionStore(database_url)
    try:
        track_row = await conn.fetchval(
            "SELECT outbox.enqueue_track(' usrc17607839 ', 'Bohemian Rhapsody', 'Queen', 'Opera')"
        )
        await conn.execute(
            "INSERT INTO library.tracks (isrc, title, artist, album, outbox_id) "
            "VALUES (' usrc17607839 ', 'Bohemian Rhapsody', 'Queen', 'Opera', $1)",
            track_row,
        )
        album_row = await conn.fetchval(
            "SELECT outbox.enqueue_album('Album', 'Band', $1::jsonb)",
            '[{"isrc": "GBAYE0000001", "title": "One"}, {"isrc": "GBAYE0000002", "title": "Two"}]',
        )
        await conn.execute(
            "INSERT INTO library.albums (title, artist, tracks, outbox_id) "
            "VALUES ('Album', 'Band', $1::jsonb, $2)",
            '[{"isrc": "GBAYE0000001", "title": "One"}, {"isrc": "GBAYE0000002", "title": "Two"}]',
            album_row,
        )
        # What the relay does: fan the album out, publish the track rows.
        await conn.execute(
            "INSERT INTO outbox.messages (kind, parent_id, isrc, title, artist, album, status) "
            "VALUES ('track', $1, 'GBAYE0000001', 'One', 'Band', 'Album', 'published')",
            album_row,
        )
        await conn.execute(
            "UPDATE outbox.messages SET status = 'published', "
            "event_id = 'track-ingestion-USRC17607839', inngest_id = '01JULID', "
            "processed_at = now() WHERE id = $1",
            track_row,
        )
        run = RunRef("USRC17607839", "01JRUN", "track-ingestion-USRC17607839", False)
        await store.record_indexing(run, 1)
        await store.record_indexed(run, 2)

        rows = await conn.fetch("SELECT * FROM library.track_path ORDER BY added_as DESC, isrc")
        by_isrc = {row["isrc"]: row for row in rows}
        assert set(by_isrc) == {"USRC17607839", "GBAYE0000001", "GBAYE0000002"}
        track = by_isrc["USRC17607839"]
        assert track["added_as"] == "track"
        assert track["outbox_id"] == track_row
        assert track["outbox_status"] == "published"
        assert track["event_id"] == "track-ingestion-USRC17607839"
        assert track["inngest_id"] == "01JULID"
        assert track["run_id"] == "01JRUN"
        assert track["ingestion_status"] == "indexed"
        assert track["attempts"] == 2
        assert str(track["point_id"]) == point_id("USRC17607839")
        assert track["indexed_at"] is not None

        fanned = by_isrc["GBAYE0000001"]
        assert fanned["added_as"] == "album"
        assert fanned["outbox_status"] == "published"
        assert fanned["ingestion_status"] is None  # the worker has not seen it yet
        not_fanned = by_isrc["GBAYE0000002"]
        assert not_fanned["outbox_id"] is None and not_fanned["outbox_status"] is None
    finally:
        await store.close()
        await conn.close()


async def test_track_path_follows_tracks_added_by_tidal_id_after_their_lookup(
    database_url: str,
) -> None:
    """Tracks written with a TIDAL id and no ISRC (migration 010) have their path once the relay
    looked the ISRC up (migration 015): the album track through its fanned-out row's id, the
    track added alone through its outbox row; the id the catalog does not know keeps its row."""
    conn = await asyncpg.connect(database_url)
    outbox = OutboxStore(database_url, replica_id="test", lease_seconds=30, max_attempts=5)
    cache = CatalogCacheStore(database_url, country_code="US", unknown_ttl=3600)
    store = IngestionStore(database_url)
    listing = (
        '[{"tidalTrackId": "75413016", "title": "4:44"},'
        ' {"tidalTrackId": "99999999999", "title": "Not in the catalog"}]'
    )
    try:
        album_row = await conn.fetchval(
            "SELECT outbox.enqueue_album('4:44', 'JAY-Z', $1::jsonb)", listing
        )
        await conn.execute(
            "INSERT INTO library.albums (title, artist, tracks, outbox_id) "
            "VALUES ('4:44', 'JAY-Z', $1::jsonb, $2)",
            listing,
            album_row,
        )
        track_row = await conn.fetchval(
            "SELECT outbox.enqueue_track_by_tidal_id('75413017', 'Family Feud', 'JAY-Z', '4:44')"
        )
        await conn.execute(
            "INSERT INTO library.tracks (isrc, title, artist, album, outbox_id) "
            "VALUES (NULL, 'Family Feud', 'JAY-Z', '4:44', $1)",
            track_row,
        )

        async def paths() -> dict[str, asyncpg.Record]:
            rows = await conn.fetch("SELECT * FROM library.track_path")
            return {row["title"]: row for row in rows}

        before = await paths()
        assert before["4:44"]["isrc"] is None and before["4:44"]["outbox_id"] is None
        assert before["Family Feud"]["isrc"] is None

        # What the relay does: claim (the album fans out, its tracks keep their TIDAL ids),
        # look the ISRCs up and cache the answers, publish what has an ISRC.
        token, claimed = await outbox.claim(10)
        by_tidal_id = {row["tidal_id"]: row["id"] for row in claimed if row["kind"] == "track"}
        assert set(by_tidal_id) == {"75413016", "99999999999", "75413017"}
        await cache.remember(
            {
                "75413016": CatalogTrack("qmjmt1701237", "4:44"),
                "75413017": CatalogTrack("QMJMT1701238", "Family Feud"),
            },
            ["99999999999"],
        )
        outcomes = Outcomes()
        outcomes.published(by_tidal_id["75413016"], "track-ingestion-QMJMT1701237", "01JA")
        outcomes.published(by_tidal_id["75413017"], "track-ingestion-QMJMT1701238", "01JB")
        outcomes.skipped(by_tidal_id["99999999999"], "missing_isrc")
        assert await outbox.record_outcomes(token, outcomes) == 3

        looked_up = await paths()
        album_track = looked_up["4:44"]
        assert album_track["added_as"] == "album"
        assert album_track["isrc"] == "QMJMT1701237"
        assert album_track["outbox_id"] == by_tidal_id["75413016"]
        assert album_track["outbox_status"] == "published"
        assert str(album_track["point_id"]) == point_id("QMJMT1701237")
        assert album_track["ingestion_status"] is None  # the worker has not seen it yet
        unknown = looked_up["Not in the catalog"]
        assert unknown["isrc"] is None and unknown["point_id"] is None
        assert unknown["outbox_id"] == by_tidal_id["99999999999"]
        assert (unknown["outbox_status"], unknown["skip_reason"]) == ("skipped", "missing_isrc")

        for isrc, event_id in (
            ("QMJMT1701237", "track-ingestion-QMJMT1701237"),
            ("QMJMT1701238", "track-ingestion-QMJMT1701238"),
        ):
            run = RunRef(isrc, f"RUN-{isrc}", event_id, False)
            await store.record_indexing(run, 1)
            await store.record_indexed(run, 1)

        indexed = await paths()
        assert (indexed["4:44"]["ingestion_status"], indexed["4:44"]["run_id"]) == (
            "indexed",
            "RUN-QMJMT1701237",
        )
        alone = indexed["Family Feud"]
        assert alone["added_as"] == "track"
        assert alone["isrc"] == "QMJMT1701238"
        assert alone["event_id"] == "track-ingestion-QMJMT1701238"
        assert (alone["ingestion_status"], alone["run_id"]) == ("indexed", "RUN-QMJMT1701238")
    finally:
        await store.close()
        await cache.close()
        await outbox.close()
        await conn.close()
