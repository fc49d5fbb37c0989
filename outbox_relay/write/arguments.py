"""Argument checks and encoding shared by the asyncpg and psycopg enqueue helpers.

Both drivers send the same statements (``outbox_relay/db/write.sql``) with the same parameters,
built here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson


def check_flags(priority: int | None, force: bool) -> None:
    """Refuses Python values that PostgreSQL would silently coerce into something else.

    ``True`` is an ``int`` to Python and casts to 1 in SQL; a priority of ``True`` is a bug,
    and so is a force of ``"yes"``.
    """
    if isinstance(priority, bool) or not (priority is None or isinstance(priority, int)):
        raise TypeError(f"priority must be an int or None, not {type(priority).__name__}")
    if not isinstance(force, bool):
        raise TypeError(f"force must be a bool, not {type(force).__name__}")


def encode_tracks(tracks: Sequence[Mapping[str, Any]]) -> bytes:
    """``tracks`` as JSON; names the argument when it cannot be encoded.

    Encoding before the query, with orjson, ignores whatever JSON codec the caller configured on
    the connection and reports the problem against ``tracks``, not deep inside the driver.
    """
    try:
        return orjson.dumps(tracks)
    except orjson.JSONEncodeError as exc:
        raise TypeError(
            f"enqueue_album: tracks must be a JSON array of objects with isrc, title and "
            f"artist ({exc})"
        ) from exc


def track_arguments(
    isrc: str | None,
    title: str,
    artist: str,
    album: str,
    priority: int | None,
    force: bool,
    artwork_url: str | None,
) -> tuple[Any, ...]:
    """The parameters of the ``enqueue_track`` statement, after :func:`check_flags`."""
    check_flags(priority, force)
    return (isrc, title, artist, album, priority, force, artwork_url)


def tidal_track_arguments(
    tidal_track_id: str,
    isrc: str | None,
    title: str,
    artist: str,
    album: str,
    priority: int | None,
    force: bool,
    artwork_url: str | None,
) -> tuple[Any, ...]:
    """The parameters of the ``enqueue_track_by_tidal_id`` statement, after
    :func:`check_flags`; the id must be a ``str`` (SQL checks its digits)."""
    if not isinstance(tidal_track_id, str):
        raise TypeError(
            f"tidal_track_id must be a str of digits, not {type(tidal_track_id).__name__}"
        )
    check_flags(priority, force)
    return (tidal_track_id, title, artist, album, priority, force, artwork_url, isrc)


def album_arguments(
    title: str, artist: str, tracks: Sequence[Mapping[str, Any]], artwork_url: str | None
) -> tuple[Any, ...]:
    """The parameters of the ``enqueue_album`` statement; ``tracks`` as JSON text."""
    return (title, artist, encode_tracks(tracks).decode(), artwork_url)
