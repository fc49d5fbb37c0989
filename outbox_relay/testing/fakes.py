"""In-memory implementations of the ports, for the fast tier of tests (test equipment).

Only for what a unit test must control: the real adapters are tested against real parts
(embedded Qdrant, a real HTTP server) elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from outbox_relay.domain.ingestion import TrackPoint
from outbox_relay.errors import EmbeddingError, IndexCheckError, PointWriteError


@dataclass
class FakeEmbedder:
    """A :class:`~outbox_relay.ports.Embedder` with a switch to fail its next calls.

    Vectors are a function of the text's length and first character: deterministic, never zero.
    """

    dimensions: int = 8
    name: str = "fake"
    fail_next: int = 0
    fail_always: bool = False
    calls: list[list[str]] = field(default_factory=list)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        if self.fail_always or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise EmbeddingError("fake embedder: connection refused")
        vectors = []
        for text in texts:
            vector = [0.0] * self.dimensions
            vector[len(text) % self.dimensions] = 1.0
            vector[(ord(text[0]) if text else 0) % self.dimensions] += 0.5
            vectors.append(vector)
        return vectors

    async def close(self) -> None:
        return None


@dataclass
class InMemoryIndex:
    """A :class:`~outbox_relay.ports.PointWriter` and :class:`~outbox_relay.ports.IndexChecker`
    over one dict, so a test sees the worker's writes through the relay's check."""

    points: dict[str, TrackPoint] = field(default_factory=dict)
    fail_next: int = 0
    down: bool = False
    writes: int = 0

    async def upsert(self, point: TrackPoint) -> None:
        if self.down or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise PointWriteError("in-memory index: unavailable")
        self.writes += 1
        self.points[point.id] = point

    async def indexed(self, point_ids: Sequence[str]) -> set[str]:
        if self.down:
            raise IndexCheckError("in-memory index: unavailable")
        return {pid for pid in point_ids if pid in self.points}

    async def close(self) -> None:
        return None
