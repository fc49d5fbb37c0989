"""Inngest's limits and event rules, as the open-source server applies them.

Constants from ``pkg/consts``; decoding and validation of one event as ``NormalizeInbound`` and
``Validate`` do (``pkg/event``), with Go's own error messages.
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

# --- Inngest's constants (pkg/consts/consts.go, pkg/consts/events.go) ---------------------------

#: ``consts.AbsoluteMaxEventSize``: the self-hosted limit per event (Cloud: 256 KiB..3 MiB by plan).
ABSOLUTE_MAX_EVENT_SIZE = 3 * 1024 * 1024
#: ``consts.MaxEvents``: events per request.
MAX_EVENTS = 5_000
#: ``consts.FunctionIdempotencyPeriod``: a function runs once per idempotency key in this time.
RUN_IDEMPOTENCY_PERIOD_S = 24 * 60 * 60.0
#: ``headers.HeaderEventIDSeed``.
SEED_HEADER = "x-inngest-event-id-seed"
#: Inngest Cloud's documented Event API rate limit per key.
CLOUD_RATE_LIMIT_REQUESTS = 75
CLOUD_RATE_LIMIT_WINDOW_S = 5.0
#: ``%d`` is the event's serialized size; reads like Cloud's per-plan size rejection (Free plan).
DEFAULT_REJECT_MESSAGE = "Event is over the max size: Max 262144 bytes / Size %d bytes"

_INTERNAL_NAME_PREFIX = "inngest/"
_INNGEST_DATA_KEY = "_inngest"
# time.Date(1980, 1, 1, ...) and time.Date(2100, 1, 1, ...) in nanoseconds since the epoch.
_TS_MIN_NS = 315_532_800 * 1_000_000_000
_TS_MAX_NS = 4_102_444_800 * 1_000_000_000
_INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
# Big enough for 5,000 events of a few hundred KiB; the real server has no request limit at all.
CLIENT_MAX_SIZE = 1 << 30


# --- Go's encoding/json: decoding an event ------------------------------------------------------

_FIELD_TYPES = {
    "id": "string",
    "name": "string",
    "v": "string",
    "data": "map[string]interface {}",
    "user": "map[string]interface {}",
    "ts": "int64",
    "meta": "",  # has its own UnmarshalJSON; not validated here
}
_FIELDS = frozenset(_FIELD_TYPES)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_field_error(item: Mapping[str, Any]) -> str | None:
    """The first type error Go reports unmarshalling ``item`` into ``event.Event``, or None.

    Go matches JSON keys to fields case-insensitively, keeps decoding after a type error and
    returns the first one, so keys are visited in their order in the body.
    """
    for key, value in item.items():
        field_name = key if key in _FIELDS else key.lower()
        go_type = _FIELD_TYPES.get(field_name)
        if not go_type or value is None:  # unknown field, meta, or null: no effect
            continue
        if go_type == "string":
            ok = isinstance(value, str)
        elif go_type == "int64":
            if type(value) is int and _INT64_MIN <= value <= INT64_MAX:
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                # strconv.ParseInt failed: Go quotes the literal.
                literal = repr(value) if isinstance(value, float) else str(value)
                return (
                    f"json: cannot unmarshal number {literal} into Go struct field "
                    f"raw.{field_name} of type int64"
                )
            ok = False
        else:
            ok = isinstance(value, dict)
        if not ok:
            return (
                f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                f"raw.{field_name} of type {go_type}"
            )
    return None


class Event(NamedTuple):
    name: str
    id: str | None
    data: dict[str, Any]
    ts: int


def _has_case_variants(item: Mapping[str, Any]) -> bool:
    """Whether a key is a known field in another case ("Name"), which Go maps to the field."""
    return any(k not in _FIELDS and k.lower() in _FIELDS for k in item)


def normalize(item: Any, now_ms: int) -> Event | str:
    """Decode, normalise and validate one event as ``ReceiveEvent`` does; a str is the error."""
    if type(item) is not dict:
        if item is None:  # UnmarshalJSON("null") leaves an empty event
            return "event name is empty"
        return f"json: cannot unmarshal {_json_kind(item)} into Go value of type event.raw"
    name = item.get("name")
    event_id = item.get("id")
    data = item.get("data")
    ts = item.get("ts")
    version = item.get("v")
    user = item.get("user")
    # The common event has lower-case keys of the right types: a few type checks. Anything else
    # takes the exact, slower path that visits keys in Go's order.
    if not (
        (name is None or type(name) is str)
        and (event_id is None or type(event_id) is str)
        and (data is None or type(data) is dict)
        and (ts is None or (type(ts) is int and _INT64_MIN <= ts <= INT64_MAX))
        and (version is None or type(version) is str)
        and (user is None or type(user) is dict)
        and (_FIELDS.issuperset(item) or not _has_case_variants(item))
    ):
        error = _go_field_error(item)
        if error is not None:
            return error
        # Keys in another case ("Name") set the same fields; the last one in the body wins.
        name, event_id, data, ts = None, None, None, None
        for key, value in item.items():
            lower = key if key in _FIELDS else key.lower()
            if value is None:
                continue
            if lower == "name":
                name = value
            elif lower == "id":
                event_id = value
            elif lower == "data":
                data = value
            elif lower == "ts":
                ts = value
    name = name or ""
    if name.lower().startswith(_INTERNAL_NAME_PREFIX):
        return f"event name is reserved for internal use: {name}"
    if data is None:
        data = {}
    elif _INNGEST_DATA_KEY in data:
        del data[_INNGEST_DATA_KEY]
    if not ts:
        ts = now_ms
    if not name:
        return "event name is empty"
    # time.Unix(0, ts*1_000_000): Go multiplies in int64 and wraps on overflow.
    ns = ((ts * 1_000_000 - _INT64_MIN) % (1 << 64)) + _INT64_MIN
    if ns < _TS_MIN_NS:
        return "timestamp is before Jan 1, 1980"
    if ns > _TS_MAX_NS:
        return "timestamp is after Jan 1, 2100"
    return Event(name, event_id or None, data, ts)
