"""The Event API down for a stretch while writes keep coming at a steady rate.

Writes go through the HTTP write API and never wait on Inngest: none fails, none slows beyond
the normal spread. Nothing is charged or lost, and the backlog drains once Inngest is back.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from outbox_relay.testing.inngest import Fault, Hang, Refuse, Status5xx

from .conftest import Fleet, SteadyWriter, delivery_report, figure, quantile, write_api

# Slow (long fault tests): CI runs them, -m "not slow" leaves them out.
pytestmark = pytest.mark.slow

OUTAGES: dict[str, Fault] = {
    "refused": Refuse(),
    "5xx": Status5xx(503, body="html"),
    "hang": Hang(),
}
RATE = 40.0  # writes per second
BEFORE_S = 3.0
OUTAGE_S = 6.0


@pytest.mark.parametrize("fault", OUTAGES.values(), ids=OUTAGES.keys())
async def test_outage_under_steady_writes_loses_nothing_and_drains(
    fleet: Fleet, fault: Fault, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.id
    await fleet.start(name="relay")
    async with write_api(fleet.dsn) as api:
        writer = SteadyWriter(api, RATE)
        writer.start()
        try:
            t0 = time.monotonic()
            await asyncio.sleep(BEFORE_S)
            t1 = time.monotonic()
            await fleet.standin.inject(fault)
            await asyncio.sleep(OUTAGE_S)
            t2 = time.monotonic()
            # Rows committed up to now must all go out once Inngest is back.
            conn = await fleet.conn()
            last_id = await conn.fetchval("SELECT max(id) FROM outbox.messages")
            pending_at_recovery = await conn.fetchval(
                "SELECT count(*) FROM outbox.messages WHERE status = 'pending'"
            )
            assert await conn.fetchval("SELECT max(attempts) FROM outbox.messages") == 0
            await fleet.standin.clear()
            while await conn.fetchval(
                "SELECT count(*) FROM outbox.messages WHERE status = 'pending' AND id <= $1",
                last_id,
            ):
                assert time.monotonic() - t2 < 60, await fleet.statuses()
                await asyncio.sleep(0.02)
            drain = time.monotonic() - t2
            await asyncio.sleep(1.0)  # a little steady state after recovery
        finally:
            await writer.stop()
    await fleet.wait_drained(timeout=30)

    before = writer.between(t0, t1)
    during = writer.between(t1, t2)
    p50_b, p99_b = quantile(before, 0.5), quantile(before, 0.99)
    p50_d, p99_d = quantile(during, 0.5), quantile(during, 0.99)
    figure(f"outage.{name}.writes", writer.written)
    figure(f"outage.{name}.backlog_at_recovery", pending_at_recovery)
    figure(f"outage.{name}.drain_s", round(drain, 3))
    figure(f"outage.{name}.write_p50_ms_before_during", f"{p50_b * 1e3:.1f}/{p50_d * 1e3:.1f}")
    figure(f"outage.{name}.write_p99_ms_before_during", f"{p99_b * 1e3:.1f}/{p99_d * 1e3:.1f}")

    assert writer.failures == []
    # no write waited on Inngest: generous bounds on a shared 2-core machine
    assert p50_d < max(3 * p50_b, p50_b + 0.05), (p50_b, p50_d)
    assert max(during) < 2.0, max(during)
    assert pending_at_recovery >= RATE * OUTAGE_S * 0.5  # the outage really held rows back
    report = await delivery_report(fleet)
    assert report.lost == []
    # Every committed write is out. (The writer may be stopped after a commit and before it
    # counted the answer: one more row than it counted.)
    committed = await (await fleet.conn()).fetchval("SELECT count(*) FROM library.tracks")
    assert writer.written <= committed <= writer.written + 1
    assert report.by_status == {"published": committed}
    assert report.max_runs == 1
    assert await (await fleet.conn()).fetchval("SELECT max(attempts) FROM outbox.messages") == 0
    assert drain < 30
