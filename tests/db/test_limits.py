"""The enqueue limits of ``outbox_relay.domain.limits`` are the SQL functions' and the models'.

Migrations are append-only, so ``outbox.enqueue_track`` / ``outbox.enqueue_album`` keep their own
literals; this test is what ties them to the one Python definition. Each limit is probed at its
edge in a real database (the last value accepted, the first refused) and the write API's
pydantic models must answer the same at the same value. For ``enqueue_track`` the edge is also
probed on the path that runs migration 001's checks one by one (migration 005 skips them when
one expression says every argument is fine): a priority out of range sends the call down that
path, and the error must then name the priority, not the field at its edge.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel, ValidationError

from outbox_relay.domain import limits
from outbox_relay.write.models import AlbumIn, TrackIn, field_errors

TRACK: dict[str, Any] = {"isrc": "USRC17607839", "title": "t", "artist": "a", "album": "b"}
ALBUM: dict[str, Any] = {"title": "b", "artist": "a", "tracks": [{"title": "t"}]}
ENQUEUE_TRACK = (
    "SELECT outbox.enqueue_track($1::text, $2::text, $3::text, $4::text, $5::integer, false, "
    "$6::text)"
)
ENQUEUE_ALBUM = "SELECT outbox.enqueue_album($1::text, $2::text, $3::text::jsonb, $4::text)"


def _url(length: int) -> str:
    return "https://" + "a" * (length - len("https://"))


@dataclass(frozen=True)
class Limit:
    """One rule's edge: ``value(n)`` is an argument of size ``n``; ``limit`` the largest allowed."""

    function: str  # enqueue_track or enqueue_album
    field: str  # the name both the SQL message and the model's error path use
    limit: int
    value: Callable[[int], Any]
    json_key: str | None = None  # where the value goes in the model's input, when not `field`

    def body(self, size: int) -> dict[str, Any]:
        base = TRACK if self.function == "enqueue_track" else ALBUM
        body = json.loads(json.dumps(base))
        key = self.json_key or self.field
        if key.startswith("tracks[0]."):
            body["tracks"][0][key.removeprefix("tracks[0].")] = self.value(size)
        else:
            body[key] = self.value(size)
        return body


LIMITS = [
    *(
        Limit("enqueue_track", name, limits.TEXT_MAX_LENGTH, lambda n: "x" * n)
        for name in ("title", "artist", "album")
    ),
    Limit("enqueue_track", "isrc", limits.ISRC_MAX_LENGTH, lambda n: "U" * n),
    Limit("enqueue_track", "artwork_url", limits.URL_MAX_LENGTH, _url, json_key="artworkUrl"),
    *(
        Limit("enqueue_album", name, limits.TEXT_MAX_LENGTH, lambda n: "x" * n)
        for name in ("title", "artist", "tracks[0].title", "tracks[0].artist")
    ),
    Limit("enqueue_album", "tracks[0].isrc", limits.ISRC_MAX_LENGTH, lambda n: "U" * n),
    Limit("enqueue_album", "artwork_url", limits.URL_MAX_LENGTH, _url, json_key="artworkUrl"),
    Limit("enqueue_album", "tracks", limits.ALBUM_MAX_TRACKS, lambda n: [{"title": "t"}] * n),
]


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _sql_error(conn: asyncpg.Connection, body: dict[str, Any], *, track: bool) -> str | None:
    """The SQL function's refusal of ``body`` (the model's JSON input), or None if it took it."""
    tx = conn.transaction()
    await tx.start()
    try:
        if track:
            await conn.fetchval(
                ENQUEUE_TRACK,
                body.get("isrc"),
                body["title"],
                body["artist"],
                body["album"],
                body.get("priority"),
                body.get("artworkUrl"),
            )
        else:
            await conn.fetchval(
                ENQUEUE_ALBUM,
                body["title"],
                body["artist"],
                json.dumps(body["tracks"]),
                body.get("artworkUrl"),
            )
    except asyncpg.DataError as exc:
        return str(exc)
    finally:
        await tx.rollback()
    return None


def _model_error(model: type[BaseModel], body: dict[str, Any]) -> list[str] | None:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        return [error.field for error in field_errors(exc)]
    return None


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: f"{limit.function}.{limit.field}")
async def test_sql_and_models_take_the_edge_and_refuse_one_past_it(
    conn: asyncpg.Connection, limit: Limit
) -> None:
    track = limit.function == "enqueue_track"
    model = TrackIn if track else AlbumIn
    at_edge, past_edge = limit.body(limit.limit), limit.body(limit.limit + 1)

    assert await _sql_error(conn, at_edge, track=track) is None
    assert _model_error(model, at_edge) is None

    refused = await _sql_error(conn, past_edge, track=track)
    assert refused is not None
    assert refused.startswith(f"{limit.function}: {limit.field} must ")
    assert str(limit.limit) in refused
    assert _model_error(model, past_edge) == [limit.json_key or limit.field]


@pytest.mark.parametrize(
    "limit",
    [limit for limit in LIMITS if limit.function == "enqueue_track"],
    ids=lambda limit: limit.field,
)
async def test_the_checks_of_migration_001_take_the_same_edge(
    conn: asyncpg.Connection, limit: Limit
) -> None:
    body = {**limit.body(limit.limit), "priority": limits.PRIORITY_MAX + 1}
    refused = await _sql_error(conn, body, track=True)
    assert refused is not None
    assert refused.startswith("enqueue_track: priority must be")


@pytest.mark.parametrize(
    ("priority", "allowed"),
    [
        (limits.PRIORITY_MIN - 1, False),
        (limits.PRIORITY_MIN, True),
        (limits.PRIORITY_MAX, True),
        (limits.PRIORITY_MAX + 1, False),
    ],
)
async def test_sql_and_models_agree_on_the_priority_range(
    conn: asyncpg.Connection, priority: int, allowed: bool
) -> None:
    body = {**TRACK, "priority": priority}
    refused = await _sql_error(conn, body, track=True)
    assert (refused is None) is allowed
    assert (_model_error(TrackIn, body) is None) is allowed
    if not allowed:
        assert refused == (
            "enqueue_track: priority must be an integer from "
            f"{limits.PRIORITY_MIN} to {limits.PRIORITY_MAX} (got {priority})"
        )
