"""The scan's scheduler: waits for the cron schedule in ``library.settings`` and runs the cycle.

Every setting is read afresh: while waiting, the scheduler re-reads ``staging_scan.*`` every
``poll_interval`` seconds (and always just before a run), and when ``schedule`` or ``enabled``
changed it plans the next run from the new values at once — no restart, unlike the seed's own
implementation, which registers its schedule once at start-up. The run itself
(:func:`~outbox_relay.scan.cycle.run_cycle`) re-reads them all again under the lock.

Overlap: one run at a time across every process (the cycle's advisory lock). Several schedulers
share a tick: one runs, the others log ``scan_skipped`` (``run_in_progress``). Within a process
runs are sequential; ticks that pass while a run lasts are skipped and logged
(``scan_ticks_missed``), never queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

import structlog

from outbox_relay.backoff import Backoff
from outbox_relay.errors import ScanError
from outbox_relay.metrics import ScanMetrics
from outbox_relay.scan.cycle import ScanSummary
from outbox_relay.scan.settings import ScanSettings, next_run, period_seconds

log = structlog.get_logger("outbox_relay.scan")

DEFAULT_POLL_INTERVAL: Final = 5.0

LoadSettings = Callable[[], Awaitable[ScanSettings]]
RunOnce = Callable[[], Awaitable[ScanSummary]]
LastSuccess = Callable[[], Awaitable[datetime | None]]


class ScanScheduler:
    """Runs ``run_once`` at the times ``staging_scan.schedule`` names, while enabled."""

    def __init__(
        self,
        *,
        load_settings: LoadSettings,
        run_once: RunOnce,
        last_success: LastSuccess | None = None,
        metrics: ScanMetrics | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        backoff: Backoff | None = None,
    ) -> None:
        self._load = load_settings
        self._run_once = run_once
        self._last_success = last_success
        self._metrics = metrics
        self._poll = poll_interval
        self._backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.plan: tuple[bool, str] | None = None
        self.next_at: datetime | None = None
        self.runs = 0
        self._last_ok = 0.0

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _replan(self, settings: ScanSettings) -> None:
        plan = (settings.enabled, settings.schedule)
        if plan == self.plan:
            return
        changed = self.plan is not None
        self.plan = plan
        now = self._now()
        if self._metrics is not None:
            self._metrics.enabled.set(1 if settings.enabled else 0)
            self._metrics.schedule_period.set(period_seconds(settings.schedule, now))
        if not settings.enabled:
            self.next_at = None
            log.info("scan_disabled", schedule=settings.schedule, changed=changed)
            return
        self.next_at = next_run(settings.schedule, now)
        log.info(
            "scan_scheduled",
            schedule=settings.schedule,
            next_run_at=self.next_at.isoformat(),
            changed=changed,
        )

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, seconds))

    async def _seed_last_success(self) -> None:
        """The overdue alert's clock at start-up: the last success in SQL (any process), else now
        (so a scan that never succeeds fires two periods after it started)."""
        if self._metrics is None:
            return
        self._last_ok = time.time()
        self._metrics.last_success.set(self._last_ok)
        await self._refresh_last_success(at_start=True)

    async def _refresh_last_success(self, at_start: bool = False) -> None:
        """Follows successes of every process: a scan whose ticks another process's runs took
        (skipped, lock held) must not look overdue."""
        if self._metrics is None or self._last_success is None:
            return
        try:
            last = await self._last_success()
        except Exception as exc:  # the database: the next refresh tries again
            log.warning("scan_last_success_unavailable", error=f"{type(exc).__name__}: {exc}")
            return
        if last is None:
            return
        if at_start or last.timestamp() > self._last_ok:
            self._last_ok = last.timestamp()
            self._metrics.last_success.set(self._last_ok)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; a run in progress finishes first."""
        await self._seed_last_success()
        failures = 0
        while not stop.is_set():
            try:
                settings = await self._load()
            except ScanError as exc:
                # A bad value: say so every poll until fixed; the last good plan is dropped so
                # that nothing runs on settings the operator is still editing.
                log.error("scan_settings_invalid", reason=exc.reason, error=str(exc))
                self.plan, self.next_at = None, None
                await self._wait(stop, self._poll)
                continue
            except Exception as exc:  # the database: retry with backoff, never give up
                failures += 1
                delay = self._backoff.delay(failures)
                log.error(
                    "scan_settings_unavailable",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 3),
                )
                await self._wait(stop, delay)
                continue
            failures = 0
            self._replan(settings)
            now = self._now()
            if self.next_at is not None and now >= self.next_at:
                due = self.next_at
                summary = await self._run_once()
                self.runs += 1
                if summary.result in ("success", "partial"):
                    self._last_ok = time.time()  # the cycle set the gauge to this moment
                await self._refresh_last_success()
                assert self.plan is not None
                after = self._now()
                self.next_at = next_run(self.plan[1], after)
                missed = 0
                probe = next_run(self.plan[1], due)
                while probe < after and missed < 1000:
                    missed += 1
                    probe = next_run(self.plan[1], probe)
                if missed:
                    log.warning(
                        "scan_ticks_missed",
                        ticks=missed,
                        reason="a run lasted past them",
                        next_run_at=self.next_at.isoformat(),
                    )
                continue
            wait = self._poll
            if self.next_at is not None:
                wait = min(wait, (self.next_at - now).total_seconds())
            await self._wait(stop, wait)
