"""A bad event is charged alone: it ends as a dead letter with its reason, the rest go out."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from outbox_relay.testing.inngest import EventApiStandIn, Reject

from .conftest import Harness


async def test_one_poison_event_alone_is_dead_the_rest_published(harness: Harness) -> None:
    await harness.standin.inject(
        Reject(ids=frozenset({"track-ingestion-USAAA0000005"}), message="poisoned")
    )
    await harness.start_relay(max_attempts=3)
    with capture_logs() as logs:
        await harness.enqueue_tracks(10)
        await harness.wait_settled(expected=10)
    assert await harness.statuses() == {"published": 9, "dead": 1}
    dead = await (await harness.conn()).fetch("SELECT * FROM outbox.dead_letters")
    assert len(dead) == 1
    assert dead[0]["isrc"] == "USAAA0000005"
    assert dead[0]["attempts"] == 3
    assert "poisoned" in dead[0]["last_error"]
    # every good event was accepted exactly once, in spite of sharing batches with the poison
    ids = [e.id for e in harness.standin.events]
    assert len(ids) == 9 and len(set(ids)) == 9
    assert sum(1 for e in logs if e["event"] == "ingestion_error") == 3
    assert [e["reason"] for e in logs if e["event"] == "ingestion_error"][-1] == "dead_letter"


async def test_a_request_level_400_is_narrowed_down_without_charging(
    database_url: str, tmp_path: object
) -> None:
    # A server that takes at most 3 events a request answers 400 for the batch as a whole;
    # halving finds requests it takes, and no event is charged for it.
    async with EventApiStandIn(max_events=3) as small:
        harness = Harness(database_url, small, tmp_path)  # type: ignore[arg-type]
        try:
            await harness.start_relay()
            await harness.enqueue_tracks(20)
            await harness.wait_settled(expected=20)
            assert await harness.statuses() == {"published": 20}
            assert (
                await (await harness.conn()).fetchval("SELECT max(attempts) FROM outbox.messages")
                == 0
            )
            assert small.event_count == 20
        finally:
            await harness.close()


@pytest.mark.parametrize("limit", [600])
async def test_an_oversized_event_is_a_dead_letter_with_the_size_error(
    database_url: str, tmp_path: object, limit: int
) -> None:
    async with EventApiStandIn(max_event_size=limit) as strict:
        harness = Harness(database_url, strict, tmp_path)  # type: ignore[arg-type]
        try:
            await harness.start_relay(max_attempts=2)
            await harness.enqueue_tracks(4)
            big = await harness.enqueue_track("USBIG0000001", "x" * 900)
            await harness.wait_settled(expected=5)
            row = await (await harness.conn()).fetchrow(
                "SELECT status, last_error FROM outbox.messages WHERE id = $1", big
            )
            assert row["status"] == "dead"
            assert "Event is over the max size" in row["last_error"]
            assert await harness.statuses() == {"published": 4, "dead": 1}
        finally:
            await harness.close()
