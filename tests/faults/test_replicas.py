"""Four relay processes on one outbox, no crashes: no row is published twice, all rows go out."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from outbox_relay.testing.inngest import Reject

from .conftest import Fleet, delivery_report, figure

# Slow (long fault tests): CI runs them, -m "not slow" leaves them out.
pytestmark = pytest.mark.slow

REPLICAS = 4
ROWS = 8_000


async def test_four_replicas_publish_every_row_exactly_once(fleet: Fleet) -> None:
    env = {"OUTBOX_BATCH_SIZE": "100", "OUTBOX_LEASE_SECONDS": "30"}
    relays = [fleet.spawn(name=f"replica{n}", **env) for n in range(REPLICAS)]
    await asyncio.gather(*(fleet.wait_ready(r, timeout=60) for r in relays))
    began = time.monotonic()
    # Writes keep arriving while all four compete for them.
    for chunk in range(8):
        await fleet.enqueue_tracks(ROWS // 8, prefix=f"USRP{chunk}")
        await asyncio.sleep(0.1)
    drain = await fleet.wait_drained(timeout=120)
    figure("replicas.rows_per_s", round(ROWS / (time.monotonic() - began)))
    figure("replicas.drain_after_last_write_s", round(drain, 2))

    ids = [event.id for event in fleet.standin.events]
    assert len(ids) == ROWS
    assert len(set(ids)) == ROWS  # every event id accepted exactly once
    report = await delivery_report(fleet)
    assert report.by_status == {"published": ROWS}
    assert report.lost == [] and report.duplicates == 0
    by_replica = dict(
        await (await fleet.conn()).fetch(
            "SELECT claimed_by, count(*) FROM outbox.messages GROUP BY 1"
        )
    )
    figure("replicas.rows_by_replica", by_replica)
    assert sum(by_replica.values()) == ROWS
    assert len(by_replica) >= 2  # they really shared the work
    assert all(r.proc.poll() is None for r in relays)


async def test_a_batch_slower_than_its_lease_is_not_published_by_two_replicas(
    fleet: Fleet,
) -> None:
    # 100 rows, 60 of them rejected one by one: narrowing costs a request per rejection, and
    # at 10 requests/s (a client-side rate limit, as for Inngest Cloud's 75 per 5 s) the batch
    # takes about 6 s — three times its 2 s lease. No relay crashes.
    poison = frozenset(f"track-ingestion-USLSE{n:07d}" for n in range(1, 101) if n % 5 < 3)
    await fleet.standin.inject(Reject(ids=poison, message="rejected"))
    env = {
        "OUTBOX_LEASE_SECONDS": "2",
        "OUTBOX_BATCH_SIZE": "100",
        "OUTBOX_MAX_ATTEMPTS": "1",
        "OUTBOX_RATE_LIMIT_REQUESTS": "10",
        "OUTBOX_RATE_LIMIT_WINDOW": "1",
    }
    relays = [fleet.spawn(name=f"slow{n}", **env) for n in range(2)]
    await asyncio.gather(*(fleet.wait_ready(r, timeout=60) for r in relays))
    await fleet.enqueue_tracks(100, prefix="USLSE")
    # One replica alone needs about 6 s; give them 20.
    with contextlib.suppress(TimeoutError):
        await fleet.wait_drained(timeout=20)
    report = await delivery_report(fleet)
    figure("replicas.slow_batch.duplicates", report.duplicates)
    figure("replicas.slow_batch.statuses", report.by_status)
    # without a crash, no event may be accepted twice
    assert report.duplicates == 0
    assert report.by_status == {"published": 40, "dead": 60}
    assert "lease_lost" not in "".join(r.output() for r in relays)
