"""What the operator's web page reads and writes (statements in ``ui.sql``).

Each function is one statement; the page handlers in :mod:`outbox_relay.http.ui` call at most
two a page. Rows come back as plain dicts so templates read them by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson

from outbox_relay.db.connection import NOTIFY_CHANNEL
from outbox_relay.db.queries import QUERIES

#: The first page of a keyset walk by descending id starts after this.
FIRST_ID: Final = 2**63 - 1

#: Migrations that parts of the page need, and what each one installs.
INGESTION_MIGRATION: Final = 8
SCAN_MIGRATION: Final = 9
CATALOG_MIGRATION: Final = 10

# Where the keyset walk of pending rows starts: before any row's next_attempt_at.
_EPOCH_START: Final = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def _json(value: Any) -> Any:
    # asyncpg hands jsonb over as text unless a codec is set; the pool sets none.
    return orjson.loads(value) if isinstance(value, str | bytes) else value


async def installed(conn: asyncpg.Connection) -> frozenset[int]:
    """The versions of the migrations applied to this database."""
    versions = await conn.fetchval(QUERIES["ui_installed"])
    return frozenset(versions or ())


@dataclass(frozen=True, slots=True)
class Overview:
    """The overview's numbers: exact where an operator acts on them, estimated elsewhere."""

    pending: int
    pending_due: int
    dead: int
    oldest_pending_age: float | None
    estimated: dict[str, int]
    per_minute: list[int]
    """Events published in each of the last 60 minutes, oldest first."""
    replicas: list[dict[str, Any]]


async def overview(conn: asyncpg.Connection) -> Overview:
    """One statement: counts, oldest pending age, the last hour by minute, recent replicas."""
    row = await conn.fetchrow(QUERIES["ui_overview"])
    freqs: dict[str, float] = _json(row["status_freqs"]) or {}
    rows = float(row["estimated_rows"] or 0)
    estimated = {
        status: round(rows * freqs.get(status, 0.0))
        for status in ("published", "skipped", "fanned_out")
    }
    by_minute: dict[str, int] = _json(row["per_minute"]) or {}
    # minute 0 is the current one; the chart reads left (an hour ago) to right (now)
    per_minute = [int(by_minute.get(str(minute), 0)) for minute in range(59, -1, -1)]
    replicas = [
        {
            **replica,
            "last_finished_at": datetime.fromisoformat(replica["last_finished_at"])
            if replica.get("last_finished_at")
            else None,
        }
        for replica in _json(row["replicas"]) or []
    ]
    return Overview(
        pending=row["pending"],
        pending_due=row["pending_due"],
        dead=row["dead"],
        oldest_pending_age=row["oldest_pending_age"],
        estimated=estimated,
        per_minute=per_minute,
        replicas=replicas,
    )


async def dead_page(
    conn: asyncpg.Connection, *, before: int, limit: int, error: str | None
) -> list[dict[str, Any]]:
    """Dead letters with an id below ``before``, newest first (only ``error``'s if given)."""
    rows = await conn.fetch(QUERIES["ui_dead_page"], before, limit, error)
    return [
        {**dict(row), "tracks": _json(row["tracks"]), "error_history": _json(row["error_history"])}
        for row in rows
    ]


async def dead_errors(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """The most frequent errors among recent dead letters, with counts and the newest id."""
    return [dict(row) for row in await conn.fetch(QUERIES["ui_dead_errors"])]


async def count_dead_ids(conn: asyncpg.Connection, ids: Sequence[int]) -> int:
    """How many of ``ids`` are dead letters now."""
    count: int = await conn.fetchval(QUERIES["ui_dead_count_ids"], list(ids))
    return count


async def count_dead_error(conn: asyncpg.Connection, error: str, up_to: int) -> int:
    """How many dead letters have exactly ``error`` and an id up to ``up_to``."""
    count: int = await conn.fetchval(QUERIES["ui_dead_count_error"], error, up_to)
    return count


async def requeue_error(conn: asyncpg.Connection, error: str, up_to: int) -> list[int]:
    """Dead letters with exactly ``error`` and an id up to ``up_to`` back to pending.

    Idempotent: rows that are no longer dead are left alone. Wakes the relays when any moved.
    """
    rows = await conn.fetch(QUERIES["ui_requeue_error"], error, up_to)
    requeued = [row["id"] for row in rows]
    if requeued:
        await conn.execute(QUERIES["wake_relays"], NOTIFY_CHANNEL)
    return requeued


async def pending_page(
    conn: asyncpg.Connection, *, after: tuple[datetime, int] | None, limit: int
) -> list[dict[str, Any]]:
    """Pending rows in claim order after the keyset cursor ``after``."""
    at, row_id = after if after is not None else (_EPOCH_START, 0)
    rows = await conn.fetch(QUERIES["ui_pending_page"], at, row_id, limit)
    return [dict(row) for row in rows]


async def pending_counts(conn: asyncpg.Connection) -> tuple[int, int]:
    """(all pending rows, those due now)."""
    row = await conn.fetchrow(QUERIES["ui_pending_counts"])
    return int(row["total"]), int(row["due"])


async def search_title(conn: asyncpg.Connection, prefix: str, limit: int) -> list[dict[str, Any]]:
    """Tracks whose title starts with ``prefix`` (case-insensitive), one per ISRC."""
    return [dict(row) for row in await conn.fetch(QUERIES["ui_search_title"], prefix, limit)]


async def catalog_lookup(conn: asyncpg.Connection, tidal_id: str) -> list[dict[str, Any]]:
    """What the catalog answered for a TIDAL track id (needs migration 010), newest first."""
    return [dict(row) for row in await conn.fetch(QUERIES["ui_catalog_lookup"], tidal_id)]


@dataclass(frozen=True, slots=True)
class TrackPath:
    """Everything known about one ISRC, from the library row to the Qdrant point."""

    isrc: str
    library: list[dict[str, Any]]
    outbox: list[dict[str, Any]]
    ingestion: dict[str, Any] | None
    staging: list[dict[str, Any]]
    point_id: str

    @property
    def known(self) -> bool:
        return bool(self.library or self.outbox or self.ingestion)


async def track_path(conn: asyncpg.Connection, isrc: str) -> TrackPath:
    """One statement gathering a normalised ISRC's library rows, outbox rows, ingestion status
    and staging items."""
    row = await conn.fetchrow(QUERIES["ui_track_path"], isrc)
    return TrackPath(
        isrc=isrc,
        library=_json(row["library"]),
        outbox=_json(row["outbox"]),
        ingestion=_json(row["ingestion"]),
        staging=_json(row["staging"]),
        point_id=str(row["point_id"]),
    )


async def scan_page(conn: asyncpg.Connection, *, before: int, limit: int) -> list[dict[str, Any]]:
    """Scan runs with an id below ``before``, newest first."""
    return [dict(row) for row in await conn.fetch(QUERIES["ui_scan_page"], before, limit)]
