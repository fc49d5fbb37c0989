"""Enqueue helpers for applications that write their library with asyncpg.

Both helpers call the SQL functions ``outbox.enqueue_track`` / ``outbox.enqueue_album`` (never
an INSERT), so Python enqueues exactly like every other language, and the SQL functions stay
the one place that validates. They run on the caller's connection, inside the caller's
transaction: the outbox row commits or rolls back with the library write. A validation error
raised by SQL (``asyncpg.exceptions.DataError`` and subclasses, SQLSTATE class 22, with a
message naming the field) aborts that transaction like any other failed statement; the caller
decides whether to roll back or to continue from a savepoint.

Usage::

    from outbox_relay.write.asyncpg import enqueue_track

    async with conn.transaction():
        track_id = await conn.fetchval(
            "INSERT INTO my_library (isrc, title) VALUES ($1, $2) RETURNING id", isrc, title
        )
        outbox_id = await enqueue_track(
            conn, isrc=isrc, title=title, artist=artist, album=album
        )
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from outbox_relay.db.queries import QUERIES
from outbox_relay.write.arguments import album_arguments, tidal_track_arguments, track_arguments

__all__ = ["enqueue_album", "enqueue_track"]

# The statements of outbox_relay/db/write.sql, which the psycopg helpers send too.
ENQUEUE_TRACK_SQL: Final = QUERIES["enqueue_track"]
ENQUEUE_ALBUM_SQL: Final = QUERIES["enqueue_album"]
ENQUEUE_TRACK_BY_TIDAL_ID_SQL: Final = QUERIES["enqueue_track_by_tidal_id"]


class Executor(Protocol):
    """What the helpers need of a connection: ``asyncpg.Connection`` or a pool's proxy."""

    async def fetchval(self, query: str, *args: Any) -> Any: ...


async def enqueue_track(
    conn: Executor,
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

    Returns the outbox row id. Call it inside the transaction that writes the library row, so
    both commit or neither does::

        async with conn.transaction():
            await conn.execute("INSERT INTO my_tracks (isrc, title) VALUES ($1, $2)", isrc, title)
            outbox_id = await enqueue_track(
                conn, isrc=isrc, title=title, artist=artist, album=album, priority=60
            )

    A missing or malformed ``isrc`` is accepted: the relay records the track as skipped. Empty
    or over-long texts, a non-http(s) ``artwork_url`` or a ``priority`` outside -600..600 raise
    ``asyncpg.exceptions.DataError`` (SQLSTATE class 22) whose message names the argument, and
    abort the transaction.

    A track known by its TIDAL catalog id: give ``tidal_track_id`` (digits, as a ``str``) and no
    ``isrc``; the relay looks the ISRC up in the catalog (``outbox.enqueue_track_by_tidal_id``).
    """
    if tidal_track_id is not None:
        args = tidal_track_arguments(
            tidal_track_id, isrc, title, artist, album, priority, force, artwork_url
        )
        return int(await conn.fetchval(ENQUEUE_TRACK_BY_TIDAL_ID_SQL, *args))
    outbox_id = await conn.fetchval(
        ENQUEUE_TRACK_SQL,
        *track_arguments(isrc, title, artist, album, priority, force, artwork_url),
    )
    return int(outbox_id)


async def enqueue_album(
    conn: Executor,
    *,
    title: str,
    artist: str,
    tracks: Sequence[Mapping[str, Any]],
    artwork_url: str | None = None,
) -> int:
    """Enqueues one album in the caller's transaction; the relay fans it out, one event a track.

    ``tracks`` is a sequence of ``{"isrc": ..., "title": ..., "artist": ...}`` (``artist`` is
    optional and defaults to the album's; a track may give ``"tidalTrackId"`` instead of its
    ``isrc``, and the relay looks the ISRC up in the catalog). Returns the outbox row id::

        async with conn.transaction():
            await conn.execute("INSERT INTO my_albums (title) VALUES ($1)", title)
            outbox_id = await enqueue_album(
                conn,
                title="Abbey Road",
                artist="The Beatles",
                tracks=[{"isrc": "GBAYE0601690", "title": "Come Together"}],
            )

    Problems raise ``asyncpg.exceptions.DataError`` naming the element (``tracks[3].title must
    be a non-empty string``) and abort the transaction; ``tracks`` that cannot be encoded as
    JSON raise ``TypeError`` before anything is sent.
    """
    outbox_id = await conn.fetchval(
        ENQUEUE_ALBUM_SQL, *album_arguments(title, artist, tracks, artwork_url)
    )
    return int(outbox_id)
