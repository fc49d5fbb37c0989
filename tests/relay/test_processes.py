"""Relays as real OS processes and several replicas: SIGKILL, SIGTERM, leases, reconnects."""

from __future__ import annotations

import asyncio
import signal
import uuid

import asyncpg
import pytest

from outbox_relay.db.queries import QUERIES
from outbox_relay.ports import Outcomes
from outbox_relay.relay.store import OutboxStore
from outbox_relay.testing.inngest import Hang

from .conftest import Harness, wait_until

# Slow (relay processes, signals and kills): CI runs it, -m "not slow" leaves it out.
pytestmark = pytest.mark.slow


async def test_a_relay_killed_mid_batch_has_its_rows_published_after_the_lease(
    harness: Harness,
) -> None:
    await harness.standin.inject(Hang())
    victim = harness.spawn_relay(name="victim", OUTBOX_LEASE_SECONDS="1.5")
    await harness.wait_ready(victim)
    await harness.enqueue_tracks(50)
    await harness.standin.wait_for_hung(1, timeout=10)
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait(timeout=10) == -signal.SIGKILL
    await harness.standin.clear()

    # The rows are still claimed by the dead relay until the lease runs out.
    claimed = await (await harness.conn()).fetchval(
        "SELECT count(*) FROM outbox.messages WHERE claimed_by = 'victim' AND status = 'pending'"
    )
    assert claimed == 50
    await harness.start_relay(poll_interval=0.1)
    await harness.wait_settled(expected=50, timeout=20)
    assert await harness.statuses() == {"published": 50}
    assert harness.standin.run_count() == 50


async def test_sigterm_finishes_the_batch_in_flight_and_exits_0(harness: Harness) -> None:
    await harness.standin.inject(Hang())
    relay = harness.spawn_relay(name="graceful")
    await harness.wait_ready(relay)
    await harness.enqueue_tracks(30)
    await harness.standin.wait_for_hung(1, timeout=10)
    relay.proc.send_signal(signal.SIGTERM)
    # Rows written once the relay knows it is stopping must not be claimed by it. (Written
    # before its handler ran, they could be: the hung request's answer and the signal can
    # reach its event loop in either order.)
    await wait_until(lambda: '"relay_stopping"' in relay.output(), timeout=10)
    await harness.enqueue_tracks(5, prefix="USLAT")
    await harness.standin.clear()  # the hung request is answered now
    assert await asyncio.to_thread(relay.proc.wait, 15) == 0, relay.output()
    assert await harness.statuses() == {"published": 30, "pending": 5}
    assert harness.standin.event_count == 30
    assert '"relay_stopping"' in relay.output()


async def test_two_relays_never_publish_the_same_row(harness: Harness) -> None:
    await harness.enqueue_tracks(3000)
    first = await harness.start_relay(
        batch_size=100, qdrant_path=str(harness.tmp / "q1"), replica_id="one"
    )
    second = await harness.start_relay(
        batch_size=100, qdrant_path=str(harness.tmp / "q2"), replica_id="two"
    )
    await harness.wait_settled(expected=3000, timeout=60)
    ids = [e.id for e in harness.standin.events]
    assert len(ids) == 3000
    assert len(set(ids)) == 3000
    by_replica = await (await harness.conn()).fetch(
        "SELECT claimed_by, count(*) AS n FROM outbox.messages GROUP BY 1"
    )
    assert sum(r["n"] for r in by_replica) == 3000
    assert first.service.relay.batches + second.service.relay.batches >= 30


@pytest.mark.parametrize("setting", ["off", "on"])
async def test_only_the_relays_own_session_skips_the_wal_flush(
    harness: Harness, setting: str
) -> None:
    """Claims and outcomes may skip the flush (a crash only re-sends, with the same ids); the
    setting is the relay session's alone, never the server's nor the application's."""
    store = OutboxStore(
        harness.dsn,
        replica_id="sync",
        lease_seconds=30,
        max_attempts=5,
        synchronous_commit=setting,
    )
    try:
        app_conn = await harness.conn()
        server_default = await app_conn.fetchval("SHOW synchronous_commit")
        token, _ = await store.claim(1)
        outcomes = Outcomes()
        outcomes.released(1)
        await store.record_outcomes(token, outcomes)
        for session in (store._claims, store._outcomes):
            relay_conn = await session.connection()
            assert await relay_conn.fetchval("SHOW synchronous_commit") == setting
        # The test server runs with "off" (its fast preset); "on" proves the setting is the
        # relay session's alone, and neither value reaches other sessions.
        assert await app_conn.fetchval("SHOW synchronous_commit") == server_default
        fresh = await asyncpg.connect(harness.dsn)
        try:
            assert await fresh.fetchval("SHOW synchronous_commit") == server_default
        finally:
            await fresh.close()
    finally:
        await store.close()


async def test_a_stale_claim_cannot_overwrite_a_reclaimed_row(harness: Harness) -> None:
    row_id = await harness.enqueue_track("USSTALE00001")
    slow = OutboxStore(harness.dsn, replica_id="slow", lease_seconds=0.05, max_attempts=5)
    fast = OutboxStore(harness.dsn, replica_id="fast", lease_seconds=30, max_attempts=5)
    try:
        old_token, rows = await slow.claim(10)
        assert [r["id"] for r in rows] == [row_id]
        conn = await harness.conn()
        await conn.execute("SELECT pg_sleep(0.1)")  # the 50 ms lease is over
        new_token, rows = await fast.claim(10)
        assert [r["id"] for r in rows] == [row_id]

        stale = Outcomes()
        stale.failed(row_id, "track-ingestion-USSTALE00001", "late answer", retry_in=60)
        assert await slow.record_outcomes(old_token, stale) == 0
        fresh = Outcomes()
        fresh.published(row_id, "track-ingestion-USSTALE00001", "01HZZZ")
        assert await fast.record_outcomes(new_token, fresh) == 1
        row = await conn.fetchrow("SELECT status, attempts, inngest_id FROM outbox.messages")
        assert tuple(row) == ("published", 0, "01HZZZ")
        assert await slow.record_outcomes(uuid.uuid4(), stale) == 0
    finally:
        await slow.close()
        await fast.close()


async def test_claimed_rows_are_invisible_to_other_claims_until_the_lease_expires(
    harness: Harness,
) -> None:
    await harness.enqueue_tracks(10)
    conn = await harness.conn()
    token = uuid.uuid4()
    first = await conn.fetch(QUERIES["claim"], 6, token, "a", 30.0, None, None)
    second = await conn.fetch(QUERIES["claim"], 100, uuid.uuid4(), "b", 30.0, None, None)
    assert len(first) == 6 and len(second) == 4
    assert not {r["id"] for r in first} & {r["id"] for r in second}
    assert await conn.fetch(QUERIES["claim"], 100, uuid.uuid4(), "c", 30.0, None, None) == []


async def test_listen_connection_killed_reconnects_and_catches_up(harness: Harness) -> None:
    relay = await harness.start_relay(poll_interval=60.0)
    listener = relay.service.relay._listener
    await asyncio.wait_for(listener.connected.wait(), 10)
    conn = await harness.conn()
    killed = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'outbox-relay-listen' AND datname = current_database()"
    )
    assert killed == 1
    await harness.enqueue_track("USLISTEN0001")  # its NOTIFY may well be lost
    await wait_until(lambda: listener.connections >= 2, timeout=10)
    # With a 60 s poll, only the reconnect's catch-up sweep or a notification can find it.
    await harness.standin.wait_for_events(1, timeout=10)
    assert relay.metric("outbox_relay_listen_connected") == 1


async def test_postgres_restart_mid_run_recovers_without_losing_rows(
    restartable_pg: object, standin: object, tmp_path: object
) -> None:
    pg = restartable_pg
    harness = Harness(pg.dsn, standin, tmp_path)  # type: ignore[attr-defined, arg-type]
    try:
        await harness.start_relay(poll_interval=0.2)
        await harness.enqueue_tracks(100)
        await harness.standin.wait_for_events(1, timeout=10)  # type: ignore[attr-defined]
        await harness.close_conn()
        await asyncio.to_thread(pg.restart, "immediate")  # type: ignore[attr-defined]
        await harness.enqueue_tracks(100, prefix="USPST")
        await harness.wait_settled(expected=200, timeout=30)
        assert await harness.statuses() == {"published": 200}
        ids = {e.id for e in harness.standin.events}  # type: ignore[attr-defined]
        assert len(ids) == 200
    finally:
        await harness.close()


async def test_sigterm_on_an_idle_relay_exits_at_once(harness: Harness) -> None:
    relay = harness.spawn_relay(name="idle", OUTBOX_POLL_INTERVAL="60")
    await harness.wait_ready(relay)
    relay.proc.send_signal(signal.SIGTERM)
    # well inside the 60 s poll interval: the stop wakes the idle loop
    assert await asyncio.to_thread(relay.proc.wait, 5) == 0, relay.output()
