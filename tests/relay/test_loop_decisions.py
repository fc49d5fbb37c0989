"""The relay loop's decisions, against the in-memory fakes: no PostgreSQL, no HTTP, no Qdrant.

The fast tier: every test runs the real :class:`~outbox_relay.relay.loop.Relay` (``run()``, its
task group, claim-ahead and background recording included) on the fakes of
:mod:`outbox_relay.testing.fakes`, whose outbox keeps ``db/queries.sql``'s contract
(``test_store_contract.py``). The same behaviours are tested end to end, slower, in the rest of
``tests/relay`` and in ``tests/faults``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from outbox_relay.domain.isrc import point_id
from outbox_relay.metrics import RelayMetrics
from outbox_relay.relay.loop import Relay, RelayConfig, lease_margin
from outbox_relay.testing.fakes import (
    FakeIndexChecker,
    FakeListener,
    FakeOutbox,
    FakePublisher,
    OutboxTable,
)

# Small delays so that retries, polls and backoff happen within milliseconds.
CONFIG = RelayConfig(
    batch_size=10,
    poll_interval=0.01,
    max_attempts=3,
    backoff_base=0.001,
    backoff_cap=0.01,
    retry_base=0.002,
    retry_cap=0.004,
    lease_seconds=10.0,
)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Polls ``predicate`` until it holds, or fails saying ``what`` never happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.001)


@dataclasses.dataclass
class Rig:
    """A relay on fakes, and the fakes, for one test."""

    config: RelayConfig
    table: OutboxTable
    store: FakeOutbox
    publisher: FakePublisher
    checker: FakeIndexChecker
    listener: FakeListener
    metrics: RelayMetrics
    relay: Relay
    task: asyncio.Task[None] | None = None

    def track(self, isrc: str | None, title: str = "Song", **kwargs: Any) -> int:
        return self.table.enqueue_track(isrc, title, "Artist", "Album", **kwargs)

    def tracks(self, count: int, prefix: str = "USRC1") -> list[int]:
        return [self.track(f"{prefix}{n:07d}", f"Song {n}") for n in range(count)]

    def settled(self) -> bool:
        """No row pending (due or not), nothing being recorded, and the loop asleep."""
        recording = self.relay._recording
        return (
            self.relay.idle.is_set()
            and "pending" not in self.table.by_status()
            and (recording is None or recording.done())
            and self.relay._ahead is None
        )

    async def drained(self, timeout: float = 5.0) -> None:
        await until(self.settled, "the relay to publish and record everything", timeout)

    def statuses(self) -> dict[str, int]:
        return dict(self.table.by_status())

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(f"outbox_relay_{name}", labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def relay_on_fakes(
    config: RelayConfig = CONFIG, *, publisher: FakePublisher | None = None, start: bool = True
) -> AsyncIterator[Rig]:
    table = OutboxTable()
    store = FakeOutbox(table, lease_seconds=config.lease_seconds, max_attempts=config.max_attempts)
    publisher = publisher or FakePublisher(request_timeout=1.0)
    publisher.watch(table)
    checker = FakeIndexChecker()
    listener = FakeListener()
    metrics = RelayMetrics(CollectorRegistry())
    relay = Relay(
        store=store,
        listener=listener,
        publisher=publisher,
        checker=checker,
        metrics=metrics,
        config=config,
    )
    rig = Rig(config, table, store, publisher, checker, listener, metrics, relay)
    if start:
        rig.task = asyncio.create_task(relay.run())
    try:
        yield rig
    finally:
        relay.stop()
        if rig.task is not None:
            await asyncio.wait_for(rig.task, 10)
            assert store.closed
    if config.one_unrecorded_batch:
        # Every test on the fakes checks the invariant: no request goes out while another
        # batch's events are out and its outcome unrecorded (a crash re-sends one batch at most).
        assert max(publisher.unrecorded_batches, default=0) <= 1, publisher.unrecorded_batches


# -- skips -----------------------------------------------------------------------------------


async def test_missing_and_invalid_isrcs_are_skipped_without_asking_the_index() -> None:
    async with relay_on_fakes() as rig:
        missing = [rig.track(None), rig.track("   ")]
        invalid = rig.track("US-RC1-76-07839")
        good = rig.track(" usrc17607839 ")
        await rig.drained()

    rows = rig.table.rows
    assert [rows[i].skip_reason for i in missing] == ["missing_isrc", "missing_isrc"]
    assert rows[invalid].skip_reason == "invalid_isrc"
    assert {rows[i].status for i in (*missing, invalid)} == {"skipped"}
    # The one valid ISRC went out normalised, and only it was looked up in the index.
    assert [e.isrc for e in rig.publisher.accepted] == ["USRC17607839"]
    assert rows[good].status == "published"
    assert rows[good].event_id == "track-ingestion-USRC17607839"
    assert rig.checker.calls == [[point_id("USRC17607839")]]
    assert rig.metric("events_skipped_total", reason="missing_isrc") == 2
    assert rig.metric("events_skipped_total", reason="invalid_isrc") == 1


async def test_indexed_tracks_are_skipped_unless_forced() -> None:
    async with relay_on_fakes() as rig:
        rig.checker.index("USRC11700001", "USRC11700002")
        indexed = rig.track("USRC11700001")
        forced = rig.track("USRC11700002", force=True)
        new = rig.track("USRC11700003")
        await rig.drained()

    rows = rig.table.rows
    assert (rows[indexed].status, rows[indexed].skip_reason) == ("skipped", "already_indexed")
    assert rows[forced].status == rows[new].status == "published"
    # A forced re-ingestion has an event id of its own (the row id), so it is not de-duplicated
    # against the track's earlier ingestion; and it is never looked up.
    assert rows[forced].event_id == f"track-ingestion-USRC11700002-{forced}"
    assert rig.checker.calls == [[point_id("USRC11700001"), point_id("USRC11700003")]]
    assert rig.metric("events_skipped_total", reason="already_indexed") == 1


@pytest.mark.parametrize("fault", ["error", "timeout"])
async def test_an_index_that_cannot_answer_is_published_through(fault: str) -> None:
    async with relay_on_fakes() as rig:
        rig.checker.index("USRC11700001")
        rig.checker.timeout = 0.05
        if fault == "error":
            rig.checker.failure = "ConnectionRefusedError: refused"
        else:
            rig.checker.latency = 1.0
        with capture_logs() as logs:
            ids = [rig.track("USRC11700001"), rig.track("USRC11700002")]
            await rig.drained()

    # Fail open: even the indexed track goes out (the worker's own check catches it).
    assert {rig.table.rows[i].status for i in ids} == {"published"}
    assert rig.metric("qdrant_errors_total") == 1
    errors = [e for e in logs if e["event"] == "qdrant_error"]
    assert len(errors) == 1 and errors[0]["tracks"] == 2


# -- albums ----------------------------------------------------------------------------------


async def test_an_albums_tracks_are_tallied_once_each_and_an_empty_album_is_an_error() -> None:
    async with relay_on_fakes() as rig:
        rig.checker.index("GBAYE0000001")
        rig.publisher.reject("GBAYE0000003", "400: event data is invalid")
        with capture_logs() as logs:
            album = rig.table.enqueue_album(
                "LP",
                "Band",
                [
                    {"isrc": "GBAYE0000001", "title": "indexed"},
                    {"isrc": "not an isrc", "title": "invalid"},
                    {"isrc": "GBAYE0000003", "title": "rejected"},
                    {"isrc": "GBAYE0000004", "title": "published", "artist": "Guest"},
                ],
            )
            empty = rig.table.enqueue_album("Nothing", "Band", [])
            await rig.drained()

    rows = rig.table.rows
    assert rows[album].status == "fanned_out"
    assert (rows[empty].status, rows[empty].skip_reason) == ("skipped", "no_tracks")
    tracks = {r.title: r for r in rows.values() if r.parent_id == album}
    assert {t: r.status for t, r in tracks.items()} == {
        "indexed": "skipped",
        "invalid": "skipped",
        "rejected": "dead",
        "published": "published",
    }
    assert tracks["published"].artist == "Guest" and tracks["indexed"].artist == "Band"

    tallies = [e for e in logs if e["event"] == "album_ingestion_batch"]
    first = next(e for e in tallies if e["outbox_id"] == album)
    assert first == {
        "event": "album_ingestion_batch",
        "log_level": "info",
        "album": "LP",
        "outbox_id": album,
        "result": "error",
        "total_tracks": 4,
        "scheduled_count": 1,
        "skipped_count": 2,
        "failed_count": 1,
    }
    nothing = next(e for e in tallies if e["outbox_id"] == empty)
    assert (nothing["result"], nothing["total_tracks"]) == ("error", 0)
    assert any(
        e["event"] == "ingestion_error" and e["reason"] == "no_tracks" and e["outbox_id"] == empty
        for e in logs
    )
    assert rig.metric("events_skipped_total", reason="no_tracks") == 1


# -- rejections and outages ------------------------------------------------------------------


async def test_a_rejection_charges_that_event_alone_until_it_is_a_dead_letter() -> None:
    async with relay_on_fakes() as rig:
        rig.publisher.reject("USRC10000002", "400: data.title is too long")
        ids = rig.tracks(5)
        await rig.drained()

    rows = rig.table.rows
    poison = rows[ids[2]]
    assert (poison.status, poison.attempts) == ("dead", CONFIG.max_attempts)
    assert poison.last_error == "400: data.title is too long"
    assert poison.processed_at is not None
    # Sent exactly max_attempts times; the others once each, none charged.
    assert [e.isrc for e in rig.publisher.rejections] == ["USRC10000002"] * CONFIG.max_attempts
    assert rig.publisher.accepted_isrcs() == {f"USRC1{n:07d}": 1 for n in (0, 1, 3, 4)}
    assert [rows[i].attempts for i in ids if i != ids[2]] == [0, 0, 0, 0]
    assert rig.metric("events_rejected_total") == CONFIG.max_attempts
    assert rig.metric("rows_dead_total") == 1
    assert rig.metric("rows_released_total") == 0


@pytest.mark.parametrize("retry_after", [None, 0.3])
async def test_an_outage_charges_nothing_and_pauses_claims_until_a_probe_succeeds(
    retry_after: float | None,
) -> None:
    async with relay_on_fakes() as rig:
        rig.publisher.go_down("429", "rate limited", retry_after=retry_after)
        with capture_logs() as logs:
            ids = rig.tracks(5)
            await until(lambda: rig.publisher.probes, "a first probe")
            went_down = rig.publisher.requests[0].started
            first_probe = rig.publisher.probes[0]
            await until(lambda: len(rig.publisher.probes) >= 3, "three failed probes")
            # Paused: the rows wait uncharged and no request is sent while the probes fail.
            assert len(rig.publisher.requests) == 1
            assert {rig.table.rows[i].attempts for i in ids} == {0}
            assert rig.metric("event_api_available") == 0
            rig.publisher.come_back()
            await rig.drained()

    if retry_after is not None:
        assert first_probe - went_down >= retry_after
    else:
        assert first_probe - went_down < 0.3  # backoff from backoff_base, not a fixed delay
    assert rig.statuses() == {"published": 5}
    assert rig.publisher.accepted_isrcs() == {f"USRC1{n:07d}": 1 for n in range(5)}
    assert rig.metric("rows_released_total") == 5
    assert rig.metric("event_api_available") == 1
    assert rig.metric("rows_dead_total") == 0
    assert [e["event"] for e in logs if e["event"].startswith("inngest_")][-1] == (
        "inngest_recovered"
    )


async def test_an_outage_midway_keeps_what_was_accepted_and_hands_back_the_rest() -> None:
    publisher = FakePublisher(request_timeout=1.0, max_events_per_request=2)
    async with relay_on_fakes(publisher=publisher) as rig:
        publisher.go_down("5xx", "502: bad gateway", after_requests=1, recover_after_probes=2)
        ids = rig.tracks(6)
        await rig.drained()

    # First request accepted, second met the outage, third never sent; all out after recovery.
    sizes = [len(r.events) for r in publisher.requests]
    assert sizes[:2] == [2, 2] and sum(sizes) == 8
    assert rig.metric("rows_released_total") == 4
    assert publisher.accepted_isrcs() == {f"USRC1{n:07d}": 1 for n in range(6)}
    assert {rig.table.rows[i].attempts for i in ids} == {0}


# -- leases ----------------------------------------------------------------------------------


async def test_a_batch_never_outlives_its_lease() -> None:
    """A slow Event API: no request starts unless its timeout fits before the lease's margin;
    the rest of the batch is handed back uncharged and recorded before the lease runs out."""
    config = dataclasses.replace(CONFIG, lease_seconds=1.0)
    publisher = FakePublisher(request_timeout=0.25, max_events_per_request=1, latency=0.05)
    async with relay_on_fakes(config, publisher=publisher) as rig:
        with capture_logs() as logs:
            ids = rig.tracks(30)
            await rig.drained(timeout=20)

    claims = {claim.token: claim for claim in rig.store.claims}
    for request in publisher.requests:
        assert request.deadline is not None
        assert request.started + publisher.request_timeout <= request.deadline
    for claim_deadline in {r.deadline for r in publisher.requests}:
        assert claim_deadline is not None
        # The deadline is the lease less its margin, counted from before the claim was sent.
        assert any(
            0
            <= c.at + config.lease_seconds - lease_margin(config.lease_seconds) - claim_deadline
            < 0.5
            for c in claims.values()
        )
    for recorded in rig.store.recorded:
        assert recorded.at < claims[recorded.token].lease_ends, "recorded after the lease ended"
    assert any(e["event"] == "batch_out_of_time" for e in logs)
    assert rig.metric("rows_released_total") > 0
    assert publisher.accepted_isrcs() == {f"USRC1{n:07d}": 1 for n in range(30)}
    assert {rig.table.rows[i].attempts for i in ids} == {0}
    assert rig.metric("leases_lost_total") == 0


async def test_an_outcome_recorded_after_the_lease_ran_out_does_not_overwrite_the_new_claim() -> (
    None
):
    config = dataclasses.replace(CONFIG, lease_seconds=0.2)
    async with relay_on_fakes(config, publisher=FakePublisher(request_timeout=0.05)) as rig:
        rig.store.record_latency = 0.6  # a database that takes longer than the lease
        other = FakeOutbox(rig.table, replica_id="other", lease_seconds=30)
        with capture_logs() as logs:
            ids = rig.tracks(3)
            await until(lambda: rig.publisher.accepted, "the first publish")
            token = None
            while token is None:  # the other replica takes the rows once the lease runs out
                claimed_token, rows = await other.claim(10)
                token = claimed_token if rows else None
                await asyncio.sleep(0.01)
            await until(lambda: rig.metric("leases_lost_total") > 0, "the late outcome")

    assert rig.store.recorded[0].updated == 0
    assert rig.metric("leases_lost_total") == 3
    assert any(e["event"] == "lease_lost" and e["rows"] == 3 for e in logs)
    # The rows belong to the other replica's claim: still claimed, not marked published.
    assert {(rig.table.rows[i].claimed_by, rig.table.rows[i].status) for i in ids} == {
        ("other", "pending")
    }


# -- claim-ahead and the order of outcomes ---------------------------------------------------


async def test_a_full_batch_claims_the_next_while_publishing_and_records_in_order() -> None:
    # OUTBOX_ONE_UNRECORDED_BATCH=false: the next request overlaps the last outcome's write.
    config = dataclasses.replace(CONFIG, batch_size=5, one_unrecorded_batch=False)
    async with relay_on_fakes(config) as rig:
        rig.store.record_latency = 0.1  # outcomes are slow to write
        rig.tracks(17)
        await rig.drained()

    claims, recorded = rig.store.claims, rig.store.recorded
    assert [len(c.ids) for c in claims if c.ids][:4] == [5, 5, 5, 2]
    # The second claim was made before the first batch's outcome was written ...
    assert claims[1].at < recorded[0].at
    # ... and the second batch went out while that outcome was still being written ...
    second_batch = set(claims[1].ids)
    second_sent = next(
        r.started for r in rig.publisher.requests if {e.row_id for e in r.events} & second_batch
    )
    assert second_sent < recorded[0].at
    # ... yet outcomes are written one batch at a time, in claim order.
    assert [r.token for r in recorded] == [c.token for c in claims if c.ids]
    for earlier, later in itertools.pairwise(recorded):
        assert earlier.at <= later.at
    assert [e.row_id for e in rig.publisher.accepted] == sorted(rig.table.rows)
    assert rig.statuses() == {"published": 17}
    assert rig.metric("wakeups_total", cause="backlog") >= 3


async def test_a_full_batch_claims_ahead_but_publishes_only_once_the_last_is_recorded() -> None:
    config = dataclasses.replace(CONFIG, batch_size=5, one_unrecorded_batch=True)
    async with relay_on_fakes(config) as rig:
        rig.store.record_latency = 0.1  # outcomes are slow to write
        rig.tracks(17)
        await rig.drained()

    claims, recorded = rig.store.claims, rig.store.recorded
    assert [len(c.ids) for c in claims if c.ids][:4] == [5, 5, 5, 2]
    # The second claim was made before the first batch's outcome was written ...
    assert claims[1].at < recorded[0].at
    # ... but the second batch went out only once that outcome was written: at most one batch
    # is ever published and not yet recorded (what a crash can make Inngest receive twice) ...
    batches = [c for c in claims if c.ids]
    for batch, outcome in zip(batches[1:], recorded, strict=False):
        ids = set(batch.ids)
        sent = next(r.started for r in rig.publisher.requests if {e.row_id for e in r.events} & ids)
        assert sent >= outcome.at
    # ... and outcomes are written one batch at a time, in claim order.
    assert [r.token for r in recorded] == [c.token for c in claims if c.ids]
    for earlier, later in itertools.pairwise(recorded):
        assert earlier.at <= later.at
    assert [e.row_id for e in rig.publisher.accepted] == sorted(rig.table.rows)
    assert rig.statuses() == {"published": 17}
    assert rig.metric("wakeups_total", cause="backlog") >= 3


@pytest.mark.parametrize("one_unrecorded_batch", [True, False])
async def test_never_more_than_one_batch_is_published_and_unrecorded(
    one_unrecorded_batch: bool,
) -> None:
    """The invariant behind "a crash re-sends at most one batch" (the default): when a request
    goes out, no other batch has events accepted and its outcome not yet recorded. Checked by
    the publisher at each request against the table, through claim-ahead, album fan-out and a
    rejection, with outcomes slow to write. OUTBOX_ONE_UNRECORDED_BATCH=false lets two overlap."""
    config = dataclasses.replace(CONFIG, batch_size=5, one_unrecorded_batch=one_unrecorded_batch)
    async with relay_on_fakes(config) as rig:
        rig.store.record_latency = 0.05
        rig.publisher.reject("USRC10000007")
        rig.tracks(23)
        rig.table.enqueue_album(
            "LP", "Band", [{"isrc": f"GBAYE000000{n}", "title": f"t{n}"} for n in range(1, 8)]
        )
        rig.tracks(9, prefix="USRC2")
        await rig.drained()

    assert len(rig.publisher.requests) >= 8
    assert max(rig.publisher.unrecorded_batches) == (1 if one_unrecorded_batch else 2)
    # Each batch's wait for the previous outcome is observed (0 s when none was in flight).
    waits = rig.metric("outcome_wait_seconds_count")
    assert waits >= 8 if one_unrecorded_batch else waits == 0
    assert rig.statuses() == {"published": 23 + 7 + 9 - 1, "fanned_out": 1, "dead": 1}


async def test_an_outage_hands_the_batch_claimed_ahead_back_uncharged_at_once() -> None:
    config = dataclasses.replace(CONFIG, batch_size=5)
    async with relay_on_fakes(config) as rig:
        rig.publisher.go_down("connection", "refused", recover_after_probes=3)
        ids = rig.tracks(12)
        await until(lambda: len(rig.store.recorded) >= 2, "both batches handed back")
        first, ahead = rig.store.recorded[:2]
        assert set(first.outcomes.values()) == set(ahead.outcomes.values()) == {"released"}
        assert len(ahead.outcomes) == 5 and ahead.updated == 5
        assert rig.relay._ahead is None
        assert len(rig.publisher.requests) == 1  # the batch claimed ahead was never sent
        await rig.drained()

    assert {rig.table.rows[i].attempts for i in ids} == {0}
    assert rig.publisher.accepted_isrcs() == {f"USRC1{n:07d}": 1 for n in range(12)}


# -- the database going away -----------------------------------------------------------------


async def test_lost_database_connections_are_retried_and_nothing_is_sent_twice() -> None:
    async with relay_on_fakes(start=False) as rig:
        rig.store.fail_claims = 3
        rig.store.fail_records = 2
        ids = rig.tracks(4)
        with capture_logs() as logs:
            rig.task = asyncio.create_task(rig.relay.run())
            await until(lambda: rig.store.fail_claims == 0, "the failing claims")
            await rig.drained()
            assert rig.relay.readiness()["database"] is True

    assert {rig.table.rows[i].status for i in ids} == {"published"}
    assert rig.publisher.accepted_isrcs() == {f"USRC1{n:07d}": 1 for n in range(4)}
    actions = [e.get("action") for e in logs if e["event"] == "database_error"]
    assert actions.count("recording batch outcome") == 2
    assert actions.count(None) == 3  # the failed claims, each retried after a backoff


# -- waking up and stopping ------------------------------------------------------------------


async def test_a_notification_wakes_an_idle_relay_and_is_counted_as_such() -> None:
    config = dataclasses.replace(CONFIG, poll_interval=30.0)
    async with relay_on_fakes(config) as rig:
        await until(rig.relay.idle.is_set, "the relay to go idle")
        assert rig.metric("wakeups_total", cause="reconnect") == 0  # the first sweep is free
        row = rig.track("USRC17607839")
        rig.listener.notify()
        await until(lambda: rig.table.rows[row].status == "published", "the notified row")
        await until(rig.relay.idle.is_set, "the relay to go idle again")
        assert rig.metric("wakeups_total", cause="notify") == 1
        assert rig.metric("wakeups_total", cause="poll") == 0
        rig.listener.reconnect()
        await until(
            lambda: rig.metric("wakeups_total", cause="reconnect") == 1, "a reconnect's sweep"
        )


class StopsDuringATurn(FakePublisher):
    """A request budget's wait for a slot during which the relay is told to stop (SIGTERM)."""

    relay: Relay | None = None

    async def wait_turn(self) -> None:
        await super().wait_turn()
        if self.relay is not None and self.turns == 2:
            self.relay.stop()


async def test_a_stop_before_a_claim_never_waits_out_the_poll_interval() -> None:
    """The claim clears the wake-up that stop() set; the idle wait must still see the stop.

    It used to sleep the whole poll interval first (a relay test's teardown waited 10 s).
    """
    publisher = StopsDuringATurn(request_timeout=1.0)
    config = dataclasses.replace(CONFIG, poll_interval=3600.0)
    async with relay_on_fakes(config, publisher=publisher, start=False) as rig:
        publisher.relay = rig.relay
        ids = rig.tracks(3)
        rig.task = asyncio.create_task(rig.relay.run())
        await asyncio.wait_for(rig.task, 5)
    assert publisher.turns == 2
    assert {rig.table.rows[i].status for i in ids} == {"published"}


async def test_a_relay_woken_for_a_trickle_steps_down_after_its_claim_as_before() -> None:
    """One row a claim is a trickle: the relay steps down at once and sweeps (no pause, no
    extra claim), so writers wake it for the next row as they did before it could stay awake."""
    config = dataclasses.replace(CONFIG, poll_interval=30.0)
    async with relay_on_fakes(config) as rig:
        await until(rig.relay.idle.is_set, "the relay to go idle")
        before = len(rig.store.claims)
        slept = rig.metric("step_downs_total", outcome="sleep")  # the first, empty claim's
        row = rig.track("USRC17607840")
        rig.listener.notify()
        await until(lambda: rig.table.rows[row].status == "published", "the notified row")
        await until(rig.relay.idle.is_set, "the relay to go idle again")
        # the claim that took BUSY and found the row, then the sweep after stepping down
        assert [len(c.ids) for c in rig.store.claims[before:]] == [1, 0]
        assert rig.metric("wakeups_total", cause="awake") == 0
        assert rig.metric("step_downs_total", outcome="sleep") == slept + 1
        assert rig.table.busy is None


async def test_an_awake_relay_keeps_claiming_a_stream_without_being_woken() -> None:
    """Rows that keep coming while the relay holds BUSY are claimed by the relay coming back
    by itself (writers skip their wake-up then): it never steps down mid-stream, and once the
    stream ends it steps down, sweeps and sleeps. The poll is 30 s: only that finds the rows."""
    config = dataclasses.replace(CONFIG, poll_interval=30.0, batch_size=500)
    publisher = FakePublisher(request_timeout=1.0, latency=0.01)  # a batch takes 10 ms
    async with relay_on_fakes(config, publisher=publisher) as rig:
        await until(rig.relay.idle.is_set, "the relay to go idle")
        wake_ups = 0
        ids: list[int] = []
        for n in range(300):  # a row every millisecond or so, for about 0.3 s
            ids.append(rig.track(f"USSTR{n:07d}"))
            if rig.table.busy is None:  # what the enqueue functions do: wake only a sleeping relay
                rig.listener.notify()
                wake_ups += 1
            await asyncio.sleep(0.001)
        await until(lambda: all(rig.table.rows[i].status == "published" for i in ids), "the stream")
        await until(rig.relay.idle.is_set, "the relay to go idle after the stream")
        assert rig.table.busy is None  # it stepped down before sleeping
        assert rig.metric("step_downs_total", outcome="sleep") >= 1

    # The first row woke it (a trickle of one: it stepped down and swept, which took BUSY
    # back as the sweep found rows); for every later row the relay was awake.
    assert wake_ups <= 3
    assert rig.metric("wakeups_total", cause="awake") >= 5
    # Every claim of the stream but the last ones found rows: batches, not one row a claim.
    sizes = [len(c.ids) for c in rig.store.claims]
    assert sum(sizes) == 300 and max(sizes) >= 5
    assert rig.publisher.accepted_isrcs() == {f"USSTR{n:07d}": 1 for n in range(300)}


async def test_stop_lets_the_batch_in_flight_finish_and_be_recorded() -> None:
    publisher = FakePublisher(request_timeout=1.0, latency=0.2)
    async with relay_on_fakes(publisher=publisher) as rig:
        ids = rig.tracks(3)
        await until(lambda: publisher.requests, "the batch to be in flight")
        rig.relay.stop()
        assert rig.task is not None
        await asyncio.wait_for(rig.task, 5)
        late = rig.track("USLAT0000001")

    assert {rig.table.rows[i].status for i in ids} == {"published"}
    assert rig.table.rows[late].status == "pending" and rig.table.rows[late].claim_token is None
    assert rig.relay.batches == 1
