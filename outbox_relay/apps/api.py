"""Wires the library write API process (``outbox-relay api``): the aiohttp app on a port."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from outbox_relay.http.write_api import create_app

log = structlog.get_logger("outbox_relay.api")


async def serve(
    dsn: str,
    host: str = "0.0.0.0",
    port: int = 8080,
    *,
    started: asyncio.Event | None = None,
) -> None:
    """Runs the API on ``host:port`` until cancelled, then closes connections and the pool.

    ``started`` is set once the socket listens (useful with ``port=0`` and tests).
    """
    runner = web.AppRunner(create_app(dsn), access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("api_listening", addresses=[str(a) for a in runner.addresses])
        if started is not None:
            started.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
