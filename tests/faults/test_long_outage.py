"""An Event API outage far longer than the whole retry schedule never makes a dead letter."""

from __future__ import annotations

import asyncio
import time

import pytest

from outbox_relay.testing.inngest import Fault, Status5xx, Status429

from .conftest import Fleet, delivery_report, figure

# Slow (long fault tests): CI runs them, -m "not slow" leaves them out.
pytestmark = pytest.mark.slow

LONG = {
    "5xx": Status5xx(503, body="json"),
    "429": Status429(retry_after=0),
}
# Attempts 2, retries 50-200 ms, probes capped at 200 ms: the whole schedule is well under a
# second, and the outage lasts 8 s — dozens of times the schedule.
ENV = {
    "OUTBOX_MAX_ATTEMPTS": "2",
    "OUTBOX_RETRY_BASE": "0.05",
    "OUTBOX_RETRY_CAP": "0.2",
    "OUTBOX_BACKOFF_BASE": "0.02",
    "OUTBOX_BACKOFF_CAP": "0.2",
    "OUTBOX_BATCH_SIZE": "50",
}
OUTAGE_S = 8.0


@pytest.mark.parametrize("fault", LONG.values(), ids=LONG.keys())
async def test_long_outage_charges_nothing_and_everything_drains(
    fleet: Fleet, fault: Fault, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.id
    await fleet.standin.inject(fault)
    await fleet.start(name="relay", **ENV)
    await fleet.enqueue_tracks(500, prefix="USLNG")
    await asyncio.sleep(OUTAGE_S)
    conn = await fleet.conn()
    failed_requests = fleet.standin.request_count
    figure(f"long_outage.{name}.failed_requests", failed_requests)
    # many probes, many times what max attempts would allow, and not one row charged
    assert failed_requests >= 10
    assert await fleet.statuses() == {"pending": 500}
    assert await conn.fetchval("SELECT max(attempts) FROM outbox.messages") == 0
    await fleet.standin.clear()
    began = time.monotonic()
    await fleet.wait_drained(timeout=30)
    figure(f"long_outage.{name}.drain_s", round(time.monotonic() - began, 2))
    report = await delivery_report(fleet)
    assert report.by_status == {"published": 500}
    assert report.lost == []
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
