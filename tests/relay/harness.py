"""A relay harness: real PostgreSQL, the Event API stand-in over real HTTP, embedded Qdrant.

``harness.start_relay()`` runs a relay in this process; ``harness.spawn_relay()`` runs one as
a real OS process (:mod:`outbox_relay.testing.relay_process`) for tests that kill or signal it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from outbox_relay.domain.isrc import point_id

# The relay, Qdrant's client and the stand-in are imported where they are used: this module is a
# plugin of every pytest process (tests/conftest.py), the xdist controller and one-file runs of
# tests that use none of them included, and qdrant-client alone takes ~1.5 s to import.
if TYPE_CHECKING:
    from outbox_relay.apps.relay import RelayService
    from outbox_relay.config import Settings
    from outbox_relay.testing.inngest import EventApiStandIn
    from outbox_relay.testing.relay_process import RelayProcess

FAST = {
    "poll_interval": 0.2,
    "backoff_base": 0.02,
    "backoff_cap": 0.3,
    "retry_base": 0.05,
    "retry_cap": 0.2,
    "publish_timeout": 2.0,
    "qdrant_timeout": 1.0,
    "lease_seconds": 30.0,
}


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Polls ``predicate`` until it holds, failing after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state that has no event to wait on
            await asyncio.sleep(0.01)


@dataclass
class RunningRelay:
    service: RelayService
    task: asyncio.Task[None]

    def metric(self, name: str, **labels: str) -> float:
        value = self.service.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def publish_failures(self) -> float:
        causes = ("connection", "timeout", "4xx", "5xx", "429", "auth", "bad_response")
        return sum(self.metric("outbox_relay_publish_failures_total", cause=c) for c in causes)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until the loop waits for work with no wake-up pending: the next claim needs one."""
        relay = self.service.relay
        await wait_until(
            lambda: (
                relay._listener.connected.is_set()
                and relay.idle.is_set()
                and not relay._wake.is_set()
            ),
            timeout,
        )

    async def wait_unavailable(self, timeout: float = 10.0) -> None:
        await wait_until(lambda: not self.service.relay.event_api_available, timeout)

    async def stop(self, timeout: float = 10.0) -> None:
        self.service.stop()
        async with asyncio.timeout(timeout):
            await self.task


@dataclass
class Harness:
    dsn: str
    standin: EventApiStandIn
    tmp: Path
    relays: list[RunningRelay] = field(default_factory=list)
    processes: list[RelayProcess] = field(default_factory=list)
    spawned: int = 0
    _conn: asyncpg.Connection | None = None

    # -- parts ---------------------------------------------------------------------------------

    def settings(self, **overrides: Any) -> Settings:
        from outbox_relay.config import Settings

        values: dict[str, Any] = {
            "database_url": self.dsn,
            "inngest_event_api_base_url": self.standin.base_url,
            "inngest_dev": "1",
            "qdrant_url": None,
            "qdrant_path": str(self.tmp / "qdrant"),
            "http_host": "127.0.0.1",
            "http_port": 0,
            **FAST,
            **overrides,
        }
        return Settings(**values)

    async def start_relay(self, **overrides: Any) -> RunningRelay:
        from prometheus_client import CollectorRegistry

        from outbox_relay.apps.relay import RelayService

        service = RelayService(self.settings(**overrides), registry=CollectorRegistry())
        relay = RunningRelay(service, asyncio.create_task(service.run()))
        self.relays.append(relay)
        return relay

    def spawn_relay(
        self,
        *,
        name: str = "relay",
        dsn: str | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: str,
    ) -> RelayProcess:
        """A relay as a real OS process (:func:`spawn_relay`); returns once started, not ready.

        ``env`` defaults to :data:`outbox_relay.testing.relay_process.TEST_ENV`.
        """
        from outbox_relay.testing.relay_process import TEST_ENV, spawn_relay

        self.spawned += 1
        process = spawn_relay(
            name=name,
            dsn=dsn or self.dsn,
            event_api_base_url=self.standin.base_url,
            log_dir=self.tmp,
            env={**(TEST_ENV if env is None else env), **overrides},
        )
        self.processes.append(process)
        return process

    async def wait_ready(self, process: RelayProcess, timeout: float = 20.0) -> None:
        await process.wait_ready(timeout)

    async def seed_indexed(self, isrcs: Iterable[str], path: Path | None = None) -> None:
        """Puts points for these ISRCs into embedded Qdrant (before a relay opens the folder)."""
        from qdrant_client import AsyncQdrantClient, models

        client = AsyncQdrantClient(path=str(path or self.tmp / "qdrant"))
        try:
            if not await client.collection_exists("tracks"):
                await client.create_collection(
                    "tracks",
                    vectors_config=models.VectorParams(size=2, distance=models.Distance.COSINE),
                )
            await client.upsert(
                "tracks",
                points=[
                    models.PointStruct(id=point_id(isrc), vector=[1.0, 0.5], payload={"isrc": isrc})
                    for isrc in isrcs
                ],
            )
        finally:
            await client.close()

    # -- database ------------------------------------------------------------------------------

    async def conn(self) -> asyncpg.Connection:
        if self._conn is None:
            self._conn = await asyncpg.connect(self.dsn)
        return self._conn

    async def enqueue_track(self, isrc: str | None, title: str = "Song", **kwargs: Any) -> int:
        conn = await self.conn()
        row_id: int = await conn.fetchval(
            "SELECT outbox.enqueue_track($1, $2, $3, $4, $5, $6, $7)",
            isrc,
            title,
            kwargs.get("artist", "Artist"),
            kwargs.get("album", "Album"),
            kwargs.get("priority"),
            kwargs.get("force", False),
            kwargs.get("artwork_url"),
        )
        return row_id

    async def enqueue_tracks(self, count: int, prefix: str = "USAAA") -> list[int]:
        """``count`` distinct valid tracks in one statement (one NOTIFY)."""
        conn = await self.conn()
        rows = await conn.fetch(
            "SELECT outbox.enqueue_track($1 || lpad(i::text, 7, '0'), 'Song ' || i, 'Artist', "
            "'Album') AS id FROM generate_series(1, $2) AS i",
            prefix,
            count,
        )
        return [row["id"] for row in rows]

    async def close_conn(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def statuses(self) -> dict[str, int]:
        conn = await self.conn()
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM outbox.messages WHERE kind = 'track' GROUP BY 1"
        )
        return {row["status"]: row["n"] for row in rows}

    async def wait_settled(self, expected: int | None = None, timeout: float = 15.0) -> None:
        """Polls (with a deadline) until no track row is pending and claims are released."""
        conn = await self.conn()
        deadline = time.monotonic() + timeout
        while True:
            pending, tracks = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'pending'), "
                "count(*) FILTER (WHERE kind = 'track') FROM outbox.messages"
            )
            if pending == 0 and (expected is None or tracks >= expected):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"outbox not settled in {timeout} s: {await self.statuses()} "
                    f"(standin: {self.standin.summary()})"
                )
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for relay in self.relays:
            if not relay.task.done():
                with contextlib.suppress(Exception):
                    await relay.stop()
        for process in self.processes:
            await process.kill()
        if self._conn is not None:
            await self._conn.close()


@pytest.fixture
async def standin() -> AsyncIterator[EventApiStandIn]:
    from outbox_relay.testing.inngest import EventApiStandIn

    async with EventApiStandIn() as api:
        yield api


@pytest.fixture
async def harness(
    database_url: str, standin: EventApiStandIn, tmp_path: Path
) -> AsyncIterator[Harness]:
    h = Harness(database_url, standin, tmp_path)
    try:
        yield h
    finally:
        await h.close()
