"""Input and output models of the library write API, with the same limits as the SQL functions.

``outbox.enqueue_track`` / ``outbox.enqueue_album`` (migrations 001 and 005) are the last line
of defence for every writer; these models are the first one for the HTTP API, so a client
gets every problem of a request at once, each named by its JSON path (``tracks[3].title``), and
the API never has to turn a database error into a field name.

Every limit is a JSON-Schema-expressible constraint (``maxLength``, ``pattern``, ...) so that the
OpenAPI description generated from these models says exactly what the API accepts; a fuzzer
that trusts the description finds no input the schema allows and the API refuses. Values are
kept as sent (not stripped): what the client wrote is what the library and the outbox store.

Where the API is stricter than SQL, it is on purpose and noted next to the rule.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

# The SQL functions' limits; tests/db/test_limits.py proves that both sides agree on every edge.
from outbox_relay.domain.limits import (
    ALBUM_MAX_TRACKS,
    ISRC_MAX_LENGTH,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TEXT_MAX_LENGTH,
    TIDAL_TRACK_ID_PATTERN,
    URL_MAX_LENGTH,
)

# PostgreSQL text cannot hold NUL; refusing it here names the field instead of surfacing the
# driver's "invalid byte sequence" error. The character classes are spelled out (no ``\s``)
# because regex engines disagree on what whitespace is, and the same pattern must mean the
# same thing to pydantic (Rust regex), JSON Schema (ECMA-262) and a fuzzer (Python ``re``).
# Linear in the input length on backtracking engines too: the leading run is whitespace only.
_WS: Final = r"\t\n\v\f\r "
# Stricter than SQL (whose btrim only removes spaces): a title of tabs is as empty as one of
# spaces.
REQUIRED_TEXT_PATTERN: Final = rf"^[{_WS}]*[^{_WS}\x00][^\x00]*$"
OPTIONAL_TEXT_PATTERN: Final = r"^[^\x00]*$"
# SQL: '^https?://[^[:space:]]+$', case-insensitive. Stricter here: a host must follow the
# scheme (not '/', '?' or '#'), and Unicode spaces, which [:space:] may or may not match
# depending on the database's locale, are refused outright.
_URL_NO: Final = _WS + r"\x00\x85\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
URL_PATTERN: Final = rf"^[Hh][Tt][Tt][Pp][Ss]?://[^{_URL_NO}/?#][^{_URL_NO}]*$"

RequiredText = Annotated[
    str, Field(min_length=1, max_length=TEXT_MAX_LENGTH, pattern=REQUIRED_TEXT_PATTERN)
]
OptionalText = Annotated[
    str | None, Field(max_length=TEXT_MAX_LENGTH, pattern=OPTIONAL_TEXT_PATTERN)
]
# A missing or malformed ISRC is not an input error: the relay records the track as skipped
# (missing_isrc / invalid_isrc) where operators see it, and the library write still succeeds.
Isrc = Annotated[str | None, Field(max_length=ISRC_MAX_LENGTH, pattern=OPTIONAL_TEXT_PATTERN)]
# A track known by its TIDAL catalog id: the relay looks its ISRC up (migration 010).
TidalTrackId = Annotated[
    str | None,
    Field(
        pattern=TIDAL_TRACK_ID_PATTERN,
        max_length=20,
        description="TIDAL catalog track id (1 to 20 digits); the relay looks the ISRC up when "
        "none is given.",
    ),
]
ArtworkUrl = Annotated[str | None, Field(max_length=URL_MAX_LENGTH, pattern=URL_PATTERN)]


def _integral_float(value: Any) -> Any:
    # JSON Schema calls 60.0 an integer, so the OpenAPI description admits it; take it as 60.
    # Booleans and strings still fail the strict int below.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Priority = Annotated[
    Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)] | None,
    BeforeValidator(_integral_float),
]

_INPUT_CONFIG: Final = ConfigDict(
    # "5" is not a priority and true is not an integer: clients learn about their bugs.
    strict=True,
    extra="forbid",
    frozen=True,
)


class TrackIn(BaseModel):
    """Body of ``POST /v1/library/tracks``."""

    model_config = _INPUT_CONFIG

    isrc: Isrc = None
    tidal_track_id: TidalTrackId = Field(default=None, alias="tidalTrackId")
    title: RequiredText
    artist: RequiredText
    album: RequiredText
    artwork_url: ArtworkUrl = Field(default=None, alias="artworkUrl")
    priority: Priority = Field(
        default=None,
        description="Inngest priority in seconds, from -600 (later) to 600 (sooner).",
    )
    force: bool = Field(
        default=False, description="Ingest again even if the track is already indexed."
    )


class AlbumTrackIn(BaseModel):
    """One track of an album; ``artist`` defaults to the album's."""

    model_config = _INPUT_CONFIG

    isrc: Isrc = None
    tidal_track_id: TidalTrackId = Field(default=None, alias="tidalTrackId")
    title: RequiredText
    artist: OptionalText = None


class AlbumIn(BaseModel):
    """Body of ``POST /v1/library/albums``."""

    model_config = _INPUT_CONFIG

    title: RequiredText
    artist: RequiredText
    artwork_url: ArtworkUrl = Field(default=None, alias="artworkUrl")
    # An empty list is accepted, as by SQL: the relay records the album as skipped (no_tracks).
    tracks: list[AlbumTrackIn] = Field(max_length=ALBUM_MAX_TRACKS)

    def tracks_json(self) -> list[dict[str, Any]]:
        """The tracks as ``outbox.enqueue_album`` takes them; absent keys stay absent."""
        return [track.model_dump(exclude_none=True, by_alias=True) for track in self.tracks]


_OUTPUT_CONFIG: Final = ConfigDict(frozen=True, serialize_by_alias=True)


class TrackCreated(BaseModel):
    """201 answer of ``POST /v1/library/tracks``."""

    model_config = _OUTPUT_CONFIG

    track_id: int = Field(serialization_alias="trackId")
    outbox_id: int = Field(serialization_alias="outboxId")


class AlbumCreated(BaseModel):
    """201 answer of ``POST /v1/library/albums``."""

    model_config = _OUTPUT_CONFIG

    album_id: int = Field(serialization_alias="albumId")
    outbox_id: int = Field(serialization_alias="outboxId")


class FieldError(BaseModel):
    """One bad field: its JSON path (``tracks[3].title``, ``body`` for the whole) and the rule."""

    model_config = _OUTPUT_CONFIG

    field: str
    rule: str


class ValidationErrorBody(BaseModel):
    """422 answer: every bad field of the request."""

    model_config = _OUTPUT_CONFIG

    error: Literal["validation_error"]
    fields: list[FieldError]


class ErrorBody(BaseModel):
    """Answer of the other errors (415, 500, 503)."""

    model_config = _OUTPUT_CONFIG

    error: str
    detail: str | None = None


class Readiness(BaseModel):
    """Answer of ``/healthz`` and ``/readyz``."""

    model_config = _OUTPUT_CONFIG

    status: Literal["ok", "ready", "unavailable"]
    # Why it is unavailable, with the fix when there is one (unmigrated: run migrate).
    reason: str | None = None


# -- pydantic errors → {"field", "rule"} ---------------------------------------------------------

_PATTERN_RULES: Final = {
    REQUIRED_TEXT_PATTERN: "must be a non-empty string",
    OPTIONAL_TEXT_PATTERN: "must be a string",
    URL_PATTERN: "must be an http(s) URL without spaces",
}

_TYPE_RULES: Final = {
    "missing": "is required",
    "extra_forbidden": "is not an allowed field",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be a boolean",
    "list_type": "must be an array",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('tracks', 3, 'title')`` → ``tracks[3].title``; the empty location is ``body``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path if loc else "body"


def _rule(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if isinstance(value, str) and "\x00" in value and kind == "string_pattern_mismatch":
        return "must not contain NUL characters"
    if kind == "string_pattern_mismatch":
        return _PATTERN_RULES.get(str(ctx.get("pattern")), error["msg"])
    if kind == "string_too_short":
        return "must be a non-empty string"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"must hold at most {ctx.get('max_length')} items"
    if kind in {"greater_than_equal", "less_than_equal"}:
        return f"must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}"
    if kind == "json_invalid":
        return f"must be valid JSON ({ctx.get('error', 'unparsable')})"
    return _TYPE_RULES.get(kind, error["msg"])


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Every error of ``exc`` as a field path and a rule a client can act on."""
    return [
        FieldError(field=field_path(tuple(error["loc"])), rule=_rule(error))
        for error in exc.errors(include_url=False)
    ]
