"""Real tagged audio files for tests and benchmarks: MP3, FLAC, Ogg Vorbis and MP4/M4A.

Each writer produces a small, valid container (what mutagen and the format's own parsers read),
then tags it with mutagen in that format's own fields: ID3v2.4 frames (``TSRC`` for the ISRC),
Vorbis comments (``ISRC``), MP4 atoms (``----:com.apple.iTunes:ISRC``, a freeform atom). The audio
payload is silence-sized filler, not playable music: the scan reads tags, never samples, and a
pure-Python writer needs no Debian encoder on CI (``research/catalog-tags-inngest-cron.md`` §2).

Test equipment: never imported by product modules.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from mutagen.flac import FLAC
from mutagen.id3 import ID3, TALB, TDRC, TIT2, TPE1, TPE2, TRCK, TSRC
from mutagen.mp4 import MP4, MP4FreeForm
from mutagen.ogg import OggPage
from mutagen.oggvorbis import OggVorbis

Format = Literal["mp3", "flac", "ogg", "m4a"]
FORMATS: Final[tuple[Format, ...]] = ("mp3", "flac", "ogg", "m4a")
EXTENSIONS: Final[dict[Format, str]] = {
    "mp3": ".mp3",
    "flac": ".flac",
    "ogg": ".ogg",
    "m4a": ".m4a",
}


@dataclass(frozen=True, slots=True)
class Tags:
    """What a test puts into a file; ``None`` leaves the field out."""

    title: str | None = None
    artist: str | None = None
    album_artist: str | None = None
    album: str | None = None
    track_number: int | None = None
    track_total: int | None = None
    year: int | None = None
    isrc: str | None = None


# -- bare containers ----------------------------------------------------------------------------


def _flac_bytes(rate: int = 44100, samples: int = 44100) -> bytes:
    # fLaC, then one last-block STREAMINFO: block sizes, frame sizes unknown, rate/channels/bits,
    # total samples, an all-zero MD5. Mono, 16 bits.
    packed = (rate << 44) | (15 << 36) | samples
    return (
        b"fLaC\x80"
        + (34).to_bytes(3, "big")
        + struct.pack(">HH", 4096, 4096)
        + bytes(6)
        + packed.to_bytes(8, "big")
        + bytes(16)
    )


def _mp3_bytes(frames: int = 10) -> bytes:
    # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417-byte frames of zeros.
    return (b"\xff\xfb\x90\x00" + bytes(413)) * frames


def _ogg_vorbis_bytes(rate: int = 44100) -> bytes:
    ident = b"\x01vorbis" + struct.pack("<IBIiii", 0, 1, rate, 0, 128000, 0) + b"\xb8\x01"
    comment = b"\x03vorbis" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0) + b"\x01"
    setup = b"\x05vorbis" + bytes(8)
    pages = []
    for sequence, packets, position in (
        (0, [ident], 0),
        (1, [comment, setup], 0),
        (2, [b"\0"], rate),
    ):
        page = OggPage()
        page.packets, page.serial, page.sequence, page.position = packets, 1, sequence, position
        page.first, page.last = sequence == 0, sequence == 2
        pages.append(page.write())
    return b"".join(pages)


def _atom(name: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + name + body


def _full_atom(name: bytes, body: bytes) -> bytes:
    return _atom(name, bytes(4) + body)  # version 0, flags 0


def _m4a_bytes(rate: int = 44100, duration: int = 44100) -> bytes:
    mp4a = _atom(
        b"mp4a",
        bytes(6)
        + b"\0\1"
        + bytes(8)
        + struct.pack(">HHHHI", 1, 16, 0, 0, rate << 16)
        + _atom(b"free", b""),
    )
    mdia = _atom(
        b"mdia",
        _full_atom(b"mdhd", struct.pack(">IIIIHH", 0, 0, rate, duration, 0x55C4, 0))
        + _full_atom(b"hdlr", bytes(4) + b"soun" + bytes(13))
        + _atom(b"minf", _atom(b"stbl", _full_atom(b"stsd", struct.pack(">I", 1) + mp4a))),
    )
    moov = _atom(
        b"moov",
        _full_atom(b"mvhd", struct.pack(">IIII", 0, 0, rate, duration) + bytes(80))
        + _atom(b"trak", mdia),
    )
    return _atom(b"ftyp", b"M4A \0\0\0\0M4A isom") + moov


# -- tagging in each format's own fields --------------------------------------------------------


def _track_text(tags: Tags) -> str | None:
    if tags.track_number is None:
        return None
    if tags.track_total is None:
        return str(tags.track_number)
    return f"{tags.track_number}/{tags.track_total}"


def _tag_mp3(path: Path, tags: Tags) -> None:
    id3 = ID3()
    frames = [
        (TIT2, tags.title),
        (TPE1, tags.artist),
        (TPE2, tags.album_artist),
        (TALB, tags.album),
        (TRCK, _track_text(tags)),
        (TDRC, None if tags.year is None else str(tags.year)),
        (TSRC, tags.isrc),
    ]
    for frame, value in frames:
        if value is not None:
            id3.add(frame(encoding=3, text=[value]))
    id3.save(path, v2_version=4)


def _tag_vorbis(audio: FLAC | OggVorbis, tags: Tags) -> None:
    comments = {
        "TITLE": tags.title,
        "ARTIST": tags.artist,
        "ALBUMARTIST": tags.album_artist,
        "ALBUM": tags.album,
        "TRACKNUMBER": None if tags.track_number is None else str(tags.track_number),
        "TRACKTOTAL": None if tags.track_total is None else str(tags.track_total),
        "DATE": None if tags.year is None else str(tags.year),
        "ISRC": tags.isrc,
    }
    if audio.tags is None:
        audio.add_tags()
    vorbis: Any = audio.tags
    for key, value in comments.items():
        if value is not None:
            vorbis[key] = [value]
    audio.save()


def _tag_m4a(path: Path, tags: Tags) -> None:
    audio = MP4(path)
    if audio.tags is None:
        audio.add_tags()
    assert audio.tags is not None
    texts = {
        "\xa9nam": tags.title,
        "\xa9ART": tags.artist,
        "aART": tags.album_artist,
        "\xa9alb": tags.album,
        "\xa9day": None if tags.year is None else str(tags.year),
    }
    for atom, value in texts.items():
        if value is not None:
            audio.tags[atom] = [value]
    if tags.track_number is not None:
        audio.tags["trkn"] = [(tags.track_number, tags.track_total or 0)]
    if tags.isrc is not None:
        audio.tags["----:com.apple.iTunes:ISRC"] = [
            MP4FreeForm(tags.isrc.encode("utf-8"), dataformat=1)  # 1 = UTF-8 text
        ]
    audio.save()


def write_audio(path: Path, fmt: Format, tags: Tags | None = None) -> Path:
    """Writes a valid ``fmt`` file at ``path`` carrying ``tags``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "mp3":
        path.write_bytes(_mp3_bytes())
        if tags is not None:
            _tag_mp3(path, tags)
    elif fmt == "flac":
        path.write_bytes(_flac_bytes())
        if tags is not None:
            _tag_vorbis(FLAC(path), tags)
    elif fmt == "ogg":
        path.write_bytes(_ogg_vorbis_bytes())
        if tags is not None:
            _tag_vorbis(OggVorbis(path), tags)
    elif fmt == "m4a":
        path.write_bytes(_m4a_bytes())
        if tags is not None:
            _tag_m4a(path, tags)
    else:  # pragma: no cover - Literal guards it
        raise ValueError(f"unknown format {fmt!r}")
    return path


def isrc_for(album: int, track: int, prefix: str = "QZ") -> str:
    """A valid, unique ISRC for track ``track`` of album ``album`` (``QZ`` is a test registrant)."""
    return f"{prefix}T{album:04d}{track:05d}"[:12].ljust(12, "0")


def write_album(
    folder: Path,
    *,
    artist: str,
    album: str,
    year: int,
    tracks: int,
    formats: Iterable[Format] = FORMATS,
    album_number: int = 1,
    isrc_prefix: str = "QZ",
) -> list[Path]:
    """An album of ``tracks`` files in ``folder``, formats cycling through ``formats``."""
    cycle = list(formats)
    paths = []
    for number in range(1, tracks + 1):
        fmt = cycle[(number - 1) % len(cycle)]
        tags = Tags(
            title=f"{album} Song {number}",
            artist=artist,
            album_artist=artist,
            album=album,
            track_number=number,
            track_total=tracks,
            year=year,
            isrc=isrc_for(album_number, number, isrc_prefix),
        )
        paths.append(write_audio(folder / f"{number:02d}{EXTENSIONS[fmt]}", fmt, tags))
    return paths
