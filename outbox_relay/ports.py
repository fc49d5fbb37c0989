"""What the loops (the relay, the ingestion worker) need from the outside world, as protocols.

The loops depend on these, not on aiohttp or qdrant-client, so they read as the algorithms they
are. Each has one real adapter in :mod:`outbox_relay.adapters` and an in-memory fake in
:mod:`outbox_relay.testing.fakes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from outbox_relay.domain.audio import AudioTags
from outbox_relay.domain.events import TrackEvent
from outbox_relay.domain.ingestion import TrackPoint
from outbox_relay.errors import EventApiUnavailable


@dataclass(slots=True)
class PublishResult:
    """What became of each event of one publish call.

    ``unsent`` events were not accepted because of an outage (``outage`` says which) or because
    the batch ran out of time (``out_of_time``: its lease would expire first): they are returned
    to the outbox without charging an attempt. ``rejected`` ones were refused by Inngest itself
    and are charged.
    """

    accepted: list[tuple[TrackEvent, str]] = field(default_factory=list)
    rejected: list[tuple[TrackEvent, str]] = field(default_factory=list)
    unsent: list[TrackEvent] = field(default_factory=list)
    outage: EventApiUnavailable | None = None
    out_of_time: bool = False


class Publisher(Protocol):
    async def publish(
        self, events: Sequence[TrackEvent], deadline: float | None = None
    ) -> PublishResult:
        """Sends the events; never raises for an outage (see ``PublishResult.outage``).

        No request is started, and none outlasts, ``deadline`` (``time.monotonic()``).
        """
        ...

    async def wait_turn(self) -> None:
        """Returns when a request could start at once under the client-side request budget.

        The loop waits here *before* it claims, so rows that arrive meanwhile join the batch.
        """
        ...

    async def probe(self) -> None:
        """Returns when the Event API takes requests again; raises EventApiUnavailable."""
        ...

    async def close(self) -> None: ...


class IndexChecker(Protocol):
    async def indexed(self, point_ids: Sequence[str]) -> set[str]:
        """Which of these point ids exist in the index.

        Raises :class:`~outbox_relay.errors.IndexCheckError` when the index cannot answer.
        """
        ...

    async def close(self) -> None: ...


class TagReader(Protocol):
    """Reads one audio file's tags; called from worker threads, so it must be thread-safe.

    Raises :class:`~outbox_relay.errors.TagReadError` (with a ``reason``) when the file is not
    audio, is of an unsupported format, or cannot be read.
    """

    def read(self, path: str) -> AudioTags: ...


class Embedder(Protocol):
    """Turns documents into vectors of :attr:`dimensions` floats (the ingestion worker's port)."""

    @property
    def dimensions(self) -> int: ...

    @property
    def name(self) -> str:
        """What kind of embedder this is, for the run's result and the logs (``tei``, ...)."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order.

        Raises :class:`~outbox_relay.errors.EmbeddingError` when it cannot (the step is retried).
        """
        ...

    async def close(self) -> None: ...


class PointWriter(Protocol):
    """Writes tracks' points into the index the relay checks (the ingestion worker's port)."""

    async def upsert(self, point: TrackPoint) -> None:
        """Stores the point, creating the collection if it is missing; returns once durable.

        Raises :class:`~outbox_relay.errors.PointWriteError` when it cannot (the step is retried).
        """
        ...

    async def close(self) -> None: ...
