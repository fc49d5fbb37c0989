"""The library write API through real HTTP, against a real PostgreSQL.

Every error case checks that nothing was written; the outage cases use real refused
connections (a closed port, a proxy that is stopped, a server that shuts down), never a mock.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from outbox_relay.apps.api import serve
from outbox_relay.http.write_api import API_METRICS, MAX_BODY_BYTES, create_app
from outbox_relay.testing.postgres import LocalPostgres
from outbox_relay.write.models import AlbumIn, TrackIn

PgQuery = Callable[..., list[tuple[Any, ...]]]
Client = TestClient[web.Request, web.Application]

TRACKS = "/v1/library/tracks"
ALBUMS = "/v1/library/albums"

TRACK: dict[str, Any] = {
    "isrc": "USRC17607839",
    "title": "Never Gonna Give You Up",
    "artist": "Rick Astley",
    "album": "Whenever You Need Somebody",
}
ALBUM: dict[str, Any] = {
    "title": "Abbey Road",
    "artist": "The Beatles",
    "artworkUrl": "https://img.example/abbey.jpg",
    "tracks": [{"isrc": f"GBAYE06016{n:02d}", "title": f"Track {n}"} for n in range(1, 13)],
}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(database_url))) as test_client:
        yield test_client


def counts(pg_query: PgQuery, dsn: str) -> tuple[int, int, int]:
    """(library.tracks, library.albums, outbox.messages)."""
    row = pg_query(
        dsn,
        "SELECT (SELECT count(*) FROM library.tracks), (SELECT count(*) FROM library.albums), "
        "(SELECT count(*) FROM outbox.messages)",
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


def closed_port() -> int:
    """A port nothing listens on: bound by us, then closed, so connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_port(dsn: str, port: int, password: str | None = None) -> str:
    parts = urllib.parse.urlsplit(dsn)
    user = parts.username or "postgres"
    auth = f"{user}:{password}" if password else user
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{port}"))


# -- writes ------------------------------------------------------------------------------------


async def test_us1_adding_a_track_writes_it_and_exactly_one_outbox_row(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    response = await client.post(TRACKS, json=TRACK)

    assert response.status == 201
    body = await response.json()
    assert set(body) == {"trackId", "outboxId"}
    library = pg_query(
        database_url,
        "SELECT id, isrc, title, artist, album, artwork_url, outbox_id FROM library.tracks",
    )
    assert library == [
        (
            body["trackId"],
            TRACK["isrc"],
            TRACK["title"],
            TRACK["artist"],
            TRACK["album"],
            None,
            body["outboxId"],
        )
    ]
    outbox = pg_query(
        database_url,
        "SELECT id, kind, isrc, title, artist, album, artwork_url, priority, force, status "
        "FROM outbox.messages",
    )
    assert outbox == [
        (
            body["outboxId"],
            "track",
            TRACK["isrc"],
            TRACK["title"],
            TRACK["artist"],
            TRACK["album"],
            None,
            None,
            False,
            "pending",
        )
    ]


async def test_a_track_with_every_field(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    track = {**TRACK, "artworkUrl": "http://img.example/a.png", "priority": 600, "force": True}

    response = await client.post(TRACKS, json=track)

    assert response.status == 201
    outbox_id = (await response.json())["outboxId"]
    assert pg_query(
        database_url,
        "SELECT artwork_url, priority, force FROM outbox.messages WHERE id = %s",
        (outbox_id,),
    ) == [("http://img.example/a.png", 600, True)]


@pytest.mark.parametrize("isrc", [None, "", "not-an-isrc", "  usrc17607839 "])
async def test_a_missing_or_invalid_isrc_is_not_an_input_error(
    isrc: str | None, client: Client, database_url: str, pg_query: PgQuery
) -> None:
    # The relay records such a track as skipped (missing_isrc / invalid_isrc); the library
    # write succeeds and keeps the ISRC as sent.
    response = await client.post(TRACKS, json={**TRACK, "isrc": isrc})

    assert response.status == 201
    assert pg_query(database_url, "SELECT isrc FROM outbox.messages") == [(isrc,)]
    assert pg_query(database_url, "SELECT isrc FROM library.tracks") == [(isrc,)]


async def test_us2_an_album_of_12_tracks_writes_one_album_outbox_row_with_12_tracks(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    response = await client.post(ALBUMS, json=ALBUM)

    assert response.status == 201
    body = await response.json()
    assert set(body) == {"albumId", "outboxId"}
    outbox = pg_query(
        database_url,
        "SELECT id, kind, album, artist, artwork_url, tracks, status FROM outbox.messages",
    )
    assert outbox == [
        (
            body["outboxId"],
            "album",
            ALBUM["title"],
            ALBUM["artist"],
            ALBUM["artworkUrl"],
            ALBUM["tracks"],
            "pending",
        )
    ]
    assert len(outbox[0][5]) == 12
    library = pg_query(
        database_url, "SELECT id, title, artist, artwork_url, tracks, outbox_id FROM library.albums"
    )
    assert library == [
        (
            body["albumId"],
            ALBUM["title"],
            ALBUM["artist"],
            ALBUM["artworkUrl"],
            ALBUM["tracks"],
            body["outboxId"],
        )
    ]
    assert counts(pg_query, database_url) == (0, 1, 1)


async def test_album_tracks_keep_only_the_keys_sent(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    tracks = [{"title": "A"}, {"isrc": None, "title": "B", "artist": "Guest"}]

    response = await client.post(ALBUMS, json={"title": "T", "artist": "X", "tracks": tracks})

    assert response.status == 201
    assert pg_query(database_url, "SELECT tracks FROM outbox.messages") == [
        ([{"title": "A"}, {"title": "B", "artist": "Guest"}],)
    ]


async def test_an_album_without_tracks_is_accepted_as_sql_accepts_it(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    # The relay records it as skipped (no_tracks) and logs it; it is not an input error.
    response = await client.post(ALBUMS, json={"title": "T", "artist": "X", "tracks": []})

    assert response.status == 201
    assert counts(pg_query, database_url) == (0, 1, 1)


async def test_concurrent_writes_each_get_their_own_linked_rows(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    responses = await asyncio.gather(
        *(client.post(TRACKS, json={**TRACK, "title": f"Song {n}"}) for n in range(30))
    )

    assert [r.status for r in responses] == [201] * 30
    linked = pg_query(
        database_url,
        "SELECT count(*) FROM library.tracks t JOIN outbox.messages m ON m.id = t.outbox_id "
        "WHERE m.title = t.title",
    )
    assert linked == [(30,)]
    assert counts(pg_query, database_url) == (30, 0, 30)


async def test_writes_are_logged_with_constant_event_names(client: Client) -> None:
    with capture_logs() as logs:
        assert (await client.post(TRACKS, json=TRACK)).status == 201
        assert (await client.post(ALBUMS, json=ALBUM)).status == 201
        assert (await client.post(TRACKS, json={**TRACK, "title": ""})).status == 422

    events = {entry["event"]: entry for entry in logs}
    assert events["library_track_added"]["isrc"] == TRACK["isrc"]
    assert events["library_track_added"]["trackTitle"] == TRACK["title"]
    assert events["library_album_added"]["total_tracks"] == 12
    assert events["validation_error"]["fields"] == ["title: must be a non-empty string"]


# -- invalid input: 422 naming each field, nothing written --------------------------------------

INVALID: list[tuple[str, str, Any, dict[str, str]]] = [
    # (case id, path, JSON body, {field: text its rule must contain})
    (
        "track_empty_object",
        TRACKS,
        {},
        {"title": "required", "artist": "required", "album": "required"},
    ),
    ("blank_title", TRACKS, {**TRACK, "title": " \t "}, {"title": "non-empty string"}),
    ("title_1001", TRACKS, {**TRACK, "title": "x" * 1001}, {"title": "at most 1000"}),
    ("album_1001", TRACKS, {**TRACK, "album": "é" * 1001}, {"album": "at most 1000"}),
    ("nul_in_artist", TRACKS, {**TRACK, "artist": "a\x00b"}, {"artist": "NUL"}),
    ("title_number", TRACKS, {**TRACK, "title": 7}, {"title": "must be a string"}),
    ("title_null", TRACKS, {**TRACK, "title": None}, {"title": "must be a string"}),
    ("priority_string", TRACKS, {**TRACK, "priority": "5"}, {"priority": "integer"}),
    ("priority_bool", TRACKS, {**TRACK, "priority": True}, {"priority": "integer"}),
    ("priority_float", TRACKS, {**TRACK, "priority": 1.5}, {"priority": "integer"}),
    ("priority_601", TRACKS, {**TRACK, "priority": 601}, {"priority": "-600 to 600"}),
    ("priority_-601", TRACKS, {**TRACK, "priority": -601}, {"priority": "-600 to 600"}),
    ("priority_huge", TRACKS, {**TRACK, "priority": 10**30}, {"priority": "-600 to 600"}),
    ("force_string", TRACKS, {**TRACK, "force": "yes"}, {"force": "boolean"}),
    ("force_null", TRACKS, {**TRACK, "force": None}, {"force": "boolean"}),
    ("artwork_ftp", TRACKS, {**TRACK, "artworkUrl": "ftp://x/y"}, {"artworkUrl": "http(s) URL"}),
    ("artwork_space", TRACKS, {**TRACK, "artworkUrl": "http://a b"}, {"artworkUrl": "URL"}),
    ("artwork_empty", TRACKS, {**TRACK, "artworkUrl": ""}, {"artworkUrl": "URL"}),
    ("artwork_no_host", TRACKS, {**TRACK, "artworkUrl": "https:///x"}, {"artworkUrl": "URL"}),
    (
        "artwork_2049",
        TRACKS,
        {**TRACK, "artworkUrl": "https://" + "a" * 2041},
        {"artworkUrl": "at most 2048"},
    ),
    ("isrc_number", TRACKS, {**TRACK, "isrc": 123}, {"isrc": "must be a string"}),
    ("isrc_65", TRACKS, {**TRACK, "isrc": "I" * 65}, {"isrc": "at most 64"}),
    ("unknown_field", TRACKS, {**TRACK, "genre": "pop"}, {"genre": "not an allowed field"}),
    (
        "snake_case_field",
        TRACKS,
        {**TRACK, "artwork_url": "https://x.example/a.png"},
        {"artwork_url": "not an allowed field"},
    ),
    (
        "many_at_once",
        TRACKS,
        {"title": "", "artist": 5, "album": None, "priority": 700, "extra": 1},
        {
            "title": "non-empty",
            "artist": "string",
            "album": "string",
            "priority": "-600",
            "extra": "not an allowed",
        },
    ),
    ("array_body", TRACKS, [TRACK], {"body": "JSON object"}),
    ("string_body", TRACKS, "a track", {"body": "JSON object"}),
    ("null_body", ALBUMS, None, {"body": "JSON object"}),
    (
        "album_track_without_title",
        ALBUMS,
        {**ALBUM, "tracks": [*ALBUM["tracks"][:3], {"isrc": "GBAYE0601699"}]},
        {"tracks[3].title": "required"},
    ),
    (
        "album_several_bad_tracks",
        ALBUMS,
        {
            **ALBUM,
            "tracks": [
                {"title": ""},
                {"title": "ok", "isrc": 5},
                {"title": "ok", "artist": "y" * 1001},
                "Come Together",
                {"title": "ok", "bpm": 120},
            ],
        },
        {
            "tracks[0].title": "non-empty",
            "tracks[1].isrc": "string",
            "tracks[2].artist": "at most 1000",
            "tracks[3]": "JSON object",
            "tracks[4].bpm": "not an allowed field",
        },
    ),
    ("album_tracks_string", ALBUMS, {**ALBUM, "tracks": "[]"}, {"tracks": "array"}),
    ("album_tracks_object", ALBUMS, {**ALBUM, "tracks": {"title": "x"}}, {"tracks": "array"}),
    (
        "album_10001_tracks",
        ALBUMS,
        {**ALBUM, "tracks": [{"title": "t"}] * 10_001},
        {"tracks": "at most 10000"},
    ),
    ("album_missing_fields", ALBUMS, {"artist": "X"}, {"title": "required", "tracks": "required"}),
    ("album_priority", ALBUMS, {**ALBUM, "priority": 1}, {"priority": "not an allowed field"}),
    (
        "album_track_nul_title",
        ALBUMS,
        {**ALBUM, "tracks": [{"title": "Come\x00Together"}]},
        {"tracks[0].title": "NUL"},
    ),
]


async def _assert_rejected(
    client: Client,
    path: str,
    data: bytes,
    expected: dict[str, str],
    database_url: str,
    pg_query: PgQuery,
    content_type: str = "application/json",
) -> None:
    # One write first, so "nothing written" is checked against a database that is not empty.
    assert (await client.post(TRACKS, json=TRACK)).status == 201
    before = counts(pg_query, database_url)

    response = await client.post(path, data=data, headers={"Content-Type": content_type})

    assert response.status == 422, await response.text()
    body = await response.json()
    assert body["error"] == "validation_error"
    rules = {item["field"]: item["rule"] for item in body["fields"]}
    assert set(rules) == set(expected), body
    for field, text in expected.items():
        assert text in rules[field], (field, rules[field])
    assert counts(pg_query, database_url) == before


@pytest.mark.parametrize(
    ("path", "body", "expected"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
async def test_invalid_input_is_422_naming_each_field_and_writes_nothing(
    path: str,
    body: Any,
    expected: dict[str, str],
    client: Client,
    database_url: str,
    pg_query: PgQuery,
) -> None:
    await _assert_rejected(
        client, path, json.dumps(body).encode(), expected, database_url, pg_query
    )


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"", "must be valid JSON"),
        (b"{", "must be valid JSON"),
        (b'{"title": "a",}', "must be valid JSON"),
        (b"\xff\xfe{}", "must be valid JSON"),
        (b'{"title": "\\ud800"}', "must be valid JSON"),
        # The parser reads NaN as a number: not an object either way.
        (b"NaN", "must be a JSON object"),
    ],
    ids=["empty", "truncated", "trailing_comma", "not_utf8", "lone_surrogate", "nan"],
)
async def test_bad_json_is_422_on_the_body(
    data: bytes, rule: str, client: Client, database_url: str, pg_query: PgQuery
) -> None:
    await _assert_rejected(client, TRACKS, data, {"body": rule}, database_url, pg_query)


async def test_a_body_over_the_limit_is_413_json_and_writes_nothing(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    huge = orjson.dumps({**TRACK, "title": "x" * (MAX_BODY_BYTES + 1)})

    response = await client.post(TRACKS, data=huge, headers={"Content-Type": "application/json"})

    assert response.status == 413
    assert response.content_type == "application/json"
    assert await response.json() == {
        "error": "payload_too_large",
        "detail": f"the body must be at most {MAX_BODY_BYTES} bytes",
    }
    assert counts(pg_query, database_url) == (0, 0, 0)


def test_the_body_limit_and_the_413_are_in_the_openapi_document() -> None:
    from outbox_relay.http.write_api import openapi_document

    for path in (TRACKS, ALBUMS):
        operation = openapi_document()["paths"][path]["post"]
        assert operation["requestBody"]["x-max-body-bytes"] == MAX_BODY_BYTES
        assert str(MAX_BODY_BYTES) in operation["requestBody"]["description"]
        assert set(operation["responses"]) >= {"405", "413", "415", "422", "503"}


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        ("GET", "/nowhere", 404, {"error": "not_found", "detail": "no route for GET /nowhere"}),
        (
            "GET",
            TRACKS,
            405,
            {
                "error": "method_not_allowed",
                "detail": f"GET is not allowed on {TRACKS}; allowed: POST",
            },
        ),
        (
            "DELETE",
            "/readyz",
            405,
            {
                "error": "method_not_allowed",
                "detail": "DELETE is not allowed on /readyz; allowed: GET, HEAD",
            },
        ),
    ],
    ids=["404", "405_post_route", "405_get_route"],
)
async def test_routing_errors_are_json(
    method: str, path: str, status: int, expected: dict[str, str], client: Client
) -> None:
    response = await client.request(method, path)

    assert response.status == status
    assert response.content_type == "application/json"
    assert await response.json() == expected
    if status == 405:
        assert response.headers["Allow"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "application/json; charset=latin-1",
    ],
)
async def test_a_body_that_is_not_json_is_415(
    content_type: str, client: Client, database_url: str, pg_query: PgQuery
) -> None:
    response = await client.post(
        TRACKS, data=orjson.dumps(TRACK), headers={"Content-Type": content_type}
    )

    assert response.status == 415
    assert (await response.json())["error"] == "unsupported_media_type"
    assert counts(pg_query, database_url) == (0, 0, 0)


async def test_json_with_a_utf8_charset_is_accepted(client: Client) -> None:
    response = await client.post(
        TRACKS,
        data=orjson.dumps(TRACK),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )

    assert response.status == 201


async def test_a_sql_validation_error_that_slips_past_the_models_is_422(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    # As if a newer migration tightened a rule the models do not know yet: the SQL side raises
    # with its usual message shape and SQLSTATE, and the API relays it as a field error.
    pg_query(
        database_url,
        """
        CREATE FUNCTION test_stricter() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.title = 'Forbidden' THEN
                RAISE EXCEPTION 'enqueue_track: title must not be Forbidden'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF NEW.artwork_url LIKE '%%.bmp' THEN
                RAISE EXCEPTION 'enqueue_track: artwork_url must not point at a BMP'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            RETURN NEW;
        END $$
        """,
    )
    pg_query(
        database_url,
        "CREATE TRIGGER stricter BEFORE INSERT ON outbox.messages "
        "FOR EACH ROW EXECUTE FUNCTION test_stricter()",
    )

    first = await client.post(TRACKS, json={**TRACK, "title": "Forbidden"})
    second = await client.post(TRACKS, json={**TRACK, "artworkUrl": "https://x.example/a.bmp"})

    assert first.status == 422
    assert await first.json() == {
        "error": "validation_error",
        "fields": [{"field": "title", "rule": "must not be Forbidden"}],
    }
    assert second.status == 422
    assert (await second.json())["fields"] == [
        {"field": "artworkUrl", "rule": "must not point at a BMP"}
    ]
    assert counts(pg_query, database_url) == (0, 0, 0)


async def test_a_class_22_error_of_the_library_insert_is_422_and_rolls_back_the_outbox_row(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    pg_query(
        database_url,
        """
        CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'library refuses this album' USING ERRCODE = 'data_exception';
        END $$
        """,
    )
    pg_query(
        database_url,
        "CREATE TRIGGER refuse BEFORE INSERT ON library.albums "
        "FOR EACH ROW EXECUTE FUNCTION test_refuse()",
    )

    response = await client.post(ALBUMS, json=ALBUM)

    assert response.status == 422
    assert (await response.json())["fields"] == [
        {"field": "body", "rule": "library refuses this album"}
    ]
    assert counts(pg_query, database_url) == (0, 0, 0)


async def test_a_failing_library_insert_never_leaves_its_outbox_row(
    client: Client, database_url: str, pg_query: PgQuery
) -> None:
    # The outbox row is inserted first; the library insert then fails. One transaction: the
    # outbox row goes too, so the relay never sends an event for a track that is not there.
    pg_query(
        database_url,
        """
        CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'disk on fire';
        END $$
        """,
    )
    pg_query(
        database_url,
        "CREATE TRIGGER fail BEFORE INSERT ON library.tracks "
        "FOR EACH ROW EXECUTE FUNCTION test_fail()",
    )

    with capture_logs() as logs:
        response = await client.post(TRACKS, json=TRACK)

    assert response.status == 500
    assert await response.json() == {"error": "internal_error"}
    assert [entry["event"] for entry in logs] == ["request_failed"]
    assert counts(pg_query, database_url) == (0, 0, 0)


# -- the database unavailable: 503, then recovery without a restart -----------------------------


class TcpProxy:
    """Forwards a local port to PostgreSQL; stopping it refuses and drops every connection."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._writers.clear()
        self._tasks.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()


async def _assert_unavailable(client: Client) -> None:
    for path, body in ((TRACKS, TRACK), (ALBUMS, ALBUM)):
        response = await client.post(path, json=body)
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert await response.json() == {
            "error": "database_unavailable",
            "detail": "the database cannot be reached now; nothing was written, retry",
        }
    ready = await client.get("/readyz")
    assert ready.status == 503
    # It says why.
    assert (await ready.json())["reason"].startswith(
        ("the database cannot be reached: ", "the database did not answer within 1 s")
    )
    assert (await client.get("/healthz")).status == 200


async def test_refused_connections_are_503_until_the_database_is_reachable(
    database_url: str, pg_query: PgQuery
) -> None:
    password = "hunter2-never-logged"
    port = closed_port()
    target_port = urllib.parse.urlsplit(database_url).port
    assert target_port is not None
    proxy = TcpProxy(port, target_port)

    with capture_logs() as logs:
        # The API starts although nothing listens on the database's port.
        async with TestClient(
            TestServer(create_app(with_port(database_url, port, password)))
        ) as client:
            await _assert_unavailable(client)
            assert counts(pg_query, database_url) == (0, 0, 0)

            await proxy.start()  # the database becomes reachable: no restart needed
            try:
                assert (await client.get("/readyz")).status == 200
                assert (await client.post(TRACKS, json=TRACK)).status == 201
                assert counts(pg_query, database_url) == (1, 0, 1)
            finally:
                await proxy.stop()  # and goes away again, dropping the pool's connections

            await _assert_unavailable(client)
            assert counts(pg_query, database_url) == (1, 0, 1)

            await proxy.start()
            try:
                assert (await client.post(ALBUMS, json=ALBUM)).status == 201
                assert counts(pg_query, database_url) == (1, 1, 2)
            finally:
                await proxy.stop()

    unavailable = [entry for entry in logs if entry["event"] == "database_unavailable"]
    assert len(unavailable) == 4
    assert all(password not in repr(entry) for entry in logs)


@pytest.mark.slow
async def test_a_server_shutting_down_is_503_and_the_api_recovers_after_its_restart(
    restartable_pg: LocalPostgres, pg_query: PgQuery
) -> None:
    dsn = restartable_pg.dsn
    async with TestClient(TestServer(create_app(dsn))) as client:
        assert (await client.post(TRACKS, json=TRACK)).status == 201  # the pool holds a connection

        await asyncio.to_thread(restartable_pg.stop, "fast")
        await _assert_unavailable(client)

        await asyncio.to_thread(restartable_pg.start)
        assert (await client.get("/readyz")).status == 200
        assert (await client.post(TRACKS, json=TRACK)).status == 201

    assert counts(pg_query, dsn) == (2, 0, 2)


@pytest.mark.slow
async def test_sessions_killed_at_any_instant_are_503_never_500_nor_half_written(
    database_url: str, pg_query: PgQuery
) -> None:
    """The API's sessions terminated by the server at random instants of a write (a failover,
    an operator's pg_terminate_backend): each answer is 201 or 503, and every library row has
    its outbox row. asyncpg reports some of these kills as an InternalClientError (its protocol
    lost its state), which must read as "database unavailable" like any other lost session.
    """
    admin = await asyncpg.connect(database_url)
    statuses: Counter[int] = Counter()
    try:
        async with TestClient(TestServer(create_app(database_url))) as client:
            for n in range(200):
                path, body = (TRACKS, TRACK) if n % 4 else (ALBUMS, ALBUM)
                request = asyncio.create_task(client.post(path, json=body))
                await asyncio.sleep(random.uniform(0, 0.006))
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'outbox-relay-api' AND datname = current_database()"
                )
                response = await request
                statuses[response.status] += 1
                assert response.status in (201, 503), await response.text()
    finally:
        await admin.close()

    print(f"FIGURE api_sessions_killed.statuses={dict(statuses)}")
    assert statuses[503] > 20, statuses  # the kills did land mid-request
    orphans = pg_query(
        database_url,
        "SELECT (SELECT count(*) FROM library.tracks t WHERE NOT EXISTS "
        "        (SELECT 1 FROM outbox.messages m WHERE m.id = t.outbox_id)),"
        "       (SELECT count(*) FROM library.albums a WHERE NOT EXISTS "
        "        (SELECT 1 FROM outbox.messages m WHERE m.id = a.outbox_id)),"
        "       (SELECT count(*) FROM outbox.messages m WHERE NOT EXISTS "
        "        (SELECT 1 FROM library.tracks t WHERE t.outbox_id = m.id) AND NOT EXISTS "
        "        (SELECT 1 FROM library.albums a WHERE a.outbox_id = m.id))",
    )[0]
    assert orphans == (0, 0, 0)
    tracks, albums, _ = counts(pg_query, database_url)
    assert tracks + albums >= statuses[201]  # a 503 may hide a commit; a 201 never lies


async def test_readiness_and_health(client: Client) -> None:
    health = await client.get("/healthz")
    ready = await client.get("/readyz")

    assert (health.status, await health.json()) == (200, {"status": "ok"})
    assert (ready.status, await ready.json()) == (200, {"status": "ready"})


async def test_an_injected_pool_is_used_and_left_open(database_url: str) -> None:
    import asyncpg

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with TestClient(TestServer(create_app(pool=pool))) as client:
            assert (await client.post(TRACKS, json=TRACK)).status == 201
        assert await pool.fetchval("SELECT count(*) FROM library.tracks") == 1
    finally:
        await pool.close()


def test_create_app_needs_a_dsn_or_a_pool() -> None:
    from outbox_relay.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        create_app()


# -- OpenAPI ------------------------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_openapi_describes_both_endpoints_consistently_with_the_models(
    client: Client,
) -> None:
    response = await client.get("/openapi.json")

    assert response.status == 200
    assert response.content_type == "application/json"
    document = orjson.loads(await response.read())
    assert document["openapi"] == "3.1.0"
    for path in (TRACKS, ALBUMS):
        operation = document["paths"][path]["post"]
        assert set(operation["responses"]) == {"201", "405", "413", "415", "422", "503"}
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        assert operation["requestBody"]["required"] is True
    # Every reference resolves inside the document.
    for ref in _refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    schemas = document["components"]["schemas"]
    # The schemas are the validating models' own, so the two cannot drift apart.
    template = "#/components/schemas/{model}"
    assert schemas["TrackIn"] == TrackIn.model_json_schema(ref_template=template)
    album = AlbumIn.model_json_schema(ref_template=template)
    assert schemas["AlbumTrackIn"] == album.pop("$defs")["AlbumTrackIn"]
    assert schemas["AlbumIn"] == album
    assert set(schemas["TrackIn"]["properties"]) == {
        "isrc",
        "tidalTrackId",
        "title",
        "artist",
        "album",
        "artworkUrl",
        "priority",
        "force",
    }
    assert schemas["TrackIn"]["additionalProperties"] is False
    assert schemas["AlbumIn"]["properties"]["tracks"]["maxItems"] == 10_000
    assert set(schemas["ValidationErrorBody"]["required"]) == {"error", "fields"}


async def test_readyz_answers_503_within_its_deadline_when_the_database_never_answers() -> None:
    # A server that accepts connections and never speaks: a hung database, not a refused one.
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        app = create_app(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        async with TestClient(TestServer(app)) as client:
            loop = asyncio.get_running_loop()
            began = loop.time()
            response = await client.get("/readyz")
            elapsed = loop.time() - began
    finally:
        for writer in accepted:
            writer.transport.abort()
        server.close()
        await server.wait_closed()

    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert accepted  # the probe did reach the "database"
    assert 0.9 <= elapsed < 3.0


async def test_serve_runs_until_cancelled(database_url: str, pg_query: PgQuery) -> None:
    port = closed_port()
    started = asyncio.Event()
    task = asyncio.create_task(serve(database_url, "127.0.0.1", port, started=started))
    try:
        async with asyncio.timeout(10):
            await started.wait()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async with session.post(TRACKS, json=TRACK) as response:
                assert response.status == 201
            async with session.get("/openapi.json") as response:
                assert response.status == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert counts(pg_query, database_url) == (1, 0, 1)
    # The socket is closed: the port refuses connections again.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_metrics_count_and_time_every_request_by_route_and_status_class(
    client: Client,
) -> None:
    """What Prometheus scrapes from the write API: requests by route and status class (bounded:
    an unknown path is ``unmatched``), and their durations."""

    def sample(name: str, **labels: str) -> float:
        value = client.app[API_METRICS].registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    track = {"isrc": "USMET0000001", "title": "T", "artist": "A", "album": "B"}
    assert (await client.post("/v1/library/tracks", json=track)).status == 201
    assert (await client.post("/v1/library/tracks", json={"isrc": 7})).status == 422
    assert (await client.get("/nowhere/12345")).status == 404
    assert (await client.get("/v1/library/tracks")).status == 405

    requests = "outbox_relay_api_requests_total"
    tracks = "/v1/library/tracks"
    assert sample(requests, route=tracks, status_class="2xx") == 1
    assert sample(requests, route=tracks, status_class="4xx") == 1  # the 422
    assert sample(requests, route="unmatched", status_class="4xx") == 2  # the 404 and the 405
    assert sample("outbox_relay_api_request_duration_seconds_count", route=tracks) == 2

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert (
        'outbox_relay_api_requests_total{route="/v1/library/tracks",status_class="2xx"} 1.0' in text
    )
    assert "nowhere" not in text  # paths never become label values
    assert "_created" not in text
