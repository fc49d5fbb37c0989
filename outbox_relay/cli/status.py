"""``outbox-relay status``: counts per status, oldest pending age, recent dead letters."""

from __future__ import annotations

from typing import Any

import asyncpg

from outbox_relay.db.queries import QUERIES


async def fetch_status(dsn: str, *, dead_letters: int = 10) -> dict[str, Any]:
    conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
    try:
        summary = await conn.fetch(QUERIES["summary"])
        dead = await conn.fetch(QUERIES["recent_dead_letters"], dead_letters)
    finally:
        await conn.close()
    return {
        "statuses": [
            {
                "status": row["status"],
                "count": row["count"],
                "oldest_age_seconds": row["oldest_age_seconds"],
            }
            for row in summary
        ],
        "recent_dead_letters": [dict(row) for row in dead],
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def render_status(report: dict[str, Any]) -> str:
    lines = [f"{'status':<12}{'count':>12}  oldest"]
    for row in report["statuses"]:
        lines.append(f"{row['status']:<12}{row['count']:>12}  {_age(row['oldest_age_seconds'])}")
    dead = report["recent_dead_letters"]
    lines.append("")
    if not dead:
        lines.append("no dead letters")
    else:
        lines.append("recent dead letters:")
        for row in dead:
            lines.append(
                f"  #{row['id']} {row['isrc'] or '-'} {row['title'] or ''!r} "
                f"attempts={row['attempts']}: {row['last_error']}"
            )
    return "\n".join(lines)
