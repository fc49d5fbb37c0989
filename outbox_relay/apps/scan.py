"""Wires the inbound scan from settings, for ``outbox-relay scan`` (scheduled or ``--once``).

The mutagen tag reader, the metrics, the HTTP surface (``/healthz``, ``/readyz``, ``/metrics``
on ``OUTBOX_SCAN_HTTP_PORT``) and the scheduler around :func:`outbox_relay.scan.cycle.run_cycle`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime

import asyncpg
import structlog
from prometheus_client import CollectorRegistry

from outbox_relay.adapters.tags import MutagenTagReader
from outbox_relay.backoff import Backoff
from outbox_relay.config import Settings
from outbox_relay.http.server import create_app, start_site
from outbox_relay.metrics import ScanMetrics
from outbox_relay.scan.cycle import Checkpoint, Progress, ScanSummary, load_settings, run_cycle
from outbox_relay.scan.queries import Q
from outbox_relay.scan.scheduler import ScanScheduler
from outbox_relay.scan.settings import ScanSettings

log = structlog.get_logger("outbox_relay.scan")


def debug_hold(point: str | None, release_file: str | None) -> Checkpoint | None:
    """The OUTBOX_SCAN_DEBUG_HOLD knob: stop at ``point`` until ``release_file`` exists.

    Logs ``scan_debug_hold`` when it gets there (so a test or an operator knows the run is
    parked in that exact state), then polls for the release file; without one it holds until
    the process is killed.
    """
    if not point:
        return None

    def checkpoint(reached: str) -> None:
        if reached != point:
            return
        log.warning("scan_debug_hold", point=point, release_file=release_file, pid=os.getpid())
        while release_file is None or not os.path.exists(release_file):
            time.sleep(0.01)
        log.warning("scan_debug_released", point=point)

    return checkpoint


class ScanService:
    """``outbox-relay scan``: one cycle on demand, or the scheduler with its HTTP surface."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.dsn = settings.require_database_url()
        self.metrics = ScanMetrics(registry)
        self.reader = MutagenTagReader()
        self.checkpoint = debug_hold(settings.scan_debug_hold, settings.scan_debug_release)
        self._stop = asyncio.Event()
        self.http_port: int | None = None
        self.scheduler = ScanScheduler(
            load_settings=self._load_settings,
            run_once=self._scheduled_run,
            last_success=self._last_success,
            metrics=self.metrics,
            poll_interval=settings.scan_settings_poll,
            backoff=Backoff(settings.backoff_base, settings.backoff_cap),
        )
        self._database_ok = False

    async def _load_settings(self) -> ScanSettings:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            settings = await load_settings(conn)
        except BaseException:
            self._database_ok = False
            raise
        finally:
            await conn.close()
        self._database_ok = True
        return settings

    async def _last_success(self) -> datetime | None:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            value: datetime | None = await conn.fetchval(Q["scan_last_success"])
        finally:
            await conn.close()
        return value

    async def run_once(
        self, *, dry_run: bool = False, progress: Progress | None = None
    ) -> ScanSummary:
        """One cycle now (``--once``), whatever ``staging_scan.enabled`` says."""
        return await run_cycle(
            self.dsn,
            self.reader,
            trigger="once",
            dry_run=dry_run,
            host=self.settings.replica_id,
            metrics=self.metrics,
            progress=progress,
            checkpoint=self.checkpoint,
        )

    async def _scheduled_run(self) -> ScanSummary:
        return await run_cycle(
            self.dsn,
            self.reader,
            trigger="schedule",
            require_enabled=True,
            host=self.settings.replica_id,
            metrics=self.metrics,
            checkpoint=self.checkpoint,
        )

    def readiness(self) -> dict[str, bool]:
        return {"database": self._database_ok}

    async def run(self, *, handle_signals: bool = False) -> None:
        """The scheduler and the HTTP surface until :meth:`stop` (or SIGTERM/SIGINT)."""
        app = create_app(registry=self.metrics.registry, ready=self.readiness)
        runner, self.http_port = await start_site(
            app, self.settings.scan_http_host, self.settings.scan_http_port
        )
        log.info("scan_http_listening", port=self.http_port, replica_id=self.settings.replica_id)
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.scheduler.run(self._stop)
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await runner.cleanup()
            log.info("scan_stopped")

    def _on_signal(self, sig: signal.Signals) -> None:
        # Only sets the stop event: a run in progress finishes, then the scheduler returns.
        log.info("scan_stopping", signal=sig.name)
        self.stop()

    def stop(self) -> None:
        self._stop.set()
