"""ISRC normalisation and validation, and the Qdrant point id of a track.

The point id rule is the one the seed system's ingestion worker uses (``hashIsrcToUuid``), so
the relay recognises points in an index that worker built.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Final, Literal

_VALID: Final = re.compile(r"[A-Z0-9]{12}")
_POINT_ID_NAMESPACE: Final = b"6ba7b810-9dad-11d1-80b4-00c04fd430c8"

SkipReason = Literal["missing_isrc", "invalid_isrc", "already_indexed", "no_tracks"]


def normalise_isrc(raw: str | None) -> str | SkipReason:
    """Returns the canonical ISRC, or the reason the track has none.

    >>> normalise_isrc(" usrc17607839 ")
    'USRC17607839'
    >>> normalise_isrc("")
    'missing_isrc'
    >>> normalise_isrc("US-RC1-76-07839")
    'invalid_isrc'
    """
    if raw is None:
        return "missing_isrc"
    isrc = raw.strip().upper()
    if not isrc:
        return "missing_isrc"
    if _VALID.fullmatch(isrc) is None:
        return "invalid_isrc"
    return isrc


def point_id(isrc: str) -> str:
    """The Qdrant point id of a track: the first 128 bits of SHA-256(namespace + ISRC) as a UUID.

    >>> point_id("USRC11700001")
    '2396f4b7-b9f9-7d99-64b4-d30f8c8f32f8'
    """
    return str(uuid.UUID(hashlib.sha256(_POINT_ID_NAMESPACE + isrc.encode()).hexdigest()[:32]))
