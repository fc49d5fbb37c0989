"""The relay's side work: outbox gauges for Prometheus, and retention of finished rows.

Both run on their own connection beside the loop, in the loop's task group: if one fails for
a reason other than a lost connection, the relay stops rather than limping on without it.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from outbox_relay.aio import wait_event
from outbox_relay.backoff import Backoff
from outbox_relay.db.connection import CONNECTION_ERRORS
from outbox_relay.db.queries import QUERIES
from outbox_relay.metrics import RelayMetrics
from outbox_relay.relay.store import Session

log = structlog.get_logger("outbox_relay.maintenance")


class Maintenance:
    def __init__(
        self,
        dsn: str,
        *,
        metrics: RelayMetrics,
        backoff: Backoff,
        refresh_interval: float = 10.0,
        retention_seconds: float | None = 7 * 24 * 3600.0,
        retention_batch: int = 1000,
    ) -> None:
        self._metrics = metrics
        self._backoff = backoff
        self._refresh_interval = refresh_interval
        self._retention_seconds = retention_seconds
        self._retention_batch = retention_batch
        # Gauges and retention are background work: they must not take parallel workers (every
        # core of a small machine) from the relay's drain.
        self._session = Session(
            dsn,
            {"application_name": "outbox-relay-maint", "max_parallel_workers_per_gather": "0"},
        )
        self.deleted = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Refreshes the gauges and enforces retention every interval until ``stop``."""
        try:
            while not stop.is_set():
                try:
                    await self.refresh_gauges()
                    if self._retention_seconds is not None:
                        await self.delete_finished(stop)
                    self._backoff.reset()
                    wait = self._refresh_interval
                except CONNECTION_ERRORS as exc:
                    self._session.drop()
                    wait = self._backoff.next_delay()
                    log.warning(
                        "maintenance_database_error",
                        error=f"{type(exc).__name__}: {exc}",
                        retry_in_s=round(wait, 3),
                    )
                await wait_event(stop, wait)
        finally:
            self._session.drop()

    async def refresh_gauges(self) -> None:
        conn = await self._session.connection()
        row = await conn.fetchrow(QUERIES["gauges"], timeout=30)
        assert row is not None
        self._metrics.pending_rows.set(row["pending"])
        self._metrics.dead_rows.set(row["dead"])
        self._metrics.oldest_pending_age.set(row["oldest_pending_age"] or 0.0)
        self._metrics.table_dead_tuples.set(row["dead_tuples"] or 0)

    async def delete_finished(self, stop: asyncio.Event) -> int:
        """Deletes expired finished rows in small batches until none is left; returns how many."""
        assert self._retention_seconds is not None
        conn = await self._session.connection()
        total = 0
        started = time.perf_counter()
        while not stop.is_set():
            status: str = await conn.execute(
                QUERIES["delete_finished"], self._retention_seconds, self._retention_batch
            )
            deleted = int(status.rsplit(" ", 1)[-1])
            total += deleted
            self._metrics.retention_deleted.inc(deleted)
            if deleted < self._retention_batch:
                break
        if total:
            self.deleted += total
            log.info(
                "retention_deleted",
                rows=total,
                older_than_s=self._retention_seconds,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        return total
