"""Every database operation of the ingestion worker: status rows and library look-ups.

The SQL is ``outbox_relay/db/ingestion.sql``. One small asyncpg pool, opened on first use, so a
worker that starts while PostgreSQL is down still serves (the step that needs the database fails
and Inngest retries it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from outbox_relay.db.queries import QUERIES

# A status write must not hang a step for ever: Inngest would wait for the request instead of
# retrying it.
_COMMAND_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class LibraryTrack:
    """A track as the library holds it, for a forced re-ingestion."""

    isrc: str
    title: str
    artist: str
    album: str
    artwork_url: str | None


@dataclass(frozen=True, slots=True)
class RunRef:
    """Which run a status write speaks for."""

    isrc: str
    run_id: str
    event_id: str | None
    forced: bool


class IngestionStore:
    """``library.track_ingestion`` and the library tables, over a lazily opened pool."""

    def __init__(self, dsn: str, *, max_size: int = 4) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _acquire_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._max_size,
                        command_timeout=_COMMAND_TIMEOUT,
                        timeout=_COMMAND_TIMEOUT,
                    )
        return self._pool

    async def _fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        pool = await self._acquire_pool()
        rows: list[asyncpg.Record] = await pool.fetch(QUERIES[name], *args)
        return rows

    async def record_indexing(self, run: RunRef, attempt: int) -> datetime:
        """The run has started: status ``indexing``; returns the recorded start time."""
        rows = await self._fetch(
            "record_indexing", run.isrc, run.run_id, run.event_id, run.forced, attempt
        )
        started: datetime = rows[0]["started_at"]
        return started

    async def record_attempt_error(self, run: RunRef, attempt: int, error: str) -> None:
        """A step failed on ``attempt``; Inngest retries it. Visible while the run goes on."""
        await self._fetch("record_attempt_error", run.isrc, run.run_id, attempt, error)

    async def record_attempt(self, run: RunRef, attempt: int) -> None:
        """A step succeeded on a retry: the run has needed ``attempt`` attempts."""
        await self._fetch("record_attempt", run.isrc, run.run_id, attempt)

    async def record_indexed(self, run: RunRef, attempt: int) -> datetime:
        """The point is written: status ``indexed``; returns the recorded time."""
        rows = await self._fetch(
            "record_indexed", run.isrc, run.run_id, attempt, run.event_id, run.forced
        )
        indexed: datetime = rows[0]["indexed_at"]
        return indexed

    async def record_failed(self, run: RunRef, attempts: int, error: str) -> bool:
        """The run gave up; False when another run owns the row (then it is left alone)."""
        rows = await self._fetch(
            "record_failed", run.isrc, run.run_id, run.event_id, run.forced, attempts, error
        )
        return bool(rows)

    async def library_tracks(self, isrcs: Sequence[str]) -> dict[str, LibraryTrack]:
        """The library's newest entry for each of these (normalised) ISRCs that it knows."""
        rows = await self._fetch("library_tracks", list(isrcs))
        return {
            row["isrc"]: LibraryTrack(
                isrc=row["isrc"],
                title=row["title"],
                artist=row["artist"],
                album=row["album"],
                artwork_url=row["artwork_url"],
            )
            for row in rows
        }

    async def status(self, isrcs: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The status row of each ISRC, as dicts (tools, the demo and tests)."""
        rows = await self._fetch("ingestion_status", list(isrcs))
        return {row["isrc"]: dict(row) for row in rows}

    async def ping(self) -> None:
        """Raises when the database cannot be reached (readiness)."""
        pool = await self._acquire_pool()
        await pool.fetchval(QUERIES["ping"])

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
