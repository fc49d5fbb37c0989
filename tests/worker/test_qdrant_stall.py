"""Qdrant unresponsive for a while, then back: the real worker and relay in one process
(``WorkerService(with_relay=True)``) around the real embedded Qdrant, whose thread the test holds.

While Qdrant does not answer, the relay's check fails open (the event is published anyway) and
the worker's upsert times out: the step fails and the stand-in's executor retries it with
backoff. Once Qdrant answers again a retry writes the point and the track is ``indexed``, with
the attempts it took on its status row. (A Qdrant *server* that goes down cannot run here; see
``test_qdrant_down.py`` for the real client meeting a refused connection.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from outbox_relay.apps.worker import WorkerService
from outbox_relay.config import Settings
from outbox_relay.domain.isrc import point_id
from outbox_relay.testing.inngest import EventApiStandIn
from outbox_relay.worker.functions import APP_ID

ISRC = "USRC17607839"


@pytest.mark.slow
async def test_qdrant_stalled_for_a_while_is_retried_and_the_track_indexed(
    database_url: str, tmp_path: Path
) -> None:
    async with EventApiStandIn(retry_base_s=0.1) as standin:
        settings = Settings(
            database_url=database_url,
            inngest_dev="1",
            inngest_event_api_base_url=standin.base_url,
            qdrant_path=str(tmp_path / "qdrant"),
            worker_host="127.0.0.1",
            worker_port=0,
            http_host="127.0.0.1",
            http_port=0,
            embedding_dimensions=64,
            qdrant_write_timeout=0.3,
            qdrant_timeout=0.3,
            worker_throttle_limit=0,
            poll_interval=0.2,
        )
        service = WorkerService(settings, registry=CollectorRegistry(), with_relay=True)
        running = asyncio.create_task(service.run())
        gate = threading.Event()
        try:
            await asyncio.wait_for(service.started.wait(), 30)
            await standin.sync(service.serve_url)
            # Hold Qdrant's own thread: every call to it waits (the embedded engine stalls).
            service.qdrant._loop.call_soon_threadsafe(gate.wait, 30)  # type: ignore[attr-defined]

            conn = await asyncpg.connect(database_url)
            try:
                await conn.fetchval(
                    "SELECT outbox.enqueue_track($1, 'Bohemian Rhapsody', 'Queen', 'Opera')", ISRC
                )
            finally:
                await conn.close()
            executor = standin.executor
            # The relay published (its check failed open) and the upsert step is failing.
            await executor.wait_for_runs(
                lambda runs: any(len(r.errors) >= 2 for r in runs), 30, "two failed attempts"
            )
            gate.set()  # Qdrant answers again
            [run] = await executor.wait_for_status(
                f"{APP_ID}-track-ingestion", "completed", timeout=30
            )
            assert run.attempts >= 3
            assert all("PointWriteError" in str(error) for error in run.errors)
            assert run.output["result"]["pointId"] == point_id(ISRC)

            deadline = time.monotonic() + 10
            while True:
                row = (await service.store.status([ISRC]))[ISRC]
                if row["status"] == "indexed" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert (row["status"], row["attempts"], row["last_error"]) == (
                "indexed",
                run.attempts,
                None,
            )
            # The relay, sharing the client, now sees the point.
            assert await service.relay.checker.indexed([point_id(ISRC)]) == {  # type: ignore[union-attr]
                point_id(ISRC)
            }
        finally:
            gate.set()
            service.stop()
            await asyncio.wait_for(running, 30)
