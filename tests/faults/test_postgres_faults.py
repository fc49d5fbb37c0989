"""PostgreSQL restarted under the relay, or its LISTEN connection killed: the relay recovers alone.

The poll interval is a minute, so only the relay's own reconnect (re-LISTEN, then a sweep) can
find rows committed without a notification reaching it. Rows are committed with triggers off
(:func:`silent_insert`), so no NOTIFY is ever sent for them.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from outbox_relay.db.connection import CONNECTION_ERRORS
from outbox_relay.ports import Outcomes
from outbox_relay.relay.store import OutboxStore
from outbox_relay.testing.inngest import EventApiStandIn, Latency
from outbox_relay.testing.postgres import LocalPostgres

from .conftest import Fleet, delivery_report, figure, silent_insert

# Slow (long fault tests): CI runs them, -m "not slow" leaves them out.
pytestmark = pytest.mark.slow

SLOW_POLL = {"OUTBOX_POLL_INTERVAL": "60"}


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_mid_run_relay_reconnects_and_sweeps(
    restartable_pg: LocalPostgres, standin: EventApiStandIn, tmp_path: Path, mode: str
) -> None:
    fleet = Fleet(restartable_pg.dsn, standin, tmp_path)
    try:
        relay = await fleet.start(name="relay", OUTBOX_BATCH_SIZE="100", **SLOW_POLL)
        # Mid-run: a backlog is draining (100 ms a request, 3 s in all) when the server goes down.
        await standin.inject(Latency(0.1))
        await fleet.enqueue_tracks(3000, prefix="USMID")
        await standin.wait_for_events(1, timeout=20)
        await fleet.close_conn()
        await asyncio.to_thread(restartable_pg.restart, mode)
        restarted = time.monotonic()
        delivered_at_restart = standin.event_count
        figure(f"pg_restart.{mode}.delivered_before_restart", delivered_at_restart)
        assert delivered_at_restart < 3000
        await standin.clear()
        # Rows whose NOTIFY nobody hears: only the reconnect sweep can find them.
        await silent_insert(restartable_pg.dsn, 200, "USSIL")
        conn = await fleet.conn()
        while await conn.fetchval("SELECT count(*) FROM outbox.messages WHERE status = 'pending'"):
            assert relay.proc.poll() is None, relay.output()[-6000:]
            assert time.monotonic() - restarted < 30, await fleet.statuses()
            await asyncio.sleep(0.05)
        recovery = time.monotonic() - restarted
        figure(f"pg_restart.{mode}.recovery_s", round(recovery, 2))

        report = await delivery_report(fleet)
        figure(f"pg_restart.{mode}.duplicates_same_id", report.duplicates)
        assert report.by_status == {"published": 3200}
        assert report.lost == []
        assert report.max_runs == 1
        assert relay.proc.poll() is None, relay.output()
        assert recovery < 20  # well inside the 60 s poll interval
        assert '"listen_connected"' in relay.output()
    finally:
        await fleet.close()


async def test_listen_connection_terminated_relay_relistens_and_sweeps(fleet: Fleet) -> None:
    relay = await fleet.start(name="relay", **SLOW_POLL)
    await relay.wait_asleep(1)  # its first claim, on an empty outbox
    await fleet.enqueue_tracks(10, prefix="USPRE")
    await fleet.standin.wait_for_events(10, timeout=20)
    # A relay that found rows stays awake a moment and sweeps before it sleeps: rows committed
    # before that would be found without any wake-up, and prove nothing here.
    await relay.wait_asleep(2)
    conn = await fleet.conn()
    # Rows committed silently while the relay sleeps: nothing wakes it ...
    await silent_insert(fleet.dsn, 100, "USQUI")
    await asyncio.sleep(1.0)
    assert fleet.standin.event_count == 10
    # ... until its LISTEN connection, and it alone, is killed.
    killed = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'outbox-relay-listen' AND datname = current_database()"
    )
    assert killed == 1
    began = time.monotonic()
    await fleet.standin.wait_for_events(110, timeout=20)
    recovery = time.monotonic() - began
    figure("listen_terminated.recovery_s", round(recovery, 2))
    await fleet.wait_drained(timeout=10)
    report = await delivery_report(fleet)
    assert report.by_status == {"published": 110}
    assert report.lost == [] and report.duplicates == 0
    # the relay's main connection was never touched; a new LISTEN connection exists
    listeners = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = 'outbox-relay-listen' AND datname = current_database()"
    )
    assert listeners == 1
    assert relay.output().count('"listen_connected"') == 2


async def test_a_backend_killed_at_any_instant_is_a_lost_connection(database_url: str) -> None:
    """Whatever asyncpg raises when the server ends a session mid-statement, the store reads it
    as a lost connection and the next call reconnects.

    Found in CI: a fast shutdown landing while a fresh connection introspected the types of the
    relay's first ``record_outcomes`` left asyncpg's protocol in a broken state
    (``InternalClientError``, a few percent of such kills); the relay took it for a bug and
    exited instead of reconnecting.
    """
    store = OutboxStore(database_url, replica_id="killed", lease_seconds=30, max_attempts=5)
    admin = await asyncpg.connect(database_url)
    outcomes = Outcomes()
    outcomes.released(1)
    seen: Counter[str] = Counter()
    try:
        for _ in range(300):
            # A fresh connection: the first record_outcomes on it has its types introspected first.
            await store._outcomes.connection()
            recording = asyncio.create_task(store.record_outcomes(uuid.uuid4(), outcomes))
            await asyncio.sleep(random.uniform(0, 0.004))
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'outbox-relay-record' AND datname = current_database()"
            )
            try:
                await recording
            except CONNECTION_ERRORS as exc:
                seen[type(exc).__name__] += 1
                # The store dropped the broken connection: the next call simply reconnects.
                assert await store.record_outcomes(uuid.uuid4(), outcomes) == 0
            else:
                seen["finished before the kill"] += 1
            store._outcomes.drop()
    finally:
        await admin.close()
        await store.close()
    figure("backend_killed.outcomes", dict(seen))
    killed_mid_statement = sum(seen.values()) - seen["finished before the kill"]
    assert killed_mid_statement > 100, seen
