"""Qdrant down, seen by the real client: a ``QDRANT_URL`` where nothing listens refuses the
connection, the upsert step fails, the executor retries it, and the failure handler records it.

(Qdrant coming back: ``test_qdrant_stall.py`` holds the real embedded engine's thread for a while
under a running worker and relay; no Qdrant server can run here to be stopped and started.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from outbox_relay.adapters.qdrant import QdrantPointWriter, open_client
from outbox_relay.apps.worker import make_client
from outbox_relay.config import Settings
from outbox_relay.http.worker import SERVE_PATH, create_worker_app
from outbox_relay.metrics import WorkerMetrics
from outbox_relay.testing.fakes import FakeEmbedder
from outbox_relay.testing.inngest import EventApiStandIn
from outbox_relay.testing.postgres import free_port
from outbox_relay.worker.functions import APP_ID, FunctionSettings, create_functions
from outbox_relay.worker.steps import WorkerParts
from outbox_relay.worker.store import IngestionStore

from .conftest import serve_asgi

ISRC = "USRC17607839"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[IngestionStore]:
    store = IngestionStore(database_url)
    yield store
    await store.close()


async def test_a_qdrant_that_refuses_connections_fails_the_step_until_retries_are_spent(
    database_url: str, store: IngestionStore
) -> None:
    async with EventApiStandIn(retry_base_s=0.01) as standin:
        client = make_client(Settings(inngest_dev="1", inngest_event_api_base_url=standin.base_url))
        qdrant = open_client(url=f"http://127.0.0.1:{free_port()}", path="", timeout=2)
        parts = WorkerParts(
            embedder=FakeEmbedder(dimensions=8),
            points=QdrantPointWriter(qdrant, "tracks", 8, timeout=2),
            store=store,
            metrics=WorkerMetrics(CollectorRegistry()),
            collection="tracks",
        )
        functions = create_functions(client, parts, FunctionSettings(retries=2, throttle_limit=0))

        async def ready() -> dict[str, bool]:
            return {}

        app = create_worker_app(client, functions, registry=CollectorRegistry(), ready=ready)
        try:
            async with serve_asgi(app) as base:
                await standin.sync(base + SERVE_PATH)
                event = {
                    "name": "track/ingestion.requested",
                    "id": f"track-ingestion-{ISRC}",
                    "data": {"isrc": ISRC, "title": "T", "artist": "A", "album": "B"},
                }
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(f"{standin.base_url}/e/k", data=orjson.dumps(event)) as r,
                ):
                    assert r.status == 200
                executor = standin.executor
                [run] = await executor.wait_for_status(
                    f"{APP_ID}-track-ingestion", "failed", timeout=30
                )
                assert run.attempts == 3
                await executor.wait_for_status(
                    f"{APP_ID}-track-ingestion-failure", "completed", timeout=30
                )
        finally:
            await qdrant.close()
        row = (await store.status([ISRC]))[ISRC]
        assert row["status"] == "failed"
        assert "PointWriteError" in row["last_error"]
        assert parts.metrics.step_errors.labels("track-ingestion", "upsert-point")._value.get() == 3
