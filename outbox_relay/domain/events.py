"""The ``track/ingestion.requested`` event: its id rule and its wire encoding.

``data`` follows the schema the ingestion worker validates; keys that are absent stay absent.
Events are encoded once, to bytes, so the publisher can measure and split requests without
encoding anything twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

EVENT_NAME: Final = "track/ingestion.requested"


def event_id(isrc: str, *, force: bool, row_id: int) -> str:
    """Deterministic, so Inngest's one-run-per-id de-duplication makes repeats one ingestion.

    A forced re-ingestion must run even if the track ran within 24 h, so it gets its own id.
    """
    if force:
        return f"track-ingestion-{isrc}-{row_id}"
    return f"track-ingestion-{isrc}"


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """One event ready to send: its outbox row, its id and its encoded JSON."""

    row_id: int
    isrc: str
    event_id: str
    body: bytes

    @property
    def size(self) -> int:
        return len(self.body)


def encode_event(
    *,
    row_id: int,
    isrc: str,
    title: str,
    artist: str,
    album: str,
    artwork_url: str | None,
    priority: int | None,
    force: bool,
    ts_ms: int,
) -> TrackEvent:
    """Builds and encodes one event; ``ts_ms`` is the row's creation time in ms."""
    data: dict[str, Any] = {"isrc": isrc, "title": title, "artist": artist, "album": album}
    if artwork_url is not None:
        data["artworkUrl"] = artwork_url
    if priority is not None:
        data["priority"] = priority
    if force:
        data["force"] = True
    ident = event_id(isrc, force=force, row_id=row_id)
    body = orjson.dumps({"name": EVENT_NAME, "id": ident, "data": data, "ts": ts_ms})
    return TrackEvent(row_id=row_id, isrc=isrc, event_id=ident, body=body)


def encode_batch(events: list[TrackEvent]) -> bytes:
    """A JSON array of already-encoded events, without decoding them again."""
    return b"[" + b",".join(event.body for event in events) + b"]"
