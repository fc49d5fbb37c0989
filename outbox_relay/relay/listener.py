"""Keeps a LISTEN connection and turns notifications into wake-ups of the loop.

A notification is a hint, never the only path: the loop also polls. Notifications sent while
the connection was down are lost, so after every (re)connect the listener wakes the loop once
to sweep whatever was committed in the meantime.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

from outbox_relay.aio import wait_any, wait_event
from outbox_relay.backoff import Backoff
from outbox_relay.db.connection import CONNECTION_ERRORS, NOTIFY_CHANNEL
from outbox_relay.db.queries import QUERIES
from outbox_relay.metrics import RelayMetrics

log = structlog.get_logger(__name__)


class Listener:
    """The real :class:`~outbox_relay.ports.WakeSource`: LISTEN on its own connection."""

    def __init__(
        self,
        dsn: str,
        *,
        metrics: RelayMetrics,
        backoff: Backoff,
        health_interval: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self.wake = asyncio.Event()
        self._metrics = metrics
        self._backoff = backoff
        self._health_interval = health_interval
        self.notified = False
        self.reconnected = False
        self.connected = asyncio.Event()
        # Why the LISTEN connection is down, while it is (for /readyz).
        self.problem = "not connected yet"
        # how many times LISTEN was established (more than 1: it reconnected)
        self.connections = 0

    def _on_notification(self, *_: Any) -> None:
        self.notified = True
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Listens until ``stop`` is set, reconnecting with backoff whenever the link drops."""
        while not stop.is_set():
            try:
                await self._listen_until_lost(stop)
            except CONNECTION_ERRORS as exc:
                self._set_down()
                self.problem = f"the notification connection was lost: {type(exc).__name__}: {exc}"
                delay = self._backoff.next_delay()
                log.warning(
                    "listen_connection_lost",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 3),
                )
                await wait_event(stop, delay)

    async def _listen_until_lost(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": "outbox-relay-listen"}
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notification)
            self._backoff.reset()
            self.connected.set()
            self._metrics.listen_connected.set(1)
            log.info("listen_connected", channel=NOTIFY_CHANNEL)
            # Catch up on whatever was committed while we were not listening.
            self.reconnected = True
            self.connections += 1
            self.wake.set()
            while not stop.is_set() and not lost.is_set():
                await wait_any(stop, lost, timeout=self._health_interval)
                if not stop.is_set() and not lost.is_set():
                    # A half-open TCP connection never reports itself: ask.
                    await conn.fetchval(QUERIES["ping"], timeout=self._health_interval)
            if lost.is_set():
                raise ConnectionResetError("the LISTEN connection was closed by the server")
        finally:
            self._set_down()
            conn.terminate()

    def _set_down(self) -> None:
        self.connected.clear()
        self._metrics.listen_connected.set(0)
