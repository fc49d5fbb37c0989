"""Wires the library write API process (``outbox-relay api``): the aiohttp app on a port.

The API listens at once (``/healthz`` answers, writes answer 503 with the reason while the
database cannot be reached), waits for the database with backoff, and exits with one line if
the login is refused or the database is not migrated (db/preflight.py).
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from outbox_relay.backoff import Backoff
from outbox_relay.db.preflight import wait_until_ready
from outbox_relay.http.write_api import create_app

log = structlog.get_logger("outbox_relay.api")


async def serve(
    dsn: str,
    host: str = "0.0.0.0",
    port: int = 8080,
    *,
    started: asyncio.Event | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Runs the API on ``host:port`` until cancelled, then closes connections and the pool.

    ``started`` is set once the socket listens (useful with ``port=0`` and tests). Raises the
    preflight's error if the database refuses the login or is not migrated.
    """
    runner = web.AppRunner(create_app(dsn), access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("api_listening", addresses=[str(a) for a in runner.addresses])
        if started is not None:
            started.set()
        forever = asyncio.Event()
        await wait_until_ready(
            dsn, stop=forever, backoff=backoff or Backoff(0.5, 30.0), component="api"
        )
        await forever.wait()
    finally:
        await runner.cleanup()
