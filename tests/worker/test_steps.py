"""The steps of ``track-ingestion``, called directly: fakes for the embedder and the index, the
real PostgreSQL for the status rows (the database is never faked)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from outbox_relay.domain.ingestion import VECTOR_NAME, TrackDocument
from outbox_relay.domain.isrc import point_id
from outbox_relay.errors import EmbeddingError, PointWriteError
from outbox_relay.metrics import WorkerMetrics
from outbox_relay.testing.fakes import FakeEmbedder, InMemoryIndex
from outbox_relay.worker.events import parse_requested
from outbox_relay.worker.steps import IngestionSteps, WorkerParts, split_isrcs
from outbox_relay.worker.store import IngestionStore, RunRef

ISRC = "USRC17607839"
REQUEST = {"isrc": ISRC, "title": "Bohemian Rhapsody", "artist": "Queen", "album": "A Night"}


@pytest.fixture
async def parts(database_url: str) -> AsyncIterator[WorkerParts]:
    store = IngestionStore(database_url)
    yield WorkerParts(
        embedder=FakeEmbedder(dimensions=8),
        points=InMemoryIndex(),
        store=store,
        metrics=WorkerMetrics(CollectorRegistry()),
        collection="tracks",
    )
    await store.close()


def run_ref(run_id: str = "01RUNA", forced: bool = False) -> RunRef:
    return RunRef(isrc=ISRC, run_id=run_id, event_id=f"track-ingestion-{ISRC}", forced=forced)


async def test_a_run_of_steps_indexes_the_track_and_records_it(
    parts: WorkerParts, pg_query: object
) -> None:
    steps = IngestionSteps(parts)
    request = parse_requested(REQUEST | {"artworkUrl": "https://img.example/a.jpg"})
    run = run_ref()

    started = await steps.record_indexing(run, 1, request)
    status = await parts.store.status([ISRC])
    assert status[ISRC]["status"] == "indexing"
    assert status[ISRC]["run_id"] == "01RUNA"

    document = await steps.build_document(request)
    assert document["pointId"] == point_id(ISRC)
    assert "Bohemian Rhapsody" in document["text"] and "Queen" in document["text"]

    vector = await steps.embed(document)
    assert len(vector) == 8
    point = await steps.upsert(document, vector)
    assert point == {"pointId": point_id(ISRC), "collection": "tracks"}
    index = parts.points
    assert isinstance(index, InMemoryIndex)
    stored = index.points[point_id(ISRC)]
    assert stored.payload == {
        "isrc": ISRC,
        "title": "Bohemian Rhapsody",
        "artist": "Queen",
        "album": "A Night",
        "artworkUrl": "https://img.example/a.jpg",
    }
    # What the relay asks before publishing: the worker's point is the one it finds.
    assert await index.indexed([point_id(ISRC)]) == {point_id(ISRC)}

    indexed = await steps.record_indexed(run, 1, request.title, started["startedAtMs"])
    assert indexed["durationMs"] >= 0
    status = await parts.store.status([ISRC])
    assert status[ISRC]["status"] == "indexed"
    assert status[ISRC]["attempts"] == 1
    assert status[ISRC]["indexed_at"] is not None
    assert parts.metrics.runs_started.labels(function="track-ingestion")._value.get() == 1


async def test_an_embedder_that_is_down_fails_the_step(parts: WorkerParts) -> None:
    steps = IngestionSteps(parts)
    embedder = parts.embedder
    assert isinstance(embedder, FakeEmbedder)
    embedder.fail_next = 1
    document = await steps.build_document(parse_requested(REQUEST))
    with pytest.raises(EmbeddingError, match="connection refused"):
        await steps.embed(document)
    # The retry succeeds.
    assert len(await steps.embed(document)) == 8


async def test_a_vector_of_the_wrong_size_or_zero_is_refused(parts: WorkerParts) -> None:
    class Wrong(FakeEmbedder):
        async def embed(self, texts: object) -> list[list[float]]:
            return [[0.0] * self.dimensions]

    steps = IngestionSteps(
        WorkerParts(
            embedder=Wrong(dimensions=8),
            points=parts.points,
            store=parts.store,
            metrics=parts.metrics,
            collection="tracks",
        )
    )
    document = await steps.build_document(parse_requested(REQUEST))
    with pytest.raises(EmbeddingError, match="zero"):
        await steps.embed(document)


async def test_an_index_that_is_down_fails_the_step(parts: WorkerParts) -> None:
    steps = IngestionSteps(parts)
    index = parts.points
    assert isinstance(index, InMemoryIndex)
    index.down = True
    document = await steps.build_document(parse_requested(REQUEST))
    vector = await steps.embed(document)
    with pytest.raises(PointWriteError):
        await steps.upsert(document, vector)
    assert index.points == {}


async def test_a_failing_attempt_is_visible_on_the_row_while_the_run_goes_on(
    parts: WorkerParts,
) -> None:
    steps = IngestionSteps(parts)
    run = run_ref()
    await steps.record_indexing(run, 1, parse_requested(REQUEST))
    await steps.record_attempt_error(run, 3, "embed-document: EmbeddingError: down")
    row = (await parts.store.status([ISRC]))[ISRC]
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "indexing",
        3,
        "embed-document: EmbeddingError: down",
    )
    # A late error of an older run does not touch the row of the current one.
    await steps.record_attempt_error(run_ref("01OLD"), 6, "old news")
    assert (await parts.store.status([ISRC]))[ISRC]["last_error"] == (
        "embed-document: EmbeddingError: down"
    )


async def test_failure_is_recorded_unless_another_run_owns_the_row(parts: WorkerParts) -> None:
    steps = IngestionSteps(parts)
    request = parse_requested(REQUEST)
    failing = run_ref("01FAIL")
    await steps.record_indexing(failing, 1, request)
    assert await steps.record_failed(failing, 6, "EmbeddingError: down") == {"recorded": True}
    row = (await parts.store.status([ISRC]))[ISRC]
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "failed",
        6,
        "EmbeddingError: down",
    )

    # A forced run indexes the track; the late failure handler of another run leaves it alone.
    forced = run_ref("01FORCED", forced=True)
    started = await steps.record_indexing(forced, 1, request)
    await steps.record_indexed(forced, 1, request.title, started["startedAtMs"])
    assert await steps.record_failed(run_ref("01LATE"), 6, "late") == {"recorded": False}
    row = (await parts.store.status([ISRC]))[ISRC]
    assert (row["status"], row["run_id"], row["forced"]) == ("indexed", "01FORCED", True)


async def test_library_look_up_reports_unknown_isrcs(
    parts: WorkerParts, database_url: str, pg_query: object
) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO library.tracks (isrc, title, artist, album, outbox_id) "
            "VALUES (' usrc17607839 ', 'Old title', 'Queen', 'A Night', 1), "
            "('USRC17607839', 'Bohemian Rhapsody', 'Queen', 'A Night at the Opera', 2)"
        )
        conn.execute(
            "INSERT INTO library.albums (title, artist, artwork_url, tracks, outbox_id) "
            "VALUES ('Album', 'Band', 'https://img.example/b.jpg', "
            """'[{"isrc": "gbaye0000001", "title": "Song"}]', 3)"""
        )
    steps = IngestionSteps(parts)
    valid, invalid = split_isrcs(
        ["USRC17607839", "gbaye0000001", "ZZZZ00000000", "bad", "usrc17607839"]
    )
    assert valid == ["USRC17607839", "GBAYE0000001", "ZZZZ00000000"]
    assert invalid == ["bad"]
    found = await steps.look_up_library(valid)
    assert found["unknown"] == ["ZZZZ00000000"]
    assert found["tracks"] == [
        {
            "isrc": "USRC17607839",
            "title": "Bohemian Rhapsody",
            "artist": "Queen",
            "album": "A Night at the Opera",
            "artworkUrl": None,
        },
        {
            "isrc": "GBAYE0000001",
            "title": "Song",
            "artist": "Band",
            "album": "Album",
            "artworkUrl": "https://img.example/b.jpg",
        },
    ]


def test_document_names_are_the_seed_systems() -> None:
    document = TrackDocument("USRC11700001", "T", "A", "B", None)
    assert document.point_id == "2396f4b7-b9f9-7d99-64b4-d30f8c8f32f8"
    assert set(document.payload()) == {"isrc", "title", "artist", "album", "artworkUrl"}
    assert VECTOR_NAME == "interpretation_embedding"


async def test_log_events_carry_the_seeds_fields(parts: WorkerParts) -> None:
    steps = IngestionSteps(parts)
    request = parse_requested(REQUEST)
    run = run_ref()
    with capture_logs() as logs:
        started = await steps.record_indexing(run, 1, request)
        await steps.record_indexed(run, 1, request.title, started["startedAtMs"])
    by_event = {entry["event"]: entry for entry in logs}
    assert by_event["ingestion_started"]["trackTitle"] == "Bohemian Rhapsody"
    indexed = by_event["ingestion_indexed"]
    assert indexed["isrc"] == ISRC
    assert indexed["trackTitle"] == "Bohemian Rhapsody"
    assert indexed["result"] == "success"
    assert isinstance(indexed["duration_ms"], int)
    assert indexed["log_level"] == "info"
