"""The relay SIGKILLed at random instants while it drains a backlog: nothing lost, repeats same id.

Every kill may land anywhere: during start-up, between claim and publish, while a request is in
flight, between "accepted by Inngest" and "marked published". The rows of a dead relay come back
when their lease (``OUTBOX_LEASE_SECONDS``) runs out; the events sent but not recorded go out
again with the same deterministic id, so Inngest runs each once.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from outbox_relay.testing.inngest import Latency

from .conftest import Fleet, delivery_report, figure

# Slow (long fault tests): CI runs them, -m "not slow" leaves them out.
pytestmark = pytest.mark.slow

ROWS = 20_000
ALBUMS = 100  # of 10 tracks each: a kill may also land between an album's fan-out and its tracks
KILLS = 20


async def test_sigkill_at_random_instants_loses_nothing_and_repeats_carry_the_same_id(
    fleet: Fleet,
) -> None:
    rng = random.Random(20_000)
    conn = await fleet.conn()
    await conn.execute(
        "SELECT outbox.enqueue_album('Album ' || a, 'Artist', (SELECT jsonb_agg(jsonb_build_object("
        "'isrc', 'USALB' || lpad((a * 10 + t)::text, 7, '0'), 'title', 'Track ' || t)) "
        "FROM generate_series(0, 9) AS t)) FROM generate_series(1, $1) AS a",
        ALBUMS,
    )
    await fleet.enqueue_tracks(ROWS, prefix="USKIL")
    # Inngest's own latency (100 ms a request) keeps the backlog there for all 20 kills, and
    # widens the window in which a request is in flight when the kill lands.
    await fleet.standin.inject(Latency(0.1))
    env = {"OUTBOX_LEASE_SECONDS": "1", "OUTBOX_BATCH_SIZE": "200"}
    began = time.monotonic()
    kills = 0
    killed_with_pending = 0
    while kills < KILLS:
        relay = await fleet.start(name="crashy", **env)
        # A random instant of its work: the first batch is usually in flight within ~50 ms.
        await asyncio.sleep(rng.uniform(0.0, 0.6))
        await fleet.kill(relay)
        kills += 1
        if await fleet.pending():
            killed_with_pending += 1
    killing = time.monotonic() - began

    await fleet.standin.clear()
    survivor = await fleet.start(name="survivor", **env)
    drain = await fleet.wait_drained(timeout=120)
    report = await delivery_report(fleet)
    figure("crash.kills", kills)
    figure("crash.kills_while_backlog_pending", killed_with_pending)
    figure("crash.killing_phase_s", round(killing, 1))
    figure("crash.final_drain_s", round(drain, 2))
    figure("crash.duplicates_same_id", report.duplicates)

    total = ROWS + ALBUMS * 10
    assert report.by_status == {"published": total}, report.by_status
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM outbox.messages WHERE kind = 'album' AND status <> 'fanned_out'"
        )
        == 0
    )
    assert report.lost == []
    assert report.delivered == total
    # a repeat is the same id: Inngest runs each once
    assert report.max_runs == 1
    assert fleet.standin.duplicate_runs() == {}
    assert fleet.standin.run_count() == total
    # The kills hit a relay with work to do (not an idle one after the backlog was gone).
    assert killed_with_pending >= KILLS // 2
    assert survivor.proc.poll() is None
