"""A long REPEATABLE READ transaction (snapshot taken) held open while the relay drains.

It pins the xmin horizon: no dead tuple the relay's claims leave behind can be vacuumed, and
the claim index keeps pointing at them. The relay must keep working; the throughput loss is
measured (and reported), not asserted beyond a generous floor.
"""

from __future__ import annotations

import asyncpg
import pytest

from .conftest import Fleet, figure

# Slow (long fault tests): CI runs them, -m "not slow" leaves them out.
pytestmark = pytest.mark.slow

ROWS = 10_000


async def drain_rate(fleet: Fleet, prefix: str) -> float:
    await fleet.enqueue_tracks(ROWS, prefix=prefix)
    seconds = await fleet.wait_drained(timeout=120, poll=0.02)
    return ROWS / seconds


async def test_relay_keeps_draining_under_a_long_repeatable_read_reader(fleet: Fleet) -> None:
    await fleet.start(name="relay", OUTBOX_BATCH_SIZE="500")
    await drain_rate(fleet, "USWRM")  # warm-up: connections, prepared statements, caches
    baseline = await drain_rate(fleet, "USBAS")

    reader = await asyncpg.connect(fleet.dsn)
    try:
        tx = reader.transaction(isolation="repeatable_read")
        await tx.start()
        seen = await reader.fetchval("SELECT count(*) FROM outbox.messages")  # snapshot taken
        held = await drain_rate(fleet, "USHLD")
        # The reader still sees its snapshot and still works.
        assert await reader.fetchval("SELECT count(*) FROM outbox.messages") == seen
        await tx.rollback()
    finally:
        await reader.close()

    ratio = held / baseline
    figure("long_reader.baseline_rows_per_s", round(baseline))
    figure("long_reader.with_reader_rows_per_s", round(held))
    figure("long_reader.throughput_ratio", round(ratio, 2))
    assert await fleet.statuses() == {"published": 3 * ROWS}
    assert ratio > 0.2  # generous: a 2-core machine shared with other test runs
