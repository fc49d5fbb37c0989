"""The scan's pure rules: the seed's album key, names valid on a file system, settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outbox_relay.domain.audio import (
    AudioTags,
    album_folder_name,
    album_key,
    isrc_as_tagged,
    majority_year,
    normalise_album,
    parse_track_number,
    parse_year,
    safe_name,
    track_file_name,
)
from outbox_relay.errors import ScanError
from outbox_relay.scan.settings import next_run, parse_settings, period_seconds


def tags(**values: object) -> AudioTags:
    base: dict[str, object] = dict(
        title="t", artist=None, album_artist=None, album=None, track_number=None, year=None,
        isrc=None, format="mp3",
    )  # fmt: skip
    return AudioTags(**{**base, **values})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("album", "normalised"),
    [
        ("The Wall", "wall"),
        ("the  Wall (2011 Remaster)", "wall"),
        ("Abbey Road [Deluxe Edition]", "abbeyroad"),
        ("OK Computer (20th Anniversary)", "okcomputer"),
        ("Theatre of Pain", "theatreofpain"),
        ("Live (at the BBC)", "live(atthebbc)"),
    ],
)
def test_album_names_normalise_as_the_seed_does(album: str, normalised: str) -> None:
    assert normalise_album(album) == normalised


def test_the_key_prefers_the_album_artist_and_needs_artist_and_album() -> None:
    assert album_key(tags(artist="Guest", album_artist=" Pink Floyd ", album="The Wall")) == (
        "pink floyd::wall"
    )
    assert album_key(tags(artist="Pink Floyd", album="The Wall (Remastered)")) == "pink floyd::wall"
    assert album_key(tags(artist="Pink Floyd")) is None
    assert album_key(tags(album="The Wall")) is None


def test_majority_year_prefers_the_later_on_a_tie() -> None:
    assert majority_year([1999, 2001, 2001, None]) == 2001
    assert majority_year([1999, 2001]) == 2001
    assert majority_year([None]) is None


def test_names_are_made_valid_on_every_common_file_system() -> None:
    assert safe_name("AC/DC") == "AC_DC"
    assert safe_name('a:b*c?d"e<f>g|h\\i\x00j') == "a_b_c_d_e_f_g_h_i_j"
    assert safe_name("..") == "_"
    assert safe_name(" .hidden. ") == "hidden"
    assert safe_name("CON") == "CON_"
    long = safe_name("é" * 300)
    assert len(long.encode()) <= 180 and long == "é" * 90
    assert album_folder_name(None, "X") == "0000 - X"
    assert track_file_name(3, "A/B", ".MP3") == "03 - A_B.mp3"
    assert len(track_file_name(1, "x" * 500, ".flac").encode()) <= 180


def test_tag_values_parse_leniently() -> None:
    assert parse_track_number("2/10") == 2
    assert parse_track_number("B1") is None
    assert parse_year("2001-05-03") == 2001
    assert parse_year("0000") is None
    assert isrc_as_tagged(" US-RC1-76-07839 ") == "USRC17607839"
    assert isrc_as_tagged("not an isrc") == "not an isrc"
    assert isrc_as_tagged("x" * 100) == "x" * 64
    assert isrc_as_tagged("  ") is None


def test_settings_defaults_and_errors_name_the_key_and_the_rule() -> None:
    settings = parse_settings({})
    assert (settings.enabled, settings.dry_run, settings.schedule, settings.workers) == (
        False, False, "0 */1 * * *", 4
    )  # fmt: skip
    assert (settings.rate_limit, settings.settle_seconds) == (0, 60)
    cases = {
        "staging_scan.enabled": ("maybe", "staging_scan.enabled must be true or false"),
        "staging_scan.workers": ("0", "staging_scan.workers must be from 1 to 64"),
        "staging_scan.rate_limit": ("-1", "staging_scan.rate_limit must be from 0 or more"),
        "staging_scan.schedule": ("* * *", "staging_scan.schedule must be a cron expression"),
        "staging_scan.scan_db_data_path": ("relative", "must be an absolute path"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ScanError, match=message):
            parse_settings({key: value})
    with pytest.raises(ScanError, match="not a valid cron expression"):
        parse_settings({"staging_scan.schedule": "61 * * * *"})


def test_the_schedule_is_cron_in_utc() -> None:
    at = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert next_run("0 */1 * * *", at) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert period_seconds("0 */1 * * *", at) == 3600
    assert period_seconds("*/5 * * * * *", at) == 5
