"""``outbox-relay status``: counts per status, oldest pending age, recent dead letters."""

from __future__ import annotations

from typing import Any


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def render_status(report: dict[str, Any]) -> str:
    """The report of :func:`outbox_relay.db.admin.outbox_status` as a readable table."""
    lines = [f"{'status':<12}{'count':>12}  oldest"]
    for row in report["statuses"]:
        lines.append(f"{row['status']:<12}{row['count']:>12}  {_age(row['oldest_age_seconds'])}")
    dead = report["recent_dead_letters"]
    lines.append("")
    if not dead:
        lines.append("no dead letters")
    else:
        lines.append("recent dead letters (outbox-relay requeue --id N to retry):")
        for row in dead:
            lines.append(
                f"  #{row['id']} {row['isrc'] or '-'} {row['title'] or ''!r} "
                f"attempts={row['attempts']}: {row['last_error']}"
            )
    return "\n".join(lines)
