"""The limits on the arguments of an enqueue, defined once for Python.

``outbox.enqueue_track`` / ``outbox.enqueue_album`` enforce the same numbers in SQL (migrations
001 and 005; migrations are append-only, so they keep their own literals).
``tests/db/test_limits.py`` probes the SQL functions in a real database at each edge below and
checks that the write API's models (:mod:`outbox_relay.write.models`) accept and refuse exactly
the same values, so a change here that the SQL does not follow fails a test.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALBUM_MAX_TRACKS",
    "ISRC_MAX_LENGTH",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "TEXT_MAX_LENGTH",
    "TIDAL_TRACK_ID_PATTERN",
    "URL_MAX_LENGTH",
]

# Characters (not bytes) of a title, artist or album name, of a track or of an album.
TEXT_MAX_LENGTH: Final = 1000
# Characters of an ISRC as the writer gave it. A valid one has 12; a longer one is kept (the
# relay records it as invalid_isrc) up to this many, so a runaway value is refused instead.
ISRC_MAX_LENGTH: Final = 64
# Characters of an artwork URL.
URL_MAX_LENGTH: Final = 2048
# Inngest's priority range, in seconds (DESIGN.md, the event's ``priority``).
PRIORITY_MIN: Final = -600
PRIORITY_MAX: Final = 600
# Tracks of one album row.
ALBUM_MAX_TRACKS: Final = 10_000

# A TIDAL catalog track id (migration 010's outbox.check_tidal_id): 1 to 20 decimal digits.
TIDAL_TRACK_ID_PATTERN: Final = r"^[0-9]{1,20}$"
