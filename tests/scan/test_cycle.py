"""One scan cycle against real tagged files, a real PostgreSQL and (for the events) the relay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from outbox_relay.adapters.tags import MutagenTagReader
from outbox_relay.scan.cycle import ScanSummary, run_cycle
from outbox_relay.testing.audio import Tags, isrc_for, write_album, write_audio

from .conftest import ScanEnv
from relay.harness import Harness

READER = MutagenTagReader()


async def scan(env: ScanEnv, **kwargs: object) -> ScanSummary:
    return await run_cycle(env.dsn, READER, **kwargs)  # type: ignore[arg-type]


def three_albums(env: ScanEnv) -> dict[str, list[str]]:
    """Three albums, every one in all four formats; one track carries an invalid ISRC."""
    write_album(env.inbound / "alpha", artist="Alpha", album="First Light", year=2001, tracks=4,
                album_number=1)  # fmt: skip
    write_album(env.inbound / "beta" / "cd1", artist="Beta", album="Second Wind", year=1999,
                tracks=5, album_number=2)  # fmt: skip
    write_album(env.inbound / "gamma", artist="Gamma", album="Third Degree", year=2020, tracks=4,
                album_number=3)  # fmt: skip
    # Track 4 of Gamma (an .m4a): ISRC written in the freeform atom, but not a valid ISRC.
    write_audio(
        env.inbound / "gamma" / "04.m4a",
        "m4a",
        Tags(title="Third Degree Song 4", artist="Gamma", album_artist="Gamma",
             album="Third Degree", track_number=4, year=2020, isrc="NOT-AN-ISRC"),
    )  # fmt: skip
    return {
        "Alpha": [isrc_for(1, n) for n in range(1, 5)],
        "Beta": [isrc_for(2, n) for n in range(1, 6)],
        "Gamma": [isrc_for(3, n) for n in range(1, 4)] + ["NOT-AN-ISRC"],
    }


async def test_three_albums_in_four_formats_are_staged_written_and_published(
    scan_env: ScanEnv, harness: Harness
) -> None:
    expected = three_albums(scan_env)
    with capture_logs() as logs:
        summary = await scan(scan_env)
    assert summary.result == "success", summary
    assert [(a.artist, a.result, a.tracks) for a in summary.albums] == [
        ("Alpha", "staged", 4),
        ("Beta", "staged", 5),
        ("Gamma", "staged", 4),
    ]
    assert scan_env.staged_consistency() == []
    # Every audio file left inbound; the emptied sub-folders went with them.
    assert list(scan_env.inbound.iterdir()) == []
    alpha = scan_env.staging / "Alpha" / "2001 - First Light"
    assert sorted(p.name for p in alpha.iterdir()) == [
        "01 - First Light Song 1.mp3",
        "02 - First Light Song 2.flac",
        "03 - First Light Song 3.ogg",
        "04 - First Light Song 4.m4a",
    ]
    rows = scan_env.sql(
        "SELECT s.artist, s.album, s.year, s.status, s.track_count, a.title, m.kind, "
        "       jsonb_path_query_array(m.tracks, '$[*].isrc') "
        "FROM library.staging_items s JOIN library.albums a ON a.id = s.album_id "
        "JOIN outbox.messages m ON m.id = s.outbox_id ORDER BY s.artist"
    )
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
        ("Alpha", "First Light", 2001, "pending_review", 4, "First Light", "album"),
        ("Beta", "Second Wind", 1999, "pending_review", 5, "Second Wind", "album"),
        ("Gamma", "Third Degree", 2020, "pending_review", 4, "Third Degree", "album"),
    ]
    assert {r[0]: r[7] for r in rows} == expected
    (run,) = scan_env.sql(
        "SELECT status, albums_total, albums_success, albums_failed, files_total, dry_run "
        "FROM library.scan_runs"
    )
    assert run == ("success", 3, 3, 0, 13, False)
    summary_logs = [e for e in logs if e["event"] == "scan_summary"]
    assert len(summary_logs) == 1
    for key in ("scan_id", "inbound_path", "staging_path", "albums_total", "albums_success",
                "albums_failed", "duration_ms", "dry_run", "rate_limit"):  # fmt: skip
        assert key in summary_logs[0], key
    assert any(e["event"] == "scan_started" for e in logs)

    # The relay fans each album out: one event per valid ISRC, the invalid one skipped.
    relay = await harness.start_relay()
    await harness.wait_settled(expected=13, timeout=30)
    await relay.stop()
    published = {e.data["isrc"]: e for e in harness.standin.events}
    valid = {isrc for isrcs in expected.values() for isrc in isrcs if isrc != "NOT-AN-ISRC"}
    assert set(published) == valid
    event = published[isrc_for(2, 3)]
    assert event.id == f"track-ingestion-{isrc_for(2, 3)}"
    assert event.data["title"] == "Second Wind Song 3"
    assert event.data["artist"] == "Beta"
    assert event.data["album"] == "Second Wind"
    skipped = scan_env.sql(
        "SELECT isrc, skip_reason FROM outbox.messages WHERE kind = 'track' AND status = 'skipped'"
    )
    assert skipped == [("NOT-AN-ISRC", "invalid_isrc")]


async def test_bad_input_gets_a_clear_outcome_and_the_rest_goes_on(scan_env: ScanEnv) -> None:
    inbound = scan_env.inbound
    (inbound / "notes.txt").write_text("not audio at all")
    (inbound / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 7)  # claims FLAC, truncated
    write_audio(inbound / "untagged.mp3", "mp3")  # valid audio, no tags
    write_audio(inbound / "half.ogg", "ogg", Tags(title="Lonely", artist="Nobody"))  # no album
    # A folder mixing two albums: grouped by tags, each staged on its own.
    for number, (album, year) in enumerate([("Mixed One", 2010), ("Mixed Two", 2011)], 1):
        for track in (1, 2):
            write_audio(
                inbound / "mixed" / f"{album}-{track}.flac",
                "flac",
                Tags(title=f"{album} {track}", artist="Mixer", album=album, track_number=track,
                     year=year, isrc=isrc_for(10 + number, track)),
            )  # fmt: skip
    # Names no file system takes as they are.
    write_album(inbound / "odd", artist="AC/DC: Live?", album='Who * Cares <"1">', year=1990,
                tracks=2, album_number=20)  # fmt: skip
    # Two files that would get one name: that album fails, alone.
    for name in ("a.mp3", "b.mp3"):
        write_audio(
            inbound / "dupes" / name,
            "mp3",
            Tags(title="Same", artist="Dup", album="Twice", track_number=1, year=2000,
                 isrc="USDUP0000001"),
        )  # fmt: skip

    with capture_logs() as logs:
        summary = await scan(scan_env)

    assert summary.result == "partial"
    assert summary.files_skipped == {"not_audio": 1, "corrupt": 1, "missing_tags": 2}
    outcomes = {
        (a.artist, a.album): (a.result, (a.reason or "").split(":")[0]) for a in summary.albums
    }
    assert outcomes == {
        ("Mixer", "Mixed One"): ("staged", ""),
        ("Mixer", "Mixed Two"): ("staged", ""),
        ("AC/DC: Live?", 'Who * Cares <"1">'): ("staged", ""),
        ("Dup", "Twice"): ("failed", "duplicate_tracks"),
    }
    assert (scan_env.staging / "AC_DC_ Live_" / "1990 - Who _ Cares __1__").is_dir()
    assert (scan_env.staging / "Mixer" / "2010 - Mixed One").is_dir()
    assert (scan_env.staging / "Mixer" / "2011 - Mixed Two").is_dir()
    # Everything that was not staged is still where it was.
    for name in ("notes.txt", "broken.flac", "untagged.mp3", "half.ogg", "dupes/a.mp3",
                 "dupes/b.mp3"):  # fmt: skip
        assert (inbound / name).is_file(), name
    skipped = {(e["path"].rsplit("/", 1)[-1], e["reason"]) for e in logs
               if e["event"] == "scan_file_skipped"}  # fmt: skip
    assert skipped == {
        ("notes.txt", "not_audio"),
        ("broken.flac", "corrupt"),
        ("untagged.mp3", "missing_tags"),
        ("half.ogg", "missing_tags"),
    }
    (failed,) = [e for e in logs if e["event"] == "scan_album_failed"]
    assert (failed["album"], failed["artist"], failed["reason"].split(":")[0]) == (
        "Twice",
        "Dup",
        "duplicate_tracks",
    )
    assert failed["log_level"] == "warning"
    assert scan_env.staged_consistency() == []
    assert scan_env.sql("SELECT status, albums_failed FROM library.scan_runs") == [("partial", 1)]


@pytest.mark.parametrize(
    ("setup", "reason", "names"),
    [
        ("missing_inbound", "inbound_unavailable", ["Inbound", "/nowhere/inbound"]),
        ("staging_is_a_file", "staging_unavailable", ["Staging", "not a folder"]),
        ("no_staging", "staging_library", ["exactly one library of type 'staging'", "found 0"]),
        ("two_inbound", "inbound_library", ["found 2", "'Inbound'", "'Second inbound'"]),
        ("bad_workers", "invalid_setting", ["staging_scan.workers", "integer", "'lots'"]),
        ("bad_schedule", "invalid_setting", ["staging_scan.schedule", "'every hour'"]),
        ("work_inside_inbound", "invalid_setting", ["scan_db_data_path", "outside every library"]),
    ],
)
async def test_a_run_that_cannot_start_fails_with_an_error_naming_it(
    scan_env: ScanEnv, setup: str, reason: str, names: list[str]
) -> None:
    write_album(scan_env.inbound / "a", artist="A", album="B", year=2000, tracks=1)
    if setup == "missing_inbound":
        scan_env.sql(
            "UPDATE library.libraries SET path = '/nowhere/inbound' WHERE type = 'inbound'"
        )
    elif setup == "staging_is_a_file":
        scan_env.staging.rmdir()
        scan_env.staging.write_text("a file")
    elif setup == "no_staging":
        scan_env.sql("DELETE FROM library.libraries WHERE type = 'staging'")
    elif setup == "two_inbound":
        scan_env.sql(
            "INSERT INTO library.libraries (name, type, path) VALUES ('Second inbound', 'inbound', "
            "'/srv/other')"
        )
    elif setup == "bad_workers":
        scan_env.set("workers", "lots")
    elif setup == "bad_schedule":
        scan_env.set("schedule", "every hour")
    elif setup == "work_inside_inbound":
        scan_env.set("scan_db_data_path", str(scan_env.inbound / "work"))
    before = scan_env.files()

    with capture_logs() as logs:
        summary = await scan(scan_env)

    assert (summary.result, summary.reason) == ("failed", reason)
    (error,) = [e for e in logs if e["event"] == "scan_failed"]
    assert error["log_level"] == "error"
    for name in names:
        assert name in error["error"], (name, error["error"])
    assert scan_env.files() == before
    ((status, error_text),) = scan_env.sql("SELECT status, error FROM library.scan_runs")
    assert status == "failed" and names[0] in error_text


async def test_dry_run_reports_and_changes_nothing(scan_env: ScanEnv) -> None:
    expected = three_albums(scan_env)
    (scan_env.inbound / "junk.bin").write_bytes(os.urandom(64))
    files_before, tables_before = scan_env.files(), scan_env.tables()
    work_existed = scan_env.work.exists()

    with capture_logs() as logs:
        summary = await scan(scan_env, dry_run=True)

    assert summary.dry_run and summary.result == "success"
    assert [(a.artist, a.result) for a in summary.albums] == [
        ("Alpha", "would_stage"),
        ("Beta", "would_stage"),
        ("Gamma", "would_stage"),
    ]
    # What would move, and what would be written, is reported.
    alpha = summary.albums[0]
    assert alpha.staging_path == str(scan_env.staging / "Alpha" / "2001 - First Light")
    assert alpha.isrcs == expected["Alpha"]
    assert len(alpha.moves) == 4
    assert sum(e["event"] == "scan_album_would_stage" for e in logs) == 3
    # ... and nothing changed: folders, files, rows.
    assert scan_env.files() == files_before
    assert scan_env.tables() == tables_before
    assert scan_env.work.exists() == work_existed
    assert scan_env.sql("SELECT status, dry_run, albums_success FROM library.scan_runs") == [
        ("success", True, 3)
    ]

    # The setting makes a run dry too (a scheduled dry run).
    scan_env.set("dry_run", "true")
    tables_before = scan_env.tables()
    summary = await scan(scan_env)
    assert summary.dry_run and scan_env.files() == files_before
    assert scan_env.tables() == tables_before


async def test_rescanning_never_stages_an_album_twice(scan_env: ScanEnv) -> None:
    write_album(scan_env.inbound / "a", artist="Echo", album="Again", year=2005, tracks=3)
    first = await scan(scan_env)
    assert [a.result for a in first.albums] == ["staged"]
    staged = scan_env.files()
    # The same album arrives again.
    write_album(scan_env.inbound / "b", artist="Echo", album="Again", year=2005, tracks=3)
    second = await scan(scan_env)
    assert [(a.result, a.reason) for a in second.albums] == [("failed", "already_staged")]
    assert scan_env.sql("SELECT count(*) FROM library.staging_items") == [(1,)]
    assert scan_env.sql("SELECT count(*) FROM outbox.messages") == [(1,)]
    assert sorted((scan_env.inbound / "b").iterdir()) != []
    assert {k: v for k, v in scan_env.files().items() if k.startswith("staging")} == staged
    assert scan_env.staged_consistency() == []


async def test_an_existing_destination_is_never_overwritten(scan_env: ScanEnv) -> None:
    write_album(scan_env.inbound / "a", artist="Foxtrot", album="Taken", year=2007, tracks=2)
    occupied = scan_env.staging / "Foxtrot" / "2007 - Taken"
    occupied.mkdir(parents=True)
    (occupied / "01 - Taken Song 1.mp3").write_bytes(b"someone else's file")
    summary = await scan(scan_env)
    assert [(a.result, a.reason) for a in summary.albums] == [("failed", "destination_exists")]
    assert (occupied / "01 - Taken Song 1.mp3").read_bytes() == b"someone else's file"
    assert len(list((scan_env.inbound / "a").iterdir())) == 2
    assert scan_env.sql("SELECT count(*) FROM library.staging_items") == [(0,)]


async def test_files_still_being_written_wait_for_a_later_cycle(scan_env: ScanEnv) -> None:
    scan_env.set("settle_seconds", "60")
    settled = write_album(
        scan_env.inbound / "old", artist="Golf", album="Done", year=2001, tracks=2
    )
    fresh = write_album(scan_env.inbound / "new", artist="Hotel", album="Uploading", year=2002,
                        tracks=2)  # fmt: skip
    an_hour_ago = time.time() - 3600
    for path in settled:
        os.utime(path, (an_hour_ago, an_hour_ago))
    # One old file in the fresh album's folder: the album still waits for its new ones.
    os.utime(fresh[0], (an_hour_ago, an_hour_ago))

    summary = await scan(scan_env)
    assert summary.files_waiting == 1
    assert {a.artist: a.result for a in summary.albums} == {"Golf": "staged", "Hotel": "waiting"}
    assert all(p.is_file() for p in fresh)

    for path in fresh:
        os.utime(path, (an_hour_ago, an_hour_ago))
    later = await scan(scan_env)
    assert {a.artist: a.result for a in later.albums} == {"Hotel": "staged"}
    assert scan_env.staged_consistency() == []


def test_the_reader_reads_each_format_s_own_fields(tmp_path: Path) -> None:
    tags = Tags(title="Título", artist="Ärtist", album_artist="Various", album="Ålbum",
                track_number=7, track_total=12, year=1987, isrc="USRC17607839")  # fmt: skip
    for fmt in ("mp3", "flac", "ogg", "m4a"):
        path = write_audio(tmp_path / f"t.{fmt}", fmt, tags)  # type: ignore[arg-type]
        read = READER.read(str(path))
        assert (read.title, read.artist, read.album_artist, read.album) == (
            "Título", "Ärtist", "Various", "Ålbum"
        ), fmt  # fmt: skip
        assert (read.track_number, read.year, read.isrc, read.format) == (
            7, 1987, "USRC17607839", fmt
        ), fmt  # fmt: skip
