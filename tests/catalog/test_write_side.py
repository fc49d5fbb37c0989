"""Tracks known by TIDAL id through every way in: the write API, the SQL functions and both
Python helpers; bad ids refused naming the field; the existing signatures unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from outbox_relay.http.write_api import create_app
from outbox_relay.write import asyncpg as asyncpg_helpers
from outbox_relay.write import psycopg as psycopg_helpers

Client = TestClient[Any, Any]


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(database_url))) as test_client:
        yield test_client


async def outbox_rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT id, kind, isrc, tidal_id, tracks FROM outbox.messages ORDER BY id"
        )
    finally:
        await conn.close()


async def test_the_api_takes_tidal_track_ids_on_tracks_and_album_tracks(
    client: Client, database_url: str
) -> None:
    track = {"tidalTrackId": "75413016", "title": "4:44", "artist": "JAY Z", "album": "4:44"}
    response = await client.post("/v1/library/tracks", json=track)
    assert response.status == 201, await response.text()
    album = {
        "title": "4:44",
        "artist": "JAY Z",
        "tracks": [
            {"tidalTrackId": "75413016", "title": "4:44"},
            {"isrc": "QMJMT1701237", "title": "Kill Jay Z"},
        ],
    }
    response = await client.post("/v1/library/albums", json=album)
    assert response.status == 201, await response.text()
    rows = await outbox_rows(database_url)
    assert (rows[0]["kind"], rows[0]["isrc"], rows[0]["tidal_id"]) == ("track", None, "75413016")
    assert json.loads(rows[1]["tracks"]) == album["tracks"]

    schema = await (await client.get("/openapi.json")).json()
    names = json.dumps(schema)
    assert '"tidalTrackId"' in names and "^[0-9]{1,20}$" in names


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/library/tracks",
            {"tidalTrackId": "12a", "title": "t", "artist": "a", "album": "b"},
            "tidalTrackId",
        ),
        (
            "/v1/library/tracks",
            {"tidalTrackId": 12, "title": "t", "artist": "a", "album": "b"},
            "tidalTrackId",
        ),
        (
            "/v1/library/albums",
            {
                "title": "t",
                "artist": "a",
                "tracks": [{"title": "ok"}, {"tidalTrackId": "1" * 21, "title": "x"}],
            },
            "tracks[1].tidalTrackId",
        ),
    ],
)
async def test_bad_ids_are_422_naming_the_field(
    client: Client, database_url: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status == 422, await response.text()
    fields = [item["field"] for item in (await response.json())["fields"]]
    assert fields == [field]
    assert await outbox_rows(database_url) == []


async def test_the_sql_functions_check_the_id_and_name_the_field(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        row_id = await conn.fetchval(
            "SELECT outbox.enqueue_track_by_tidal_id('42', 'Song', 'Artist', 'Album')"
        )
        assert (
            await conn.fetchval("SELECT tidal_id FROM outbox.messages WHERE id = $1", row_id)
            == "42"
        )
        with pytest.raises(asyncpg.DataError, match="enqueue_track: tidal_track_id must be"):
            await conn.fetchval(
                "SELECT outbox.enqueue_track_by_tidal_id('4 2', 'Song', 'Artist', 'Album')"
            )
        with pytest.raises(asyncpg.DataError, match=r"tracks\[0\]\.tidalTrackId must be"):
            await conn.fetchval(
                "SELECT outbox.enqueue_album('A', 'B', $1::jsonb)",
                json.dumps([{"title": "x", "tidalTrackId": 42}]),
            )
        # The existing signatures still work unchanged.
        await conn.fetchval("SELECT outbox.enqueue_track('USRC17607839', 'S', 'A', 'B')")
        await conn.fetchval(
            "SELECT outbox.enqueue_album('A', 'B', $1::jsonb)",
            json.dumps([{"isrc": "USRC17607839", "title": "x"}]),
        )
    finally:
        await conn.close()


async def test_both_helpers_take_a_tidal_track_id(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            first = await asyncpg_helpers.enqueue_track(
                conn, tidal_track_id="1001", title="S", artist="A", album="B"
            )
            second = await asyncpg_helpers.enqueue_track(
                conn, isrc="USRC17607839", title="S", artist="A", album="B"
            )
        with pytest.raises(TypeError, match="tidal_track_id must be a str"):
            await asyncpg_helpers.enqueue_track(
                conn,
                tidal_track_id=1001,  # type: ignore[arg-type]
                title="S",
                artist="A",
                album="B",
            )
    finally:
        await conn.close()
    with psycopg.connect(database_url) as sync_conn:
        third = psycopg_helpers.enqueue_track(
            sync_conn, tidal_track_id="1002", title="S", artist="A", album="B"
        )
    async with await psycopg.AsyncConnection.connect(database_url) as async_conn:
        fourth = await psycopg_helpers.enqueue_track_async(
            async_conn, tidal_track_id="1003", isrc=None, title="S", artist="A", album="B"
        )
    rows = {row["id"]: row for row in await outbox_rows(database_url)}
    assert [rows[i]["tidal_id"] for i in (first, second, third, fourth)] == [
        "1001",
        None,
        "1002",
        "1003",
    ]
