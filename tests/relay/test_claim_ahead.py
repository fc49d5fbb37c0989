"""The next batch is claimed while the current one is published: never at a guarantee's cost."""

from __future__ import annotations

import asyncio

from outbox_relay.inngest.standin import Status5xx

from .conftest import Harness


async def test_a_backlog_drains_in_full_batches_each_row_once(harness: Harness) -> None:
    relay = await harness.start_relay(batch_size=10)
    await harness.enqueue_tracks(95)
    await harness.wait_settled(95)
    assert harness.standin.summary()["event_count"] == 95
    assert not harness.standin.duplicate_runs()
    assert relay.service.relay.batches == 10


async def test_an_outage_hands_the_batch_claimed_ahead_back_uncharged(harness: Harness) -> None:
    await harness.standin.inject(Status5xx(503))
    relay = await harness.start_relay(batch_size=10, backoff_base=5.0, backoff_cap=5.0)
    await harness.enqueue_tracks(50)
    await relay.wait_unavailable()
    conn = await harness.conn()
    # Paused on the outage: no row stays leased (not the batch sent, nor the one claimed ahead),
    # long before the first probe (5 s) could change anything.
    leased = "SELECT count(*) FROM outbox.messages WHERE claim_token IS NOT NULL"
    async with asyncio.timeout(3):
        while await conn.fetchval(leased):  # noqa: ASYNC110 - the database has no event to await
            await asyncio.sleep(0.01)
    charged, pending = await conn.fetchrow(
        "SELECT max(attempts), count(*) FILTER (WHERE status = 'pending') FROM outbox.messages"
    )
    assert (charged, pending) == (0, 50)
    assert relay.service.relay._ahead is None
    await harness.standin.clear()
    await relay.stop()
    await harness.start_relay(batch_size=10)
    await harness.wait_settled(50)
    assert harness.standin.summary()["event_count"] == 50
