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

from outbox_relay.write.arguments import check_flags, encode_tracks

__all__ = ["enqueue_album", "enqueue_track"]

# Every parameter is cast explicitly so that neither the function's resolution nor the encoding
# depends on how asyncpg guesses types. ``tracks`` travels as text and is cast to jsonb by the
# server: the caller may have registered a jsonb codec of its own (or none), and text is the
# one encoding that means the same under every codec.
ENQUEUE_TRACK_SQL: Final = (
    "SELECT outbox.enqueue_track($1::text, $2::text, $3::text, $4::text, $5::integer, "
    "$6::boolean, $7::text)"
)
ENQUEUE_ALBUM_SQL: Final = (
    "SELECT outbox.enqueue_album($1::text, $2::text, $3::text::jsonb, $4::text)"
)


class Executor(Protocol):
    """What the helpers need of a connection: ``asyncpg.Connection`` or a pool's proxy."""

    async def fetchval(self, query: str, *args: Any) -> Any: ...


async def enqueue_track(
    conn: Executor,
    *,
    isrc: str | None,
    title: str,
    artist: str,
    album: str,
    priority: int | None = None,
    force: bool = False,
    artwork_url: str | None = None,
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
    """
    check_flags(priority, force)
    outbox_id = await conn.fetchval(
        ENQUEUE_TRACK_SQL, isrc, title, artist, album, priority, force, artwork_url
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
    optional and defaults to the album's). Returns the outbox row id::

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
        ENQUEUE_ALBUM_SQL, title, artist, encode_tracks(tracks).decode(), artwork_url
    )
    return int(outbox_id)
