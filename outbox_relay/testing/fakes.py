"""In-memory fakes of every port in :mod:`outbox_relay.ports`, for the fast tier of tests.

They are test equipment, not simplifications: each follows its real counterpart's contract, so
a test of the relay loop against them asserts what the loop does against the real parts.

- :class:`OutboxTable` and :class:`FakeOutbox`: ``outbox.messages`` and the two statements of
  ``db/queries.sql`` the loop runs (``claim`` and ``record_outcomes``), with the same leases,
  claim tokens, album fan-out and ``next_attempt_at`` rules. ``tests/relay/test_store_contract.py``
  runs one scenario against this and against PostgreSQL and compares the rows.
- :class:`FakePublisher`: the Event API publisher's contract (requests of at most
  ``max_events_per_request``, no request started unless its whole timeout fits before the
  deadline, a rejection charges one event and the rest are sent again, an outage sends nothing
  more), with switches: reject an ISRC, go down (with or without ``Retry-After``), be slow.
- :class:`FakeIndexChecker`: a set of point ids, with a failure switch and a latency that
  turns into the real checker's timeout.
- :class:`FakeCatalog` and :class:`FakeCatalogCache`: the TIDAL catalog's contract (requests
  of at most 20 ids, ids it does not know absent from the answer, an outage or refused
  credentials raise and keep nothing) with switches, and ``outbox.catalog_tracks``.
- :class:`FakeListener`: wake-ups on demand; wakes once when it "connects", as the real one.
- :class:`FakeTagReader`: tags (or a read error) by path.
- :class:`FakeEmbedder` and :class:`InMemoryIndex`: the ingestion worker's embedder, and a
  point writer that is also an index checker, so a test sees the worker's writes through the
  relay's check.

A fake's fault switches are plain attributes and methods: a test flips them while the loop runs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from outbox_relay.domain.audio import AudioTags
from outbox_relay.domain.events import TrackEvent
from outbox_relay.domain.ingestion import TrackPoint
from outbox_relay.domain.isrc import point_id
from outbox_relay.errors import (
    CatalogAuthError,
    CatalogUnavailable,
    EmbeddingError,
    EventApiUnavailable,
    IndexCheckError,
    PointWriteError,
    TagReadError,
)
from outbox_relay.ports import CatalogTrack, Outcomes, PublishResult

__all__ = [
    "FakeCatalog",
    "FakeCatalogCache",
    "FakeEmbedder",
    "FakeIndexChecker",
    "FakeListener",
    "FakeOutbox",
    "FakePublisher",
    "FakeTagReader",
    "InMemoryIndex",
    "OutboxRow",
    "OutboxTable",
]


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def _sql_btrim(value: str) -> str:
    # btrim(text) with no characters given trims spaces only, as the claim's fan-out does.
    return value.strip(" ")


@dataclass(slots=True)
class OutboxRow:
    """One row of ``outbox.messages`` (migration 001's columns)."""

    id: int
    kind: str
    artist: str
    album: str
    next_attempt_at: datetime
    created_at: datetime
    parent_id: int | None = None
    isrc: str | None = None
    # migration 010: the TIDAL catalog id of a track known by it
    tidal_id: str | None = None
    title: str | None = None
    artwork_url: str | None = None
    priority: int | None = None
    force: bool = False
    tracks: list[dict[str, Any]] | None = None
    status: str = "pending"
    attempts: int = 0
    claim_token: uuid.UUID | None = None
    claimed_by: str | None = None
    processed_at: datetime | None = None
    skip_reason: str | None = None
    last_error: str | None = None
    # [{"at", "attempt", "error"}], as migration 007's column
    error_history: list[dict[str, Any]] = field(default_factory=list)
    event_id: str | None = None
    inngest_id: str | None = None

    def claimed(self, track_count: int | None) -> dict[str, Any]:
        """The row as the claim statement returns it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "parent_id": self.parent_id,
            "isrc": self.isrc,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "artwork_url": self.artwork_url,
            "priority": self.priority,
            "force": self.force,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "track_count": track_count,
            "tidal_id": self.tidal_id,
        }


class OutboxTable:
    """``outbox.messages`` in memory, shared by every :class:`FakeOutbox` (replica) on it.

    ``clock`` plays PostgreSQL's ``now()``. ``enqueue_track`` and ``enqueue_album`` insert as
    the SQL functions do, without their argument checks (those are tested against PostgreSQL).

    The wake-up locks of migration 011 (docs/wakeups.md): ``busy`` is the replica holding BUSY;
    ``writers_in_flight`` counts writers still in a transaction that saw it held (GATE is clear
    at 0); ``listeners`` are woken by a relay that hands its sweep over.
    """

    def __init__(self, clock: Callable[[], datetime] = _wall_clock) -> None:
        self.clock = clock
        self.rows: dict[int, OutboxRow] = {}
        self._next_id = 1
        self.busy: FakeOutbox | None = None
        self.writers_in_flight = 0
        self.listeners: list[FakeListener] = []

    def _insert(self, **columns: Any) -> OutboxRow:
        now = self.clock()
        columns.setdefault("next_attempt_at", now)
        columns.setdefault("created_at", now)
        row = OutboxRow(id=self._next_id, **columns)
        self._next_id += 1
        self.rows[row.id] = row
        return row

    def enqueue_track(
        self,
        isrc: str | None,
        title: str,
        artist: str,
        album: str,
        priority: int | None = None,
        force: bool = False,
        artwork_url: str | None = None,
        tidal_id: str | None = None,
    ) -> int:
        """As ``outbox.enqueue_track`` (with ``tidal_id``: ``outbox.enqueue_track_by_tidal_id``):
        returns the row id."""
        return self._insert(
            kind="track",
            isrc=isrc,
            tidal_id=tidal_id,
            title=title,
            artist=artist,
            album=album,
            priority=priority,
            force=force,
            artwork_url=artwork_url,
        ).id

    def enqueue_album(
        self,
        title: str,
        artist: str,
        tracks: Sequence[Mapping[str, Any]],
        artwork_url: str | None = None,
    ) -> int:
        """As ``outbox.enqueue_album``: the album's title goes in ``album``; returns the id."""
        return self._insert(
            kind="album",
            artist=artist,
            album=title,
            artwork_url=artwork_url,
            tracks=[dict(track) for track in tracks],
        ).id

    def by_status(self) -> Counter[str]:
        """How many rows each status holds (``outbox.summary``, without the empty ones)."""
        return Counter(row.status for row in self.rows.values())

    def claimable(self) -> list[OutboxRow]:
        """Pending rows whose ``next_attempt_at`` has come, in claim order."""
        now = self.clock()
        rows = [r for r in self.rows.values() if r.status == "pending" and r.next_attempt_at <= now]
        rows.sort(key=lambda r: (r.next_attempt_at, r.id))
        return rows

    def tracks(self) -> list[OutboxRow]:
        """Every track row (enqueued or fanned out), by id."""
        return [row for row in self.rows.values() if row.kind == "track"]


@dataclass(frozen=True, slots=True)
class ClaimMade:
    """What :class:`FakeOutbox` saw of one claim (for tests of ordering and leases)."""

    token: uuid.UUID
    ids: tuple[int, ...]
    at: float  # time.monotonic() when the claim was made
    lease_ends: float  # time.monotonic() when its lease runs out


@dataclass(frozen=True, slots=True)
class OutcomesRecorded:
    """What :class:`FakeOutbox` saw of one ``record_outcomes`` call."""

    token: uuid.UUID
    outcomes: dict[int, str]  # row id -> outcome, as sent
    updated: int
    at: float  # time.monotonic() when it was written


class FakeOutbox:
    """The :class:`~outbox_relay.ports.Outbox` port on an :class:`OutboxTable`.

    Statement by statement the rules of ``db/queries.sql``: ``claim`` picks pending rows whose
    ``next_attempt_at`` has come, oldest first, moves it a lease ahead and fans albums out;
    ``record_outcomes`` touches only rows still holding the token.

    Fault switches: ``fail_claims`` / ``fail_records`` make the next N calls raise
    ``ConnectionResetError`` (a lost connection, one of ``CONNECTION_ERRORS``);
    ``claim_latency`` / ``record_latency`` make each call take that long (the write happens at
    the end, as a statement's commit does).
    """

    def __init__(
        self,
        table: OutboxTable | None = None,
        *,
        replica_id: str = "fake",
        lease_seconds: float = 30.0,
        max_attempts: int = 5,
    ) -> None:
        self.table = table if table is not None else OutboxTable()
        self.replica_id = replica_id
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.fail_claims = 0
        self.fail_records = 0
        self.claim_latency = 0.0
        self.record_latency = 0.0
        self.claims: list[ClaimMade] = []
        self.recorded: list[OutcomesRecorded] = []
        self.closed = False
        self.owes_sweep = False

    async def claim(
        self, limit: int, *, wake: bool = True, awake_after: int = 0
    ) -> tuple[uuid.UUID, list[dict[str, Any]]]:
        if self.claim_latency:
            await asyncio.sleep(self.claim_latency)
        if self.fail_claims:
            self.fail_claims -= 1
            raise ConnectionResetError("fake outbox: the claim's connection was lost")
        if wake:
            self._take_busy()
        token = uuid.uuid4()
        table = self.table
        now = table.clock()
        lease_end = now + timedelta(seconds=self.lease_seconds)
        picked = sorted(table.claimable()[:limit], key=lambda r: r.id)
        claimed: list[dict[str, Any]] = []
        albums: list[OutboxRow] = []
        for row in picked:
            row.claim_token = token
            row.claimed_by = self.replica_id
            row.next_attempt_at = lease_end
            if row.kind == "album":
                assert row.tracks is not None
                row.status = "fanned_out" if row.tracks else "skipped"
                row.skip_reason = None if row.tracks else "no_tracks"
                row.processed_at = now
                albums.append(row)
                claimed.append(row.claimed(track_count=len(row.tracks)))
            else:
                row.skip_reason = None
                row.processed_at = None
                claimed.append(row.claimed(track_count=None))
        for album in albums:
            for track in album.tracks or ():
                artist = track.get("artist")
                fanned = table._insert(
                    kind="track",
                    parent_id=album.id,
                    isrc=track.get("isrc"),
                    tidal_id=track.get("tidalTrackId"),
                    title=track.get("title"),
                    artist=artist if artist and _sql_btrim(artist) else album.artist,
                    album=album.album,
                    artwork_url=album.artwork_url,
                    created_at=album.created_at,
                    claim_token=token,
                    claimed_by=self.replica_id,
                    next_attempt_at=lease_end,
                )
                claimed.append(fanned.claimed(track_count=None))
        if awake_after and len(claimed) >= awake_after:  # a sweep that found rows: stay awake
            self._take_busy()
        at = time.monotonic()
        self.claims.append(
            ClaimMade(token, tuple(r["id"] for r in claimed), at, at + self.lease_seconds)
        )
        return token, claimed

    def _take_busy(self) -> None:
        if self.table.busy is None:
            self.table.busy = self
            self.owes_sweep = True

    @property
    def awake(self) -> bool:
        return self.table.busy is self

    async def step_down(self) -> bool:
        if self.table.busy is self:
            self.table.busy = None
        return await self.gate_clear()

    async def gate_clear(self) -> bool:
        return self.table.writers_in_flight == 0

    async def wake_relays(self) -> None:
        for listener in self.table.listeners:
            listener.notify()

    async def record_outcomes(self, token: uuid.UUID, outcomes: Outcomes) -> int:
        if not outcomes:
            return 0
        if self.record_latency:
            await asyncio.sleep(self.record_latency)
        if self.fail_records:
            self.fail_records -= 1
            raise ConnectionResetError("fake outbox: the outcomes' connection was lost")
        now = self.table.clock()
        updated: set[int] = set()
        for row_id, outcome, event_id, inngest_id, skip_reason, error, retry_in in zip(
            outcomes.ids,
            outcomes.outcomes,
            outcomes.event_ids,
            outcomes.inngest_ids,
            outcomes.skip_reasons,
            outcomes.errors,
            outcomes.retry_in,
            strict=True,
        ):
            row = self.table.rows.get(row_id)
            if row is None or row.claim_token != token or row_id in updated:
                continue
            updated.add(row_id)
            dead = outcome == "failed" and row.attempts + 1 >= self.max_attempts
            if outcome == "failed":
                row.status = "dead" if dead else "pending"
                row.next_attempt_at = now + timedelta(seconds=retry_in)
                row.attempts += 1
            elif outcome == "released":
                row.status = "pending"
                row.next_attempt_at = now + timedelta(seconds=retry_in)
            else:
                row.status = outcome
            row.processed_at = now if outcome in ("published", "skipped") or dead else None
            row.claim_token = None
            row.event_id = event_id if event_id is not None else row.event_id
            row.inngest_id = inngest_id if inngest_id is not None else row.inngest_id
            row.skip_reason = skip_reason
            # As record_outcomes: last_error only while current, every rejection in the history.
            if outcome in ("published", "skipped"):
                row.last_error = None
            elif error is not None:
                row.last_error = error
            if outcome == "failed" and error is not None:
                row.error_history.append({"at": now, "attempt": row.attempts, "error": error})
        self.recorded.append(
            OutcomesRecorded(
                token,
                dict(zip(outcomes.ids, outcomes.outcomes, strict=True)),
                len(updated),
                time.monotonic(),
            )
        )
        return len(updated)

    async def close(self) -> None:
        self.closed = True
        if self.table.busy is self:  # a session's advisory locks end with it
            self.table.busy = None


@dataclass(frozen=True, slots=True)
class RequestSent:
    """One request the :class:`FakePublisher` started."""

    started: float  # time.monotonic()
    deadline: float | None
    events: tuple[TrackEvent, ...]


@dataclass(slots=True)
class _Outage:
    error: EventApiUnavailable
    after_requests: int
    probes_left: int | None


class FakePublisher:
    """The :class:`~outbox_relay.ports.Publisher` port, as :class:`EventApiPublisher` behaves.

    - Events go in requests of at most ``max_events_per_request``; no request is started unless
      ``request_timeout`` fits before the deadline (then the rest are ``unsent`` and
      ``out_of_time``).
    - ``reject(isrc)``: every event of that ISRC is refused (charged); the events before it in
      its request are accepted, the ones after it sent again at once.
    - ``go_down(...)``: an outage from the ``after_requests``-th request on (and every probe
      fails) until ``come_back()`` or ``recover_after_probes`` failed probes; nothing more is
      sent in a publish call once one request met it.
    - ``latency``: each request takes this long; at ``request_timeout`` or more it is a timeout
      (an outage), as with the real client.
    - ``watch(table)``: each request then notes in :attr:`unrecorded_batches` how many batches
      (claim tokens) have events out but outcomes not yet recorded in ``table``, its own
      included: what a crash at that instant would make Inngest receive again.
    """

    def __init__(
        self,
        *,
        request_timeout: float = 10.0,
        max_events_per_request: int = 5000,
        latency: float = 0.0,
    ) -> None:
        self.request_timeout = request_timeout
        self.max_events_per_request = max_events_per_request
        self.latency = latency
        self.requests: list[RequestSent] = []
        self.accepted: list[TrackEvent] = []
        self.rejections: list[TrackEvent] = []
        self.probes: list[float] = []  # time.monotonic() of each probe
        self.turns = 0
        self._rejected: dict[str, str] = {}
        self._outage: _Outage | None = None
        self._ids = 0
        self.closed = False
        self.unrecorded_batches: list[int] = []
        self._table: OutboxTable | None = None
        self._unrecorded: set[int] = set()  # ids of accepted rows not yet seen recorded

    # -- switches ---------------------------------------------------------------------------

    def reject(self, isrc: str, error: str = "400: event data is invalid") -> None:
        self._rejected[isrc] = error

    def go_down(
        self,
        cause: str = "5xx",
        detail: str = "503: service unavailable",
        *,
        retry_after: float | None = None,
        after_requests: int = 0,
        recover_after_probes: int | None = None,
    ) -> None:
        self._outage = _Outage(
            EventApiUnavailable(cause, detail, retry_after), after_requests, recover_after_probes
        )

    def come_back(self) -> None:
        self._outage = None

    @property
    def down(self) -> bool:
        return self._outage is not None and self._outage.after_requests == 0

    def watch(self, table: OutboxTable) -> None:
        self._table = table

    def accepted_isrcs(self) -> Counter[str]:
        """How many times each ISRC was accepted."""
        return Counter(event.isrc for event in self.accepted)

    # -- the port ---------------------------------------------------------------------------

    async def wait_turn(self) -> None:
        self.turns += 1

    async def probe(self) -> None:
        self.probes.append(time.monotonic())
        outage = self._outage
        if outage is None:
            return
        if outage.probes_left is not None:
            if outage.probes_left <= 0:
                self._outage = None
                return
            outage.probes_left -= 1
        raise outage.error

    async def publish(
        self, events: Sequence[TrackEvent], deadline: float | None = None
    ) -> PublishResult:
        result = PublishResult()
        size = self.max_events_per_request
        pending = deque(list(events[i : i + size]) for i in range(0, len(events), size))
        while pending:
            chunk = pending.popleft()
            if result.outage is not None or result.out_of_time:
                result.unsent.extend(chunk)
                continue
            if deadline is not None and time.monotonic() + self.request_timeout > deadline:
                result.out_of_time = True
                result.unsent.extend(chunk)
                continue
            outage = self._request(chunk, deadline)
            if self.latency:
                await asyncio.sleep(min(self.latency, self.request_timeout))
                if self.latency >= self.request_timeout:
                    outage = EventApiUnavailable(
                        "timeout", f"no answer within {self.request_timeout} s"
                    )
            if outage is not None:
                result.outage = outage
                result.unsent.extend(chunk)
                continue
            for position, event in enumerate(chunk):
                error = self._rejected.get(event.isrc)
                if error is None:
                    continue
                self._accept(result, chunk[:position])
                result.rejected.append((event, error))
                self.rejections.append(event)
                if position + 1 < len(chunk):
                    pending.appendleft(chunk[position + 1 :])
                break
            else:
                self._accept(result, chunk)
        return result

    async def close(self) -> None:
        self.closed = True

    def _request(
        self, chunk: list[TrackEvent], deadline: float | None
    ) -> EventApiUnavailable | None:
        self.requests.append(RequestSent(time.monotonic(), deadline, tuple(chunk)))
        if self._table is not None:
            rows = self._table.rows
            # An accepted row is recorded once its outcome clears its claim token.
            self._unrecorded = {i for i in self._unrecorded if rows[i].claim_token is not None}
            tokens = {rows[i].claim_token for i in self._unrecorded}
            tokens.add(rows[chunk[0].row_id].claim_token)
            self.unrecorded_batches.append(len(tokens))
        outage = self._outage
        if outage is None:
            return None
        if outage.after_requests > 0:
            outage.after_requests -= 1
            return None
        return outage.error

    def _accept(self, result: PublishResult, events: Sequence[TrackEvent]) -> None:
        for event in events:
            self._ids += 1
            result.accepted.append((event, f"01FAKE{self._ids:020d}"))
            self.accepted.append(event)
            if self._table is not None:
                self._unrecorded.add(event.row_id)


class FakeIndexChecker:
    """The :class:`~outbox_relay.ports.IndexChecker` port over a set of point ids.

    ``failure`` (a message) makes every check raise :class:`IndexCheckError`; a ``latency`` of
    ``timeout`` or more makes it wait ``timeout`` and raise, as the Qdrant checker does.
    """

    def __init__(self, isrcs: Iterable[str] = (), *, timeout: float = 5.0) -> None:
        self.points: set[str] = {point_id(isrc) for isrc in isrcs}
        self.timeout = timeout
        self.latency = 0.0
        self.failure: str | None = None
        self.calls: list[list[str]] = []
        self.closed = False

    def index(self, *isrcs: str) -> None:
        """Puts the points of these (canonical) ISRCs in the index."""
        self.points.update(point_id(isrc) for isrc in isrcs)

    async def indexed(self, point_ids: Sequence[str]) -> set[str]:
        self.calls.append(list(point_ids))
        if self.latency:
            await asyncio.sleep(min(self.latency, self.timeout))
            if self.latency >= self.timeout:
                raise IndexCheckError(f"no answer within {self.timeout} s")
        if self.failure is not None:
            raise IndexCheckError(self.failure)
        return self.points.intersection(point_ids)

    async def close(self) -> None:
        self.closed = True


class FakeListener:
    """The :class:`~outbox_relay.ports.WakeSource` port: wake-ups when a test says so.

    Like the LISTEN connection, it wakes the loop once when it connects (``run``), so the loop
    sweeps what was committed before; ``notify()`` is a notification, ``reconnect()`` a
    reconnect.
    """

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.notified = False
        self.reconnected = False
        self.connected = asyncio.Event()
        self.problem = "not connected yet"
        self.connections = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.reconnect()
        try:
            await stop.wait()
        finally:
            self.connected.clear()

    def notify(self) -> None:
        self.notified = True
        self.wake.set()

    def reconnect(self) -> None:
        self.connected.set()
        self.connections += 1
        self.reconnected = True
        self.wake.set()


@dataclass
class FakeTagReader:
    """The :class:`~outbox_relay.ports.TagReader` port: tags, or a read error, by path.

    A path it does not know is ``unreadable``, as a file that vanished would be.
    """

    files: dict[str, AudioTags | TagReadError] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)

    def read(self, path: str) -> AudioTags:
        self.reads.append(path)
        found = self.files.get(path)
        if found is None:
            raise TagReadError("unreadable", f"{path}: no such file")
        if isinstance(found, TagReadError):
            raise found
        return found


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


class FakeCatalog:
    """The catalog (:class:`~outbox_relay.ports.Catalog`): tracks by id, requests of at most
    :attr:`max_ids` ids recorded in :attr:`requests`.

    Switches: :meth:`go_down` (every call raises :class:`CatalogUnavailable` with a cause and
    an optional ``Retry-After``), :meth:`refuse_credentials` (:class:`CatalogAuthError`),
    :meth:`come_back`; ``latency`` per request.
    """

    max_ids = 20

    def __init__(
        self, tracks: Mapping[str, str] | None = None, *, country_code: str = "US"
    ) -> None:
        # id -> ISRC
        self.isrcs: dict[str, str] = dict(tracks or {})
        self._country_code = country_code
        self.requests: list[tuple[str, ...]] = []
        self.failed_calls = 0
        self.latency = 0.0
        self._outage: CatalogUnavailable | None = None
        self._refused = False

    @property
    def country_code(self) -> str:
        return self._country_code

    def go_down(self, cause: str = "5xx", retry_after: float | None = None) -> None:
        self._outage = CatalogUnavailable(cause, f"fake catalog is down ({cause})", retry_after)

    def refuse_credentials(self) -> None:
        self._refused = True

    def come_back(self) -> None:
        self._outage = None
        self._refused = False

    def ids_asked(self) -> list[str]:
        return [i for request in self.requests for i in request]

    async def tracks(self, tidal_ids: Sequence[str]) -> dict[str, CatalogTrack]:
        if self._refused:
            self.failed_calls += 1
            raise CatalogAuthError("fake catalog: the client credentials are refused")
        if self._outage is not None:
            self.failed_calls += 1
            raise self._outage
        ids = list(dict.fromkeys(tidal_ids))
        found: dict[str, CatalogTrack] = {}
        for start in range(0, len(ids), self.max_ids):
            chunk = tuple(ids[start : start + self.max_ids])
            if self.latency:
                await asyncio.sleep(self.latency)
            self.requests.append(chunk)
            for tidal_id in chunk:
                if tidal_id in self.isrcs:
                    found[tidal_id] = CatalogTrack(self.isrcs[tidal_id], f"Track {tidal_id}")
        return found

    async def close(self) -> None:
        pass


class FakeCatalogCache:
    """``outbox.catalog_tracks`` in memory (:class:`~outbox_relay.ports.CatalogCache`);
    ``unknown_ttl`` seconds (on ``clock``) for ids the catalog did not return."""

    def __init__(
        self, *, unknown_ttl: float = 86400.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rows: dict[str, tuple[CatalogTrack | None, float]] = {}
        self.unknown_ttl = unknown_ttl
        self.clock = clock
        self.fail = 0

    async def cached(self, tidal_ids: Sequence[str]) -> dict[str, CatalogTrack | None]:
        if self.fail:
            self.fail -= 1
            raise ConnectionResetError("fake catalog cache: connection lost")
        now = self.clock()
        answer: dict[str, CatalogTrack | None] = {}
        for tidal_id in tidal_ids:
            if tidal_id in self.rows:
                track, at = self.rows[tidal_id]
                if track is not None or now - at < self.unknown_ttl:
                    answer[tidal_id] = track
        return answer

    async def remember(self, found: dict[str, CatalogTrack], unknown: Sequence[str]) -> None:
        now = self.clock()
        for tidal_id, track in found.items():
            self.rows[tidal_id] = (track, now)
        for tidal_id in unknown:
            self.rows[tidal_id] = (None, now)

    async def close(self) -> None:
        pass
