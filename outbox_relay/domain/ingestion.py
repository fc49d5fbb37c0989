"""What the ingestion worker writes to Qdrant for a track: its document, point and schema names.

The names are the seed system's (its worker's ``store-document`` step and its search service's
collection schema), so the relay's existence check, this worker and the seed system's search
service all read and write the same points: the point id is :func:`~.isrc.point_id`, the dense
vector is named ``interpretation_embedding`` and the payload keys are ``isrc``, ``title``,
``artist``, ``album`` and ``artworkUrl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from outbox_relay.domain.isrc import point_id

VECTOR_NAME: Final = "interpretation_embedding"
DEFAULT_EMBEDDING_DIMENSIONS: Final = 1024
# The payload field the relay and the search service look tracks up by (a keyword index).
ISRC_PAYLOAD_KEY: Final = "isrc"


@dataclass(frozen=True, slots=True)
class TrackDocument:
    """The text that is embedded and the payload stored beside the vector."""

    isrc: str
    title: str
    artist: str
    album: str
    artwork_url: str | None

    @property
    def text(self) -> str:
        """What the embedder reads: the fields a listener would search by, one a line.

        Labelled lines, so that an artist called like an album still embeds differently.
        """
        return f"title: {self.title}\nartist: {self.artist}\nalbum: {self.album}"

    @property
    def point_id(self) -> str:
        return point_id(self.isrc)

    def payload(self) -> dict[str, Any]:
        """The seed system's payload names; ``artworkUrl`` is null when there is none."""
        return {
            "isrc": self.isrc,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "artworkUrl": self.artwork_url,
        }

    def to_json(self) -> dict[str, Any]:
        """The document as a step result (memoised by Inngest between requests)."""
        return {**self.payload(), "text": self.text, "pointId": self.point_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrackDocument:
        return cls(
            isrc=data["isrc"],
            title=data["title"],
            artist=data["artist"],
            album=data["album"],
            artwork_url=data.get("artworkUrl"),
        )


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """One Qdrant point: id by the point-id rule, the named vector and the payload."""

    id: str
    vector: list[float]
    payload: dict[str, Any]

    @classmethod
    def of(cls, document: TrackDocument, vector: list[float]) -> TrackPoint:
        return cls(id=document.point_id, vector=vector, payload=document.payload())
