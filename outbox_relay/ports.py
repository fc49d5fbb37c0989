"""What the loops (the relay, the ingestion worker) need from the outside world, as protocols.

The loops depend on these, not on asyncpg, aiohttp or qdrant-client, so they read as the
algorithms they are and run without PostgreSQL in the fast tier of tests. Each has one real
implementation (the outbox and its wake-ups in :mod:`outbox_relay.relay.store` and
:mod:`outbox_relay.relay.listener`, the others in :mod:`outbox_relay.adapters`) and an in-memory
fake in :mod:`outbox_relay.testing.fakes`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from outbox_relay.domain.audio import AudioTags
from outbox_relay.domain.events import TrackEvent
from outbox_relay.domain.ingestion import TrackPoint
from outbox_relay.errors import EventApiUnavailable


class ClaimedRow(Protocol):
    """One row as a claim returns it, read by column name.

    The columns: ``id``, ``kind`` (``track`` or ``album``), ``parent_id`` (the album a track
    was fanned out from, else None), ``isrc``, ``title``, ``artist``, ``album``,
    ``artwork_url``, ``priority``, ``force``, ``attempts`` (charged so far), ``created_at`` (an
    aware datetime), ``track_count`` (album rows only, else None) and ``tidal_id`` (the catalog
    id of a track known by it, else None). An asyncpg ``Record`` is
    one; the fakes use a dict.
    """

    def __getitem__(self, column: str, /) -> Any: ...


@dataclass(slots=True)
class Outcomes:
    """The outcome of each row of a batch, as parallel arrays (the shape the SQL unnests).

    ``published`` and ``skipped`` are final; ``failed`` (Inngest rejected the event) charges an
    attempt and makes the row dead after the store's ``max_attempts``, else claimable after
    ``retry_in`` seconds; ``released`` (an outage, or out of time) charges nothing and makes
    the row claimable after its ``retry_in`` (0, at once, but for rows waiting on a paused
    catalog lookup).
    """

    ids: list[int] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)
    inngest_ids: list[str | None] = field(default_factory=list)
    skip_reasons: list[str | None] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    retry_in: list[float] = field(default_factory=list)

    def _add(
        self,
        row_id: int,
        outcome: str,
        *,
        event_id: str | None = None,
        inngest_id: str | None = None,
        skip_reason: str | None = None,
        error: str | None = None,
        retry_in: float = 0.0,
    ) -> None:
        self.ids.append(row_id)
        self.outcomes.append(outcome)
        self.event_ids.append(event_id)
        self.inngest_ids.append(inngest_id)
        self.skip_reasons.append(skip_reason)
        self.errors.append(error)
        self.retry_in.append(retry_in)

    def published(self, row_id: int, event_id: str, inngest_id: str) -> None:
        self._add(row_id, "published", event_id=event_id, inngest_id=inngest_id)

    def published_all(self, accepted: Sequence[tuple[TrackEvent, str]]) -> None:
        """``published`` for each (event, Inngest id), a whole publish result at once."""
        count = len(accepted)
        self.ids.extend([event.row_id for event, _ in accepted])
        self.outcomes.extend(["published"] * count)
        self.event_ids.extend([event.event_id for event, _ in accepted])
        self.inngest_ids.extend([inngest_id for _, inngest_id in accepted])
        self.skip_reasons.extend([None] * count)
        self.errors.extend([None] * count)
        self.retry_in.extend([0.0] * count)

    def skipped(self, row_id: int, reason: str, event_id: str | None = None) -> None:
        self._add(row_id, "skipped", skip_reason=reason, event_id=event_id)

    def failed(self, row_id: int, event_id: str, error: str, retry_in: float) -> None:
        self._add(row_id, "failed", event_id=event_id, error=error, retry_in=retry_in)

    def released(self, row_id: int, event_id: str | None = None, retry_in: float = 0.0) -> None:
        self._add(row_id, "released", event_id=event_id, retry_in=retry_in)

    def __len__(self) -> int:
        return len(self.ids)


class Outbox(Protocol):
    """The outbox table as the relay loop uses it: claim a batch, record its outcomes.

    A claim is a lease written into the rows, not a transaction held open: the claimed rows
    stay pending with ``next_attempt_at`` moved a lease ahead, so the rows of a relay that
    died are claimable again once the lease runs out. ``claim`` and ``record_outcomes`` may run
    at the same time (the loop records one batch while it claims the next); each is called by
    one caller at a time. Both raise one of
    :data:`~outbox_relay.db.connection.CONNECTION_ERRORS` when the database cannot be reached.
    """

    # Set when this relay took BUSY (writers stop notifying while it drains): it owes a sweep
    # before it sleeps (docs/wakeups.md). The loop clears it once the gate was clear.
    owes_sweep: bool

    async def claim(
        self, limit: int, *, wake: bool = True, awake_after: int = 0
    ) -> tuple[uuid.UUID, Sequence[ClaimedRow]]:
        """Claims up to ``limit`` claimable rows under a fresh token, oldest
        ``next_attempt_at`` first (then by id). With ``wake``, takes BUSY first when no relay
        holds it (and then ``owes_sweep``); the sweep before sleeping claims without it, and
        with ``awake_after`` takes it just after a claim that found at least that many rows
        (rows are still coming: the relay stays awake).

        An album row is fanned out by the same claim: it is returned finished (``fanned_out``,
        or ``skipped`` as ``no_tracks`` when it has no tracks) with its ``track_count``,
        followed by one new track row per track, already claimed under the same token.
        Those do not count towards ``limit``.
        """
        ...

    async def record_outcomes(self, token: uuid.UUID, outcomes: Outcomes) -> int:
        """Records a batch's outcomes in one write; returns how many rows still held
        ``token`` (rows whose lease ran out and were claimed again are left alone)."""
        ...

    @property
    def awake(self) -> bool:
        """Whether this relay holds BUSY now."""
        ...

    async def step_down(self) -> bool:
        """Releases BUSY; True when every writer that saw it held has ended (GATE is clear)."""
        ...

    async def gate_clear(self) -> bool:
        """Asks again whether GATE is clear (after a :meth:`step_down` that said no)."""
        ...

    async def wake_relays(self) -> None:
        """Wakes every listening relay (a stopping relay hands its sweep over)."""
        ...

    async def close(self) -> None: ...


class WakeSource(Protocol):
    """Tells the relay loop that rows may be waiting (LISTEN/NOTIFY in production).

    A hint, never the only path: the loop also polls. ``wake`` is set on a notification
    (``notified``) and after every (re)connect (``reconnected``: notifications sent while it
    was down are lost, so the loop sweeps); the loop clears all three.
    """

    wake: asyncio.Event
    notified: bool
    reconnected: bool
    # set while notifications can arrive (readiness)
    connected: asyncio.Event
    # why it is not connected, while it is not (the reason /readyz gives)
    problem: str

    async def run(self, stop: asyncio.Event) -> None:
        """Delivers wake-ups until ``stop`` is set."""
        ...


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


@dataclass(frozen=True, slots=True)
class CatalogTrack:
    """What the catalog says of one track id: its ISRC (as the catalog spells it) and title."""

    isrc: str
    title: str | None = None


class Catalog(Protocol):
    """The music catalog (TIDAL) as the relay uses it: ISRCs of tracks known by catalog id."""

    @property
    def country_code(self) -> str:
        """The country the catalog is asked for (availability, and so answers, depend on it)."""
        ...

    async def tracks(self, tidal_ids: Sequence[str]) -> dict[str, CatalogTrack]:
        """The tracks the catalog knows among ``tidal_ids`` (distinct), by id; an id missing
        from the answer is one the catalog does not know (or not in this country).

        Asks in requests of at most 20 ids, a few at a time, under a client-side pace. Raises
        :class:`~outbox_relay.errors.CatalogUnavailable` for an outage (connection, timeout,
        5xx, 429: nothing of the answer is kept) and
        :class:`~outbox_relay.errors.CatalogAuthError` when its credentials are refused.
        """
        ...

    async def close(self) -> None: ...


class CatalogCache(Protocol):
    """What the catalog answered before (``outbox.catalog_tracks``, migration 010)."""

    async def cached(self, tidal_ids: Sequence[str]) -> dict[str, CatalogTrack | None]:
        """The cached answers among ``tidal_ids``: a track, or None for an id the catalog
        did not return (while that is recent). Ids never asked for are absent.
        Raises one of :data:`~outbox_relay.db.connection.CONNECTION_ERRORS`."""
        ...

    async def remember(self, found: dict[str, CatalogTrack], unknown: Sequence[str]) -> None:
        """Caches one lookup's answer."""
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
