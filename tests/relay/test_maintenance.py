"""Side tasks: outbox gauges and retention of finished rows."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from outbox_relay.backoff import Backoff
from outbox_relay.metrics import RelayMetrics
from outbox_relay.relay.maintenance import Maintenance

from .conftest import Harness, wait_until


async def test_gauges_report_pending_dead_lag_and_dead_tuples(harness: Harness) -> None:
    conn = await harness.conn()
    ids = await harness.enqueue_tracks(5)
    await conn.execute(
        "UPDATE outbox.messages SET created_at = now() - interval '90 seconds' WHERE id = $1",
        ids[0],
    )
    await conn.execute("UPDATE outbox.messages SET status = 'dead' WHERE id = $1", ids[1])
    metrics = RelayMetrics(CollectorRegistry())
    maintenance = Maintenance(harness.dsn, metrics=metrics, backoff=Backoff(0.1, 1.0))
    await maintenance.refresh_gauges()
    assert metrics.pending_rows._value.get() == 4
    assert metrics.dead_rows._value.get() == 1
    assert 89 <= metrics.oldest_pending_age._value.get() < 120
    assert metrics.table_dead_tuples._value.get() >= 0
    # background work: its session never takes parallel workers from the drain
    session = await maintenance._session.connection()
    assert await session.fetchval("SHOW max_parallel_workers_per_gather") == "0"
    maintenance._session.drop()


async def test_retention_deletes_old_finished_rows_in_batches_and_keeps_dead(
    harness: Harness,
) -> None:
    conn = await harness.conn()
    await harness.enqueue_tracks(25)
    await conn.execute(
        "UPDATE outbox.messages SET status = CASE WHEN id % 5 = 0 THEN 'dead' "
        "WHEN id % 2 = 0 THEN 'skipped' ELSE 'published' END, "
        "processed_at = now() - interval '2 days'"
    )
    fresh = await harness.enqueue_track("USRC17600099")
    await conn.execute(
        "UPDATE outbox.messages SET status = 'published', processed_at = now() WHERE id = $1",
        fresh,
    )
    metrics = RelayMetrics(CollectorRegistry())
    maintenance = Maintenance(
        harness.dsn,
        metrics=metrics,
        backoff=Backoff(0.1, 1.0),
        retention_seconds=24 * 3600,
        retention_batch=3,
    )
    deleted = await maintenance.delete_finished(asyncio.Event())
    assert deleted == 20
    assert metrics.retention_deleted._value.get() == 20
    left = await conn.fetch("SELECT status, count(*) AS n FROM outbox.messages GROUP BY 1")
    assert {r["status"]: r["n"] for r in left} == {"dead": 5, "published": 1}


async def test_a_running_relay_refreshes_gauges_and_applies_retention(harness: Harness) -> None:
    conn = await harness.conn()
    await harness.enqueue_tracks(3)
    await conn.execute(
        "UPDATE outbox.messages SET status = 'published', processed_at = now() - interval '1 h'"
    )
    relay = await harness.start_relay(refresh_interval=0.1, retention_seconds=60)
    await wait_until(lambda: relay.metric("outbox_relay_retention_deleted_total") == 3)
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0
    await harness.enqueue_tracks(2)
    await harness.wait_settled()
    await wait_until(lambda: relay.metric("outbox_relay_pending_rows") == 0)
