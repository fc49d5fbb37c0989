"""Real SIGKILLs of ``outbox-relay scan --once`` at chosen points, and two scanners at once.

The scan process is held at a named point with the documented debug knob
``OUTBOX_SCAN_DEBUG_HOLD`` (it logs ``scan_debug_hold`` there and waits), then killed with
SIGKILL. Whatever the point: no file is lost, and after the next cycle every album is staged
with its rows, no staged folder lacks rows, no row lacks files, no journal row is left.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from outbox_relay.adapters.tags import MutagenTagReader
from outbox_relay.scan.cycle import run_cycle
from outbox_relay.scan.files import finish_move, move_file
from outbox_relay.testing.audio import write_album
from outbox_relay.testing.postgres import LocalPostgres

from .conftest import ScanEnv

# Slow (sIGKILLs scan processes at every point): CI runs it, -m "not slow" leaves it out.
pytestmark = pytest.mark.slow


def spawn_scan(
    env: ScanEnv, log_path: Path, *args: str, **variables: str
) -> subprocess.Popen[bytes]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "INNGEST_"))}
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "outbox_relay", "scan", "--once", *args],
            env={**inherited, "DATABASE_URL": env.dsn, "OUTBOX_LOG_FORMAT": "json", **variables},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


async def wait_for_line(proc: subprocess.Popen[bytes], log_path: Path, needle: str) -> None:
    deadline = time.monotonic() + 30
    while needle not in _text(log_path):
        if proc.poll() is not None:
            raise AssertionError(f"scan exited before {needle!r}:\n{_text(log_path)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{needle!r} not logged in 30 s:\n{_text(log_path)}")
        await asyncio.sleep(0.02)


async def wait_for_backend_gone(env: ScanEnv) -> None:
    """Until PostgreSQL has noticed the killed client and ended its session (and its lock).

    A backend learns that its client died when it next reads the socket: asynchronously. A run
    started before that finds the lock taken and is skipped (logged), as a scheduled tick would
    be; the next tick runs. The test waits instead of racing it.
    """
    deadline = time.monotonic() + 30
    while env.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-relay scan'"
    ) != [(0,)]:
        if time.monotonic() > deadline:
            raise TimeoutError("the killed scan's session is still there after 30 s")
        await asyncio.sleep(0.02)


def contents(env: ScanEnv) -> collections.Counter[str]:
    """The multiset of file contents under the libraries (a lost or doubled file shows)."""
    return collections.Counter(env.files().values())


@pytest.mark.parametrize(
    "point",
    ["locked", "journal_written", "linked:2", "moved:2", "moved:4", "before_commit", "committed"],
)
async def test_a_scan_killed_at_any_point_loses_nothing_and_the_next_cycle_finishes(
    scan_env: ScanEnv, tmp_path: Path, point: str
) -> None:
    write_album(scan_env.inbound / "one", artist="India", album="Kilo", year=2003, tracks=3,
                album_number=1)  # fmt: skip
    write_album(scan_env.inbound / "two", artist="Juliet", album="Lima", year=2004, tracks=3,
                album_number=2)  # fmt: skip
    before = contents(scan_env)
    log_path = tmp_path / "scan.log"
    proc = spawn_scan(scan_env, log_path, OUTBOX_SCAN_DEBUG_HOLD=point)
    await wait_for_line(proc, log_path, '"scan_debug_hold"')
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    await wait_for_backend_gone(scan_env)

    # Not a file lost, whatever the instant (killed between link and unlink, one file has two
    # names for a moment: the next cycle removes the spare).
    assert before - contents(scan_env) == collections.Counter()

    summary = await run_cycle(scan_env.dsn, MutagenTagReader())
    assert summary.result == "success", summary
    assert contents(scan_env) == before
    assert scan_env.staged_consistency() == []
    assert sorted(scan_env.sql("SELECT artist, track_count FROM library.staging_items")) == [
        ("India", 3),
        ("Juliet", 3),
    ]
    # One outbox row per album, whichever run wrote it; the inbound folder is empty of audio.
    assert scan_env.sql("SELECT count(*) FROM outbox.messages WHERE kind = 'album'") == [(2,)]
    assert not any(p.is_file() for p in scan_env.inbound.rglob("*"))
    statuses = [s for (s,) in scan_env.sql("SELECT status FROM library.scan_runs ORDER BY id")]
    # "locked" comes before the run's row is written; any later kill leaves it "running",
    # which the next run marks "interrupted".
    assert statuses == (["success"] if point == "locked" else ["interrupted", "success"])
    if point in ("journal_written", "linked:2", "moved:2", "before_commit"):
        assert summary.recovered == 1


async def test_two_scanners_started_at_once_make_one_run(scan_env: ScanEnv, tmp_path: Path) -> None:
    write_album(scan_env.inbound / "a", artist="Mike", album="November", year=2008, tracks=2)
    release = tmp_path / "release"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = spawn_scan(
        scan_env,
        first_log,
        OUTBOX_SCAN_DEBUG_HOLD="locked",
        OUTBOX_SCAN_DEBUG_RELEASE=str(release),
    )
    try:
        await wait_for_line(first, first_log, '"scan_debug_hold"')
        second = spawn_scan(scan_env, second_log)
        assert second.wait(timeout=30) == 1
        output = second_log.read_text()
        assert '"scan_skipped"' in output and "run_in_progress" in output
        assert "skipped: run_in_progress" in output
        release.touch()
        assert first.wait(timeout=30) == 0, first_log.read_text()
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert scan_env.sql("SELECT status, albums_success FROM library.scan_runs") == [("success", 1)]
    assert scan_env.staged_consistency() == []


# -- the move primitives, in every state a crash can leave ------------------------------------


def test_a_move_never_overwrites(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        move_file(str(src), str(dst))
    assert (src.read_bytes(), dst.read_bytes()) == (b"new", b"old")


def test_finish_move_completes_every_interrupted_state(tmp_path: Path) -> None:
    def pair(name: str) -> tuple[Path, Path]:
        folder = tmp_path / name
        folder.mkdir()
        return folder / "src.mp3", folder / "dst.mp3"

    src, dst = pair("not-started")
    src.write_bytes(b"a")
    assert finish_move(str(src), str(dst)) == "moved"
    assert (src.exists(), dst.read_bytes()) == (False, b"a")

    src, dst = pair("linked")  # killed between link and unlink
    src.write_bytes(b"b")
    os.link(src, dst)
    assert finish_move(str(src), str(dst)) == "done"
    assert (src.exists(), dst.read_bytes()) == (False, b"b")

    src, dst = pair("copied")  # cross-device: complete copy linked, source not yet removed
    src.write_bytes(b"c")
    dst.write_bytes(b"c")
    assert finish_move(str(src), str(dst)) == "done"
    assert (src.exists(), dst.read_bytes()) == (False, b"c")

    src, dst = pair("part")  # cross-device: killed mid-copy
    src.write_bytes(b"d")
    (dst.parent / ".dst.mp3.part").write_bytes(b"")
    assert finish_move(str(src), str(dst)) == "moved"
    assert (dst.read_bytes(), (dst.parent / ".dst.mp3.part").exists()) == (b"d", False)

    src, dst = pair("done")
    dst.write_bytes(b"e")
    assert finish_move(str(src), str(dst)) == "done"

    src, dst = pair("conflict")  # a different file at the destination: both kept
    src.write_bytes(b"f")
    dst.write_bytes(b"something else")
    assert finish_move(str(src), str(dst)) == "conflict"
    assert (src.read_bytes(), dst.read_bytes()) == (b"f", b"something else")

    src, dst = pair("missing")
    assert finish_move(str(src), str(dst)) == "missing"


def test_a_move_across_file_systems_copies_then_links(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary folder")
    folder = shm / f"scan-test-{os.getpid()}"
    folder.mkdir()
    try:
        src, dst = tmp_path / "src.flac", folder / "dst.flac"
        src.write_bytes(b"x" * 100_000)
        move_file(str(src), str(dst))
        assert (src.exists(), dst.stat().st_size, sorted(os.listdir(folder))) == (
            False,
            100_000,
            ["dst.flac"],
        )
    finally:
        for name in os.listdir(folder):
            os.unlink(folder / name)
        folder.rmdir()


async def test_postgresql_down_between_the_moves_and_the_commit(
    restartable_pg: LocalPostgres, tmp_path: Path
) -> None:
    """The rows cannot be written: the run fails (logged), the files stay staged under the
    journal, and the first run after PostgreSQL is back writes the rows."""
    root = tmp_path / "libraries"
    env = ScanEnv(restartable_pg.dsn, root, root / "inbound", root / "staging", tmp_path / "db")
    env.inbound.mkdir(parents=True)
    env.staging.mkdir()
    env.sql(
        "INSERT INTO library.libraries (name, type, path) VALUES "
        "('Inbound', 'inbound', %s), ('Staging', 'staging', %s)",
        (str(env.inbound), str(env.staging)),
    )
    env.set("scan_db_data_path", str(env.work))
    env.set("settle_seconds", "0")
    write_album(env.inbound / "a", artist="Yankee", album="Zulu", year=2015, tracks=3)
    before = contents(env)

    def crash_postgres(point: str) -> None:
        if point == "before_commit":
            restartable_pg.stop("immediate")

    failed = await run_cycle(env.dsn, MutagenTagReader(), checkpoint=crash_postgres)
    assert (failed.result, failed.reason) == ("failed", "database")
    assert contents(env) == before  # nothing lost: the files sit in staging

    restartable_pg.start()
    summary = await run_cycle(env.dsn, MutagenTagReader())
    assert (summary.result, summary.recovered) == ("success", 1)
    assert env.staged_consistency() == []
    assert env.sql("SELECT status FROM library.scan_runs ORDER BY id") == [
        ("interrupted",),
        ("success",),
    ]
    assert env.sql("SELECT count(*) FROM outbox.messages WHERE kind = 'album'") == [(1,)]


def _write(path: str, data: bytes) -> None:
    Path(path).write_bytes(data)


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


class _Crash(BaseException):
    """Stands for the process dying at a checkpoint (in-process, so the test can edit files)."""


def _crash_at(wanted: str) -> Callable[[str], None]:
    def checkpoint(point: str) -> None:
        if point == wanted:
            raise _Crash(point)

    return checkpoint


async def test_recovery_leaves_out_a_file_removed_meanwhile_and_keeps_a_conflict(
    scan_env: ScanEnv,
) -> None:
    write_album(scan_env.inbound / "a", artist="Alfa", album="Bravo", year=2016, tracks=3,
                album_number=1)  # fmt: skip
    with pytest.raises(_Crash):
        await run_cycle(scan_env.dsn, MutagenTagReader(), checkpoint=_crash_at("journal_written"))
    # Before the next run, someone deletes one of the album's files from inbound.
    removed = sorted((scan_env.inbound / "a").iterdir())[0]
    removed.unlink()
    summary = await run_cycle(scan_env.dsn, MutagenTagReader())
    assert [(a.result, a.tracks) for a in summary.albums] == [("recovered", 2)]
    assert scan_env.staged_consistency() == []
    assert scan_env.sql("SELECT track_count FROM library.staging_items") == [(2,)]

    # A second album is interrupted after its first move, and a different file then takes
    # that destination: nothing is overwritten or deleted, the journal row stays for an operator.
    write_album(scan_env.inbound / "c", artist="Charlie", album="Delta", year=2017, tracks=2,
                album_number=2)  # fmt: skip
    with pytest.raises(_Crash):
        await run_cycle(scan_env.dsn, MutagenTagReader(), checkpoint=_crash_at("moved:1"))
    ((moves,),) = scan_env.sql("SELECT moves FROM library.scan_journal")
    src, dst = moves[0]
    _write(src, b"a different file, uploaded again under the same name")
    with capture_logs() as logs:
        summary = await run_cycle(scan_env.dsn, MutagenTagReader())
    assert [(a.result, a.reason) for a in summary.albums if a.artist == "Charlie"] == [
        ("failed", "recovery_conflict")
    ]
    assert summary.result == "partial"
    assert any(e["event"] == "scan_recovery_conflict" and e["log_level"] == "error" for e in logs)
    assert _read(src).startswith(b"a different file")
    assert _read(dst) != _read(src)
    assert len(scan_env.sql("SELECT 1 FROM library.scan_journal")) == 1
