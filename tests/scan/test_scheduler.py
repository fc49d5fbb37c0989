"""The scheduler in a running ``ScanService``: settings edited in SQL apply without a restart,
an overlapping tick is skipped and logged, and the overdue alert's gauges are exported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from outbox_relay.apps.scan import ScanService
from outbox_relay.config import Settings
from outbox_relay.scan.cycle import LOCK_KEY
from outbox_relay.testing.audio import write_album

from .conftest import ScanEnv

EVERY_SECOND = "* * * * * *"  # the 6-field form (leading seconds) tests may use


async def until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen in {timeout} s")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def service(scan_env: ScanEnv) -> AsyncIterator[ScanService]:
    settings = Settings(
        database_url=scan_env.dsn,
        scan_http_host="127.0.0.1",
        scan_http_port=0,
        scan_settings_poll=0.1,
    )  # type: ignore[call-arg]
    scan = ScanService(settings, registry=CollectorRegistry())
    task = asyncio.create_task(scan.run())
    try:
        yield scan
    finally:
        scan.stop()
        await asyncio.wait_for(task, 30)


def metric(scan: ScanService, name: str, **labels: str) -> float:
    value = scan.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def runs(env: ScanEnv) -> list[tuple[Any, ...]]:
    return env.sql(
        "SELECT status, dry_run, workers, albums_success FROM library.scan_runs "
        "WHERE status <> 'running' ORDER BY id"
    )


@pytest.mark.slow
async def test_settings_edited_in_sql_take_effect_without_a_restart(
    scan_env: ScanEnv, service: ScanService
) -> None:
    with capture_logs() as logs:
        await until(lambda: any(e["event"] == "scan_disabled" for e in logs), "scan_disabled")
        assert metric(service, "outbox_relay_scan_enabled") == 0
        write_album(scan_env.inbound / "a", artist="Oscar", album="Papa", year=2010, tracks=2)

        # Enabled, every second: the next tick runs and stages the album.
        scan_env.set("schedule", EVERY_SECOND)
        scan_env.set("enabled", "true")
        await until(lambda: len(runs(scan_env)) >= 1, "a scheduled run")
        assert runs(scan_env)[0] == ("success", False, 4, 1)
        assert (scan_env.staging / "Oscar" / "2010 - Papa").is_dir()
        assert metric(service, "outbox_relay_scan_enabled") == 1
        assert metric(service, "outbox_relay_scan_schedule_period_seconds") == 1
        # The run's row is finished before the process counts it: wait for the count too.
        await until(
            lambda: metric(service, "outbox_relay_scan_runs_total", result="success") >= 1,
            "the run counted",
        )

        # Workers and dry run are read afresh for the next run.
        scan_env.set("workers", "2")
        scan_env.set("dry_run", "true")
        write_album(scan_env.inbound / "b", artist="Quebec", album="Romeo", year=2011, tracks=2)
        await until(lambda: (True, 2) in [(r[1], r[2]) for r in runs(scan_env)], "a dry run")
        assert not (scan_env.staging / "Quebec").exists()

        # A new schedule is planned at once: the next run is next New Year, not next second.
        scan_env.set("schedule", "0 0 1 1 *")
        await until(
            lambda: any(e["event"] == "scan_scheduled" and e["schedule"] == "0 0 1 1 *"
                        for e in logs),
            "the new schedule planned",
        )  # fmt: skip
        assert service.scheduler.next_at is not None
        assert service.scheduler.next_at == datetime(datetime.now(UTC).year + 1, 1, 1, tzinfo=UTC)
        assert metric(service, "outbox_relay_scan_schedule_period_seconds") >= 365 * 86400
        count = len(runs(scan_env))

        # Disabled: nothing is planned.
        scan_env.set("enabled", "false")
        await until(lambda: service.scheduler.next_at is None, "the schedule dropped")
        assert metric(service, "outbox_relay_scan_enabled") == 0
        assert len(runs(scan_env)) in (count, count + 1)  # at most the run already under way

        # An invalid value is reported and nothing runs on it.
        scan_env.set("schedule", "61 * * * *")
        await until(
            lambda: any(e["event"] == "scan_settings_invalid" for e in logs), "invalid schedule"
        )
        error = next(e for e in logs if e["event"] == "scan_settings_invalid")
        assert "staging_scan.schedule" in error["error"]


@pytest.mark.slow
async def test_an_overlapping_tick_is_skipped_and_logged(
    scan_env: ScanEnv, service: ScanService
) -> None:
    holder = await asyncpg.connect(scan_env.dsn)
    try:
        # Another process's run holds the scan lock.
        await holder.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        with capture_logs() as logs:
            scan_env.set("schedule", EVERY_SECOND)
            scan_env.set("enabled", "true")
            await until(lambda: any(e["event"] == "scan_skipped" for e in logs), "a skipped tick")
        skipped = next(e for e in logs if e["event"] == "scan_skipped")
        assert skipped["reason"] == "run_in_progress"
        assert skipped["log_level"] == "warning"
        await until(
            lambda: metric(service, "outbox_relay_scan_runs_total", result="skipped") >= 1,
            "the skipped tick counted",
        )
        assert runs(scan_env) == []
        # The other process's run succeeds: this one's overdue clock follows it, so a scan whose
        # ticks another process took never looks overdue.
        other = await holder.fetchval(
            "INSERT INTO library.scan_runs (trigger, dry_run, host, status, finished_at) "
            "VALUES ('schedule', false, 'other-process', 'success', clock_timestamp()) "
            "RETURNING extract(epoch FROM finished_at)::float8"
        )
        await until(
            lambda: (
                metric(service, "outbox_relay_scan_last_success_timestamp_seconds") >= other - 0.001
            ),
            "the last success of another process",
        )
        await holder.execute("DELETE FROM library.scan_runs")
        await holder.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        await until(lambda: len(runs(scan_env)) >= 1, "a run once the lock is free")
    finally:
        await holder.close()
