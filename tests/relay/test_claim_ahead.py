"""The next batch is claimed while the current one is published: never at a guarantee's cost."""

from __future__ import annotations

import asyncio

import pytest

from outbox_relay.testing.inngest import Status5xx

from .conftest import Harness, wait_until


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


@pytest.mark.slow
async def test_the_next_batch_goes_out_while_the_last_outcome_is_being_written(
    harness: Harness,
) -> None:
    """With OUTBOX_ONE_UNRECORDED_BATCH=false, outcomes are written on the store's second
    connection without holding anything back: a slow finish (here a trigger sleeping 3 s on one
    row) does not delay the next batch's events. Outcomes are still written one at a time, in
    batch order."""
    conn = await harness.conn()
    await conn.execute(
        """
        CREATE FUNCTION public.slow_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$;
        CREATE TRIGGER slow_outcome BEFORE UPDATE ON outbox.messages FOR EACH ROW
            WHEN (OLD.status = 'pending' AND NEW.status = 'published'
                  AND OLD.isrc = 'USSLO0000001')
            EXECUTE FUNCTION public.slow_outcome();
        """
    )
    await harness.enqueue_tracks(1, prefix="USSLO")  # the first row of the first batch
    await harness.enqueue_tracks(29, prefix="USFST")
    await harness.start_relay(batch_size=10, one_unrecorded_batch=False)

    # The first batch is out and its outcome is being written, for 3 s ...
    await harness.standin.wait_for_events(20, timeout=2.5)
    # ... while the second batch (claimed ahead) went out too.
    assert (
        await conn.fetchval("SELECT status FROM outbox.messages WHERE isrc = 'USSLO0000001'")
        == "pending"
    )

    await harness.wait_settled(30, timeout=20)
    slow_recorded_at = await conn.fetchval(
        "SELECT processed_at FROM outbox.messages WHERE isrc = 'USSLO0000001'"
    )
    second_batch_first_recorded = await conn.fetchval(
        "SELECT min(processed_at) FROM outbox.messages "
        "WHERE isrc BETWEEN 'USFST0000010' AND 'USFST0000019'"
    )
    assert second_batch_first_recorded >= slow_recorded_at
    assert not harness.standin.duplicate_runs()


async def test_a_batch_is_not_published_before_the_last_one_is_recorded(
    harness: Harness,
) -> None:
    """By default (OUTBOX_ONE_UNRECORDED_BATCH=true) at most one batch is published but not yet
    recorded at any instant, so a crash makes Inngest receive at most one batch again. The next
    batch is claimed ahead and checked while the last outcome is written, but its request waits
    for that write. Here the first batch's outcome is held by a lock the test owns."""
    conn = await harness.conn()
    await conn.execute(
        """
        CREATE FUNCTION public.held_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NEW; END $$;
        CREATE TRIGGER held_outcome BEFORE UPDATE ON outbox.messages FOR EACH ROW
            WHEN (OLD.status = 'pending' AND NEW.status = 'published'
                  AND OLD.isrc = 'USSLO0000001')
            EXECUTE FUNCTION public.held_outcome();
        """
    )
    await conn.execute("SELECT pg_advisory_lock(4242)")  # the first outcome will wait on this
    await harness.enqueue_tracks(1, prefix="USSLO")  # the first row of the first batch
    await harness.enqueue_tracks(29, prefix="USFST")
    relay = await harness.start_relay(batch_size=10)

    await harness.standin.wait_for_events(10)  # the first batch is out; its outcome is held
    # The second batch was claimed ahead and checked against the index ...
    checks = "outbox_relay_qdrant_check_duration_seconds_count"
    await wait_until(lambda: relay.metric(checks) >= 2)
    # ... and its request waits for the first outcome: none goes out while it is held. (A
    # bounded look: nothing positive marks "would have published by now".)
    with pytest.raises(TimeoutError):
        await harness.standin.wait_for_events(11, timeout=0.5)

    await conn.execute("SELECT pg_advisory_unlock(4242)")
    await harness.wait_settled(30, timeout=20)
    assert harness.standin.event_count == 30
    assert not harness.standin.duplicate_runs()
