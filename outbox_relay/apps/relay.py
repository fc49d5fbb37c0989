"""Wires a relay from settings: adapters, loop and HTTP surface, for ``outbox-relay relay``.

Tests and the demo use :class:`RelayService` in-process; the CLI runs it with signal handlers.
"""

from __future__ import annotations

import asyncio
import gc
import signal

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from outbox_relay.adapters.inngest import EventApiPublisher
from outbox_relay.adapters.qdrant import QdrantIndexChecker
from outbox_relay.adapters.tidal import TidalCatalog
from outbox_relay.backoff import Backoff
from outbox_relay.config import Settings
from outbox_relay.db.preflight import wait_until_ready
from outbox_relay.http.admin import add_admin_routes
from outbox_relay.http.server import create_app, start_site
from outbox_relay.http.ui import RelayState
from outbox_relay.metrics import RelayMetrics
from outbox_relay.ports import IndexChecker
from outbox_relay.relay.listener import Listener
from outbox_relay.relay.loop import Relay, RelayConfig, request_timeout
from outbox_relay.relay.maintenance import Maintenance
from outbox_relay.relay.store import CatalogCacheStore, OutboxStore

log = structlog.get_logger("outbox_relay.relay")


class RelayService:
    """A relay and its HTTP surface, from :class:`Settings`."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        checker: IndexChecker | None = None,
    ) -> None:
        """``checker`` replaces the Qdrant client the relay would open for itself (the worker's
        ``--with-relay`` mode shares one embedded client); the relay closes it when it stops."""
        dsn = settings.require_database_url()
        self.settings = settings
        self.metrics = RelayMetrics(registry, replica_id=settings.replica_id)
        timeout = request_timeout(settings.publish_timeout, settings.lease_seconds)
        if timeout < settings.publish_timeout:
            log.warning(
                "publish_timeout_reduced",
                publish_timeout_s=settings.publish_timeout,
                used_s=round(timeout, 3),
                hint="OUTBOX_LEASE_SECONDS must hold two Event API timeouts; raise it",
            )
        self.publisher = EventApiPublisher(
            origin=settings.event_api_origin(),
            event_key=settings.event_key(),
            timeout=timeout,
            metrics=self.metrics,
            max_request_bytes=settings.max_request_bytes,
            budget=settings.request_budget(),
        )
        self.checker: IndexChecker = checker or QdrantIndexChecker.connect(
            url=settings.qdrant_url,
            path=settings.qdrant_path,
            collection=settings.qdrant_collection,
            timeout=settings.qdrant_timeout,
            api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
        )
        # The catalog, when its credentials are set (tracks known by TIDAL id only need it).
        self.catalog: TidalCatalog | None = None
        catalog_cache: CatalogCacheStore | None = None
        if settings.tidal_client_id and settings.tidal_client_secret:
            self.catalog = TidalCatalog(
                client_id=settings.tidal_client_id,
                client_secret=settings.tidal_client_secret.get_secret_value(),
                country_code=settings.tidal_country_code,
                api_base_url=settings.tidal_api_base_url,
                auth_url=settings.tidal_auth_url,
                timeout=settings.catalog_timeout,
                requests_per_second=settings.catalog_requests_per_second,
                burst=settings.catalog_burst,
                concurrency=settings.catalog_concurrency,
                metrics=self.metrics,
            )
            catalog_cache = CatalogCacheStore(
                dsn,
                country_code=settings.tidal_country_code,
                unknown_ttl=settings.catalog_unknown_ttl,
                synchronous_commit=settings.synchronous_commit,
            )
        self.relay = Relay(
            catalog=self.catalog,
            catalog_cache=catalog_cache,
            store=OutboxStore(
                dsn,
                replica_id=settings.replica_id,
                lease_seconds=settings.lease_seconds,
                max_attempts=settings.max_attempts,
                synchronous_commit=settings.synchronous_commit,
                metrics=self.metrics,
            ),
            listener=Listener(
                dsn,
                metrics=self.metrics,
                backoff=Backoff(settings.backoff_base, settings.backoff_cap),
            ),
            publisher=self.publisher,
            checker=self.checker,
            metrics=self.metrics,
            maintenance=Maintenance(
                dsn,
                metrics=self.metrics,
                backoff=Backoff(settings.backoff_base, settings.backoff_cap),
                refresh_interval=settings.refresh_interval,
                retention_seconds=settings.retention_seconds or None,
                retention_batch=settings.retention_batch,
            ),
            config=RelayConfig(
                batch_size=settings.batch_size,
                poll_interval=settings.poll_interval,
                max_attempts=settings.max_attempts,
                backoff_base=settings.backoff_base,
                backoff_cap=settings.backoff_cap,
                retry_base=settings.retry_base,
                retry_cap=settings.retry_cap,
                lease_seconds=settings.lease_seconds,
                outage_alarm_after=settings.outage_alarm_after,
                one_unrecorded_batch=settings.one_unrecorded_batch,
            ),
        )
        # Computed at scrape time, so it can never disagree with /readyz.
        self.metrics.ready.set_function(lambda: float(all(self.relay.readiness().values())))
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None
        # Set by stop(): also ends the start-up wait for the database.
        self._stopping = asyncio.Event()
        # While start-up waits for the database: why (for /readyz).
        self._startup_problem: str | None = "checking the database"

    def _problems(self) -> dict[str, str]:
        problems = self.relay.readiness_problems()
        if self._startup_problem is not None:
            problems["database"] = self._startup_problem
        return problems

    async def run(self, *, handle_signals: bool = False) -> None:
        """Serves until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``)."""
        app = create_app(
            registry=self.metrics.registry, ready=self.relay.readiness, problems=self._problems
        )
        token = self.settings.admin_token
        add_admin_routes(
            app,
            dsn=self.settings.require_database_url(),
            token=token.get_secret_value() if token is not None else None,
            registry=self.metrics.registry,
            relay_state=self._state,
            grafana_url=self.settings.grafana_url,
        )
        self._runner, self.http_port = await start_site(
            app, self.settings.http_host, self.settings.http_port
        )
        log.info(
            "relay_http_listening",
            port=self.http_port,
            event_api=self.settings.event_api_origin(),
            request_budget=self.publisher.describe_budget(),
            qdrant=self.settings.qdrant_url or f"embedded:{self.settings.qdrant_path}",
            catalog=self.settings.tidal_api_base_url if self.catalog is not None else "none",
            replica_id=self.settings.replica_id,
        )
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            # Start-up: a database that cannot be reached is waited for (one line per attempt,
            # /readyz says why); a refused login or an unmigrated database is raised at once.
            ready = await wait_until_ready(
                self.settings.require_database_url(),
                stop=self._stopping,
                backoff=Backoff(self.settings.backoff_base, self.settings.backoff_cap),
                component="relay",
                on_problem=self._on_startup_problem,
            )
            self._startup_problem = None
            if ready:
                # Everything imported and built so far (pydantic and Qdrant's models, hundreds
                # of thousands of objects) lives as long as the process: moved out of the
                # collector's reach, a full collection no longer walks it every few batches.
                gc.freeze()
                await self.relay.run()
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self._runner.cleanup()
            await self.publisher.close()
            await self.checker.close()
            if self.catalog is not None:
                await self.catalog.close()

    def _state(self) -> RelayState:
        """What the admin page shows of this process: its id, readiness, the Event API."""
        return RelayState(
            replica_id=self.settings.replica_id,
            checks=self.relay.readiness(),
            event_api_available=self.relay.event_api_available,
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        # Only sets the stop event: the batch in flight finishes, then the loop returns.
        log.info("relay_stopping", signal=sig.name)
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self.relay.stop()

    def _on_startup_problem(self, problem: str | None) -> None:
        self._startup_problem = f"waiting for the database: {problem}" if problem else None
