"""Every database operation of the relay loop: the real :class:`~outbox_relay.ports.Outbox`.

Two statements per batch: ``claim`` (which also fans albums out) and ``record_outcomes`` (every
row's outcome at once), each on its own connection. Neither holds a transaction open
while Qdrant or Inngest is called: a claim is a lease written into the row, not a lock held by
a session.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
import structlog

from outbox_relay.db.connection import CONNECTION_ERRORS, NOTIFY_CHANNEL
from outbox_relay.db.queries import QUERIES
from outbox_relay.metrics import RelayMetrics
from outbox_relay.ports import CatalogTrack, Outcomes

log = structlog.get_logger(__name__)

#: How often a claim looks at every due row, not only those due since its floor (the claim's
#: comment in db/queries.sql; docs/wakeups.md, "The claim's floor"): a row committed by a
#: transaction that ran longer than a second waits at most this long for a relay that is awake.
FULL_CLAIM_INTERVAL = 1.0


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

    @asynccontextmanager
    async def use(self) -> AsyncIterator[asyncpg.Connection]:
        """The connection for one operation; dropped if the operation finds it unusable, so
        that the next one reconnects."""
        conn = await self.connection()
        try:
            yield conn
        except CONNECTION_ERRORS:
            self.drop()
            raise

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
        metrics: RelayMetrics | None = None,
        full_claim_interval: float = FULL_CLAIM_INTERVAL,
    ) -> None:
        self._replica_id = replica_id
        self._metrics = metrics
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
        # The claiming session that holds BUSY, if any; and whether a sweep is owed before this
        # relay may sleep (it held BUSY since it last swept).
        self._awake_on: asyncpg.Connection | None = None
        self.owes_sweep = False
        # The claims' floor (next_attempt_at, id), in claim order: no row the last claims left
        # behind comes before it. None, and every FULL_CLAIM_INTERVAL, a claim looks at every
        # due row.
        self._floor: tuple[datetime, int] | tuple[None, None] = (None, None)
        self._full_claim_interval = full_claim_interval
        self._full_claim_due = 0.0

    async def claim(
        self, limit: int, *, wake: bool = True, awake_after: int = 0
    ) -> tuple[uuid.UUID, Sequence[asyncpg.Record]]:
        """Claims up to ``limit`` rows (albums arrive fanned out) under a fresh token.

        With ``wake``, the claiming session first takes BUSY if no relay holds it, so writers
        stop notifying while this relay drains (docs/wakeups.md); the sweep before sleeping
        (:meth:`step_down`) claims without it and, with ``awake_after``, takes it just after a
        claim that found at least that many rows: writers stop notifying while that batch is
        published, not only from the next claim on.

        The sweep (without ``wake``) looks at every due row, as does one claim a
        ``full_claim_interval`` (:data:`FULL_CLAIM_INTERVAL`); the others only at rows due
        since the floor the last claim returned, which keeps them off the dead entries at the
        front of the claim index.
        """
        token = uuid.uuid4()
        now = time.monotonic()
        full = not wake or now >= self._full_claim_due
        floor = (None, None) if full else self._floor
        async with self._claims.use() as conn:
            if wake:
                await self._take_busy(conn)
            rows = await conn.fetch(
                QUERIES["claim"], limit, token, self._replica_id, self._lease_seconds, *floor
            )
            if awake_after and len(rows) >= awake_after:
                await self._take_busy(conn)
        if full:
            self._full_claim_due = now + self._full_claim_interval
        if rows:
            self._floor = (rows[0]["floor_at"], rows[0]["floor_id"])
        if self._metrics is not None:
            self._metrics.claims.labels(scan="full" if full else "bounded").inc()
        return token, rows

    async def _take_busy(self, conn: asyncpg.Connection) -> None:
        if self._awake_on is not conn and await conn.fetchval(QUERIES["relay_awake"]):
            self._awake_on = conn
            self.owes_sweep = True

    @property
    def awake(self) -> bool:
        """Whether this relay holds BUSY now (writers skip their notification)."""
        conn = self._awake_on
        return conn is not None and not conn.is_closed()

    async def step_down(self) -> bool:
        """Releases BUSY; True when every writer that saw it held has ended (GATE is clear).

        Then the next claim sees every row they committed. ``owes_sweep`` stays set until that
        is true: a session lost while holding BUSY (the server released it) leaves the same duty.
        """
        try:
            async with self._claims.use() as conn:
                holds_busy = self._awake_on is conn
                clear: bool = await conn.fetchval(QUERIES["relay_step_down"], holds_busy)
        finally:
            self._awake_on = None
        return clear

    async def wake_relays(self) -> None:
        """Notifies every listening relay (a stopping relay hands its sweep over)."""
        async with self._claims.use() as conn:
            await conn.execute(QUERIES["wake_relays"], NOTIFY_CHANNEL)

    async def gate_clear(self) -> bool:
        """True once every writer that saw BUSY held has ended (see :meth:`step_down`)."""
        async with self._claims.use() as conn:
            clear: bool = await conn.fetchval(QUERIES["relay_gate_clear"])
        return clear

    async def record_outcomes(self, token: uuid.UUID, outcomes: Outcomes) -> int:
        """Records the outcomes; returns how many rows still held the claim."""
        if not outcomes:
            return 0
        async with self._outcomes.use() as conn:
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
        return int(status.rsplit(" ", 1)[-1])

    async def close(self) -> None:
        await self._claims.close()
        await self._outcomes.close()


class CatalogCacheStore:
    """The real :class:`~outbox_relay.ports.CatalogCache`: ``outbox.catalog_tracks`` (migration
    010) on a connection of its own, for one country."""

    def __init__(
        self,
        dsn: str,
        *,
        country_code: str,
        unknown_ttl: float,
        synchronous_commit: str = "off",
    ) -> None:
        self._country_code = country_code
        self._unknown_ttl = unknown_ttl
        self._session = Session(
            dsn,
            {"application_name": "outbox-relay-catalog", "synchronous_commit": synchronous_commit},
        )

    async def cached(self, tidal_ids: Sequence[str]) -> dict[str, CatalogTrack | None]:
        async with self._session.use() as conn:
            rows = await conn.fetch(
                QUERIES["catalog_cached"], list(tidal_ids), self._country_code, self._unknown_ttl
            )
        return {
            row["tidal_id"]: (
                None if row["isrc"] is None else CatalogTrack(row["isrc"], row["title"])
            )
            for row in rows
        }

    async def remember(self, found: dict[str, CatalogTrack], unknown: Sequence[str]) -> None:
        ids = [*found, *unknown]
        if not ids:
            return
        isrcs = [track.isrc for track in found.values()] + [None] * len(unknown)
        titles = [track.title for track in found.values()] + [None] * len(unknown)
        async with self._session.use() as conn:
            await conn.execute(QUERIES["catalog_remember"], ids, self._country_code, isrcs, titles)

    async def close(self) -> None:
        await self._session.close()
