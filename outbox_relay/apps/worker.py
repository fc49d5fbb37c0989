"""Wires the ingestion worker from settings, for ``outbox-relay worker`` (and the relay with it).

The worker is the SDK's FastAPI adapter under uvicorn, on the process's one event loop. On
SIGTERM/SIGINT it stops accepting connections, lets the requests in flight finish (each is one
step of a run; at most ``OUTBOX_WORKER_SHUTDOWN_TIMEOUT`` seconds) and exits 0. A request cut
short anyway is not lost: Inngest sees no answer and calls the step again.

``--with-relay`` hosts the relay in the same process around the same Qdrant client. Embedded
Qdrant locks its folder to one process, so without a Qdrant server this is the only way for the
relay's existence check to see the points the worker writes: one process, one embedded client,
two loops. With ``QDRANT_URL`` set, run them as separate processes instead (as in production).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
from collections.abc import Iterator

import inngest
import structlog
import uvicorn
from prometheus_client import REGISTRY, CollectorRegistry

from outbox_relay.adapters.embeddings import LexicalEmbedder, TeiEmbedder
from outbox_relay.adapters.qdrant import QdrantIndexChecker, QdrantPointWriter, open_client
from outbox_relay.config import Settings
from outbox_relay.http.worker import SERVE_PATH, create_worker_app
from outbox_relay.metrics import WorkerMetrics
from outbox_relay.ports import Embedder
from outbox_relay.worker.functions import APP_ID, FunctionSettings, create_functions
from outbox_relay.worker.steps import WorkerParts
from outbox_relay.worker.store import IngestionStore

log = structlog.get_logger("outbox_relay.worker")

_READY_TIMEOUT = 2.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the service owns SIGTERM/SIGINT (and stops the
    relay too in ``--with-relay`` mode), then sets ``should_exit``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_embedder(settings: Settings) -> Embedder:
    """The text-embeddings-inference client when EMBEDDING_URL is set, else the built-in one."""
    if settings.embedding_url:
        return TeiEmbedder(
            settings.embedding_url, settings.embedding_dimensions, settings.embedding_timeout
        )
    return LexicalEmbedder(settings.embedding_dimensions)


def make_client(settings: Settings) -> inngest.Inngest:
    """The SDK client: dev mode with INNGEST_DEV=1, the signing key otherwise."""
    return inngest.Inngest(
        app_id=APP_ID,
        is_production=not settings.dev_mode,
        api_base_url=settings.api_origin(),
        event_api_base_url=settings.event_api_origin(),
        event_key=settings.event_key(),
        signing_key=settings.signing_key(),
        logger=logging.getLogger("outbox_relay.worker.sdk"),
    )


class WorkerService:
    """The worker (and optionally a relay) from :class:`Settings`."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        with_relay: bool = False,
        embedder: Embedder | None = None,
    ) -> None:
        dsn = settings.require_database_url()
        self.settings = settings
        self.registry = REGISTRY if registry is None else registry
        self.metrics = WorkerMetrics(self.registry)
        self.qdrant = open_client(
            url=settings.qdrant_url,
            path=settings.qdrant_path,
            timeout=settings.qdrant_write_timeout,
            api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
            # Embedded Qdrant on its own thread: its disk flushes must not stop this process's
            # event loop (the worker's requests and, with --with-relay, the relay's loop).
            own_thread=True,
        )
        self.points = QdrantPointWriter(
            self.qdrant,
            settings.qdrant_collection,
            settings.embedding_dimensions,
            settings.qdrant_write_timeout,
            owns_client=False,
        )
        self.embedder = embedder or make_embedder(settings)
        # One connection per run that may be in a step at once: a smaller pool makes steps queue
        # for a connection (measured: bench/worker.py, docs/performance.md).
        self.store = IngestionStore(dsn, max_size=settings.worker_concurrency)
        self.client = make_client(settings)
        self.functions = create_functions(
            self.client,
            WorkerParts(
                embedder=self.embedder,
                points=self.points,
                store=self.store,
                metrics=self.metrics,
                collection=settings.qdrant_collection,
            ),
            FunctionSettings(
                retries=settings.worker_retries,
                concurrency=settings.worker_concurrency,
                throttle_limit=settings.worker_throttle_limit,
                throttle_period_s=settings.worker_throttle_period,
            ),
        )
        self.app = create_worker_app(
            self.client, self.functions, registry=self.registry, ready=self._readiness
        )
        self.relay = None
        if with_relay:
            from outbox_relay.apps.relay import RelayService

            self.relay = RelayService(
                settings,
                registry=registry,
                checker=QdrantIndexChecker(
                    self.qdrant,
                    settings.qdrant_collection,
                    settings.qdrant_timeout,
                    owns_client=False,
                ),
            )
        self.port: int | None = None
        self.started = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def serve_url(self) -> str:
        """The URL Inngest (or the stand-in) syncs from and calls, on loopback."""
        host = self.settings.worker_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}{SERVE_PATH}"

    async def _readiness(self) -> dict[str, bool]:
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                await self.store.ping()
            database = True
        except Exception:
            database = False
        checks = {"database": database}
        if self.relay is not None:
            checks.update({f"relay_{k}": v for k, v in self.relay.relay.readiness().items()})
        return checks

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.settings.worker_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.worker_host, self.settings.worker_port))
        sock.listen(512)
        sock.setblocking(False)
        return sock

    async def run(self, *, handle_signals: bool = False) -> None:
        """Serves until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``)."""
        sock = self._bind()
        self.port = int(sock.getsockname()[1])
        server = _Server(
            uvicorn.Config(
                self.app,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=math.ceil(self.settings.worker_shutdown_timeout),
            )
        )
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        tasks: dict[str, asyncio.Task[None]] = {
            "worker": asyncio.create_task(server.serve(sockets=[sock]), name="worker-http")
        }
        if self.relay is not None:
            tasks["relay"] = asyncio.create_task(self.relay.run(), name="relay")
        stop = asyncio.create_task(self._stop.wait(), name="worker-stop")
        try:
            # uvicorn says it has started with a flag, not an event: look every 10 ms.
            while not server.started and not tasks["worker"].done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            log.info(
                "worker_listening",
                port=self.port,
                serve_url=self.serve_url,
                app_id=APP_ID,
                mode="dev" if self.settings.dev_mode else "cloud",
                inngest_api=self.settings.api_origin(),
                event_api=self.settings.event_api_origin(),
                embedder=self.embedder.name,
                dimensions=self.embedder.dimensions,
                qdrant=self.settings.qdrant_url or f"embedded:{self.settings.qdrant_path}",
                with_relay=self.relay is not None,
            )
            self.started.set()
            # Until asked to stop, or until a part ends on its own (which is a failure).
            await asyncio.wait([stop, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
            ended = [name for name, task in tasks.items() if task.done()]
            if not self._stop.is_set():
                log.error("worker_part_ended", parts=ended)
        finally:
            server.should_exit = True
            if self.relay is not None:
                self.relay.stop()
            stop.cancel()
            results = await asyncio.gather(*tasks.values(), return_exceptions=True)
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self.store.close()
            await self.embedder.close()
            await self.points.close()
            await self.qdrant.close()
            sock.close()
            log.info("worker_stopped", port=self.port)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        if not self._stop.is_set():
            raise RuntimeError("a part of the worker process ended on its own; see the log")

    def _on_signal(self, sig: signal.Signals) -> None:
        # Only sets the stop event: requests in flight finish, then run() returns.
        log.info("worker_stopping", signal=sig.name)
        self.stop()

    def stop(self) -> None:
        self._stop.set()
