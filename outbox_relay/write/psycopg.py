"""Enqueue helpers for applications that write their library with psycopg 3.

The same two operations as :mod:`outbox_relay.write.asyncpg`, for a synchronous
``psycopg.Connection`` (:func:`enqueue_track`, :func:`enqueue_album`) and an
``psycopg.AsyncConnection`` (:func:`enqueue_track_async`, :func:`enqueue_album_async`). They call
the SQL functions on the caller's connection, inside the caller's transaction, so the outbox row
commits or rolls back with the library write. SQL validation errors raise ``psycopg.DataError``
(SQLSTATE class 22, the message names the field) and abort the transaction.

Usage::

    from outbox_relay.write.psycopg import enqueue_track

    with conn.transaction():
        conn.execute("INSERT INTO my_library (isrc, title) VALUES (%s, %s)", (isrc, title))
        outbox_id = enqueue_track(conn, isrc=isrc, title=title, artist=artist, album=album)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from psycopg import AsyncConnection, Connection
from psycopg.rows import tuple_row

from outbox_relay.db.queries import QUERIES, psycopg_form
from outbox_relay.write.arguments import album_arguments, tidal_track_arguments, track_arguments

__all__ = ["enqueue_album", "enqueue_album_async", "enqueue_track", "enqueue_track_async"]

# The statements of outbox_relay/db/write.sql, the asyncpg helpers' very text with %s for $n.
ENQUEUE_TRACK_SQL: Final = psycopg_form(QUERIES["enqueue_track"])
ENQUEUE_ALBUM_SQL: Final = psycopg_form(QUERIES["enqueue_album"])
ENQUEUE_TRACK_BY_TIDAL_ID_SQL: Final = psycopg_form(QUERIES["enqueue_track_by_tidal_id"])


def _track_statement(
    isrc: str | None,
    title: str,
    artist: str,
    album: str,
    priority: int | None,
    force: bool,
    artwork_url: str | None,
    tidal_track_id: str | None,
) -> tuple[str, tuple[Any, ...]]:
    if tidal_track_id is not None:
        return ENQUEUE_TRACK_BY_TIDAL_ID_SQL, tidal_track_arguments(
            tidal_track_id, isrc, title, artist, album, priority, force, artwork_url
        )
    return ENQUEUE_TRACK_SQL, track_arguments(
        isrc, title, artist, album, priority, force, artwork_url
    )


def _outbox_id(row: tuple[Any, ...] | None) -> int:
    assert row is not None  # the function returns exactly one value
    return int(row[0])


def enqueue_track(
    conn: Connection[Any],
    *,
    isrc: str | None = None,
    title: str,
    artist: str,
    album: str,
    priority: int | None = None,
    force: bool = False,
    artwork_url: str | None = None,
    tidal_track_id: str | None = None,
) -> int:
    """Enqueues one ``track/ingestion.requested`` event in the caller's transaction.

    Returns the outbox row id::

        with conn.transaction():
            conn.execute("INSERT INTO my_tracks (isrc, title) VALUES (%s, %s)", (isrc, title))
            outbox_id = enqueue_track(conn, isrc=isrc, title=title, artist=artist, album=album)

    A missing or malformed ``isrc`` is accepted (the relay records the track as skipped); other
    invalid arguments raise ``psycopg.DataError`` naming the argument. A track known by its
    TIDAL id: ``tidal_track_id`` (digits, a ``str``), and the relay looks its ISRC up.
    """
    statement, params = _track_statement(
        isrc, title, artist, album, priority, force, artwork_url, tidal_track_id
    )
    # A cursor of our own with tuple rows: the connection's row factory may be dict_row.
    with conn.cursor(row_factory=tuple_row) as cursor:
        return _outbox_id(cursor.execute(statement, params).fetchone())


def enqueue_album(
    conn: Connection[Any],
    *,
    title: str,
    artist: str,
    tracks: Sequence[Mapping[str, Any]],
    artwork_url: str | None = None,
) -> int:
    """Enqueues one album in the caller's transaction; the relay fans it out, one event a track.

    ``tracks`` holds ``{"isrc": ..., "title": ..., "artist": ...}`` objects (``artist`` defaults
    to the album's). Returns the outbox row id::

        with conn.transaction():
            conn.execute("INSERT INTO my_albums (title) VALUES (%s)", (title,))
            outbox_id = enqueue_album(
                conn, title="Abbey Road", artist="The Beatles",
                tracks=[{"isrc": "GBAYE0601690", "title": "Come Together"}],
            )
    """
    params = album_arguments(title, artist, tracks, artwork_url)
    with conn.cursor(row_factory=tuple_row) as cursor:
        return _outbox_id(cursor.execute(ENQUEUE_ALBUM_SQL, params).fetchone())


async def enqueue_track_async(
    conn: AsyncConnection[Any],
    *,
    isrc: str | None = None,
    title: str,
    artist: str,
    album: str,
    priority: int | None = None,
    force: bool = False,
    artwork_url: str | None = None,
    tidal_track_id: str | None = None,
) -> int:
    """:func:`enqueue_track` for an ``AsyncConnection``::

    async with conn.transaction():
        await conn.execute("INSERT INTO my_tracks (title) VALUES (%s)", (title,))
        outbox_id = await enqueue_track_async(
            conn, isrc=isrc, title=title, artist=artist, album=album
        )
    """
    statement, params = _track_statement(
        isrc, title, artist, album, priority, force, artwork_url, tidal_track_id
    )
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(statement, params)
        return _outbox_id(await cursor.fetchone())


async def enqueue_album_async(
    conn: AsyncConnection[Any],
    *,
    title: str,
    artist: str,
    tracks: Sequence[Mapping[str, Any]],
    artwork_url: str | None = None,
) -> int:
    """:func:`enqueue_album` for an ``AsyncConnection``::

    async with conn.transaction():
        await conn.execute("INSERT INTO my_albums (title) VALUES (%s)", (title,))
        outbox_id = await enqueue_album_async(conn, title=title, artist=artist, tracks=tracks)
    """
    params = album_arguments(title, artist, tracks, artwork_url)
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(ENQUEUE_ALBUM_SQL, params)
        return _outbox_id(await cursor.fetchone())
