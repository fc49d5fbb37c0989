"""Fixtures for the worker: its real SDK handler served on a loopback port, against the Event API
stand-in, with in-memory fakes for the embedder and the index and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import inngest
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from outbox_relay.apps.worker import make_client
from outbox_relay.config import Settings
from outbox_relay.http.worker import SERVE_PATH, create_worker_app
from outbox_relay.metrics import WorkerMetrics
from outbox_relay.testing.fakes import FakeEmbedder, InMemoryIndex
from outbox_relay.testing.inngest import EventApiStandIn
from outbox_relay.worker.functions import FunctionSettings, create_functions
from outbox_relay.worker.steps import WorkerParts
from outbox_relay.worker.store import IngestionStore


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Serves ``app`` with uvicorn on a free loopback port; yields ``http://127.0.0.1:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    server = _QuietServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not server.started:  # uvicorn only has a flag
            if task.done() or loop.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Worker:
    """A served worker: its serve URL, its parts and the stand-in it talks to."""

    url: str
    parts: WorkerParts
    embedder: FakeEmbedder
    index: InMemoryIndex
    store: IngestionStore
    client: inngest.Inngest
    standin: EventApiStandIn
    settings: FunctionSettings


@pytest.fixture
async def event_api() -> AsyncIterator[EventApiStandIn]:
    # Inngest's retry table scaled from 15 s to 10 ms, so retries take milliseconds.
    async with EventApiStandIn(retry_base_s=0.01) as api:
        yield api


@pytest.fixture
def function_settings() -> FunctionSettings:
    # The seed's defaults, but no throttle: a test must not wait for the 11th start of a minute.
    return FunctionSettings(retries=5, concurrency=10, throttle_limit=0)


@pytest.fixture
async def worker(
    database_url: str, event_api: EventApiStandIn, function_settings: FunctionSettings
) -> AsyncIterator[Worker]:
    settings = Settings(
        inngest_dev="1",
        inngest_event_api_base_url=event_api.base_url,
        database_url=database_url,
    )
    client = make_client(settings)
    embedder = FakeEmbedder(dimensions=8)
    index = InMemoryIndex()
    store = IngestionStore(database_url)
    parts = WorkerParts(
        embedder=embedder,
        points=index,
        store=store,
        metrics=WorkerMetrics(CollectorRegistry()),
        collection="tracks",
    )
    functions = create_functions(client, parts, function_settings)

    async def ready() -> dict[str, bool]:
        return {"database": True}

    app = create_worker_app(client, functions, registry=parts.metrics.registry, ready=ready)
    async with serve_asgi(app) as base:
        yield Worker(
            url=base + SERVE_PATH,
            parts=parts,
            embedder=embedder,
            index=index,
            store=store,
            client=client,
            standin=event_api,
            settings=function_settings,
        )
    await store.close()
