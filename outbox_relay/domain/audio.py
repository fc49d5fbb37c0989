"""Pure rules of the inbound scan: an audio file's tags, album grouping, staging names.

The grouping key is the seed's (``research/worker-scan-notify.md`` §3): the album artist (or the
artist) trimmed and lower-cased, ``::``, and the album title normalised — lower-cased, edition
markers such as "(Remastered)" or "[Deluxe Edition]" removed, a leading "the " removed and every
whitespace removed — so "The Wall (2011 Remaster)" and "the  wall" are one album. The year is the
majority year of the album's files, the later one on a tie.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from outbox_relay.domain.limits import ISRC_MAX_LENGTH, TEXT_MAX_LENGTH

# Words that mark an edition rather than a different album, inside () or [].
_EDITION: Final = re.compile(
    r"[\(\[][^\)\]]*\b(?:remaster(?:ed)?|deluxe|expanded|anniversary|edition|bonus tracks?)\b"
    r"[^\)\]]*[\)\]]",
    re.IGNORECASE,
)
_LEADING_THE: Final = re.compile(r"^the\s+", re.IGNORECASE)
_WHITESPACE: Final = re.compile(r"\s+")
_YEAR: Final = re.compile(r"^\s*(\d{4})")
_TRACK: Final = re.compile(r"^\s*(\d{1,4})")
# Characters that are invalid or troublesome in a file name on at least one common file system.
_UNSAFE: Final = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
# Names Windows refuses whatever the extension (a staging share may be mounted there).
_RESERVED: Final = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)
MAX_NAME_BYTES: Final = 180  # below every common file system's 255, leaving room for suffixes
MAX_TEXT: Final = TEXT_MAX_LENGTH  # outbox.enqueue_album's limit on titles and artists


@dataclass(frozen=True, slots=True)
class AudioTags:
    """The tags the scan uses, read from one file's own format fields; absent ones are None."""

    title: str | None
    artist: str | None
    album_artist: str | None
    album: str | None
    track_number: int | None
    year: int | None
    isrc: str | None
    format: str  # mp3, flac, ogg, m4a


def clean_text(value: str | None) -> str | None:
    """Trimmed text, None when empty; NUL and other control characters become spaces."""
    if value is None:
        return None
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in value).strip()
    return text or None


def parse_track_number(value: str | None) -> int | None:
    """``"2/10"`` → 2; None for text without a leading number."""
    match = _TRACK.match(value or "")
    return int(match[1]) if match else None


def parse_year(value: str | None) -> int | None:
    """``"2001-05-03"`` → 2001; None for text that does not start with four digits."""
    match = _YEAR.match(value or "")
    if not match:
        return None
    year = int(match[1])
    return year if 1000 <= year <= 9999 else None


def normalise_album(album: str) -> str:
    """The album part of the grouping key (see the module docstring)."""
    text = _EDITION.sub("", album.lower())
    text = _LEADING_THE.sub("", text.strip())
    return _WHITESPACE.sub("", text)


def album_artist(tags: AudioTags) -> str | None:
    """The artist an album is filed under: the album artist, else the track artist."""
    return tags.album_artist or tags.artist


def album_key(tags: AudioTags) -> str | None:
    """The seed's grouping key, or None when the file lacks an artist or an album."""
    artist = album_artist(tags)
    if artist is None or tags.album is None:
        return None
    return f"{artist.strip().lower()}::{normalise_album(tags.album)}"


def majority_year(years: Iterable[int | None]) -> int | None:
    """The most common year; the later one on a tie; None when no file has one."""
    counts = Counter(year for year in years if year is not None)
    if not counts:
        return None
    return max(counts.items(), key=lambda item: (item[1], item[0]))[0]


def safe_name(text: str, fallback: str = "_") -> str:
    """``text`` as one path component valid on common file systems.

    Separators, control characters and ``:*?"<>|`` become ``_``; leading and trailing dots and
    spaces go (``..`` is never a component); reserved device names get a ``_`` suffix; the
    result is cut to :data:`MAX_NAME_BYTES` bytes of UTF-8 on a character boundary.
    """
    name = unicodedata.normalize("NFC", text)
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name:
        name = fallback
    if name.split(".")[0].lower() in _RESERVED:
        name += "_"
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip(" .") or fallback
    return name


def album_folder_name(year: int | None, album: str) -> str:
    """``"YYYY - Album"`` (``0000`` when no file has a year)."""
    return safe_name(f"{year or 0:04d} - {album}")


def track_file_name(number: int | None, title: str, extension: str) -> str:
    """``"NN - Title.ext"``; the extension is kept as the file had it, lower-cased."""
    stem = title if number is None else f"{number:02d} - {title}"
    ext = extension.lower()
    limit = MAX_NAME_BYTES - len(ext.encode("utf-8"))
    base = safe_name(stem)
    encoded = base.encode("utf-8")
    if len(encoded) > limit:
        base = encoded[:limit].decode("utf-8", errors="ignore").rstrip(" .") or "_"
    return base + ext


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters (SQL's limit on titles and artists)."""
    return text if len(text) <= limit else text[:limit]


def isrc_as_tagged(value: str | None) -> str | None:
    """The ISRC to enqueue: trimmed, hyphens of the display form (``US-RC1-76-07839``) removed.

    Anything else stays as written (cut to ``ISRC_MAX_LENGTH``, the outbox's limit), so an
    invalid one reaches the outbox and ends as ``invalid_isrc`` there, visible in SQL, as
    DESIGN.md's ISRC rules say.
    """
    text = clean_text(value)
    if text is None:
        return None
    compact = text.replace("-", "")
    if len(compact) == 12 and compact.isalnum():
        text = compact
    return text[:ISRC_MAX_LENGTH]
