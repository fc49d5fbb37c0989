"""Fault tests: real PostgreSQL, relays as real OS processes, the Event API stand-in over HTTP.

Builds on the relay harness (``tests/relay/conftest.py``) and adds what fault scenarios need:

- ``fleet``: a :class:`Fleet` (a :class:`Harness` whose relays are OS processes started with
  fault-friendly settings, any DSN and any ``QDRANT_URL``), every process SIGKILLed afterwards.
- :class:`SteadyWriter`: writes through the HTTP write API at a steady rate, recording each
  write's latency and outcome, while faults are injected elsewhere.
- :func:`silent_insert`: commits outbox rows *without* a notification (inserted by hand), to
  prove that a relay recovers by its own reconnect sweep, not by a NOTIFY.
- :func:`hanging_tcp_server`: accepts connections and never answers (a hung Qdrant).
- :func:`delivery_report`: compares every committed row with what the stand-in accepted.
- :func:`figure`: prints a measured figure (``FIGURE name=value``), visible with ``-s``;
  timing goals are reported, not asserted, beyond generous bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from outbox_relay.http.write_api import create_app
from outbox_relay.testing.inngest import EventApiStandIn
from outbox_relay.testing.relay_process import (
    FAULT_ENV,
    RelayProcess,
    free_port,
    hanging_tcp_server,
    silent_insert,
)

from relay.conftest import Harness


def figure(name: str, value: object) -> None:
    """Reports a measured figure; ``pytest -s`` shows them (``grep FIGURE``)."""
    print(f"FIGURE {name}={value}", flush=True)


@dataclass
class Fleet(Harness):
    """A harness whose relays run as OS processes with the fault scenarios' settings."""

    def spawn(self, *, name: str | None = None, dsn: str | None = None, **env: str) -> RelayProcess:
        """Starts a relay process with :data:`FAULT_ENV` under ``env``."""
        return self.spawn_relay(
            name=name or f"relay{self.spawned + 1}", dsn=dsn, env=FAULT_ENV, **env
        )

    async def start(self, **kwargs: Any) -> RelayProcess:
        """Spawns a relay process and waits until it is ready."""
        process = self.spawn(**kwargs)
        await self.wait_ready(process, timeout=60)
        return process

    @staticmethod
    async def kill(process: RelayProcess) -> None:
        await process.kill()

    async def pending(self) -> int:
        conn = await self.conn()
        n: int = await conn.fetchval(
            "SELECT count(*) FROM outbox.messages WHERE status = 'pending'"
        )
        return n

    async def wait_drained(self, timeout: float, *, poll: float = 0.05) -> float:
        """Seconds until no row is pending (fails after ``timeout``)."""
        began = time.monotonic()
        while await self.pending():
            if time.monotonic() - began > timeout:
                raise TimeoutError(
                    f"not drained in {timeout} s: {await self.statuses()}; "
                    f"standin: {self.standin.summary()}"
                )
            await asyncio.sleep(poll)
        return time.monotonic() - began


@pytest.fixture
async def fleet(
    database_url: str, standin: EventApiStandIn, tmp_path: Path
) -> AsyncIterator[Fleet]:
    f = Fleet(database_url, standin, tmp_path)
    try:
        yield f
    finally:
        await f.close()


# -- deliveries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """Committed rows against what the stand-in accepted."""

    rows: int
    delivered: int
    lost: list[str]
    duplicates: int  # extra acceptances of an id already accepted
    max_runs: int  # Inngest runs per id: must be 1
    by_status: dict[str, int]


async def delivery_report(fleet: Harness) -> Delivery:
    """For every track row that should produce an event: was its event accepted, how often?"""
    conn = await fleet.conn()
    rows = await conn.fetch(
        "SELECT status, event_id, isrc FROM outbox.messages WHERE kind = 'track'"
    )
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    expected = {
        row["event_id"] or f"track-ingestion-{row['isrc']}"
        for row in rows
        if row["status"] in ("pending", "published")
    }
    accepted = fleet.standin.events_by_id()
    lost = sorted(expected - set(accepted))
    duplicates = sum(len(events) - 1 for events in accepted.values())
    max_runs = max((fleet.standin.runs_for(i) for i in expected if i in accepted), default=0)
    return Delivery(
        rows=len(rows),
        delivered=len(set(accepted) & expected),
        lost=lost,
        duplicates=duplicates,
        max_runs=max_runs,
        by_status=by_status,
    )


# -- writers ------------------------------------------------------------------------------------


@dataclass
class SteadyWriter:
    """Adds tracks through the write API at ``rate`` per second, recording every latency."""

    client: TestClient[Any, Any]
    rate: float
    prefix: str = "USSTD"
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (started, seconds)
    failures: list[str] = field(default_factory=list)
    written: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        n = 0
        while True:
            n += 1
            began = time.monotonic()
            try:
                response = await self.client.post(
                    "/v1/library/tracks",
                    json={
                        "isrc": f"{self.prefix}{n:07d}",
                        "title": f"Song {n}",
                        "artist": "Artist",
                        "album": "Album",
                    },
                )
                if response.status != 201:
                    self.failures.append(f"{response.status}: {await response.text()}")
                else:
                    self.written += 1
                response.release()
            except aiohttp.ClientError as exc:
                self.failures.append(repr(exc))
            self.latencies.append((began, time.monotonic() - began))
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def between(self, start: float, end: float) -> list[float]:
        return [seconds for began, seconds in self.latencies if start <= began < end]


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


@contextlib.asynccontextmanager
async def write_api(dsn: str) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(dsn)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


# -- hung and refused servers ---------------------------------------------------------------------

__all__ = ["hanging_tcp_server", "silent_insert"]  # re-exported for the fault tests


def refused_port() -> int:
    """A port nothing listens on (connections are refused)."""
    return free_port()
