"""A faithful stand-in of Inngest's Event API, with fault switches, for tests, benchmarks, the demo.

No Inngest server can run on the machines this project is tested on, so this module plays the part
of ``POST /e/{event_key}`` as the open-source Inngest server implements it (``pkg/api/api.go``,
``pkg/eventstream/eventstream.go``, ``pkg/event/{event,inbound,id,legacy_types}.go``) and records
what it accepted, so that tests can assert "received N events" and "exactly one ingestion run".

What it reproduces, and why each detail matters to a publisher:

* The body is one event object or an array; events are taken **one by one, in order**. The first bad
  event (or body problem) ends the request with ``400 {"ids": [...], "status": 400, "error": ...}``
  where ``ids`` are the ULIDs of the events accepted *before* it (``[""]`` when none were): those
  events were accepted and will run. A publisher must treat a 400 as a partial acceptance.
* Body rules from ``ParseStream``: an empty body (or an empty array) is a ``200 {"ids": [""]}``; a
  first token that is not ``{`` or ``[`` gives ``Request body must contain an event object or an
  array of event objects``; a single object is measured *before* it is parsed (trailing whitespace
  counts); array elements are measured as their raw bytes; more than 5,000 elements gives
  ``Cannot have more than 5000 events in a batch`` after the first 5,000 were taken; JSON syntax
  errors carry Go's ``encoding/json`` messages (``unexpected end of JSON input`` for a truncated
  object, ``unexpected EOF`` inside an array, ``invalid character 'x' ...``); anything after the
  closing ``]`` of an array is never read, and an array cut short *between* elements is accepted.
* Event rules from ``NormalizeInbound``/``Validate``: Go's type errors (``json: cannot unmarshal
  string into Go struct field raw.data of type map[string]interface {}``), ``event name is reserved
  for internal use: <name>`` (any case of ``inngest/``), ``event name is empty``, ``timestamp is
  before Jan 1, 1980`` / ``timestamp is after Jan 1, 2100`` (``ts`` of 0 or absent means "now"),
  ``data._inngest`` removed.
* The ids are Inngest's own ULIDs, never the caller's ``id``. With ``x-inngest-event-id-seed:
  <unix_ms>,<base64 of 10 bytes>`` they are derived exactly as ``event.SeededIDFromString`` does:
  the 1-based position of the event in the request is added to the last four entropy bytes
  (big-endian, wrapping), so a retried request gets the same ids back. A malformed seed silently
  falls back to random ids, as in Inngest.
* Keys: dev mode accepts any key; with a key set, an unknown key gets
  ``401 {"status": 401, "message": "", "error": "Event key not found"}`` and an empty key
  ``Event key is required``.
* Response bytes as Go writes them: a trailing newline, HTML-escaped ``<>&`` in errors, and for
  200/400 *no* explicit Content-Type, so Go's sniffing sends ``text/plain; charset=utf-8`` (a
  publisher must not insist on ``application/json``). ``X-Inngest-Server-Kind`` is ``dev``.
* Runs: Inngest does not de-duplicate at ingest (a repeated ``id`` is accepted with a fresh ULID);
  the run scheduler starts at most one run per function and idempotency key within 24 h of the
  first run (``SET NX EX 24h``). The key is the event ``id``, or the event's ULID when it has none
  (``NewBaseTrackedEvent``) — so an id-less event retried under the same seed does not run twice.
  The stand-in assumes one function per event name.

What it adds: fault switches (refused connections, dropped connections before or after the events
were recorded, 5xx with JSON or HTML bodies, 429 with ``Retry-After``, hung requests, rejection of
chosen events, Cloud's rate limit, latency), a Python API for in-process use, an HTTP control
surface (``/_standin/...``, optionally on its own port so it keeps working while the Event API port
refuses connections), and a command line: ``python -m outbox_relay.inngest.standin --port 8288``.

Known simplifications: form-encoded bodies are not parsed (they get the invalid-body error),
``meta`` is not validated, a float ``ts`` is quoted in its Python spelling in the type error, and
the real server's race between parsing element k+1 and publishing element k (which can lose event
k's id when element k+1 is malformed) is resolved deterministically: every event before the bad one
is accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import http
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, TypeAlias, TypeVar

import orjson
import structlog
from aiohttp import web

__all__ = [
    "ABSOLUTE_MAX_EVENT_SIZE",
    "CLOUD_RATE_LIMIT_REQUESTS",
    "CLOUD_RATE_LIMIT_WINDOW_S",
    "DEFAULT_REJECT_MESSAGE",
    "MAX_EVENTS",
    "RUN_IDEMPOTENCY_PERIOD_S",
    "SEED_HEADER",
    "Drop",
    "EventApiStandIn",
    "Fault",
    "FaultKind",
    "Hang",
    "Latency",
    "RateLimit",
    "RecordedEvent",
    "Refuse",
    "Reject",
    "RequestRecord",
    "Run",
    "Status5xx",
    "Status429",
    "derive_event_ids",
    "fault_from_json",
    "main",
    "parse_event_id_seed",
    "serve",
]

_log = structlog.get_logger("outbox_relay.inngest.standin")

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
_INVALID_BODY = "Request body must contain an event object or an array of event objects"
_GO_SNIFFED_TEXT = "text/plain; charset=utf-8"
# Go's encoder escapes these (SetEscapeHTML defaults to true; U+2028/9 always).
_GO_HTML_ESCAPES = re.compile(rb"[<>&]|\xe2\x80[\xa8\xa9]")
_GO_HTML_ESCAPE_MAP = {
    c.encode(): f"\\u{ord(c):04x}".encode() for c in ("<", ">", "&", "\u2028", "\u2029")
}
# time.Date(1980, 1, 1, ...) and time.Date(2100, 1, 1, ...) in nanoseconds since the epoch.
_TS_MIN_NS = 315_532_800 * 1_000_000_000
_TS_MAX_NS = 4_102_444_800 * 1_000_000_000
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
# Big enough for 5,000 events of a few hundred KiB; the real server has no request limit at all.
_CLIENT_MAX_SIZE = 1 << 30


# --- ULIDs ---------------------------------------------------------------------------------------

_B32_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)
_ULID_PAD = b"\x00\x00\x00\x00"


def _encode_ulid(raw: bytes) -> str:
    """Crockford base32 of 16 bytes, as a ULID string (26 characters).

    Four zero bytes in front line the 5-bit groups up so that the last 26 characters of the
    standard base32 text are exactly the ULID's (its first character carries 2 padding bits);
    this runs in C, about five times faster than encoding digit by digit.
    """
    return base64.b32encode(_ULID_PAD + raw).translate(_B32_TO_CROCKFORD)[6:].decode("ascii")


_SEED_MILLIS = re.compile(r"[+-]?[0-9]+\Z")


def parse_event_id_seed(value: str | None) -> tuple[int, bytes] | None:
    """Parse an ``x-inngest-event-id-seed`` value into ``(millis, 10 entropy bytes)``.

    Mirrors ``event.SeededIDFromString``: exactly two comma-separated parts, a positive base-10
    int64, and standard (padded) base64 decoding to exactly 10 bytes; anything else is ``None``,
    which makes Inngest fall back to random ids rather than reject the request.
    """
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != 2 or not _SEED_MILLIS.match(parts[0]):
        return None
    millis = int(parts[0])
    if millis <= 0 or millis > _INT64_MAX:
        return None
    try:
        entropy = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(entropy) != 10:
        return None
    return millis, entropy


def _seeded_ulid(millis: int, entropy: bytes, index: int) -> str | None:
    # ulid.New refuses times past 2^48 ms; Inngest then keeps the random id it already made.
    if millis >= 1 << 48:
        return None
    tail = (int.from_bytes(entropy[6:10], "big") + index) & 0xFFFFFFFF
    return _encode_ulid(millis.to_bytes(6, "big") + entropy[:6] + tail.to_bytes(4, "big"))


def derive_event_ids(seed_header: str, count: int) -> list[str] | None:
    """The ids Inngest returns for the first ``count`` events of a request sent with this seed.

    ``None`` when the seed is one Inngest ignores (then every id is random). Event ``i`` (0-based)
    uses index ``i + 1``: Inngest increments its counter before deriving the first id.
    """
    seed = parse_event_id_seed(seed_header)
    if seed is None:
        return None
    ids = [_seeded_ulid(seed[0], seed[1], index) for index in range(1, count + 1)]
    if any(i is None for i in ids):
        return None
    return [i for i in ids if i is not None]


# --- Go's encoding/json: syntax errors ---------------------------------------------------------
# Only the slow path (a body orjson refused, or an array big enough to hold an oversized event) runs
# this; it reproduces the scanner's messages so that a 400 reads exactly like the real server's.


class _GoSyntaxError(Exception):
    """A syntax error; ``str()`` is Go's message."""


class _GoEOF(Exception):
    """The input ended inside a value."""


_MAX_DEPTH = 10_000  # encoding/json maxNestingDepth
_WS_RUN = re.compile(rb"[ \t\r\n]*")
_STRING_RUN = re.compile(rb'[^"\\\x00-\x1f]*')
_DIGIT_RUN = re.compile(rb"[0-9]*")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset(b'"\\/bfnrt')
_GO_QUOTE_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
    "\\": "\\\\",
}  # fmt: skip


def _go_quote_char(c: int) -> str:
    """encoding/json's quoteChar: a byte shown the way strconv.Quote shows the rune U+00XX."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    ch = chr(c)
    if ch in _GO_QUOTE_ESCAPES:
        return f"'{_GO_QUOTE_ESCAPES[ch]}'"
    if ch.isprintable():
        return f"'{ch}'"
    return f"'\\x{c:02x}'" if c < 0x80 else f"'\\u{c:04x}'"


def _invalid(c: int, context: str) -> _GoSyntaxError:
    return _GoSyntaxError(f"invalid character {_go_quote_char(c)} {context}")


def _ws(buf: bytes, i: int) -> int:
    match = _WS_RUN.match(buf, i)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _scan_string(buf: bytes, i: int) -> int:
    """``i`` is just past the opening quote; returns the index just past the closing quote."""
    n = len(buf)
    while True:
        run = _STRING_RUN.match(buf, i)
        assert run is not None
        i = run.end()
        if i >= n:
            raise _GoEOF
        c = buf[i]
        if c == 0x22:
            return i + 1
        if c != 0x5C:
            raise _invalid(c, "in string literal")  # a control character
        i += 1
        if i >= n:
            raise _GoEOF
        escape = buf[i]
        if escape in _SIMPLE_ESCAPES:
            i += 1
            continue
        if escape != 0x75:
            raise _invalid(escape, "in string escape code")
        for _ in range(4):
            i += 1
            if i >= n:
                raise _GoEOF
            if buf[i] not in _HEX_DIGITS:
                raise _invalid(buf[i], "in \\u hexadecimal character escape")
        i += 1


def _digits(buf: bytes, i: int) -> int:
    match = _DIGIT_RUN.match(buf, i)
    assert match is not None
    return match.end()


def _scan_number(buf: bytes, i: int) -> int:
    """Scan a number starting at ``i``; a complete number may end at the end of the input."""
    n = len(buf)
    if buf[i] == 0x2D:  # '-'
        i += 1
        if i >= n:
            raise _GoEOF
        if not 0x30 <= buf[i] <= 0x39:
            raise _invalid(buf[i], "in numeric literal")
    i = i + 1 if buf[i] == 0x30 else _digits(buf, i)
    if i < n and buf[i] == 0x2E:  # '.'
        i += 1
        if i >= n:
            raise _GoEOF
        if not 0x30 <= buf[i] <= 0x39:
            raise _invalid(buf[i], "after decimal point in numeric literal")
        i = _digits(buf, i)
    if i < n and buf[i] in (0x65, 0x45):  # 'e', 'E'
        i += 1
        if i < n and buf[i] in (0x2B, 0x2D):
            i += 1
        if i >= n:
            raise _GoEOF
        if not 0x30 <= buf[i] <= 0x39:
            raise _invalid(buf[i], "in exponent of numeric literal")
        i = _digits(buf, i)
    return i


def _scan_literal(buf: bytes, i: int, word: bytes) -> int:
    name = word.decode()
    for expected in word[1:]:
        i += 1
        if i >= len(buf):
            raise _GoEOF
        if buf[i] != expected:
            raise _invalid(buf[i], f"in literal {name} (expecting {_go_quote_char(expected)})")
    return i + 1


def _scan_key(buf: bytes, i: int) -> int:
    """At an object key (whitespace skipped): scan it and its colon; return the value's start."""
    if i >= len(buf):
        raise _GoEOF
    if buf[i] != 0x22:
        raise _invalid(buf[i], "looking for beginning of object key string")
    i = _ws(buf, _scan_string(buf, i + 1))
    if i >= len(buf):
        raise _GoEOF
    if buf[i] != 0x3A:
        raise _invalid(buf[i], "after object key")
    return i + 1


def _scan_value(buf: bytes, i: int) -> int:
    """Validate one JSON value from ``i`` (leading whitespace allowed) the way Go's scanner does.

    Returns the index just past the value; raises ``_GoSyntaxError`` or ``_GoEOF``. Iterative, so
    that deep nesting meets Go's depth limit rather than Python's recursion limit.
    """
    n = len(buf)
    in_object: list[bool] = []
    while True:
        i = _ws(buf, i)
        if i >= n:
            raise _GoEOF
        c = buf[i]
        if c in (0x7B, 0x5B):  # '{' or '['
            if len(in_object) >= _MAX_DEPTH:
                raise _invalid(c, "exceeded max depth")
            in_object.append(c == 0x7B)
            i = _ws(buf, i + 1)
            if i >= n:
                raise _GoEOF
            if buf[i] == (0x7D if c == 0x7B else 0x5D):  # empty container
                in_object.pop()
                i += 1
            elif c == 0x7B:
                i = _scan_key(buf, i)
                continue
            else:
                continue
        elif c == 0x22:
            i = _scan_string(buf, i + 1)
        elif c == 0x2D or 0x30 <= c <= 0x39:
            i = _scan_number(buf, i)
        elif c == 0x74:
            i = _scan_literal(buf, i, b"true")
        elif c == 0x66:
            i = _scan_literal(buf, i, b"false")
        elif c == 0x6E:
            i = _scan_literal(buf, i, b"null")
        else:
            raise _invalid(c, "looking for beginning of value")
        # A value ended: close containers until one wants another value.
        while True:
            if not in_object:
                return i
            i = _ws(buf, i)
            if i >= n:
                raise _GoEOF
            c = buf[i]
            if in_object[-1]:
                if c == 0x2C:
                    i = _scan_key(buf, _ws(buf, i + 1))
                    break
                if c != 0x7D:
                    raise _invalid(c, "after object key:value pair")
            else:
                if c == 0x2C:
                    i += 1
                    break
                if c != 0x5D:
                    raise _invalid(c, "after array element")
            in_object.pop()
            i += 1


# --- Splitting a body into events, as ParseStream does --------------------------------------------


def _size_error(max_size: int, size: int) -> str:
    return f"Event is over the max size: Max {max_size} bytes / Size {size} bytes"


def _count_error(max_events: int) -> str:
    return f"Cannot have more than {max_events} events in a batch"


def _without_surrogates(value: Any) -> Any:
    # Go turns a lone \ud800 escape into U+FFFD; Python's json keeps the surrogate, which no JSON
    # encoder will write back out.
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value


def _loads_like_go(raw: bytes) -> Any:
    """Decode JSON that Go's scanner accepted but orjson may not (invalid UTF-8, huge integers)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _without_surrogates(json.loads(raw.decode("utf-8", "replace")))


def _split_single(body: bytes, start: int, max_size: int) -> tuple[list[Any], str | None]:
    # ParseStream reads the whole rest of the body and measures it before anything is parsed.
    size = len(body) - start
    if size > max_size:
        return [], _size_error(max_size, size)
    try:
        return [orjson.loads(body)], None
    except orjson.JSONDecodeError:
        pass
    # json.Unmarshal: the scanner checks the whole input first.
    try:
        end = _scan_value(body, start)
    except _GoEOF:
        return [], "unexpected end of JSON input"
    except _GoSyntaxError as exc:
        return [], str(exc)
    rest = _ws(body, end)
    if rest < len(body):
        return [], str(_invalid(body[rest], "after top-level value"))
    return [_loads_like_go(body[start:end])], None


def _split_array_slow(
    body: bytes, start: int, max_size: int, max_events: int
) -> tuple[list[Any], str | None]:
    """Element by element, as ``json.Decoder`` with ``More()``/``Decode()`` walks the array."""
    items: list[Any] = []
    n = len(body)
    i = start + 1
    while True:
        i = _ws(body, i)
        if i >= n or body[i] in (0x5D, 0x7D):  # More() is false at EOF, ']' and '}'
            return items, None
        if len(items) == max_events:
            return items, _count_error(max_events)
        if items:
            if body[i] != 0x2C:
                return items, "expected comma after array element"
            i += 1
        value_start = _ws(body, i)
        try:
            end = _scan_value(body, value_start)
        except _GoEOF:
            # readValue reports ErrUnexpectedEOF only if the partial value holds a non-space byte.
            return items, "unexpected EOF" if value_start < n else "EOF"
        except _GoSyntaxError as exc:
            return items, str(exc)
        if end - value_start > max_size:
            return items, _size_error(max_size, end - value_start)
        items.append(_loads_like_go(body[value_start:end]))
        i = end


_ARRAY_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')
_WS_BYTES = b" \t\r\n"


def _array_element_sizes(body: bytes, start: int) -> list[int]:
    """Raw byte size of each element of a *valid* JSON array starting at ``start``."""
    sizes: list[int] = []
    depth = 0
    segment_start = start + 1
    for match in _ARRAY_TOKENS.finditer(body, start):
        token = body[match.start()]
        if token in (0x5B, 0x7B):
            depth += 1
        elif token in (0x5D, 0x7D):
            depth -= 1
            if depth == 0:
                segment = body[segment_start : match.start()].strip(_WS_BYTES)
                if segment:
                    sizes.append(len(segment))
                return sizes
        elif token == 0x2C and depth == 1:
            sizes.append(len(body[segment_start : match.start()].strip(_WS_BYTES)))
            segment_start = match.end()
    return sizes


def _split_body(body: bytes, max_size: int, max_events: int) -> tuple[list[Any], str | None]:
    """The events of a request body, in order, and the body error that follows them (if any)."""
    start = _ws(body, 0)
    if start >= len(body):
        return [], None  # Token() hit EOF: nothing to do, a 200 with [""]
    first = body[start]
    if first == 0x7B:
        return _split_single(body, start, max_size)
    if first != 0x5B:
        return [], _INVALID_BODY
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Invalid to orjson; Go may still take a prefix of the elements (or all of them).
        return _split_array_slow(body, start, max_size, max_events)
    if not isinstance(parsed, list):  # pragma: no cover - a body starting with '[' is an array
        return [], _INVALID_BODY
    items: list[Any] = parsed
    # Only a body bigger than the limit can hold an element bigger than the limit.
    if len(body) - start > max_size:
        for index, size in enumerate(_array_element_sizes(body, start)[:max_events]):
            if size > max_size:
                return items[:index], _size_error(max_size, size)
    if len(items) > max_events:
        return items[:max_events], _count_error(max_events)
    return items, None


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
            if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
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


class _Event(NamedTuple):
    name: str
    id: str | None
    data: dict[str, Any]
    ts: int


def _has_case_variants(item: Mapping[str, Any]) -> bool:
    """Whether a key is a known field in another case ("Name"), which Go maps to the field."""
    return any(k not in _FIELDS and k.lower() in _FIELDS for k in item)


def _normalize(item: Any, now_ms: int) -> _Event | str:
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
        and (ts is None or (type(ts) is int and _INT64_MIN <= ts <= _INT64_MAX))
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
    return _Event(name, event_id or None, data, ts)


# --- Go-shaped response bodies ------------------------------------------------------------------


def _go_json(payload: Mapping[str, Any]) -> bytes:
    """JSON as Go's encoder writes it: HTML characters escaped, a trailing newline."""
    out = orjson.dumps(payload)
    if _GO_HTML_ESCAPES.search(out):
        out = _GO_HTML_ESCAPES.sub(lambda m: _GO_HTML_ESCAPE_MAP[m.group()], out)
    return out + b"\n"


def _ids_body(ids: list[str], status: int, error: str | None) -> bytes:
    # ids[0:max+1] of a slice of empty strings: never an empty list.
    payload: dict[str, Any] = {"ids": ids or [""], "status": status}
    if error is not None:
        payload["error"] = error
    return _go_json(payload)


_HTML_ERROR_PAGE = (
    "<html>\r\n<head><title>{code} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


# --- Records ------------------------------------------------------------------------------------


class RecordedEvent(NamedTuple):
    """One event the stand-in accepted, in acceptance order."""

    ulid: str
    """The id Inngest returned for it."""
    name: str
    id: str | None
    """The caller's ``id`` (None when absent or empty)."""
    data: dict[str, Any]
    ts: int
    """Milliseconds; the receive time when the caller sent none."""
    received_at: float
    event_key: str
    request_no: int


class Run(NamedTuple):
    """One function run Inngest would start."""

    key: str
    """The idempotency key: the event ``id``, or its ULID when it has none."""
    event_name: str
    ulid: str
    event_id: str | None
    started_at: float
    request_no: int


Outcome: TypeAlias = Literal["answered", "dropped", "abandoned"]


class RequestRecord(NamedTuple):
    """One request to ``/e/{key}``, recorded when it finished."""

    request_no: int
    event_key: str
    seed: str | None
    received_at: float
    status: int | None
    """The status answered; None when the connection was dropped."""
    outcome: Outcome
    """``abandoned``: hung, and the client had gone when it was released."""
    events_sent: int | None
    """Events found in the body (None when it was not read)."""
    events_accepted: int
    fault: str | None
    duration_ms: float


# --- Faults -------------------------------------------------------------------------------------

DropStage: TypeAlias = Literal["before_body", "after_body", "after_record"]


@dataclass(frozen=True, slots=True)
class Refuse:
    """Close the listening socket (connects get ECONNREFUSED) and abort open connections."""

    kind: ClassVar[str] = "refuse"


@dataclass(frozen=True, slots=True)
class Drop:
    """Abort the connection without an answer.

    ``before_body``: as soon as the request line and headers are in; ``after_body``: after reading
    the body; ``after_record``: after the events were accepted and recorded (the answer is lost).
    """

    kind: ClassVar[str] = "drop"
    stage: DropStage = "after_body"


@dataclass(frozen=True, slots=True)
class Status5xx:
    """Answer a 5xx with a JSON body ``{"error", "status"}`` or a proxy's HTML page.

    With ``after_record`` the events are accepted and recorded first (a gateway error after Inngest
    took them).
    """

    kind: ClassVar[str] = "status_5xx"
    status: int = 502
    body: Literal["json", "html"] = "json"
    message: str | None = None
    after_record: bool = False


@dataclass(frozen=True, slots=True)
class Status429:
    """Answer 429 with ``Retry-After: <seconds>``."""

    kind: ClassVar[str] = "status_429"
    retry_after: int = 1


@dataclass(frozen=True, slots=True)
class Hang:
    """Accept the request and never answer until released (clear the fault or ``release_hung()``).

    A released request is answered normally if its client is still waiting; if the client has gone,
    it is discarded without recording anything (outcome ``abandoned``). On ``stop()`` it is dropped.
    """

    kind: ClassVar[str] = "hang"


@dataclass(frozen=True, slots=True)
class Reject:
    """Reject chosen events with a 400, in order, exactly as Inngest rejects a bad event.

    An event matches by its ``id``, by ``data[data_field]`` being in ``data_values``, or by
    ``predicate`` (called with the event object as sent). Events before it are accepted.
    """

    kind: ClassVar[str] = "reject"
    ids: frozenset[str] = frozenset()
    data_field: str | None = None
    data_values: frozenset[Any] = frozenset()
    predicate: Callable[[Mapping[str, Any]], bool] | None = None
    message: str | None = None
    """The 400's error; default ``DEFAULT_REJECT_MESSAGE`` with the event's size."""

    def matches(self, item: Mapping[str, Any], event: _Event) -> bool:
        """Whether this event is to be rejected."""
        if event.id is not None and event.id in self.ids:
            return True
        if self.data_field is not None:
            value = event.data.get(self.data_field)
            with contextlib.suppress(TypeError):  # an unhashable value is in no set
                if value in self.data_values:
                    return True
        return self.predicate is not None and self.predicate(item)

    def message_for(self, item: Mapping[str, Any]) -> str:
        """The error text for a rejected event."""
        if self.message is not None:
            return self.message
        return DEFAULT_REJECT_MESSAGE % len(orjson.dumps(item))


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Answer 429 past ``limit`` requests per ``window_s`` seconds per key (sliding window)."""

    kind: ClassVar[str] = "rate_limit"
    limit: int = CLOUD_RATE_LIMIT_REQUESTS
    window_s: float = CLOUD_RATE_LIMIT_WINDOW_S


@dataclass(frozen=True, slots=True)
class Latency:
    """Delay every request by ``seconds`` before anything else happens."""

    kind: ClassVar[str] = "latency"
    seconds: float = 0.1


Fault: TypeAlias = Refuse | Drop | Status5xx | Status429 | Hang | Reject | RateLimit | Latency
FaultKind: TypeAlias = Literal[
    "refuse", "drop", "status_5xx", "status_429", "hang", "reject", "rate_limit", "latency"
]
_FAULT_TYPES: dict[str, type[Fault]] = {
    cls.kind: cls for cls in (Refuse, Drop, Status5xx, Status429, Hang, Reject, RateLimit, Latency)
}


def fault_from_json(spec: Mapping[str, Any]) -> tuple[Fault, int | None]:
    """Build a fault and its ``times`` from the control surface's JSON.

    ``{"kind": "status_5xx", "status": 503, "body": "html", "times": 2}``; the other keys are the
    fault's fields (``Reject`` takes ``ids``/``data_values`` as lists; no predicate over HTTP).
    Raises ``ValueError`` with a message naming the problem.
    """
    params = dict(spec)
    kind = params.pop("kind", None)
    times = params.pop("times", None)
    cls = _FAULT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_FAULT_TYPES)}")
    if times is not None and (type(times) is not int or times < 1):
        raise ValueError("times must be a positive integer or null")
    if cls is Reject:
        params.pop("predicate", None)
        for name in ("ids", "data_values"):
            if name in params:
                params[name] = frozenset(params[name])
    try:
        fault = cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for fault {kind!r}: {exc}") from exc
    _check_fault(fault)
    return fault, times


def _check_fault(fault: Fault) -> None:
    if isinstance(fault, Drop) and fault.stage not in ("before_body", "after_body", "after_record"):
        raise ValueError(
            f"drop stage must be before_body, after_body or after_record, not {fault.stage!r}"
        )
    if isinstance(fault, Status5xx):
        if not 500 <= fault.status <= 599:
            raise ValueError(f"status_5xx needs a status from 500 to 599, not {fault.status}")
        if fault.body not in ("json", "html"):
            raise ValueError(f"status_5xx body must be json or html, not {fault.body!r}")
    if isinstance(fault, Status429) and fault.retry_after < 0:
        raise ValueError("retry_after must be >= 0")
    if isinstance(fault, RateLimit) and (fault.limit < 1 or fault.window_s <= 0):
        raise ValueError("rate_limit needs limit >= 1 and window_s > 0")
    if isinstance(fault, Latency) and fault.seconds < 0:
        raise ValueError("latency seconds must be >= 0")


def _fault_json(fault: Fault) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": fault.kind}
    for name in fault.__dataclass_fields__:
        value = getattr(fault, name)
        if name == "predicate":
            out[name] = None if value is None else getattr(value, "__name__", repr(value))
        elif isinstance(value, frozenset):
            out[name] = sorted(value, key=repr)
        else:
            out[name] = value
    return out


_F = TypeVar("_F", Refuse, Drop, Status5xx, Status429, Hang, Reject, RateLimit, Latency)


@dataclass(slots=True)
class _ActiveFault:
    fault: Fault
    remaining: int | None
    fired: int = 0


# --- The stand-in -------------------------------------------------------------------------------


class EventApiStandIn:
    """Inngest's Event API on a loopback port, recording what it accepts, with fault switches.

    Use ``async with EventApiStandIn() as api:`` (or ``await api.start()`` / ``await api.stop()``),
    point the publisher at ``api.base_url``, then assert on ``api.events``, ``api.runs_for(id)``,
    ``api.run_count()``, ``api.status_counts`` and friends, waiting with ``await
    api.wait_for_events(n)``. Inject faults with ``await api.inject(Status5xx(503), times=2)`` and
    clear them with ``await api.clear("status_5xx")`` (or ``await api.clear()`` for all).
    """

    def __init__(
        self,
        *,
        keys: Iterable[str] | None = None,
        max_event_size: int = ABSOLUTE_MAX_EVENT_SIZE,
        max_events: int = MAX_EVENTS,
        server_kind: str = "dev",
        response_content_type: str = _GO_SNIFFED_TEXT,
        control_on_main: bool = True,
        run_period_s: float = RUN_IDEMPOTENCY_PERIOD_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Configure; nothing listens until ``start()``.

        ``keys``: the accepted event keys (None: dev mode, any key). ``response_content_type``: what
        200/400 answers say (the dev server's sniffed ``text/plain``; Cloud may differ).
        ``control_on_main``: also serve ``/_standin/*`` on the Event API port. ``clock``: wall time
        for receive times, default ``ts`` and the 24 h run window (tests may move it forward).
        """
        self._keys: frozenset[str] | None = None if keys is None else frozenset(keys)
        self.max_event_size = max_event_size
        self.max_events = max_events
        self._server_kind = server_kind
        self._content_type = response_content_type
        self._control_on_main = control_on_main
        self._run_period_s = run_period_s
        self._clock = clock

        self._events: list[RecordedEvent] = []
        self._runs: list[Run] = []
        self._run_windows: dict[tuple[str, str], float] = {}
        self._runs_by_key: Counter[str] = Counter()
        self._requests: list[RequestRecord] = []
        self._status_counts: Counter[int] = Counter()
        self._request_count = 0
        self._dropped = 0
        self._hung_total = 0
        self._hung_now = 0
        self._hung_requests: dict[int, web.Request] = {}  # by id(): requests are not hashable

        self._faults: dict[str, _ActiveFault] = {}
        self._rate_windows: dict[str, deque[float]] = {}
        self._hang_release = asyncio.Event()
        self._refusing = False
        self._stopping = False

        self._changed = asyncio.Event()
        self._waiters = 0

        self._host = "127.0.0.1"
        self._port: int | None = None
        self._control_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._control_runner: web.AppRunner | None = None

    # -- lifecycle --

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, control_port: int | None = None
    ) -> str:
        """Listen on ``host:port`` (0 picks a free port) and return the base URL.

        ``control_port`` (0 picks one) serves only ``/_standin/*``, and keeps serving while the
        Event API port refuses connections.
        """
        if self._runner is not None:
            raise RuntimeError("the stand-in is already started")
        self._host = host
        self._stopping = False
        self._runner = web.AppRunner(self._main_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._listen(port)
        self._control_port = None
        if control_port is not None:
            self._control_runner = web.AppRunner(
                self._control_app(), access_log=None, shutdown_timeout=1.0
            )
            await self._control_runner.setup()
            sock = _bound_socket(host, control_port)
            self._control_port = sock.getsockname()[1]
            await web.SockSite(self._control_runner, sock).start()
        _log.info(
            "standin_started",
            base_url=self.base_url,
            control_url=self.control_url,
            keys_enforced=self._keys is not None,
        )
        return self.base_url

    async def stop(self) -> None:
        """Stop listening; hung requests are dropped, open connections closed."""
        if self._runner is None:
            return
        self._stopping = True
        self._release_hung_now()
        for runner in (self._control_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._site = self._control_runner = None
        self._refusing = False
        _log.info("standin_stopped", requests=self._request_count, events=len(self._events))

    async def __aenter__(self) -> EventApiStandIn:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the Event API (without a trailing slash)."""
        if self._port is None:
            raise RuntimeError("the stand-in is not started")
        return f"http://{_url_host(self._host)}:{self._port}"

    @property
    def port(self) -> int:
        """The Event API port (kept while refusing)."""
        if self._port is None:
            raise RuntimeError("the stand-in is not started")
        return self._port

    @property
    def control_url(self) -> str | None:
        """Base URL of the separate control port, if one was asked for."""
        if self._control_port is None:
            return None
        return f"http://{_url_host(self._host)}:{self._control_port}"

    def event_url(self, key: str = "test") -> str:
        """The URL to POST events to with this key."""
        return f"{self.base_url}/e/{key}"

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        sock = _bound_socket(self._host, port)
        self._port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    # -- configuration --

    def set_keys(self, keys: Iterable[str] | None) -> None:
        """Accept only these event keys from now on (None: dev mode, any key)."""
        self._keys = None if keys is None else frozenset(keys)

    # -- faults --

    async def inject(self, fault: Fault, *, times: int | None = None) -> None:
        """Switch a fault on, replacing one of the same kind.

        ``times``: it affects only the next N requests it applies to (a ``reject`` counts requests
        in which it rejected an event, a ``rate_limit`` requests it refused), then clears itself.
        ``Refuse`` cannot be counted (the kernel refuses, not us) and stays until cleared.
        """
        _check_fault(fault)
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if isinstance(fault, Refuse):
            if times is not None:
                raise ValueError("refuse cannot be limited by times: clear it instead")
            await self._refuse()
        else:
            self._faults[fault.kind] = _ActiveFault(fault, times)
        _log.info("standin_fault_set", fault=_fault_json(fault), times=times)

    async def clear(self, kind: FaultKind | str | None = None) -> None:
        """Switch one fault kind off (None: all). Clearing ``hang`` releases hung requests;
        clearing ``refuse`` listens again on the same port."""
        kinds = list(_FAULT_TYPES) if kind is None else [kind]
        for name in kinds:
            if name not in _FAULT_TYPES:
                raise ValueError(f"unknown fault kind {name!r}")
            if name == "refuse":
                await self._accept_again()
            else:
                self._faults.pop(name, None)
            if name == "hang":
                self._release_hung_now()
            if name == "rate_limit":
                self._rate_windows.clear()
        _log.info("standin_fault_cleared", fault=kind or "all")

    def release_hung(self) -> None:
        """Release the requests hung so far (the ``hang`` fault, if still on, hangs new ones)."""
        self._release_hung_now()

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The active faults as JSON-ready dicts (with ``times_left`` and ``fired``)."""
        out = [
            {**_fault_json(a.fault), "times_left": a.remaining, "fired": a.fired}
            for a in self._faults.values()
        ]
        if self._refusing:
            out.insert(0, {"kind": "refuse", "times_left": None, "fired": None})
        return out

    @property
    def refusing(self) -> bool:
        """Whether the Event API port is closed."""
        return self._refusing

    async def _refuse(self) -> None:
        if self._refusing:
            return
        if self._site is None:
            raise RuntimeError("the stand-in is not started")
        self._refusing = True
        await self._site.stop()  # closes the listening socket: new connects are refused
        self._site = None
        # An outage also breaks the connections a client keeps alive; abort them so that no request
        # slips through on one.
        assert self._runner is not None and self._runner.server is not None
        for handler in self._runner.server.connections:
            if handler.transport is not None:
                handler.transport.abort()
        _log.info("standin_refusing", port=self._port)

    async def _accept_again(self) -> None:
        if not self._refusing:
            return
        self._refusing = False
        if self._runner is not None and self._port is not None:
            await self._listen(self._port)
        _log.info("standin_accepting", port=self._port)

    def _fire(self, cls: type[_F], applies: Callable[[_F], bool] = lambda fault: True) -> _F | None:
        """The active fault of this type if ``applies`` to this request; it is then consumed."""
        active = self._faults.get(cls.kind)
        if active is None or not isinstance(active.fault, cls) or not applies(active.fault):
            return None
        self._consume(active)
        return active.fault

    def _consume(self, active: _ActiveFault) -> None:
        active.fired += 1
        if active.remaining is not None:
            active.remaining -= 1
            if active.remaining <= 0 and self._faults.get(active.fault.kind) is active:
                del self._faults[active.fault.kind]

    def _release_hung_now(self) -> None:
        self._hang_release.set()
        self._hang_release = asyncio.Event()

    # -- what it recorded --

    @property
    def events(self) -> Sequence[RecordedEvent]:
        """Every accepted event, in acceptance order (a live view: do not modify)."""
        return self._events

    @property
    def event_count(self) -> int:
        """How many events were accepted."""
        return len(self._events)

    def events_with_id(self, event_id: str) -> list[RecordedEvent]:
        """The accepted events carrying this caller ``id``."""
        return [e for e in self._events if e.id == event_id]

    def events_by_id(self) -> dict[str | None, list[RecordedEvent]]:
        """Accepted events grouped by caller ``id`` (None: events without one)."""
        grouped: dict[str | None, list[RecordedEvent]] = {}
        for event in self._events:
            grouped.setdefault(event.id, []).append(event)
        return grouped

    @property
    def runs(self) -> Sequence[Run]:
        """Every run started, in order."""
        return self._runs

    def run_count(self) -> int:
        """How many runs were started in all."""
        return len(self._runs)

    def runs_for(self, event_id: str) -> int:
        """How many runs this idempotency key (an event ``id``, or a ULID) started."""
        return self._runs_by_key.get(event_id, 0)

    def duplicate_runs(self) -> dict[str, int]:
        """Keys that started more than one run (only possible 24 h apart): should be empty."""
        return {k: n for k, n in self._runs_by_key.items() if n > 1}

    @property
    def requests(self) -> Sequence[RequestRecord]:
        """Every finished request to ``/e/{key}``, in the order they finished."""
        return self._requests

    @property
    def request_count(self) -> int:
        """Requests received on ``/e/{key}`` (including those still in progress)."""
        return self._request_count

    @property
    def status_counts(self) -> Mapping[int, int]:
        """Responses sent, by status code (dropped requests are in ``dropped_count``)."""
        return self._status_counts

    @property
    def dropped_count(self) -> int:
        """Requests whose connection was aborted without an answer (including abandoned ones)."""
        return self._dropped

    @property
    def hung_count(self) -> int:
        """Requests that were hung, in all."""
        return self._hung_total

    @property
    def hung_now(self) -> int:
        """Requests hung right now."""
        return self._hung_now

    def hung_clients_gone(self) -> int:
        """Hung requests whose client already closed the connection (they will be abandoned)."""
        return sum(
            1
            for r in self._hung_requests.values()
            if r.transport is None or r.transport.is_closing()
        )

    async def reset(self, *, faults: bool = True) -> None:
        """Forget everything recorded (and, by default, clear every fault)."""
        if faults:
            await self.clear()
        self._events.clear()
        self._runs.clear()
        self._run_windows.clear()
        self._runs_by_key.clear()
        self._requests.clear()
        self._status_counts.clear()
        self._rate_windows.clear()
        self._request_count = self._dropped = self._hung_total = 0
        self._notify()

    def summary(self) -> dict[str, Any]:
        """Counts and faults as a JSON-ready dict (what ``GET /_standin/state`` returns)."""
        return {
            "base_url": self.base_url if self._port is not None else None,
            "control_url": self.control_url,
            "refusing": self._refusing,
            "keys_enforced": self._keys is not None,
            "request_count": self._request_count,
            "status_counts": {str(k): v for k, v in sorted(self._status_counts.items())},
            "dropped_count": self._dropped,
            "hung_count": self._hung_total,
            "hung_now": self._hung_now,
            "event_count": len(self._events),
            "run_count": len(self._runs),
            "duplicate_runs": self.duplicate_runs(),
            "faults": self.faults,
        }

    # -- waiting --

    async def wait_for(
        self,
        predicate: Callable[[EventApiStandIn], bool],
        timeout: float = 5.0,
        what: str = "the condition",
    ) -> None:
        """Wait until ``predicate(self)`` holds; re-checked after every change, no polling.

        Raises ``TimeoutError`` saying what was awaited and what the stand-in saw.
        """
        if predicate(self):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"timed out after {timeout:g} s waiting for {what}; the stand-in has "
                    f"{len(self._events)} events, {len(self._runs)} runs, "
                    f"{self._request_count} requests (statuses {dict(self._status_counts)}, "
                    f"{self._dropped} dropped, {self._hung_now} hung), faults {self.faults}"
                )
            changed = self._changed
            self._waiters += 1
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass  # the loop re-checks and reports
            finally:
                self._waiters -= 1

    async def wait_for_events(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` events were accepted."""
        await self.wait_for(lambda s: len(s._events) >= n, timeout, f"{n} events")

    async def wait_for_runs(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` runs were started."""
        await self.wait_for(lambda s: len(s._runs) >= n, timeout, f"{n} runs")

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` requests finished (answered, dropped or abandoned)."""
        await self.wait_for(lambda s: len(s._requests) >= n, timeout, f"{n} finished requests")

    async def wait_for_hung(self, n: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` requests are hung right now."""
        await self.wait_for(lambda s: s._hung_now >= n, timeout, f"{n} hung requests")

    def _notify(self) -> None:
        # Swap the event before setting it so that a waiter re-arms on a fresh one; skipped when
        # nobody waits, which keeps the hot path at one attribute read.
        if self._waiters:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    # -- the Event API --

    def _main_app(self) -> web.Application:
        app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
        app.router.add_post("/e/{key}", self._handle_events)
        app.router.add_post("/e/", self._handle_events)
        app.router.add_get("/health", self._handle_health)
        if self._control_on_main:
            self._add_control_routes(app)
        return app

    def _headers(self, content_type: str) -> dict[str, str]:
        return {"Content-Type": content_type, "X-Inngest-Server-Kind": self._server_kind}

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.Response(
            body=_go_json({"status": 200, "message": "OK"}),
            headers=self._headers("application/json"),
        )

    async def _handle_events(self, request: web.Request) -> web.StreamResponse:
        self._request_count += 1
        request_no = self._request_count
        t0 = time.perf_counter()
        received_at = self._clock()
        key = request.match_info.get("key", "")
        seed = request.headers.get(SEED_HEADER)

        def finish(
            status: int | None,
            outcome: Outcome,
            sent: int | None,
            accepted: int,
            fault: str | None,
        ) -> None:
            if status is None:
                self._dropped += 1
            else:
                self._status_counts[status] += 1
            duration_ms = (time.perf_counter() - t0) * 1000
            self._requests.append(
                RequestRecord(
                    request_no,
                    key,
                    seed,
                    received_at,
                    status,
                    outcome,
                    sent,
                    accepted,
                    fault,
                    duration_ms,
                )
            )
            _log.debug(
                "standin_request",
                request_no=request_no,
                status=status,
                outcome=outcome,
                events_sent=sent,
                events_accepted=accepted,
                fault=fault,
                duration_ms=round(duration_ms, 3),
            )
            self._notify()

        def drop(
            stage: str, sent: int | None = None, accepted: int = 0, outcome: Outcome = "dropped"
        ) -> web.StreamResponse:
            transport = request.transport
            if transport is not None:
                transport.abort()
            finish(None, outcome, sent, accepted, f"drop:{stage}")
            # Never sent: aiohttp sees the closed transport and gives up on the answer quietly.
            return web.Response(status=500)

        if self._faults:
            latency = self._fire(Latency)
            if latency is not None and latency.seconds > 0:
                await asyncio.sleep(latency.seconds)
            if self._fire(Hang) is not None and not await self._hang(request):
                # Released after its client left (or at shutdown): nobody to answer.
                return drop("hang", outcome="dropped" if self._stopping else "abandoned")
            if self._fire(Drop, lambda f: f.stage == "before_body"):
                return drop("before_body")

        body = await request.read()

        if self._faults:
            early = self._early_fault(key)
            if early == "drop":
                return drop("after_body")
            if early is not None:
                status, payload, headers = early
                finish(status, "answered", None, 0, _fault_name(status))
                return web.Response(status=status, body=payload, headers=headers)

        if not key or (self._keys is not None and key not in self._keys):
            key_error = "Event key is required" if not key else "Event key not found"
            finish(401, "answered", None, 0, None)
            return web.Response(
                status=401,
                body=_go_json({"status": 401, "message": "", "error": key_error}),
                headers=self._headers("application/json"),
            )

        status, ids, error, sent, reject_fired = self._ingest(body, key, request_no, seed)
        accepted = len(ids)

        if self._faults:
            if self._fire(Drop, lambda f: f.stage == "after_record"):
                return drop("after_record", sent, accepted)
            gateway = self._fire(Status5xx, lambda f: f.after_record)
            if gateway is not None:
                code, payload, headers = self._status_5xx(gateway)
                finish(code, "answered", sent, accepted, "status_5xx:after_record")
                return web.Response(status=code, body=payload, headers=headers)

        finish(status, "answered", sent, accepted, "reject" if reject_fired else None)
        headers = self._headers(self._content_type)
        return web.Response(status=status, body=_ids_body(ids, status, error), headers=headers)

    async def _hang(self, request: web.Request) -> bool:
        """Hold a request until released; True if it should go on, False to drop it."""
        release = self._hang_release
        self._hung_total += 1
        self._hung_now += 1
        self._hung_requests[id(request)] = request
        self._notify()
        try:
            await release.wait()
        finally:
            self._hung_now -= 1
            self._hung_requests.pop(id(request), None)
        transport = request.transport
        return not (self._stopping or transport is None or transport.is_closing())

    def _early_fault(self, key: str) -> Literal["drop"] | tuple[int, bytes, dict[str, str]] | None:
        """Faults that answer (or drop) once the body is read, before Inngest would look at it."""
        if self._fire(Drop, lambda f: f.stage == "after_body"):
            return "drop"
        gateway = self._fire(Status5xx, lambda f: not f.after_record)
        if gateway is not None:
            return self._status_5xx(gateway)
        too_many = self._fire(Status429)
        if too_many is not None:
            return self._status_429(too_many.retry_after)
        active = self._faults.get(RateLimit.kind)
        if active is not None and isinstance(active.fault, RateLimit):
            retry_after = self._rate_limited(key, active.fault)
            if retry_after is not None:
                self._consume(active)  # only a refused request counts towards ``times``
                return self._status_429(retry_after)
        return None

    def _status_5xx(self, fault: Status5xx) -> tuple[int, bytes, dict[str, str]]:
        phrase = _phrase(fault.status)
        if fault.body == "html":
            page = _HTML_ERROR_PAGE.format(code=fault.status, phrase=phrase)
            return fault.status, page.encode(), self._headers("text/html")
        payload = {"error": fault.message or phrase, "status": fault.status}
        return fault.status, _go_json(payload), self._headers("application/json")

    def _status_429(self, retry_after: int) -> tuple[int, bytes, dict[str, str]]:
        headers = self._headers("application/json")
        headers["Retry-After"] = str(retry_after)
        payload = {"error": "rate limit exceeded", "status": 429}
        return 429, _go_json(payload), headers

    def _rate_limited(self, key: str, limit: RateLimit) -> int | None:
        """Seconds to wait if this request is over the limit, else None (and it is counted)."""
        now = time.monotonic()
        window = self._rate_windows.setdefault(key, deque())
        while window and window[0] <= now - limit.window_s:
            window.popleft()
        if len(window) >= limit.limit:
            return max(1, math.ceil(window[0] + limit.window_s - now))
        window.append(now)
        return None

    def _ingest(
        self, body: bytes, key: str, request_no: int, seed_header: str | None
    ) -> tuple[int, list[str], str | None, int, bool]:
        """Take the events of one body in order; (status, ids, error, events found, rejected)."""
        items, error = _split_body(body, self.max_event_size, self.max_events)
        ids: list[str] = []
        if not items:
            return (200 if error is None else 400), ids, error, 0, False
        now = self._clock()
        now_ms = int(now * 1000)
        seed = parse_event_id_seed(seed_header) if seed_header else None
        entropy = os.urandom(10 * len(items)) if seed is None else b""
        random_prefix = now_ms.to_bytes(6, "big")
        reject_fault = self._faults.get("reject")
        rejected = False
        period = self._run_period_s
        windows = self._run_windows
        record = self._events.append
        for position, item in enumerate(items):
            event = _normalize(item, now_ms)
            if type(event) is str:
                error = event
                break
            assert isinstance(event, _Event)
            if reject_fault is not None:
                reject = reject_fault.fault
                if isinstance(reject, Reject) and reject.matches(item, event):
                    self._consume(reject_fault)
                    error = reject.message_for(item)
                    rejected = True
                    break
            ulid = None
            if seed is not None:
                ulid = _seeded_ulid(seed[0], seed[1], position + 1)
            if ulid is None:
                offset = 10 * position
                chunk = entropy[offset : offset + 10] if entropy else os.urandom(10)
                ulid = _encode_ulid(random_prefix + chunk)
            record(
                RecordedEvent(
                    ulid, event.name, event.id, event.data, event.ts, now, key, request_no
                )
            )
            ids.append(ulid)
            # The run scheduler's idempotency: SET NX EX 24h on (function, id-or-ULID).
            run_key = event.id or ulid
            window_key = (event.name, run_key)
            started = windows.get(window_key)
            if started is None or now - started >= period:
                windows[window_key] = now
                self._runs.append(Run(run_key, event.name, ulid, event.id, now, request_no))
                self._runs_by_key[run_key] += 1
        # Without a break every event was taken; a body error after them still makes it a 400.
        return (200 if error is None else 400), ids, error, len(items), rejected

    # -- the control surface --

    def _control_app(self) -> web.Application:
        app = web.Application()
        self._add_control_routes(app)
        return app

    def _add_control_routes(self, app: web.Application) -> None:
        app.router.add_get("/_standin/state", self._control_state)
        app.router.add_get("/_standin/events", self._control_events)
        app.router.add_get("/_standin/wait", self._control_wait)
        app.router.add_post("/_standin/faults", self._control_inject)
        app.router.add_delete("/_standin/faults", self._control_clear)
        app.router.add_delete("/_standin/faults/{kind}", self._control_clear)
        app.router.add_post("/_standin/release", self._control_release)
        app.router.add_post("/_standin/reset", self._control_reset)
        app.router.add_post("/_standin/config", self._control_config)

    @staticmethod
    def _json(payload: Any, status: int = 200) -> web.Response:
        body = orjson.dumps(payload)
        return web.Response(status=status, body=body, content_type="application/json")

    async def _control_state(self, request: web.Request) -> web.Response:
        state = self.summary()
        # ?runs_for=<id>&runs_for=<id>: run counts of chosen keys, without listing every key.
        keys = request.query.getall("runs_for", [])
        if keys:
            state["runs_for"] = {key: self.runs_for(key) for key in keys}
        return self._json(state)

    async def _control_events(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError:
            return self._json({"error": "since and limit must be integers"}, 400)
        chosen = self._events[since : None if limit is None else since + limit]
        events = [{"seq": since + n, **event._asdict()} for n, event in enumerate(chosen)]
        listing: dict[str, Any] = {"event_count": len(self._events), "events": events}
        if request.query.get("runs") in ("1", "true"):
            listing["runs"] = [run._asdict() for run in self._runs]
        return self._json(listing)

    async def _control_wait(self, request: web.Request) -> web.Response:
        try:
            timeout = float(request.query.get("timeout", "5"))
            wanted = {
                name: int(request.query[name])
                for name in ("events", "runs", "requests", "hung")
                if name in request.query
            }
        except ValueError:
            error = "events, runs, requests, hung and timeout must be numbers"
            return self._json({"error": error}, 400)
        counters: dict[str, Callable[[EventApiStandIn], int]] = {
            "events": lambda s: len(s._events),
            "runs": lambda s: len(s._runs),
            "requests": lambda s: len(s._requests),
            "hung": lambda s: s._hung_now,
        }
        what = ", ".join(f"{n} {name}" for name, n in wanted.items()) or "nothing"
        try:
            await self.wait_for(
                lambda s: all(counters[name](s) >= n for name, n in wanted.items()), timeout, what
            )
        except TimeoutError as exc:
            return self._json({"error": str(exc), **self.summary()}, 408)
        return self._json(self.summary())

    async def _control_inject(self, request: web.Request) -> web.Response:
        try:
            spec = orjson.loads(await request.read())
            specs = spec if isinstance(spec, list) else [spec]
            parsed = [fault_from_json(s) for s in specs]
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            return self._json({"error": f"bad fault: {exc}"}, 400)
        if self._control_port is None and any(isinstance(f, Refuse) for f, _ in parsed):
            # Once the only port refuses, nothing could clear the fault over HTTP.
            return self._json({"error": "refuse needs a separate control port (control_port)"}, 409)
        for fault, times in parsed:
            await self.inject(fault, times=times)
        return self._json({"faults": self.faults})

    async def _control_clear(self, request: web.Request) -> web.Response:
        kind = request.match_info.get("kind")
        try:
            await self.clear(kind)
        except ValueError as exc:
            return self._json({"error": str(exc)}, 400)
        return self._json({"faults": self.faults})

    async def _control_release(self, request: web.Request) -> web.Response:
        self.release_hung()
        return self._json({"faults": self.faults})

    async def _control_reset(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            options = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            options = None
        if not isinstance(options, dict):
            return self._json({"error": "the body must be a JSON object"}, 400)
        await self.reset(faults=bool(options.get("faults", True)))
        return self._json(self.summary())

    async def _control_config(self, request: web.Request) -> web.Response:
        try:
            options = orjson.loads(await request.read())
            if "keys" in options:
                keys = options["keys"]
                if keys is not None and not (
                    isinstance(keys, list) and all(isinstance(k, str) for k in keys)
                ):
                    raise ValueError("keys must be a list of strings or null")
                self.set_keys(keys)
            if "max_event_size" in options:
                size = options["max_event_size"]
                if type(size) is not int or size < 1:
                    raise ValueError("max_event_size must be a positive integer")
                self.max_event_size = size
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            return self._json({"error": str(exc)}, 400)
        return self._json(
            {"keys_enforced": self._keys is not None, "max_event_size": self.max_event_size}
        )


def _fault_name(status: int) -> str:
    return "status_429" if status == 429 else "status_5xx"


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Server Error"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bound_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to host:port; SO_REUSEADDR lets a refused port be re-bound
    while old connections linger in TIME_WAIT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


# --- Running it as a process ----------------------------------------------------------------------


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8288,
    control_port: int | None = None,
    keys: Iterable[str] | None = None,
    max_event_size: int = ABSOLUTE_MAX_EVENT_SIZE,
    server_kind: str = "dev",
    ready: Callable[[EventApiStandIn], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a stand-in until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is None).

    ``ready`` is called once it listens.
    """
    standin = EventApiStandIn(keys=keys, max_event_size=max_event_size, server_kind=server_kind)
    stop_event = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if stop is None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop_event.set)
    await standin.start(host, port, control_port)
    try:
        if ready is not None:
            ready(standin)
        await stop_event.wait()
    finally:
        await standin.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m outbox_relay.inngest.standin``: print one JSON line when ready, serve until
    SIGTERM/SIGINT, exit 0. Logs go to stderr as JSON lines."""
    parser = argparse.ArgumentParser(
        prog="python -m outbox_relay.inngest.standin",
        description="A stand-in of Inngest's Event API for tests, benchmarks and the demo.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8288, help="Event API port (0: any free port)")
    parser.add_argument(
        "--control-port", type=int, default=None, help="separate port for /_standin/* (0: any)"
    )
    parser.add_argument("--keys", default=None, help="comma-separated event keys (default: any)")
    parser.add_argument("--max-event-size", type=int, default=ABSOLUTE_MAX_EVENT_SIZE)
    parser.add_argument("--server-kind", default="dev", choices=["dev", "cloud"])
    levels = ["debug", "info", "warning", "error"]
    parser.add_argument("--log-level", default="info", choices=levels)
    args = parser.parse_args(argv)

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(args.log_level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    keys = [k for k in args.keys.split(",") if k] if args.keys is not None else None

    def announce(standin: EventApiStandIn) -> None:
        line = {
            "event": "standin_ready",
            "base_url": standin.base_url,
            "control_url": standin.control_url,
            "pid": os.getpid(),
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()

    asyncio.run(
        serve(
            host=args.host,
            port=args.port,
            control_port=args.control_port,
            keys=keys,
            max_event_size=args.max_event_size,
            server_kind=args.server_kind,
            ready=announce,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
