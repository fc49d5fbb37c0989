"""Contracts between the relay and the worker: every event the relay emits is one the worker
accepts, and the point the worker writes is the one the relay's existence check finds (the real
qdrant-client, embedded, in a temporary folder)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qdrant_client import AsyncQdrantClient, models

from outbox_relay.adapters.embeddings import LexicalEmbedder
from outbox_relay.adapters.qdrant import QdrantIndexChecker, QdrantPointWriter, open_client
from outbox_relay.domain.events import EVENT_NAME, encode_event
from outbox_relay.domain.ingestion import VECTOR_NAME, TrackDocument, TrackPoint
from outbox_relay.domain.isrc import point_id
from outbox_relay.errors import PointWriteError
from outbox_relay.worker.events import REQUESTED, parse_requested

isrcs = st.from_regex(r"[A-Z0-9]{12}", fullmatch=True)
# What outbox.check_text lets through: non-blank after trimming SQL's blanks.
texts = st.text(min_size=1, max_size=200).filter(lambda t: t.strip(" \t\n\r\f\v") != "")
urls = st.none() | st.from_regex(r"https?://[a-z0-9./_-]{1,60}", fullmatch=True)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    isrc=isrcs,
    title=texts,
    artist=texts,
    album=texts,
    artwork_url=urls,
    priority=st.none() | st.integers(min_value=-600, max_value=600),
    force=st.booleans(),
    row_id=st.integers(min_value=1, max_value=2**62),
)
def test_every_event_the_relay_emits_validates_against_the_worker_model(
    isrc: str,
    title: str,
    artist: str,
    album: str,
    artwork_url: str | None,
    priority: int | None,
    force: bool,
    row_id: int,
) -> None:
    event = encode_event(
        row_id=row_id,
        isrc=isrc,
        title=title,
        artist=artist,
        album=album,
        artwork_url=artwork_url,
        priority=priority,
        force=force,
        ts_ms=1_700_000_000_000,
    )
    wire = orjson.loads(event.body)
    assert wire["name"] == EVENT_NAME == REQUESTED
    request = parse_requested(wire["data"])
    assert (request.isrc, request.title, request.artist, request.album) == (
        isrc,
        title,
        artist,
        album,
    )
    assert request.artwork_url == artwork_url
    assert request.priority == priority
    assert request.force is force


@pytest.fixture(params=[False, True], ids=["on-the-loop", "own-thread"])
async def qdrant(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncQdrantClient]:
    """Embedded Qdrant, called on the test's loop or on a thread of its own (as the worker)."""
    client = open_client(
        url=None, path=str(tmp_path / "qdrant"), timeout=5, own_thread=request.param
    )
    yield client
    await client.close()


async def test_the_point_the_worker_writes_is_the_one_the_relay_finds(
    qdrant: AsyncQdrantClient,
) -> None:
    embedder = LexicalEmbedder(dimensions=64)
    writer = QdrantPointWriter(qdrant, "tracks", 64, timeout=5, owns_client=False)
    checker = QdrantIndexChecker(qdrant, "tracks", timeout=5, owns_client=False)
    other = point_id("GBAYE0000001")
    # No collection yet: nothing is indexed (and the check says so rather than failing).
    assert await checker.indexed([point_id("USRC17607839"), other]) == set()

    document = TrackDocument("USRC17607839", "Bohemian Rhapsody", "Queen", "A Night", None)
    [vector] = await embedder.embed([document.text])
    await writer.upsert(TrackPoint.of(document, vector))

    assert await checker.indexed([point_id("USRC17607839"), other]) == {point_id("USRC17607839")}
    # The seed system's names: its search service reads the same point.
    [record] = await qdrant.retrieve("tracks", [point_id("USRC17607839")], with_vectors=True)
    assert record.payload == {
        "isrc": "USRC17607839",
        "title": "Bohemian Rhapsody",
        "artist": "Queen",
        "album": "A Night",
        "artworkUrl": None,
    }
    assert isinstance(record.vector, dict) and set(record.vector) == {VECTOR_NAME}
    info = await qdrant.get_collection("tracks")
    params = info.config.params.vectors
    assert isinstance(params, dict)
    assert params[VECTOR_NAME].size == 64
    assert params[VECTOR_NAME].distance == models.Distance.COSINE
    # Writing again is an upsert: still one point.
    await writer.upsert(TrackPoint.of(document, vector))
    assert (await qdrant.count("tracks")).count == 1


async def test_a_collection_of_another_schema_is_refused_with_a_clear_error(
    qdrant: AsyncQdrantClient,
) -> None:
    await qdrant.create_collection(
        "tracks",
        vectors_config={VECTOR_NAME: models.VectorParams(size=32, distance=models.Distance.COSINE)},
    )
    writer = QdrantPointWriter(qdrant, "tracks", 64, timeout=5, owns_client=False)
    document = TrackDocument("USRC17607839", "T", "A", "B", None)
    with pytest.raises(PointWriteError, match=r"32-dimensional .* EMBEDDING_DIMENSIONS is 64"):
        await writer.upsert(TrackPoint.of(document, [1.0] * 64))


async def test_a_deleted_collection_is_created_again(qdrant: AsyncQdrantClient) -> None:
    writer = QdrantPointWriter(qdrant, "tracks", 4, timeout=5, owns_client=False)
    document = TrackDocument("USRC17607839", "T", "A", "B", None)
    await writer.upsert(TrackPoint.of(document, [1.0, 0.0, 0.0, 0.0]))
    await qdrant.delete_collection("tracks")
    await writer.upsert(TrackPoint.of(document, [1.0, 0.0, 0.0, 0.0]))
    assert (await qdrant.count("tracks")).count == 1
