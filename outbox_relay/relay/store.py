"""Every database operation of the relay loop: the real :class:`~outbox_relay.ports.Outbox`.

Two statements per batch: ``claim`` (which also fans albums out) and ``record_outcomes`` (every
row's outcome at once), each on its own connection. Neither holds a transaction open
while Qdrant or Inngest is called: a claim is a lease written into the row, not a lock held by
a session.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import structlog

from outbox_relay.db.connection import CONNECTION_ERRORS
from outbox_relay.db.queries import QUERIES
from outbox_relay.ports import Outcomes

log = structlog.get_logger(__name__)


class Session:
    """One lazily (re)connected connection; dropped at the first sign it is unusable."""

    def __init__(self, dsn: str, server_settings: dict[str, str]) -> None:
        self._dsn = dsn
        self._server_settings = server_settings
        self._conn: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn, timeout=10, server_settings=self._server_settings
            )
        return self._conn

    def drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close(timeout=5)


class OutboxStore:
    """The relay's two statements, each on a connection of its own.

    ``claim`` and ``record_outcomes`` never share a connection, so the loop can record one
    batch while it claims the next; each is used by one operation at a time.
    """

    def __init__(
        self,
        dsn: str,
        *,
        replica_id: str,
        lease_seconds: float,
        max_attempts: int,
        synchronous_commit: str = "off",
    ) -> None:
        self._replica_id = replica_id
        self._lease_seconds = lease_seconds
        self._max_attempts = max_attempts
        # "off": a claim or an outcome returns once committed, without waiting for the WAL
        # flush. A server crash can lose the last few hundred milliseconds of them; the rows
        # then look unclaimed (or still claimed, until the lease runs out) and are published
        # again with the same event ids, which Inngest runs once. Application writes keep
        # their own setting: nothing committed by them can be lost this way.
        self._claims = Session(
            dsn, {"application_name": "outbox-relay", "synchronous_commit": synchronous_commit}
        )
        self._outcomes = Session(
            dsn,
            {"application_name": "outbox-relay-record", "synchronous_commit": synchronous_commit},
        )

    async def claim(self, limit: int) -> tuple[uuid.UUID, Sequence[asyncpg.Record]]:
        """Claims up to ``limit`` rows (albums arrive fanned out) under a fresh token."""
        token = uuid.uuid4()
        conn = await self._claims.connection()
        try:
            rows = await conn.fetch(
                QUERIES["claim"], limit, token, self._replica_id, self._lease_seconds
            )
        except CONNECTION_ERRORS:
            self._claims.drop()
            raise
        return token, rows

    async def record_outcomes(self, token: uuid.UUID, outcomes: Outcomes) -> int:
        """Records the outcomes; returns how many rows still held the claim."""
        if not outcomes:
            return 0
        conn = await self._outcomes.connection()
        try:
            status: str = await conn.execute(
                QUERIES["record_outcomes"],
                token,
                outcomes.outcomes,
                outcomes.ids,
                outcomes.event_ids,
                outcomes.inngest_ids,
                outcomes.skip_reasons,
                outcomes.errors,
                self._max_attempts,
                outcomes.retry_in,
            )
        except CONNECTION_ERRORS:
            self._outcomes.drop()
            raise
        return int(status.rsplit(" ", 1)[-1])

    async def close(self) -> None:
        await self._claims.close()
        await self._outcomes.close()
