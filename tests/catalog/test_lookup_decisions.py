"""The relay's catalog lookup decisions against the fakes (fast tier: no PostgreSQL, no HTTP).

Tracks known by TIDAL id only get their ISRC from the cache or the catalog before the Qdrant
check; what the catalog does not know ends as missing_isrc; an outage or refused credentials
hand the rows back uncharged while every other row keeps flowing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from outbox_relay.metrics import RelayMetrics
from outbox_relay.relay.loop import Relay, RelayConfig
from outbox_relay.testing.fakes import (
    FakeCatalog,
    FakeCatalogCache,
    FakeIndexChecker,
    FakeListener,
    FakeOutbox,
    FakePublisher,
    OutboxTable,
)

CONFIG = RelayConfig(
    batch_size=100,
    poll_interval=0.01,
    max_attempts=3,
    backoff_base=0.05,
    backoff_cap=0.2,
    retry_base=0.002,
    retry_cap=0.004,
    lease_seconds=10.0,
)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.002)


def album(count: int, first: int = 500_000_000) -> tuple[list[dict[str, str]], dict[str, str]]:
    """An album's track listing by catalog id, and the catalog's ISRC for each id."""
    tracks = [{"tidalTrackId": str(first + n), "title": f"Track {n}"} for n in range(count)]
    isrcs = {str(first + n): f"QZCAT{first + n:07d}"[-12:] for n in range(count)}
    return tracks, isrcs


@dataclasses.dataclass
class Rig:
    table: OutboxTable
    publisher: FakePublisher
    catalog: FakeCatalog
    cache: FakeCatalogCache
    metrics: RelayMetrics
    relay: Relay

    def published(self) -> list[str]:
        return sorted(isrc for isrc in self.publisher.accepted_isrcs())

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(f"outbox_relay_{name}", labels)
        return 0.0 if value is None else value

    def done(self) -> bool:
        return "pending" not in self.table.by_status() and self.relay.idle.is_set()


@asynccontextmanager
async def rig(catalog: FakeCatalog) -> AsyncIterator[Rig]:
    table = OutboxTable()
    store = FakeOutbox(table, lease_seconds=CONFIG.lease_seconds, max_attempts=CONFIG.max_attempts)
    publisher = FakePublisher(request_timeout=1.0)
    cache = FakeCatalogCache()
    metrics = RelayMetrics(CollectorRegistry())
    relay = Relay(
        store=store,
        listener=FakeListener(),
        publisher=publisher,
        checker=FakeIndexChecker(),
        metrics=metrics,
        config=CONFIG,
        catalog=catalog,
        catalog_cache=cache,
    )
    task = asyncio.create_task(relay.run())
    try:
        yield Rig(table, publisher, catalog, cache, metrics, relay)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)


async def test_an_album_of_45_catalog_ids_costs_three_lookups_and_yields_45_events() -> None:
    tracks, isrcs = album(45)
    async with rig(FakeCatalog(isrcs)) as r:
        r.table.enqueue_album("Big Album", "Artist", tracks)
        await until(r.done, "the album to be published")
        assert [len(request) for request in r.catalog.requests] == [20, 20, 5]
        assert r.published() == sorted(isrcs.values())
        assert r.metric("catalog_lookups_total", result="found") == 45

        # The same album again: the cache answers, the catalog is not asked.
        r.table.enqueue_album("Big Album", "Artist", tracks)
        await until(r.done, "the repeat to be handled")
        assert len(r.catalog.requests) == 3
        assert r.metric("catalog_cache_hits_total", kind="found") == 45
        assert len(r.publisher.accepted_isrcs()) == 45


async def test_ids_the_catalog_does_not_know_are_missing_isrc_with_an_album_log() -> None:
    tracks, isrcs = album(5)
    known = dict(list(isrcs.items())[:3])
    async with rig(FakeCatalog(known)) as r:
        with capture_logs() as logs:
            album_id = r.table.enqueue_album("Half Known", "Artist", tracks)
            await until(r.done, "the album to be handled")
        assert r.published() == sorted(known.values())
        skipped = [row for row in r.table.tracks() if row.status == "skipped"]
        assert {row.skip_reason for row in skipped} == {"missing_isrc"}
        assert {row.tidal_id for row in skipped} == set(isrcs) - set(known)
        errors = [e for e in logs if e["event"] == "album_track_listing_error"]
        assert len(errors) == 1
        assert errors[0]["album"] == "Half Known" and errors[0]["outbox_id"] == album_id
        assert sorted(errors[0]["tidal_track_ids"]) == sorted(set(isrcs) - set(known))
        # Unknown ids are cached too: a repeat asks nothing.
        asked = len(r.catalog.requests)
        r.table.enqueue_album("Half Known", "Artist", tracks)
        await until(r.done, "the repeat to be handled")
        assert len(r.catalog.requests) == asked


async def test_an_isrc_given_wins_and_needs_no_lookup() -> None:
    async with rig(FakeCatalog({"1": "QZCAT0000001"})) as r:
        r.table.enqueue_track("USRC17607839", "Song", "Artist", "Album", tidal_id="1")
        await until(r.done, "the track to be published")
        assert r.catalog.requests == []
        assert r.published() == ["USRC17607839"]


async def test_a_catalog_outage_hands_rows_back_uncharged_while_other_rows_flow() -> None:
    tracks, isrcs = album(30)
    catalog = FakeCatalog(isrcs)
    catalog.go_down("429", retry_after=0.3)
    async with rig(catalog) as r:
        with capture_logs() as logs:
            r.table.enqueue_album("Waiting", "Artist", tracks)
            plain = r.table.enqueue_track("USRC17607839", "Plain", "Artist", "Album")
            await until(lambda: r.table.rows[plain].status == "published", "the plain track")
            await until(lambda: r.metric("catalog_paused") == 1, "the pause")
        waiting = [row for row in r.table.tracks() if row.tidal_id is not None]
        assert len(waiting) == 30
        assert all(row.status == "pending" and row.attempts == 0 for row in waiting)
        # Retry-After is honoured: nothing claimable before it has passed.
        assert all(
            (row.next_attempt_at - datetime.now(UTC)).total_seconds() > 0.1 for row in waiting
        )
        assert any(e["event"] == "catalog_error" and e["reason"] == "429" for e in logs)
        assert r.relay.readiness().get("catalog") is True  # an outage is not a config error

        catalog.come_back()
        await until(r.done, "the album to go out once the catalog is back")
        assert r.published() == sorted([*isrcs.values(), "USRC17607839"])
        assert all(row.attempts == 0 for row in r.table.tracks())
        assert r.metric("catalog_paused") == 0
        assert r.table.by_status()["dead"] == 0


async def test_refused_credentials_show_in_readiness_until_they_work() -> None:
    tracks, isrcs = album(3)
    catalog = FakeCatalog(isrcs)
    catalog.refuse_credentials()
    async with rig(catalog) as r:
        r.table.enqueue_album("Locked", "Artist", tracks)
        await until(lambda: r.relay.readiness().get("catalog") is False, "readiness to fail")
        assert "credentials" in r.relay.readiness_problems()["catalog"]
        catalog.come_back()
        await until(r.done, "the album once the credentials work", timeout=10)
        assert r.relay.readiness()["catalog"] is True
        assert "catalog" not in r.relay.readiness_problems()
        assert r.published() == sorted(isrcs.values())


async def test_without_a_catalog_rows_known_by_id_wait_and_others_flow() -> None:
    table = OutboxTable()
    store = FakeOutbox(table, lease_seconds=10.0, max_attempts=3)
    publisher = FakePublisher(request_timeout=1.0)
    relay = Relay(
        store=store,
        listener=FakeListener(),
        publisher=publisher,
        checker=FakeIndexChecker(),
        metrics=RelayMetrics(CollectorRegistry()),
        config=CONFIG,
    )
    task = asyncio.create_task(relay.run())
    try:
        waiting = table.enqueue_track(None, "By id", "Artist", "Album", tidal_id="42")
        plain = table.enqueue_track("USRC17607839", "Plain", "Artist", "Album")
        await until(lambda: table.rows[plain].status == "published", "the plain track")
        await until(lambda: table.rows[waiting].next_attempt_at > datetime.now(UTC), "a wait")
        assert table.rows[waiting].status == "pending" and table.rows[waiting].attempts == 0
        assert "catalog" not in relay.readiness()
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)


async def test_the_pace_lets_a_burst_through_then_spaces_requests() -> None:
    from outbox_relay.adapters.tidal import Pace

    pace = Pace(per_second=20.0, burst=3)  # 50 ms apart on average
    loop = asyncio.get_running_loop()
    started = loop.time()
    starts = []
    for _ in range(6):
        await pace.wait()
        starts.append(loop.time() - started)
    # Three at once, then one per 50 ms: the sixth no sooner than 3 intervals in.
    assert starts[2] < 0.04
    assert starts[5] >= 0.15 - 0.005


async def test_a_catalog_slower_than_half_the_lease_defers_the_rows_uncharged() -> None:
    tracks, isrcs = album(3)
    catalog = FakeCatalog(isrcs)
    catalog.latency = 0.5  # the lease is 0.6 s: a lookup must answer within 0.3 s
    config = dataclasses.replace(CONFIG, lease_seconds=0.6)
    table = OutboxTable()
    store = FakeOutbox(table, lease_seconds=0.6, max_attempts=3)
    metrics = RelayMetrics(CollectorRegistry())
    relay = Relay(
        store=store,
        listener=FakeListener(),
        publisher=FakePublisher(request_timeout=0.1),
        checker=FakeIndexChecker(),
        metrics=metrics,
        config=config,
        catalog=catalog,
        catalog_cache=FakeCatalogCache(),
    )
    task = asyncio.create_task(relay.run())
    try:
        with capture_logs() as logs:
            table.enqueue_album("Slow", "Artist", tracks)
            await until(
                lambda: any(e.get("reason") == "timeout" for e in logs), "a timed-out lookup"
            )
        waiting = [row for row in table.tracks()]
        assert waiting and all(row.attempts == 0 for row in waiting)
        assert all(row.status == "pending" for row in waiting)
        catalog.latency = 0.0
        await until(
            lambda: "pending" not in table.by_status(), "the album once the catalog is quick"
        )
        assert {row.status for row in table.tracks()} == {"published"}
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
