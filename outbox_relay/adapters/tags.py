"""The :class:`~outbox_relay.ports.TagReader` on mutagen: each format's own tag fields.

| field        | MP3 (ID3v2) | FLAC, Ogg (Vorbis comments)   | MP4/M4A (atoms)                |
|--------------|-------------|-------------------------------|--------------------------------|
| title        | ``TIT2``    | ``TITLE``                     | ``©nam``                       |
| artist       | ``TPE1``    | ``ARTIST``                    | ``©ART``                       |
| album artist | ``TPE2``    | ``ALBUMARTIST``               | ``aART``                       |
| album        | ``TALB``    | ``ALBUM``                     | ``©alb``                       |
| track number | ``TRCK``    | ``TRACKNUMBER``               | ``trkn``                       |
| year         | ``TDRC``    | ``DATE`` (``YEAR``)           | ``©day``                       |
| ISRC         | ``TSRC``    | ``ISRC``                      | ``----:com.apple.iTunes:ISRC`` |

The fields are read natively rather than through mutagen's "easy" wrappers: EasyMP4 has no ISRC
key unless one registers it in a process-wide table (``research/catalog-tags-inngest-cron.md``
§2), and reading the frames directly says exactly which field a value came from. ID3v2.3's
``TYER`` is upgraded to ``TDRC`` by mutagen when it loads the tag.

Outcomes: ``mutagen.File`` returning None (no format recognised the bytes) is ``not_audio``; a
file that claims a format and fails to parse (a ``MutagenError``) is ``corrupt``; an OS error
(permissions, a file that vanished) is ``unreadable``; a recognised format the scan does not
handle (WAV, AIFF, ...) is ``unsupported_format``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import mutagen
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from outbox_relay.domain.audio import AudioTags, clean_text, parse_track_number, parse_year
from outbox_relay.errors import TagReadError

MP4_ISRC: Final = "----:com.apple.iTunes:ISRC"
_VORBIS_TYPES: Final = {FLAC: "flac", OggVorbis: "ogg", OggOpus: "opus", OggFLAC: "ogg"}


def _first(values: Sequence[Any] | None) -> str | None:
    if not values:
        return None
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return clean_text(str(value))


def _id3(tags: ID3 | None, frame: str) -> str | None:
    if tags is None:
        return None
    for found in tags.getall(frame):
        text = _first(found.text)
        if text is not None:
            return text
    return None


def _vorbis(tags: Any, *keys: str) -> str | None:
    if tags is None:
        return None
    for key in keys:
        if key in tags:
            text = _first(tags[key])
            if text is not None:
                return text
    return None


def _mp4(tags: Any, atom: str) -> str | None:
    if tags is None or atom not in tags:
        return None
    return _first(tags[atom])


def _mp4_track(tags: Any) -> int | None:
    if tags is None or "trkn" not in tags or not tags["trkn"]:
        return None
    number = tags["trkn"][0][0]
    return int(number) if number else None


class MutagenTagReader:
    """Reads MP3, FLAC, Ogg Vorbis (and Opus, Ogg FLAC) and MP4/M4A tags with mutagen."""

    def read(self, path: str) -> AudioTags:
        try:
            audio = mutagen.File(path)
        except mutagen.MutagenError as exc:
            cause = exc.args[0] if exc.args else exc
            if isinstance(cause, OSError):
                raise TagReadError("unreadable", f"{path}: {cause.strerror or cause}") from exc
            raise TagReadError("corrupt", f"{path}: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise TagReadError("unreadable", f"{path}: {exc.strerror or exc}") from exc
        except Exception as exc:
            # mutagen's parsers can raise plain errors on hostile bytes (struct, index, value);
            # a bad file must never end the cycle.
            raise TagReadError("corrupt", f"{path}: {type(exc).__name__}: {exc}") from exc
        if audio is None:
            raise TagReadError("not_audio", f"{path}: no audio format recognised")
        if isinstance(audio, MP3):
            tags = audio.tags if isinstance(audio.tags, ID3) else None
            return AudioTags(
                title=_id3(tags, "TIT2"),
                artist=_id3(tags, "TPE1"),
                album_artist=_id3(tags, "TPE2"),
                album=_id3(tags, "TALB"),
                track_number=parse_track_number(_id3(tags, "TRCK")),
                year=parse_year(_id3(tags, "TDRC")),
                isrc=_id3(tags, "TSRC"),
                format="mp3",
            )
        for kind, name in _VORBIS_TYPES.items():
            if isinstance(audio, kind):
                comments = audio.tags
                return AudioTags(
                    title=_vorbis(comments, "title"),
                    artist=_vorbis(comments, "artist"),
                    album_artist=_vorbis(comments, "albumartist", "album artist"),
                    album=_vorbis(comments, "album"),
                    track_number=parse_track_number(_vorbis(comments, "tracknumber")),
                    year=parse_year(_vorbis(comments, "date", "year")),
                    isrc=_vorbis(comments, "isrc"),
                    format=name,
                )
        if isinstance(audio, MP4):
            atoms = audio.tags
            return AudioTags(
                title=_mp4(atoms, "\xa9nam"),
                artist=_mp4(atoms, "\xa9ART"),
                album_artist=_mp4(atoms, "aART"),
                album=_mp4(atoms, "\xa9alb"),
                track_number=_mp4_track(atoms),
                year=parse_year(_mp4(atoms, "\xa9day")),
                isrc=_mp4(atoms, MP4_ISRC),
                format="m4a",
            )
        raise TagReadError("unsupported_format", f"{path}: {type(audio).__name__} is not scanned")
