"""ISRC rules, Qdrant point ids and the event shape (DESIGN.md contracts)."""

from __future__ import annotations

import orjson
import pytest

from outbox_relay.domain.events import EVENT_NAME, encode_batch, encode_event, event_id
from outbox_relay.domain.isrc import normalise_isrc, point_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("usrc17607839", "USRC17607839"),
        ("  USRC17607839\n", "USRC17607839"),
        ("GBAYE0000001", "GBAYE0000001"),
        (None, "missing_isrc"),
        ("", "missing_isrc"),
        ("   ", "missing_isrc"),
        ("USRC1760783", "invalid_isrc"),
        ("USRC176078390", "invalid_isrc"),
        ("US-RC1-76-07839", "invalid_isrc"),
        ("USRC17607 39", "invalid_isrc"),
        ("ÜSRC17607839", "invalid_isrc"),
    ],
)
def test_normalise_isrc(raw: str | None, expected: str) -> None:
    assert normalise_isrc(raw) == expected


def test_point_id_matches_the_seed_workers_test_vector() -> None:
    assert point_id("USRC11700001") == "2396f4b7-b9f9-7d99-64b4-d30f8c8f32f8"


def test_event_id_is_deterministic_unless_forced() -> None:
    assert event_id("USRC11700001", force=False, row_id=7) == "track-ingestion-USRC11700001"
    assert event_id("USRC11700001", force=True, row_id=7) == "track-ingestion-USRC11700001-7"


def test_event_keeps_absent_keys_absent() -> None:
    event = encode_event(
        row_id=1,
        isrc="USRC11700001",
        title="T",
        artist="A",
        album="Al",
        artwork_url=None,
        priority=None,
        force=False,
        ts_ms=1_700_000_000_000,
    )
    decoded = orjson.loads(event.body)
    assert decoded == {
        "name": EVENT_NAME,
        "id": "track-ingestion-USRC11700001",
        "data": {"isrc": "USRC11700001", "title": "T", "artist": "A", "album": "Al"},
        "ts": 1_700_000_000_000,
    }


def test_event_carries_optional_fields_when_given() -> None:
    event = encode_event(
        row_id=9,
        isrc="USRC11700001",
        title="T",
        artist="A",
        album="Al",
        artwork_url="https://img/x.jpg",
        priority=-600,
        force=True,
        ts_ms=1,
    )
    data = orjson.loads(event.body)["data"]
    assert data["artworkUrl"] == "https://img/x.jpg"
    assert data["priority"] == -600
    assert data["force"] is True
    assert event.event_id == "track-ingestion-USRC11700001-9"


def test_batch_is_a_json_array_of_the_encoded_events() -> None:
    events = [
        encode_event(
            row_id=i,
            isrc=f"USRC1170000{i}",
            title="T",
            artist="A",
            album="Al",
            artwork_url=None,
            priority=None,
            force=False,
            ts_ms=1,
        )
        for i in range(3)
    ]
    assert [e["id"] for e in orjson.loads(encode_batch(events))] == [e.event_id for e in events]
    assert encode_batch([]) == b"[]"
