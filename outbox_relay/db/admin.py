"""Operator actions on the outbox, shared by the CLI and the relay's admin endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from outbox_relay.db.connection import NOTIFY_CHANNEL
from outbox_relay.db.queries import QUERIES

log = structlog.get_logger("outbox_relay.admin")


async def outbox_status(conn: asyncpg.Connection, *, dead_letters: int = 10) -> dict[str, Any]:
    """Counts and oldest age per status, and the most recent dead letters."""
    summary = await conn.fetch(QUERIES["summary"])
    dead = await conn.fetch(QUERIES["recent_dead_letters"], dead_letters)
    return {
        "statuses": [
            {
                "status": row["status"],
                "count": row["count"],
                "oldest_age_seconds": row["oldest_age_seconds"],
            }
            for row in summary
        ],
        "recent_dead_letters": [
            {
                **dict(row),
                "processed_at": row["processed_at"].isoformat() if row["processed_at"] else None,
            }
            for row in dead
        ],
    }


async def not_requeued(
    conn: asyncpg.Connection, ids: Sequence[int], requeued: Sequence[int]
) -> dict[int, str]:
    """Why each of ``ids`` that is not in ``requeued`` was left alone, by id.

    The reason is one phrase: ``does not exist`` or ``is <status>, not dead``.
    """
    missed = sorted(set(ids) - set(requeued))
    if not missed:
        return {}
    found = {row["id"]: row["status"] for row in await conn.fetch(QUERIES["statuses_of"], missed)}
    return {
        row_id: f"is {found[row_id]}, not dead" if row_id in found else "does not exist"
        for row_id in missed
    }


async def requeue_dead(
    conn: asyncpg.Connection,
    *,
    ids: Sequence[int] | None = None,
    error_contains: str | None = None,
    everything: bool = False,
) -> list[int]:
    """Dead letters back to pending with fresh attempts; returns the ids requeued.

    Exactly one selector must be given, so "requeue nothing in particular" never means "all".
    Ids that are not dead are left alone (:func:`not_requeued` says why).
    """
    chosen = sum((ids is not None, error_contains is not None, everything))
    if chosen != 1:
        raise ValueError("give exactly one of: ids, error_contains, everything")
    if ids is not None and not ids:
        return []
    rows = await conn.fetch(QUERIES["requeue_dead"], list(ids) if ids else None, error_contains)
    requeued = [row["id"] for row in rows]
    if requeued:
        # The trigger only fires on INSERT: wake the relays so the rows go out now.
        await conn.execute(QUERIES["wake_relays"], NOTIFY_CHANNEL)
    log.info(
        "dead_letters_requeued",
        count=len(requeued),
        selector="ids" if ids else "error_contains" if error_contains else "all",
    )
    return requeued
