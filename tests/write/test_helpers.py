"""The enqueue helpers for asyncpg and psycopg (sync and async), against a real PostgreSQL.

Every helper runs inside the caller's transaction together with a library row, the way an
application uses it: committed → the outbox row exists with the right columns; rolled back, or
aborted by a validation error → neither row exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import set_json_dumps

from outbox_relay.db.connection import NOTIFY_CHANNEL
from outbox_relay.db.queries import QUERIES, psycopg_form
from outbox_relay.write import asyncpg as pg_async
from outbox_relay.write import psycopg as pg_psycopg

PgQuery = Callable[..., list[tuple[Any, ...]]]

TRACK: dict[str, Any] = {
    "isrc": "USRC17607839",
    "title": "Never Gonna Give You Up",
    "artist": "Rick Astley",
    "album": "Whenever You Need Somebody",
}
TRACK_FULL: dict[str, Any] = {
    **TRACK,
    "priority": -42,
    "force": True,
    "artwork_url": "https://img.example/cover.jpg",
}
ALBUM: dict[str, Any] = {
    "title": "Abbey Road",
    "artist": "The Beatles",
    "tracks": [
        {"isrc": "GBAYE0601690", "title": "Come Together"},
        {"isrc": None, "title": "Something", "artist": "George Harrison"},
        {"title": "Octopus's Garden"},
    ],
    "artwork_url": "http://img.example/abbey.png",
}

OUTBOX_ROW = (
    "SELECT kind, isrc, title, artist, album, artwork_url, priority, force, tracks, status, "
    "parent_id FROM outbox.messages WHERE id = %s"
)


class Rollback(Exception):
    """Raised inside a transaction to roll it back on purpose."""


# -- one writer per driver: a library row and its outbox row, in one transaction ---------------


def library_row(kind: str, args: dict[str, Any], outbox_id: int) -> tuple[str, tuple[Any, ...]]:
    """The write API's statement (write.sql) and parameters for the library row of a write."""
    artwork_url = args.get("artwork_url")
    if kind == "track":
        return "insert_library_track", (
            args.get("isrc"),
            args["title"],
            args["artist"],
            args["album"],
            artwork_url,
            outbox_id,
        )
    tracks = orjson.dumps(args["tracks"]).decode()
    return "insert_library_album", (args["title"], args["artist"], artwork_url, tracks, outbox_id)


async def write_asyncpg(dsn: str, kind: str, args: dict[str, Any], rollback: bool) -> int:
    conn = await asyncpg.connect(dsn)
    outbox_id = 0
    try:
        async with conn.transaction():
            enqueue = pg_async.enqueue_track if kind == "track" else pg_async.enqueue_album
            outbox_id = await enqueue(conn, **args)
            name, params = library_row(kind, args, outbox_id)
            await conn.execute(QUERIES[name], *params)
            if rollback:
                raise Rollback
    except Rollback:
        pass
    finally:
        await conn.close()
    return outbox_id


async def write_psycopg(dsn: str, kind: str, args: dict[str, Any], rollback: bool) -> int:
    # The synchronous driver, called from the test's loop: each call is a quick local query.
    outbox_id = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            with conn.transaction():
                enqueue = pg_psycopg.enqueue_track if kind == "track" else pg_psycopg.enqueue_album
                outbox_id = enqueue(conn, **args)
                name, params = library_row(kind, args, outbox_id)
                conn.execute(psycopg_form(QUERIES[name]), params)
                if rollback:
                    raise Rollback
        except Rollback:
            pass
    return outbox_id


async def write_psycopg_async(dsn: str, kind: str, args: dict[str, Any], rollback: bool) -> int:
    outbox_id = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        try:
            async with conn.transaction():
                enqueue = (
                    pg_psycopg.enqueue_track_async
                    if kind == "track"
                    else pg_psycopg.enqueue_album_async
                )
                outbox_id = await enqueue(conn, **args)
                name, params = library_row(kind, args, outbox_id)
                await conn.execute(psycopg_form(QUERIES[name]), params)
                if rollback:
                    raise Rollback
        except Rollback:
            pass
    return outbox_id


Writer = Callable[[str, str, dict[str, Any], bool], Awaitable[int]]
WRITERS: dict[str, Writer] = {
    "asyncpg": write_asyncpg,
    "psycopg": write_psycopg,
    "psycopg_async": write_psycopg_async,
}
# The error class each driver raises for a server-side error of SQLSTATE class 22.
DATA_ERRORS: dict[str, type[BaseException]] = {
    "asyncpg": asyncpg.exceptions.DataError,
    "psycopg": psycopg.DataError,
    "psycopg_async": psycopg.DataError,
}


@pytest.fixture(params=sorted(WRITERS))
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def counts(pg_query: PgQuery, dsn: str) -> tuple[int, int, int]:
    row = pg_query(
        dsn,
        "SELECT (SELECT count(*) FROM outbox.messages), (SELECT count(*) FROM library.tracks), "
        "(SELECT count(*) FROM library.albums)",
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


# -- committed and rolled back -----------------------------------------------------------------


@pytest.mark.parametrize("args", [TRACK, TRACK_FULL], ids=["minimal", "all_arguments"])
async def test_committed_track_writes_its_outbox_row(
    driver: str, args: dict[str, Any], database_url: str, pg_query: PgQuery
) -> None:
    outbox_id = await WRITERS[driver](database_url, "track", args, False)

    rows = pg_query(database_url, OUTBOX_ROW, (outbox_id,))
    assert rows == [
        (
            "track",
            args.get("isrc"),
            args["title"],
            args["artist"],
            args["album"],
            args.get("artwork_url"),
            args.get("priority"),
            args.get("force", False),
            None,
            "pending",
            None,
        )
    ]
    linked = pg_query(database_url, "SELECT outbox_id FROM library.tracks")
    assert linked == [(outbox_id,)]


async def test_committed_album_writes_one_outbox_row_with_its_tracks(
    driver: str, database_url: str, pg_query: PgQuery
) -> None:
    outbox_id = await WRITERS[driver](database_url, "album", ALBUM, False)

    rows = pg_query(database_url, OUTBOX_ROW, (outbox_id,))
    # An album row keeps the album title in `album` and its tracks as given; no isrc, no title.
    assert rows == [
        (
            "album",
            None,
            None,
            ALBUM["artist"],
            ALBUM["title"],
            ALBUM["artwork_url"],
            None,
            False,
            ALBUM["tracks"],
            "pending",
            None,
        )
    ]
    assert counts(pg_query, database_url) == (1, 0, 1)


@pytest.mark.parametrize("kind", ["track", "album"])
async def test_rolled_back_write_leaves_no_outbox_row(
    driver: str, kind: str, database_url: str, pg_query: PgQuery
) -> None:
    outbox_id = await WRITERS[driver](database_url, kind, TRACK if kind == "track" else ALBUM, True)

    assert outbox_id > 0  # the helper did insert, inside the transaction that rolled back
    assert counts(pg_query, database_url) == (0, 0, 0)


# -- hostile input: the SQL functions name the field, the caller's transaction decides --------

LONG = "x" * 1001
HOSTILE: list[tuple[str, str, dict[str, Any], str]] = [
    # (case id, kind, arguments, text the error must contain)
    ("huge_title", "track", {**TRACK, "title": LONG}, "title must be at most 1000 characters"),
    ("blank_artist", "track", {**TRACK, "artist": "   "}, "artist must be a non-empty string"),
    ("huge_isrc", "track", {**TRACK, "isrc": "I" * 65}, "isrc must be at most 64 characters"),
    ("priority_601", "track", {**TRACK, "priority": 601}, "priority must be an integer from -600"),
    ("priority_-601", "track", {**TRACK, "priority": -601}, "priority must be an integer"),
    ("ftp_artwork", "track", {**TRACK, "artwork_url": "ftp://x/y"}, "artwork_url must be"),
    (
        "tracks_object",
        "album",
        {**ALBUM, "tracks": {"title": "not a list"}},
        "tracks must be a JSON array (got object)",
    ),
    (
        "tracks_string",
        "album",
        {**ALBUM, "tracks": '[{"title": "encoded twice"}]'},
        "tracks must be a JSON array (got string)",
    ),
    (
        "track_without_title",
        "album",
        {**ALBUM, "tracks": [{"isrc": "GBAYE0601690"}]},
        "tracks[0].title must be a non-empty string",
    ),
    (
        "track_blank_title",
        "album",
        {**ALBUM, "tracks": [{"title": "ok"}, {"title": " "}]},
        "tracks[1].title must be a non-empty string",
    ),
    (
        "track_not_an_object",
        "album",
        {**ALBUM, "tracks": [{"title": "ok"}, "Come Together"]},
        "tracks[1] must be an object",
    ),
    (
        "track_isrc_number",
        "album",
        {**ALBUM, "tracks": [{"title": "ok", "isrc": 42}]},
        "tracks[0].isrc must be a string or null",
    ),
    (
        "too_many_tracks",
        "album",
        {**ALBUM, "tracks": [{"title": "t"}] * 10_001},
        "tracks must hold at most 10000 tracks",
    ),
]


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
async def test_invalid_arguments_raise_naming_the_field_and_write_nothing(
    driver: str,
    kind: str,
    args: dict[str, Any],
    message: str,
    database_url: str,
    pg_query: PgQuery,
) -> None:
    with pytest.raises(DATA_ERRORS[driver]) as raised:
        await WRITERS[driver](database_url, kind, args, False)

    assert message in str(raised.value)
    assert counts(pg_query, database_url) == (0, 0, 0)


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("track", {**TRACK, "title": "Never\x00Gonna"}),
        ("track", {**TRACK, "artwork_url": "https://img.example/\x00.png"}),
        ("album", {**ALBUM, "title": "Abbey\x00Road"}),
        ("album", {**ALBUM, "tracks": [{"title": "Come\x00Together"}]}),
    ],
    ids=["track_title", "artwork_url", "album_title", "album_track_title"],
)
async def test_nul_byte_is_refused_by_the_driver_or_postgresql(
    driver: str, kind: str, args: dict[str, Any], database_url: str, pg_query: PgQuery
) -> None:
    # PostgreSQL text cannot hold NUL. psycopg refuses it before sending, asyncpg's text is
    # refused by the server ("invalid byte sequence"), and in jsonb "\u0000" is refused by the
    # server too: always a DataError, never a truncated string.
    with pytest.raises(DATA_ERRORS[driver]):
        await WRITERS[driver](database_url, kind, args, False)

    assert counts(pg_query, database_url) == (0, 0, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({**TRACK, "priority": True}, "priority must be an int or None, not bool"),
        ({**TRACK, "priority": "5"}, "priority must be an int or None, not str"),
        ({**TRACK, "force": "yes"}, "force must be a bool, not str"),
    ],
    ids=["priority_bool", "priority_str", "force_str"],
)
async def test_values_sql_would_coerce_are_refused_before_sending(
    driver: str, args: dict[str, Any], message: str, database_url: str, pg_query: PgQuery
) -> None:
    # SQL would turn true into priority 1 and 'yes' into force: silently wrong, so refused.
    with pytest.raises(TypeError, match=message):
        await WRITERS[driver](database_url, "track", args, False)

    assert counts(pg_query, database_url) == (0, 0, 0)


async def test_tracks_that_are_not_json_raise_naming_tracks(
    driver: str, database_url: str, pg_query: PgQuery
) -> None:
    with pytest.raises(TypeError, match=r"enqueue_album: tracks must be a JSON array"):
        await WRITERS[driver](
            database_url, "album", {**ALBUM, "tracks": [{"title": object()}]}, False
        )

    assert counts(pg_query, database_url) == (0, 0, 0)


async def test_invalid_json_text_given_to_the_sql_function_is_refused(
    database_url: str, pg_query: PgQuery
) -> None:
    # A caller writing SQL by hand: the jsonb cast refuses the text before the function runs,
    # so PostgreSQL's message names the JSON, not the argument.
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.exceptions.InvalidTextRepresentationError, match="json"):
            async with conn.transaction():
                await conn.fetchval(
                    "SELECT outbox.enqueue_album('t', 'a', $1::text::jsonb)", '[{"title": '
                )
        with pytest.raises(asyncpg.exceptions.InvalidParameterValueError, match="tracks must"):
            await conn.fetchval("SELECT outbox.enqueue_album('t', 'a', 'null'::jsonb)")
    finally:
        await conn.close()
    assert counts(pg_query, database_url) == (0, 0, 0)


async def test_a_validation_error_aborts_the_callers_transaction(
    database_url: str, pg_query: PgQuery
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        good = await pg_async.enqueue_track(conn, **TRACK)
        with pytest.raises(asyncpg.exceptions.InvalidParameterValueError):
            await pg_async.enqueue_track(conn, **{**TRACK, "priority": 601})
        # The transaction is aborted: nothing more runs in it, and it cannot commit.
        with pytest.raises(asyncpg.exceptions.InFailedSQLTransactionError):
            await conn.fetchval("SELECT 1")
        await transaction.rollback()
    finally:
        await conn.close()
    assert good > 0
    assert counts(pg_query, database_url) == (0, 0, 0)


async def test_the_caller_may_recover_from_a_validation_error_with_a_savepoint(
    database_url: str, pg_query: PgQuery
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            good = await pg_async.enqueue_track(conn, **TRACK)
            with pytest.raises(asyncpg.exceptions.StringDataRightTruncationError):
                async with conn.transaction():  # a savepoint
                    await pg_async.enqueue_track(conn, **{**TRACK, "title": LONG})
    finally:
        await conn.close()
    assert pg_query(database_url, "SELECT id FROM outbox.messages") == [(good,)]


def test_psycopg_savepoint_recovery(database_url: str, pg_query: PgQuery) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        good = pg_psycopg.enqueue_track(conn, **TRACK)
        with pytest.raises(psycopg.errors.InvalidParameterValue), conn.transaction():
            pg_psycopg.enqueue_album(conn, **{**ALBUM, "tracks": [{}]})
    assert pg_query(database_url, "SELECT id FROM outbox.messages") == [(good,)]


# -- independence from the caller's connection settings ----------------------------------------


async def test_asyncpg_helper_ignores_a_jsonb_codec_the_caller_registered(
    database_url: str, pg_query: PgQuery
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        # With this codec, passing JSON text as a jsonb parameter would encode it twice
        # (a JSON string, not an array); the helper sends text and lets the server cast it.
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )
        async with conn.transaction():
            outbox_id = await pg_async.enqueue_album(conn, **ALBUM)
    finally:
        await conn.close()
    assert pg_query(
        database_url, "SELECT tracks FROM outbox.messages WHERE id = %s", (outbox_id,)
    ) == [(ALBUM["tracks"],)]


async def test_psycopg_helpers_ignore_the_callers_row_factory_and_json_dumps(
    database_url: str, pg_query: PgQuery
) -> None:
    def broken_dumps(_obj: Any) -> str:
        raise AssertionError("the helper must not use the connection's JSON dumps")

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        set_json_dumps(broken_dumps, context=conn)
        with conn.transaction():
            track_id = pg_psycopg.enqueue_track(conn, **TRACK)
            album_id = pg_psycopg.enqueue_album(conn, **ALBUM)
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row
    ) as aconn:
        set_json_dumps(broken_dumps, context=aconn)
        async with aconn.transaction():
            async_track_id = await pg_psycopg.enqueue_track_async(aconn, **TRACK)
            async_album_id = await pg_psycopg.enqueue_album_async(aconn, **ALBUM)

    rows = pg_query(database_url, "SELECT id, kind, tracks FROM outbox.messages ORDER BY id")
    assert rows == [
        (track_id, "track", None),
        (album_id, "album", ALBUM["tracks"]),
        (async_track_id, "track", None),
        (async_album_id, "album", ALBUM["tracks"]),
    ]


# -- one notification per transaction ---------------------------------------------------------

BULK_ENQUEUE = (
    "SELECT count(outbox.enqueue_track('USRC1760' || lpad(i::text, 4, '0'), 'Title ' || i, "
    "'Artist', 'Album')) FROM generate_series(1, 1000) AS i"
)


@pytest.mark.parametrize("how", ["one_statement", "one_transaction_of_helper_calls"])
async def test_a_thousand_rows_in_one_transaction_send_one_notification(
    how: str, database_url: str, pg_query: PgQuery
) -> None:
    payloads: list[str] = []
    marker_seen = asyncio.Event()

    def on_notification(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        payloads.append(payload)
        if payload == "marker":
            marker_seen.set()

    listener = await asyncpg.connect(database_url)
    writer = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(NOTIFY_CHANNEL, on_notification)
        async with writer.transaction():
            if how == "one_statement":
                assert await writer.fetchval(BULK_ENQUEUE) == 1000
            else:
                for i in range(1000):
                    await pg_async.enqueue_track(writer, **{**TRACK, "title": f"T{i}"})
        # Notifications reach a listener in commit order: once this later one has arrived,
        # every notification of the transaction above has too. No sleeping, no guessing.
        await writer.execute("SELECT pg_notify($1, 'marker')", NOTIFY_CHANNEL)
        async with asyncio.timeout(10):
            await marker_seen.wait()
    finally:
        await writer.close()
        await listener.close()

    assert payloads == ["", "marker"]
    assert pg_query(database_url, "SELECT count(*) FROM outbox.messages") == [(1000,)]
