"""ISRC normalisation and validation, and the Qdrant point id of a track.

The point id rule is the one the seed system's ingestion worker uses (``hashIsrcToUuid``), so
the relay recognises points in an index that worker built.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, Literal

_VALID: Final = re.compile(r"[A-Z0-9]{12}")
_POINT_ID_NAMESPACE: Final = b"6ba7b810-9dad-11d1-80b4-00c04fd430c8"
_NAMESPACE_HASH: Final = hashlib.sha256(_POINT_ID_NAMESPACE)  # copied, never updated

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
    digest = _NAMESPACE_HASH.copy()
    digest.update(isrc.encode())
    h = digest.hexdigest()
    # str(uuid.UUID(h[:32])), without building the UUID (a third of the cost; checked in
    # tests/unit against the uuid module).
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
