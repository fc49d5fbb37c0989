"""Migration 008 in SQL: the status table's rules, the point-id function, and the view that
answers "where is this track?" for a track added alone and one added with an album."""

from __future__ import annotations

import asyncpg
import pytest

from outbox_relay.domain.isrc import point_id
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
