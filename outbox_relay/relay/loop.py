"""The relay loop: wait (notify | poll | stop), claim, check, publish, record, repeat.

One batch at a time, and no database transaction open across a call to Qdrant or Inngest:
the claim is a lease written into the rows. What can go wrong, and what happens:

- Inngest is down (connection, timeout, 5xx, 429, auth): unsent rows go back uncharged and the
  loop stops claiming until a probe succeeds, backing off with jitter and honouring
  ``Retry-After``. An outage of any length never makes a dead letter.
- Inngest rejects an event: that row alone is charged an attempt; after ``max_attempts`` it
  is dead with its last error. The rest of the batch goes out.
- Qdrant fails or is slow: the batch is published anyway (fail open).
- The catalog (tracks known by TIDAL id only) is down, limiting or refusing our credentials:
  the rows that need a lookup go back uncharged and lookups pause with backoff
  (:mod:`outbox_relay.relay.lookup`); every other row of the batch goes out.
- PostgreSQL goes away: the loop reconnects with backoff; the listener re-LISTENs and sweeps.
- The process dies: its leases expire and another relay claims the rows again.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from outbox_relay.aio import wait_event
from outbox_relay.backoff import Backoff
from outbox_relay.db.connection import CONNECTION_ERRORS
from outbox_relay.domain.events import TrackEvent, encode_event
from outbox_relay.domain.isrc import normalise_isrc, point_id
from outbox_relay.errors import EventApiUnavailable, IndexCheckError
from outbox_relay.logs import log_batch
from outbox_relay.metrics import RelayMetrics, observe_many
from outbox_relay.ports import (
    Catalog,
    CatalogCache,
    ClaimedRow,
    IndexChecker,
    Outbox,
    Outcomes,
    Publisher,
    PublishResult,
    WakeSource,
)
from outbox_relay.relay.lookup import IsrcLookup
from outbox_relay.relay.maintenance import Maintenance

log = structlog.get_logger("outbox_relay.relay")

_SKIP_REASONS = frozenset({"missing_isrc", "invalid_isrc"})
# While a writer that saw this relay awake is still in its transaction, the relay asks again
# after this long, doubling up to the cap: its rows are swept at most the cap after it commits.
_GATE_RETRY_FIRST = 0.001
_GATE_RETRY_CAP = 0.05
# How long a stopping relay waits for those writers before it wakes the other relays anyway.
_HAND_OVER_WAIT = 2.0
# A relay that holds BUSY and whose claim found rows stays awake (docs/wakeups.md, "Staying
# awake"): it sends its next claim this much per row found (at most the cap) after the last,
# or at once if its batch took longer, so that the rows of a fast stream gather into batches
# instead of costing a claim, a request and an outcome each; a claim that found fewer than
# _GATHER_MIN_ROWS (a trickle) steps down at once, as before, and writers wake it again.
_GATHER_MIN_ROWS = 2
_GATHER_PER_ROW = 0.0004
_GATHER_CAP = 0.01


@dataclass(frozen=True, slots=True)
class RelayConfig:
    batch_size: int = 500
    poll_interval: float = 1.0
    max_attempts: int = 5
    # reconnects and Event API probes
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # the delay before a rejected event is tried again
    retry_base: float = 5.0
    retry_cap: float = 600.0
    # a claim's lease: a batch must be recorded well within it
    lease_seconds: float = 30.0
    # a pause for an Event API outage longer than this is logged at error level
    outage_alarm_after: float = 180.0
    # True: a batch's request waits for the previous batch's outcome (a crash re-sends at most
    # one batch); False: the two overlap (up to two batches re-sent)
    one_unrecorded_batch: bool = True


def lease_margin(lease_seconds: float) -> float:
    """Time kept, at the end of a lease, to record a batch's outcome after its last request."""
    return min(2.0, 0.2 * lease_seconds)


def request_timeout(publish_timeout: float, lease_seconds: float) -> float:
    """The Event API timeout a relay can afford: a request is started only when a whole
    timeout fits before the lease ends, so at least two must fit in a lease."""
    return min(publish_timeout, (lease_seconds - lease_margin(lease_seconds)) / 2)


# A claimed batch: its token, its rows, and when the claim was sent (time.monotonic()).
_Claim = tuple[uuid.UUID, Sequence[ClaimedRow], float]


@dataclass(slots=True)
class _Album:
    title: str
    total: int = 0
    scheduled: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass(slots=True)
class _Batch:
    """One claimed batch while it is being processed."""

    token: uuid.UUID
    # when catalog lookups for this batch must have answered (time.monotonic()): half the lease
    lookup_deadline: float | None = None
    rows: dict[int, ClaimedRow] = field(default_factory=dict)
    outcomes: Outcomes = field(default_factory=Outcomes)
    albums: dict[int, _Album] = field(default_factory=dict)

    def album_of(self, row: ClaimedRow) -> _Album | None:
        parent = row["parent_id"]
        if parent is None:
            return None
        album = self.albums.get(parent)
        if album is None:
            album = self.albums[parent] = _Album(title=row["album"])
        return album


class Relay:
    """Moves outbox rows to the Event API until ``stop()`` is called.

    Everything outside the process comes in as a port (:mod:`outbox_relay.ports`): the outbox,
    its wake-ups, the index and the Event API; ``apps/relay.py`` wires the real ones, the fast
    tier of tests the fakes of :mod:`outbox_relay.testing.fakes`.
    """

    def __init__(
        self,
        *,
        store: Outbox,
        listener: WakeSource,
        publisher: Publisher,
        checker: IndexChecker,
        metrics: RelayMetrics,
        config: RelayConfig,
        maintenance: Maintenance | None = None,
        catalog: Catalog | None = None,
        catalog_cache: CatalogCache | None = None,
    ) -> None:
        """``catalog`` (and its cache) resolve the ISRCs of tracks known by TIDAL id only;
        without one, such rows wait (uncharged) for a relay that has it."""
        self._store = store
        self._lookup = IsrcLookup(
            catalog=catalog,
            cache=catalog_cache,
            metrics=metrics,
            backoff_base=config.backoff_base,
            backoff_cap=config.backoff_cap,
        )
        self._catalog_cache = catalog_cache
        self._maintenance = maintenance
        self._publisher = publisher
        self._checker = checker
        self._metrics = metrics
        # The causes counted once a batch, bound once: labels() costs a lock and a lookup.
        self._backlog_wakeups = metrics.wakeups.labels(cause="backlog")
        self._awake_wakeups = metrics.wakeups.labels(cause="awake")
        self._config = config
        self._stop = asyncio.Event()
        self._listener = listener
        # Set by the listener (a notification, a reconnect), by stop() and when the Event API
        # comes back; cleared just before each claim.
        self._wake = listener.wake
        self._db_backoff = Backoff(config.backoff_base, config.backoff_cap)
        self._api_backoff = Backoff(config.backoff_base, config.backoff_cap)
        self._retry = Backoff(config.retry_base, config.retry_cap, floor=config.retry_base / 2)
        self._outage: EventApiUnavailable | None = None
        self._outage_since = 0.0
        self._lease_margin = lease_margin(config.lease_seconds)
        # A batch claimed while the previous one was being published (see _claim_and_process),
        # with the monotonic time its claim was sent: its lease runs from then.
        self._ahead: _Claim | None = None
        # The previous batch's outcome being written on the store's second connection while
        # this batch is claimed and published (see _start_recording).
        self._recording: asyncio.Task[None] | None = None
        # Set while the loop waits for work: lets tests and tools act "between batches".
        self.idle = asyncio.Event()
        self._database_ok = False
        # Why the database check of /readyz fails, while it does.
        self._database_problem = "no batch claimed yet"
        self.batches = 0
        # Staying awake (_gather): the pause after the last claim that found rows, when the
        # batch in hand was claimed (time.monotonic()), the stretch's claims and rows so far.
        self._pause = 0.0
        self._claim_sent = 0.0
        self._awake_claims = self._awake_rows = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks the loop to finish the batch in flight and return. Safe from a signal handler."""
        self._stop.set()
        self._wake.set()  # an idle loop waits on this, not on stop

    def readiness(self) -> dict[str, bool]:
        """Ready means: the database answers and the LISTEN connection is up (and, with a
        catalog, its credentials were not refused)."""
        checks = {"database": self._database_ok, "listen": self._listener.connected.is_set()}
        if self._lookup.configured:
            checks["catalog"] = self._lookup.problem is None
        return checks

    def readiness_problems(self) -> dict[str, str]:
        """Why each failing check of :meth:`readiness` fails, in a few words."""
        problems: dict[str, str] = {}
        if not self._database_ok:
            problems["database"] = self._database_problem
        if not self._listener.connected.is_set():
            problems["listen"] = self._listener.problem
        if self._lookup.problem is not None:
            problems["catalog"] = self._lookup.problem
        return problems

    @property
    def event_api_available(self) -> bool:
        return self._outage is None

    async def run(self) -> None:
        """Runs the loop and the listener; if either fails, both stop and the error propagates."""
        log.info(
            "relay_started",
            batch_size=self._config.batch_size,
            one_unrecorded_batch=self._config.one_unrecorded_batch,
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._listener.run(self._stop), name="listener")
                if self._maintenance is not None:
                    group.create_task(self._maintenance.run(self._stop), name="maintenance")
                group.create_task(self._loop(), name="loop")
        finally:
            await self._store.close()
            if self._catalog_cache is not None:
                await self._catalog_cache.close()
            log.info("relay_stopped", batches=self.batches)

    async def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if self._outage is not None:
                    await self._wait_for_event_api()
                    continue
                try:
                    claimed = await self._claim_and_process()
                    if claimed >= self._config.batch_size:
                        self._backlog_wakeups.inc()
                        continue
                    if await self._gather(claimed):
                        continue
                    if not await self._step_down():
                        continue
                except CONNECTION_ERRORS as exc:
                    await self._database_down(exc)
                    continue
                await self._idle()
        finally:
            # The side tasks watch the same event; setting it ends the task group.
            self._stop.set()
            await self._await_recording()
            await self._release_ahead()
            await self._hand_over()

    async def _gather(self, claimed: int) -> bool:
        """While rows keep coming, stays awake instead of stepping down; True to claim again.

        Writers do not wake a relay that holds BUSY, so one that stays awake comes back by
        itself: its next claim goes out ``claimed`` x :data:`_GATHER_PER_ROW` (at most
        :data:`_GATHER_CAP`) after the last one was sent, or at once when the batch took
        longer. Slower streams are claimed as a woken relay would claim them; faster ones in
        batches that grow with their rate. A claim that comes back empty gets one more pause
        before the relay steps down (commits come in bursts). A trickle (fewer than
        :data:`_GATHER_MIN_ROWS` rows a claim) steps down at once, as before. The pause is a
        plain sleep: notifications then are stale (writers that looked at BUSY before this relay
        took it) and would cut every pause short, and a stop waits for it as for the batch in
        flight (it is at most :data:`_GATHER_CAP`), which spares every batch a timer's
        cancellation and its exception.
        """
        if not self._store.awake or self._stop.is_set():
            return self._end_stretch(claimed)
        if claimed >= _GATHER_MIN_ROWS:
            self._pause = min(_GATHER_CAP, claimed * _GATHER_PER_ROW)
            pause = self._claim_sent + self._pause - time.monotonic()
        elif not claimed and self._pause:
            pause, self._pause = self._pause, 0.0  # one more chance, then step down
        else:
            return self._end_stretch(claimed)
        self._awake_claims += 1
        self._awake_rows += claimed
        if pause > 0:
            await asyncio.sleep(pause)
        self._awake_wakeups.inc()
        return True

    def _end_stretch(self, claimed: int) -> bool:
        """The relay steps down (or never stayed awake): False, and the stretch logged."""
        self._pause = 0.0
        if self._awake_claims:
            log.debug(
                "relay_awake_stretch_ended",
                claims=self._awake_claims,
                rows=self._awake_rows,
                last_claim_rows=claimed,
            )
            self._awake_claims = self._awake_rows = 0
        return False

    async def _idle(self) -> None:
        """Sleeps until a notification, the poll interval, or stop."""
        listener = self._listener
        if not self._wake.is_set():
            # A wake-up that came during the batch keeps its cause.
            listener.notified = listener.reconnected = False
            # Nothing to claim: let the last batch's outcome land before sleeping, so that an
            # idle relay has recorded everything it did.
            await self._await_recording()
        if self._stop.is_set():
            # stop() sets the wake-up too, but a claim since then may have cleared it (each claim
            # clears it first): without this, a stopping relay slept a whole poll interval.
            return
        self.idle.set()
        try:
            woke = await wait_event(self._wake, self._config.poll_interval)
        finally:
            self.idle.clear()
        if self._stop.is_set():
            return
        if woke and listener.notified:
            cause = "notify"
        elif woke and listener.reconnected:
            cause = "reconnect"
        else:
            cause = "poll"
        self._metrics.wakeups.labels(cause=cause).inc()

    async def _step_down(self) -> bool:
        """Before sleeping, hands the wake-ups back to the writers; True when it may sleep.

        While this relay held BUSY, writers did not notify (docs/wakeups.md). It releases BUSY,
        waits until every writer that saw it held has ended (they hold GATE until they commit;
        a try-lock, so no writer ever waits for the relay), and claims once more: that claim sees
        all their rows. A notification meanwhile means work has come: claim on instead.
        """
        if not self._store.owes_sweep or self._stop.is_set() or self._outage is not None:
            # Another relay holds BUSY and sweeps, or none does and writers notify; a stopping
            # relay claims nothing more and hands over instead (_hand_over); a paused one
            # publishes nothing until a probe succeeds, then claims at once (the sweep is owed
            # still, and runs before it next sleeps).
            return True
        if not await self._store.step_down() and not await self._ask_gate(self._wake):
            self._metrics.step_downs.labels(outcome="woken").inc()
            return False
        # Every writer that saw BUSY held has ended: the duty is done once this claim runs (a
        # claim-ahead inside it may take BUSY again, and owe the next sweep).
        self._store.owes_sweep = False
        swept = await self._claim_and_process(wake=False)
        self._metrics.step_downs.labels(outcome="rows" if swept else "sleep").inc()
        return swept == 0

    async def _ask_gate(
        self, interrupt: asyncio.Event | None, *, deadline: float = math.inf
    ) -> bool:
        """Asks for GATE again until it is clear (True: every writer that saw BUSY held has
        ended), or until ``interrupt`` is set or ``deadline`` passes (False). It asks after
        :data:`_GATE_RETRY_FIRST`, doubling up to :data:`_GATE_RETRY_CAP`, so such a writer's
        rows are swept at most the cap after it commits."""
        delay = _GATE_RETRY_FIRST
        while time.monotonic() < deadline:
            if interrupt is None:
                await asyncio.sleep(delay)
            elif await wait_event(interrupt, delay):
                return False
            if await self._store.gate_clear():
                return True
            delay = min(2 * delay, _GATE_RETRY_CAP)
        return False

    async def _hand_over(self) -> None:
        """A stopping relay that held BUSY: once the writers that saw it awake have ended (or
        after :data:`_HAND_OVER_WAIT`), wakes the other relays so that one of them sweeps."""
        if not self._store.owes_sweep:
            return
        try:
            clear = await self._store.step_down()
            if not clear:
                log.info("relay_hand_over_waiting", reason="a writer that saw this relay awake")
                # The stop event is set: nothing but the deadline ends the wait.
                clear = await self._ask_gate(None, deadline=time.monotonic() + _HAND_OVER_WAIT)
            await self._store.wake_relays()
            self._store.owes_sweep = False
            log.info("relay_handed_over", writers_done=clear)
        except CONNECTION_ERRORS as exc:
            # The session is gone, and BUSY with it: writers notify again from now on.
            log.warning("relay_hand_over_failed", error=f"{type(exc).__name__}: {exc}")

    async def _database_down(self, exc: BaseException) -> None:
        self._database_ok = False
        self._database_problem = f"database error, reconnecting: {type(exc).__name__}: {exc}"
        delay = self._db_backoff.next_delay()
        log.error(
            "database_error", error=f"{type(exc).__name__}: {exc}", retry_in_s=round(delay, 3)
        )
        await wait_event(self._stop, delay)

    # -- one batch ---------------------------------------------------------------------------

    async def _claim_and_process(self, *, wake: bool = True) -> int:
        """Claims one batch and sees it through; returns how many rows were claimed.

        When the batch is full there is more waiting, so the next claim runs on the database
        while this batch is checked and published (the connection is free then), and is
        collected before this batch's outcomes are written. An outage or a stop hands that
        claimed-ahead batch back at once (:meth:`_release_ahead`).
        """
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            # Wait for the request budget's next slot *before* claiming, so that the rows that
            # arrive meanwhile go out in this batch instead of waiting a slot more.
            await self._publisher.wait_turn()
            # Cleared just before each claim: a notification after this point wakes us again.
            self._wake.clear()
            sent_at = time.monotonic()
            claim = self._store.claim(
                self._config.batch_size, wake=wake, awake_after=0 if wake else 1
            )
            ahead = (*await claim, sent_at)
        token, rows, claimed_at = ahead
        self._claim_sent = claimed_at
        self._database_ok = True
        self._db_backoff.reset()
        if not rows:
            return 0
        started = time.perf_counter()
        batch = _Batch(token, lookup_deadline=claimed_at + self._config.lease_seconds / 2)
        claimed = 0
        tracks: list[ClaimedRow] = []
        for row in rows:
            if row["parent_id"] is None:
                claimed += 1
            if row["kind"] == "album":
                self._album_claimed(batch, row)
            else:
                batch.rows[row["id"]] = row
                tracks.append(row)
        self._metrics.batch_size.observe(claimed)

        claim_ahead = None
        if claimed >= self._config.batch_size and not self._stop.is_set():
            self._wake.clear()
            ahead_sent_at = time.monotonic()
            claim_ahead = asyncio.create_task(self._store.claim(self._config.batch_size))
            await asyncio.sleep(0)  # its statement goes out before this batch's check
        try:
            events = await self._check_and_encode(batch, tracks)
            if self._config.one_unrecorded_batch:
                # The previous batch's outcome, sent as soon as its request was answered, is
                # usually written by now (it overlapped that batch's lines and this batch's
                # claim and check): at most one batch is ever published but not yet recorded,
                # which bounds what a crash makes Inngest receive again to one batch.
                waited = time.perf_counter()
                await self._await_recording()
                self._metrics.outcome_wait.observe(time.perf_counter() - waited)
            # Whatever Inngest says, the batch must be recorded before its lease runs out, or
            # another replica could claim and publish the same rows while we still work on them.
            deadline = claimed_at + self._config.lease_seconds - self._lease_margin
            result = await self._publisher.publish(events, deadline) if events else PublishResult()
            retries = self._outcomes(batch, result)
            # The outcome goes to the database now; the lines, metrics and the next batch's
            # claim and check run while it is written.
            await self._start_recording(batch, started)
            self._report(batch, result, retries)
        finally:
            if claim_ahead is not None:
                self._ahead = await self._collect(claim_ahead, ahead_sent_at)
        if result.outage is not None:
            self._enter_outage(result.outage, unsent=len(result.unsent))
            await self._release_ahead()
        elif result.out_of_time:
            log.warning(
                "batch_out_of_time",
                rows_returned=len(result.unsent),
                lease_s=self._config.lease_seconds,
                hint="handed back uncharged before the lease ran out; they go out next batch",
            )
        return claimed

    @staticmethod
    async def _collect(
        claim: asyncio.Task[tuple[uuid.UUID, Sequence[ClaimedRow]]], sent_at: float
    ) -> _Claim | None:
        try:
            token, rows = await claim
        except CONNECTION_ERRORS:
            return None  # the next claim reconnects, and reports the error if it persists
        return (token, rows, sent_at) if rows else None

    async def _release_ahead(self) -> None:
        """Hands a claimed-ahead batch back uncharged (an outage began, or the relay stops)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        await self._await_recording()  # one statement at a time on the outcomes connection
        token, rows, _ = ahead
        batch = _Batch(token)
        for row in rows:
            if row["kind"] == "album":
                # Already fanned out by the claim: its tracks are released below.
                self._album_claimed(batch, row)
            else:
                batch.outcomes.released(row["id"])
        try:
            await asyncio.shield(self._store.record_outcomes(token, batch.outcomes))
        except CONNECTION_ERRORS as exc:
            log.warning(
                "database_error",
                error=f"{type(exc).__name__}: {exc}",
                action="handing back a claimed-ahead batch; its lease will expire instead",
                rows=len(batch.outcomes),
            )
        self._metrics.rows_released.inc(len(batch.outcomes))

    def _album_claimed(self, batch: _Batch, row: ClaimedRow) -> None:
        """An album row arrives already fanned out; its tracks follow as rows of their own."""
        album = batch.albums.setdefault(row["id"], _Album(title=row["album"]))
        album.total = row["track_count"]
        if album.total == 0:
            # The claim already marked it skipped (no_tracks); say so loudly.
            self._metrics.events_skipped.labels(reason="no_tracks").inc()
            log.error(
                "ingestion_error",
                result="error",
                reason="no_tracks",
                error="album has no track listing; nothing to schedule",
                album=row["album"],
                outbox_id=row["id"],
            )

    async def _check_and_encode(self, batch: _Batch, tracks: list[ClaimedRow]) -> list[TrackEvent]:
        """Looks up missing ISRCs, validates ISRCs, asks the index in one call, and encodes
        what must be sent."""
        looked_up, waiting = await self._look_up(batch, tracks)
        candidates: list[tuple[ClaimedRow, str, str | None]] = []
        for row in tracks:
            if row["id"] in waiting:
                continue
            isrc = normalise_isrc(looked_up.get(row["id"], row["isrc"]))
            if isrc in _SKIP_REASONS:
                self._skip(batch, row, isrc)
                continue
            candidates.append((row, isrc, None if row["force"] else point_id(isrc)))

        indexed = await self._indexed([pid for _, _, pid in candidates if pid is not None])
        events: list[TrackEvent] = []
        for row, isrc, pid in candidates:
            if pid is not None and pid in indexed:
                self._skip(batch, row, "already_indexed", isrc=isrc)
                continue
            events.append(
                encode_event(
                    row_id=row["id"],
                    isrc=isrc,
                    title=row["title"],
                    artist=row["artist"],
                    album=row["album"],
                    artwork_url=row["artwork_url"],
                    priority=row["priority"],
                    force=row["force"],
                    ts_ms=int(row["created_at"].timestamp() * 1000),
                )
            )
        return events

    async def _look_up(
        self, batch: _Batch, tracks: list[ClaimedRow]
    ) -> tuple[dict[int, str], set[int]]:
        """ISRCs of the rows known by catalog id only, by row id; and the rows handed back
        because the catalog cannot answer now (recorded as released, uncharged).

        An id the catalog did not return makes its row ``missing_isrc`` (skipped) with an
        ``album_track_listing_error`` log naming the album.
        """
        needs = [
            row
            for row in tracks
            if row["tidal_id"] is not None and normalise_isrc(row["isrc"]) == "missing_isrc"
        ]
        if not needs:
            return {}, set()
        lookup = await self._lookup.resolve(
            [row["tidal_id"] for row in needs], batch.lookup_deadline
        )
        found: dict[int, str] = {}
        waiting: set[int] = set()
        unknown: dict[int | None, list[ClaimedRow]] = {}
        for row in needs:
            tidal_id = row["tidal_id"]
            if tidal_id in lookup.isrcs:
                found[row["id"]] = lookup.isrcs[tidal_id]
            elif tidal_id in lookup.deferred:
                waiting.add(row["id"])
                batch.outcomes.released(row["id"], retry_in=lookup.retry_in)
            else:
                unknown.setdefault(row["parent_id"], []).append(row)
        if waiting:
            self._metrics.rows_released.inc(len(waiting))
            log.warning(
                "catalog_lookup_deferred",
                rows=len(waiting),
                retry_in_s=round(lookup.retry_in, 3),
                reason=self._lookup.problem or "catalog unavailable or paused",
            )
        for parent_id, rows in unknown.items():
            log.error(
                "album_track_listing_error",
                result="error",
                reason="missing_isrc",
                album=rows[0]["album"],
                outbox_id=parent_id,
                tidal_track_ids=[row["tidal_id"] for row in rows],
                error="the catalog does not know these track ids (or not in this country)",
            )
        return found, waiting

    async def _indexed(self, point_ids: Sequence[str]) -> set[str]:
        if not point_ids:
            return set()
        started = time.perf_counter()
        try:
            return await self._checker.indexed(point_ids)
        except IndexCheckError as exc:
            self._metrics.qdrant_errors.inc()
            log.error(
                "qdrant_error",
                result="error",
                error=str(exc),
                tracks=len(point_ids),
                action="publishing without the existence check",
            )
            return set()
        finally:
            self._metrics.qdrant_check_duration.observe(time.perf_counter() - started)

    def _skip(
        self, batch: _Batch, row: ClaimedRow, reason: str, *, isrc: str | None = None
    ) -> None:
        batch.outcomes.skipped(row["id"], reason)
        self._metrics.events_skipped.labels(reason=reason).inc()
        album = batch.album_of(row)
        if album is not None:
            album.skipped += 1
        log.warning(
            "ingestion_skipped",
            isrc=isrc or row["isrc"],
            trackTitle=row["title"],
            result="skipped",
            reason=reason,
            outbox_id=row["id"],
        )

    def _outcomes(self, batch: _Batch, result: PublishResult) -> list[float]:
        """Turns the publisher's answer into the rows' outcomes, the part of a batch's
        bookkeeping its recording needs (the rest, :meth:`_report`, runs while it is written).
        Returns the retry delay of each rejected event, in order."""
        batch.outcomes.published_all(result.accepted)
        if batch.albums:
            # Counted here, not in _report: the album lines are logged once the batch is recorded.
            for event, _ in result.accepted:
                album = batch.album_of(batch.rows[event.row_id])
                if album is not None:
                    album.scheduled += 1
        retries: list[float] = []
        for event, error in result.rejected:
            row = batch.rows[event.row_id]
            retry_in = self._retry.delay(row["attempts"])
            batch.outcomes.failed(event.row_id, event.event_id, error, retry_in)
            retries.append(retry_in)
            album = batch.album_of(row)
            if album is not None:
                album.failed += 1
        for event in result.unsent:
            batch.outcomes.released(event.row_id)
        return retries

    def _report(self, batch: _Batch, result: PublishResult, retries: list[float]) -> None:
        """The publisher's answer as metrics and log events (the outcomes are being recorded)."""
        now = time.time()
        # The hot path: one line and one latency per event, each written for the whole batch
        # at once (log_batch renders the lines as the logger would; observe_many fills the
        # histogram's buckets as observe() would), not one call per event.
        latencies: list[float] = []
        lines: list[dict[str, object]] = []
        rows = batch.rows
        for event, inngest_id in result.accepted:
            row = rows[event.row_id]
            latency = now - row["created_at"].timestamp()
            if latency < 0.0:
                latency = 0.0
            latencies.append(latency)
            lines.append(
                {
                    "isrc": event.isrc,
                    "trackTitle": row["title"],
                    "result": "success",
                    "event_id": event.event_id,
                    "inngest_id": inngest_id,
                    "outbox_id": event.row_id,
                    "duration_ms": round(latency * 1000, 3),
                }
            )
        observe_many(self._metrics.commit_to_accepted, latencies)
        log_batch(log, "info", "ingestion_scheduled", lines)
        self._metrics.events_published.inc(len(result.accepted))

        for (event, error), retry_in in zip(result.rejected, retries, strict=True):
            row = batch.rows[event.row_id]
            attempts = row["attempts"] + 1
            dead = attempts >= self._config.max_attempts
            self._metrics.events_rejected.inc()
            if dead:
                self._metrics.rows_dead.inc()
            log.error(
                "ingestion_error",
                isrc=event.isrc,
                trackTitle=row["title"],
                result="error",
                reason="dead_letter" if dead else "rejected",
                error=error,
                attempts=attempts,
                outbox_id=event.row_id,
                retry_in_s=None if dead else round(retry_in, 3),
            )
        self._metrics.rows_released.inc(len(result.unsent))

    # -- recording a batch's outcomes ----------------------------------------------------------
    # One verb throughout: the store's record_outcomes is the only write of a batch's outcomes;
    # the loop starts it behind the next claim, awaits it, and retries it.

    async def _start_recording(self, batch: _Batch, started: float) -> None:
        """Records the batch's outcomes on the store's second connection while the loop moves
        on to the next claim; batches are recorded in order, one at a time.

        The recording task is started here and given one turn of the event loop, so its
        statement is on the wire before the loop goes back to work that does not yield (the
        lines of this batch, the rows of the next): the write overlaps that work instead of
        following it.
        """
        await self._await_recording()
        self._recording = asyncio.create_task(self._record_outcomes(batch, started))
        await asyncio.sleep(0)

    async def _await_recording(self) -> None:
        """Waits for the batch being recorded, if any."""
        recording, self._recording = self._recording, None
        if recording is None:
            return
        try:
            await asyncio.shield(recording)
        except CONNECTION_ERRORS as exc:
            # _record_outcomes gives up only once the relay stops: the rows' leases expire and
            # their events go out again with the same ids.
            log.warning(
                "database_error",
                error=f"{type(exc).__name__}: {exc}",
                action="recording a batch's outcome while stopping; its lease will expire",
            )

    async def _record_outcomes(self, batch: _Batch, started: float) -> None:
        """Records the batch's outcomes, retrying while the database is away; then logs its
        albums and counts it.

        Nothing cancels this task, and whoever waits for it does so through a shield
        (:meth:`_await_recording`), so a cancellation cannot tear a write: its statements are
        awaited directly, without a task and a shield of their own for each.
        """
        expected = len(batch.outcomes)
        backoff: Backoff | None = None  # made at the first failure (its generator is seeded)
        while expected:
            try:
                updated = await self._store.record_outcomes(batch.token, batch.outcomes)
            except CONNECTION_ERRORS as exc:
                # The events may already be out; if we cannot record that before the lease
                # expires, they will be sent again with the same ids (Inngest runs them once).
                if backoff is None:
                    backoff = Backoff(self._config.backoff_base, min(self._config.backoff_cap, 5.0))
                if self._stop.is_set() and backoff.failures >= 3:
                    raise
                delay = backoff.next_delay()
                log.error(
                    "database_error",
                    error=f"{type(exc).__name__}: {exc}",
                    action="recording batch outcome",
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            if updated < expected:
                self._metrics.leases_lost.inc(expected - updated)
                log.warning(
                    "lease_lost",
                    rows=expected - updated,
                    hint="the batch took longer than OUTBOX_LEASE_SECONDS and was reclaimed",
                )
            break
        self._log_albums(batch)
        self.batches += 1
        self._metrics.batch_duration.observe(time.perf_counter() - started)

    def _log_albums(self, batch: _Batch) -> None:
        for album_id, album in batch.albums.items():
            handled = album.scheduled + album.skipped + album.failed
            log.info(
                "album_ingestion_batch",
                album=album.title,
                outbox_id=album_id,
                result="error" if album.failed or album.total == 0 else "success",
                total_tracks=album.total or handled,
                scheduled_count=album.scheduled,
                skipped_count=album.skipped,
                failed_count=album.failed,
            )

    # -- outages -----------------------------------------------------------------------------

    def _enter_outage(self, outage: EventApiUnavailable, *, unsent: int) -> None:
        self._outage = outage
        self._outage_since = time.monotonic()
        self._metrics.event_api_available.set(0)
        log.error(
            "inngest_error",
            result="error",
            reason=outage.cause,
            error=outage.detail,
            rows_returned=unsent,
            action="pausing claims until the Event API answers a probe",
        )

    async def _wait_for_event_api(self) -> None:
        """Probes with backoff (at least Retry-After) until the Event API answers."""
        assert self._outage is not None
        delay = max(self._outage.retry_after or 0.0, self._api_backoff.next_delay())
        if await wait_event(self._stop, delay):
            return
        try:
            await self._publisher.probe()
        except EventApiUnavailable as still_down:
            self._outage = still_down
            paused = time.monotonic() - self._outage_since
            # Short outages are routine (a deploy, a blip); one that lasts is an operator's.
            level = log.error if paused >= self._config.outage_alarm_after else log.warning
            level(
                "inngest_error",
                result="error",
                reason=still_down.cause,
                error=still_down.detail,
                paused_s=round(paused, 1),
                action="probe failed; still paused",
            )
            return
        log.info("inngest_recovered", probes=self._api_backoff.failures)
        self._outage = None
        self._api_backoff.reset()
        self._metrics.event_api_available.set(1)
        self._wake.set()
