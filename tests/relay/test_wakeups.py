"""Wake-ups only for a sleeping relay (migration 011, docs/wakeups.md), proven with the poll off.

The relays here poll once an hour, so a committed row reaches the Event API only by a
notification or by a relay's sweep before it sleeps: a row the protocol forgot would wait an
hour, far past every bound asserted below.
"""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import pytest
from structlog.testing import capture_logs

from outbox_relay.db.connection import NOTIFY_CHANNEL
from outbox_relay.testing.inngest import Latency

from .conftest import Harness, RunningRelay, wait_until

# Several relays and many writers for seconds each: the slow tier.
pytestmark = pytest.mark.slow

AN_HOUR = 3600.0


async def _relay(harness: Harness, name: str, **overrides: object) -> RunningRelay:
    return await harness.start_relay(
        poll_interval=AN_HOUR, qdrant_path=str(harness.tmp / f"qdrant-{name}"), **overrides
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_committed_row_is_published_promptly_with_the_poll_off(
    harness: Harness, seed: int
) -> None:
    """Many writers in bursts and pauses, short and long transactions, rollbacks; relays going
    busy and idle, one stopped and started again midway."""
    rng = random.Random(seed)
    relays = [await _relay(harness, f"r{n}", batch_size=rng.choice((5, 20, 100))) for n in range(3)]
    committed: dict[str, float] = {}  # event id -> commit time
    rolled_back: set[str] = set()
    transactions = 0
    notifications: list[str] = []
    listener = await asyncpg.connect(harness.dsn)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: notifications.append(args[3]))
    writing_until = time.monotonic() + 3.0

    async def writer(w: int) -> None:
        nonlocal transactions
        conn = await asyncpg.connect(harness.dsn)
        writer_rng = random.Random(seed * 100 + w)
        n = 0
        try:
            while time.monotonic() < writing_until:
                roll = writer_rng.random()
                if roll < 0.1:
                    await asyncio.sleep(writer_rng.uniform(0.02, 0.2))  # a pause: relays idle
                    continue
                isrcs = [f"USW{w}{n + i:08d}" for i in range(writer_rng.randint(1, 4))]
                n += len(isrcs)
                transaction = conn.transaction()
                await transaction.start()
                for isrc in isrcs:
                    await conn.execute("SELECT outbox.enqueue_track($1, 't', 'a', 'b')", isrc)
                if roll < 0.2:
                    await asyncio.sleep(writer_rng.uniform(0.05, 0.3))  # a long transaction
                if roll > 0.9:
                    await transaction.rollback()
                    rolled_back.update(f"track-ingestion-{i}" for i in isrcs)
                    continue
                await transaction.commit()
                transactions += 1
                now = time.time()
                committed.update((f"track-ingestion-{i}", now) for i in isrcs)
                await asyncio.sleep(writer_rng.uniform(0, 0.01))
        finally:
            await conn.close()

    async def churn() -> None:
        """Stops one relay gracefully (it hands its sweep over) and starts another."""
        await asyncio.sleep(1.0)
        await relays[0].stop()
        relays.append(await _relay(harness, "r3", batch_size=10))

    try:
        await asyncio.gather(*(writer(w) for w in range(8)), churn())
        await harness.standin.wait_for(
            lambda s: set(committed) <= set(s.events_by_id()), 10.0, "every committed event"
        )
    finally:
        await listener.close()
    accepted = harness.standin.events_by_id()
    latency = max(accepted[i][0].received_at - t for i, t in committed.items())
    print(
        f"FIGURE rows={len(committed)} transactions={transactions} "
        f"wake_ups={len(notifications)} max_commit_to_accepted_s={latency:.3f}"
    )
    assert latency < 5.0  # the poll would have taken an hour
    assert not rolled_back & set(accepted)
    assert harness.standin.duplicate_runs() == {}
    # The point of the design: writers while a relay was awake sent no wake-up.
    assert len(notifications) < transactions
    # ... and once the writers stop, a relay that held BUSY sweeps and goes to sleep.
    await wait_until(
        lambda: sum(r.metric("outbox_relay_step_downs_total", outcome="sleep") for r in relays) >= 1
    )


async def test_a_stopping_relay_hands_its_sweep_to_a_sleeping_one(harness: Harness) -> None:
    """A writer sees relay A awake and skips its wake-up; A stops before that writer commits.
    A waits for the writer, then wakes the sleeping B, which sweeps: the row goes out at once,
    not at B's next poll an hour later."""
    await harness.standin.inject(Latency(3.0), times=1)  # A's batch takes a while
    await harness.enqueue_track("USHAND000001")  # before A starts: its first claim takes BUSY
    a = await _relay(harness, "a", publish_timeout=10.0)
    await wait_until(lambda: a.service.relay._store.awake)
    b = await _relay(harness, "b")
    await b.wait_idle()  # nothing for B to claim (A holds the row) and no sweep owed: B sleeps
    assert not b.service.relay._store.owes_sweep

    writer = await asyncpg.connect(harness.dsn)
    try:
        with capture_logs() as logs:
            transaction = writer.transaction()
            await transaction.start()
            await writer.execute("SELECT outbox.enqueue_track('USHAND000002', 't', 'a', 'b')")
            stopping = asyncio.create_task(a.stop())  # SIGTERM, in effect
            waiting = "relay_hand_over_waiting"
            await wait_until(lambda: any(e["event"] == waiting for e in logs), 10.0)
            await transaction.commit()  # A has been waiting for this writer
            await stopping
    finally:
        await writer.close()
    await harness.standin.wait_for(
        lambda s: "track-ingestion-USHAND000002" in s.events_by_id(), 5.0, "the handed-over row"
    )
    await harness.wait_settled(expected=2)
    assert await harness.statuses() == {"published": 2}
    assert b.metric("outbox_relay_wakeups_total", cause="notify") >= 1
    [handed] = [e for e in logs if e["event"] == "relay_handed_over"]
    assert handed["writers_done"] is True
