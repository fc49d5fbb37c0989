"""The Event API's wire format, byte for byte as Go writes and reads it.

ULIDs (random and seeded), Go's ``encoding/json`` syntax errors, splitting a body into events as
``ParseStream`` does, and Go-shaped response bodies.
"""

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

from outbox_relay.testing.inngest.rules import INT64_MAX

_INVALID_BODY = "Request body must contain an event object or an array of event objects"
GO_SNIFFED_TEXT = "text/plain; charset=utf-8"
# Go's encoder escapes these (SetEscapeHTML defaults to true; U+2028/9 always).
_GO_HTML_ESCAPES = re.compile(rb"[<>&]|\xe2\x80[\xa8\xa9]")
_GO_HTML_ESCAPE_MAP = {
    c.encode(): f"\\u{ord(c):04x}".encode() for c in ("<", ">", "&", "\u2028", "\u2029")
}


# --- ULIDs ---------------------------------------------------------------------------------------

_B32_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)
_ULID_PAD = b"\x00\x00\x00\x00"


def encode_ulid(raw: bytes) -> str:
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
    if millis <= 0 or millis > INT64_MAX:
        return None
    try:
        entropy = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(entropy) != 10:
        return None
    return millis, entropy


def seeded_ulid(millis: int, entropy: bytes, index: int) -> str | None:
    # ulid.New refuses times past 2^48 ms; Inngest then keeps the random id it already made.
    if millis >= 1 << 48:
        return None
    tail = (int.from_bytes(entropy[6:10], "big") + index) & 0xFFFFFFFF
    return encode_ulid(millis.to_bytes(6, "big") + entropy[:6] + tail.to_bytes(4, "big"))


def derive_event_ids(seed_header: str, count: int) -> list[str] | None:
    """The ids Inngest returns for the first ``count`` events of a request sent with this seed.

    ``None`` when the seed is one Inngest ignores (then every id is random). Event ``i`` (0-based)
    uses index ``i + 1``: Inngest increments its counter before deriving the first id.
    """
    seed = parse_event_id_seed(seed_header)
    if seed is None:
        return None
    ids = [seeded_ulid(seed[0], seed[1], index) for index in range(1, count + 1)]
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


def split_body(body: bytes, max_size: int, max_events: int) -> tuple[list[Any], str | None]:
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


# --- Go-shaped response bodies ------------------------------------------------------------------


def go_json(payload: Mapping[str, Any]) -> bytes:
    """JSON as Go's encoder writes it: HTML characters escaped, a trailing newline."""
    out = orjson.dumps(payload)
    if _GO_HTML_ESCAPES.search(out):
        out = _GO_HTML_ESCAPES.sub(lambda m: _GO_HTML_ESCAPE_MAP[m.group()], out)
    return out + b"\n"


def ids_body(ids: list[str], status: int, error: str | None) -> bytes:
    # ids[0:max+1] of a slice of empty strings: never an empty list.
    payload: dict[str, Any] = {"ids": ids or [""], "status": status}
    if error is not None:
        payload["error"] = error
    return go_json(payload)


HTML_ERROR_PAGE = (
    "<html>\r\n<head><title>{code} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
