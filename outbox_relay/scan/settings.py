"""The scan's runtime settings (``library.settings``, keys ``staging_scan.*``) and its schedule.

Values are text in SQL; :func:`parse_settings` checks each one and names the key and the rule
when one is wrong. A missing key takes its default (the seed's, as migration 009 seeds them).

The schedule is a cron expression evaluated in UTC by cronsim, which follows Debian cron (the
day-of-month/day-of-week OR rule, no double firing at DST changes) and has no dependencies. Five
fields is the contract; a sixth, leading, seconds field (``*/5 * * * * *``) is accepted too, for
tests and demos that cannot wait a minute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cronsim import CronSim, CronSimError

from outbox_relay.errors import ScanError

PREFIX: Final = "staging_scan."
DEFAULTS: Final[Mapping[str, str]] = {
    "enabled": "false",
    "dry_run": "false",
    "schedule": "0 */1 * * *",
    "workers": "4",
    "rate_limit": "0",
    "scan_db_data_path": "/var/lib/outbox-relay/scan-db",
    "settle_seconds": "60",
}
MAX_WORKERS: Final = 64
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class ScanSettings:
    enabled: bool
    dry_run: bool
    schedule: str
    workers: int
    rate_limit: float  # files a second; 0 = unlimited
    scan_db_data_path: str
    settle_seconds: float


def _invalid(key: str, rule: str, value: str) -> ScanError:
    return ScanError("invalid_setting", f"{PREFIX}{key} {rule} (got {value!r})")


def _bool(key: str, value: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _invalid(key, "must be true or false", value)


def _number(key: str, value: str, low: float, high: float | None, integer: bool) -> float:
    try:
        number = int(value.strip()) if integer else float(value.strip())
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise _invalid(key, f"must be {kind}", value) from None
    if number != number or number < low or (high is not None and number > high):  # NaN too
        upper = f" to {high:g}" if high is not None else " or more"
        raise _invalid(key, f"must be from {low:g}{upper}", value)
    return number


def check_schedule(expr: str) -> str:
    """The expression, stripped, if cronsim takes it with 5 (or 6) fields; else ScanError."""
    text = " ".join(expr.split())
    if len(text.split(" ")) not in (5, 6):
        raise _invalid("schedule", "must be a cron expression of 5 fields (UTC)", expr)
    try:
        next(CronSim(text, datetime.now(UTC)))
    except (CronSimError, StopIteration) as exc:
        raise _invalid("schedule", f"is not a valid cron expression: {exc}", expr) from None
    return text


def next_run(expr: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` (aware, UTC) that ``expr`` fires."""
    return next(CronSim(expr, after.astimezone(UTC)))


def period_seconds(expr: str, after: datetime) -> float:
    """Seconds between the schedule's next two runs after ``after`` (for the overdue alert)."""
    schedule = CronSim(expr, after.astimezone(UTC))
    first = next(schedule)
    return (next(schedule) - first).total_seconds()


def parse_settings(rows: Mapping[str, str]) -> ScanSettings:
    """``{"staging_scan.workers": "4", ...}`` → :class:`ScanSettings`.

    Raises ScanError naming the key and the rule when a value is wrong.
    """
    values = {**DEFAULTS}
    for key, value in rows.items():
        if key.startswith(PREFIX):
            values[key.removeprefix(PREFIX)] = value
    path = values["scan_db_data_path"].strip()
    if not path.startswith("/"):
        raise _invalid("scan_db_data_path", "must be an absolute path", path)
    return ScanSettings(
        enabled=_bool("enabled", values["enabled"]),
        dry_run=_bool("dry_run", values["dry_run"]),
        schedule=check_schedule(values["schedule"]),
        workers=int(_number("workers", values["workers"], 1, MAX_WORKERS, integer=True)),
        rate_limit=_number("rate_limit", values["rate_limit"], 0, None, integer=False),
        scan_db_data_path=path,
        settle_seconds=_number("settle_seconds", values["settle_seconds"], 0, None, integer=False),
    )
