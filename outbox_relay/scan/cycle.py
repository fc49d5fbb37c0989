"""One scan cycle: inbound folder → tags → albums → staging folder + library rows + outbox rows.

:func:`run_cycle` is the one function both ``outbox-relay scan --once`` and the scheduler call.
It takes a PostgreSQL advisory lock (one run at a time across every process; a run that finds
it taken is skipped and logged), re-reads ``library.settings`` and ``library.libraries``, walks
the inbound library (``workers`` threads read tags, at most ``rate_limit`` files a second),
groups files into albums with the seed's key (:func:`outbox_relay.domain.audio.album_key`) and
stages each album: its files move under ``<staging>/<artist>/<YYYY - Album>/`` and then one
transaction writes its ``library.staging_items`` row, its ``library.albums`` row and its
``outbox.enqueue_album`` row with the tracks' ISRCs.

Why a crash loses nothing and leaves nothing half-done
------------------------------------------------------
For each album, in this order:

1. **Journal.** A ``library.scan_journal`` row holding the album's rows-to-be and every planned
   move ``(src, dst)`` is committed *before the first file moves*.
2. **Moves.** Each file moves with :func:`~outbox_relay.scan.files.move_file`: ``link`` then
   ``unlink`` (or copy to a part file, fsync, ``link``), so at every instant each file is at its
   source, at its destination, or (same inode, or a complete copy) at both — never nowhere, and
   an existing destination is never overwritten. The folders are fsynced before step 3, so a
   power cut cannot un-move a file whose rows committed.
3. **Commit.** One transaction writes the staging item, the album row and the outbox row *and
   deletes the journal row*.

So the database always says exactly one of: "nothing planned" (no journal row, no rows: files
untouched, in inbound), "moving" (a journal row, no rows: each file at its source, its
destination or both), or "staged" (rows, no journal row: every file at its destination). A
SIGKILL between any two of these steps leaves the second state at worst. Every run, holding the
lock (so no other run is mid-album), first rolls journal rows forward
(:func:`~outbox_relay.scan.files.finish_move` completes each move whatever its state, then step 3
runs): after the next cycle no album is staged without its rows and no rows exist without their
files. A file someone removed meanwhile is left out of the rows; a destination holding a
different file is a conflict, logged as an error and left, journal row included, for an operator.

Re-scanning never stages twice: staged files have left the inbound folder; an album whose
staging folder already exists (on disk or in ``library.staging_items``, whose ``staging_path``
is UNIQUE) fails with ``already_staged`` / ``destination_exists`` and stays in inbound. A file
modified less than ``settle_seconds`` ago may still be uploading: it waits, and so does every
album with a file in its folder, until a later cycle.

Bad input never ends the cycle: a file that is not audio, is corrupt, unreadable, of another
format, or lacks title/artist/album is counted and logged with its reason and left in place; an
album-level failure is logged with the album and the reason and the others go on. A run fails
(error log naming the library, the folder or the setting) only when it cannot start: a setting
is invalid, a library is missing or doubled, a folder is missing or unwritable, or the database
fails.

Dry run reports what would move and what would be written and changes nothing in the libraries,
the working folder or the library and outbox tables; it is recorded in ``library.scan_runs``
like any run (``dry_run = true``), which is how an operator reads a scheduled dry run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import asyncpg
import orjson
import structlog

from outbox_relay.db.connection import CONNECTION_ERRORS
from outbox_relay.domain.audio import (
    AudioTags,
    album_artist,
    album_folder_name,
    album_key,
    clip,
    isrc_as_tagged,
    majority_year,
    safe_name,
    track_file_name,
)
from outbox_relay.errors import ScanError, TagReadError
from outbox_relay.metrics import ScanMetrics
from outbox_relay.ports import TagReader
from outbox_relay.scan.files import (
    FoundFile,
    RateLimiter,
    finish_move,
    fsync_dir,
    is_within,
    move_file,
    remove_empty_dirs,
    undo_move,
    walk,
)
from outbox_relay.scan.queries import Q
from outbox_relay.scan.settings import ScanSettings, parse_settings
from outbox_relay.write.asyncpg import enqueue_album

log = structlog.get_logger("outbox_relay.scan")

# pg_advisory_lock key of the scan: "SCAN" in ASCII, so it reads in pg_locks (objid 1396916558).
LOCK_KEY: Final = 0x5343414E
REPORTS_KEPT: Final = 20

Trigger = Literal["schedule", "once"]
Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``; phases ``reading`` and ``staging``; called from threads."""
Checkpoint = Callable[[str], None]
"""Called at named points of a run (``locked``, ``journal_written``, ``linked:N``, ``moved:N``,
``before_commit``, ``committed``); the debug knob OUTBOX_SCAN_DEBUG_HOLD uses it."""

# A lost connection (the package's one list) or any error the server reports.
_DB_ERRORS: Final = (*CONNECTION_ERRORS, asyncpg.PostgresError)


# -- what a run produces ------------------------------------------------------------------------


@dataclass(slots=True)
class AlbumOutcome:
    artist: str
    album: str
    year: int | None
    tracks: int
    staging_path: str
    result: Literal["staged", "would_stage", "failed", "recovered", "waiting"]
    reason: str | None = None
    isrcs: list[str | None] = field(default_factory=list)
    moves: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class ScanSummary:
    scan_id: int | None
    result: Literal["success", "partial", "failed", "skipped"]
    trigger: Trigger
    dry_run: bool
    inbound_path: str | None = None
    staging_path: str | None = None
    workers: int | None = None
    rate_limit: float | None = None
    files_total: int = 0
    files_skipped: dict[str, int] = field(default_factory=dict)
    files_waiting: int = 0
    albums: list[AlbumOutcome] = field(default_factory=list)
    recovered: int = 0
    duration_ms: int = 0
    error: str | None = None
    reason: str | None = None

    @property
    def albums_total(self) -> int:
        return sum(1 for a in self.albums if a.result != "waiting")

    @property
    def albums_success(self) -> int:
        return sum(1 for a in self.albums if a.result in ("staged", "would_stage", "recovered"))

    @property
    def albums_failed(self) -> int:
        return sum(1 for a in self.albums if a.result == "failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "result": self.result,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "inbound_path": self.inbound_path,
            "staging_path": self.staging_path,
            "workers": self.workers,
            "rate_limit": self.rate_limit,
            "files_total": self.files_total,
            "files_skipped": dict(self.files_skipped),
            "files_waiting": self.files_waiting,
            "albums_total": self.albums_total,
            "albums_success": self.albums_success,
            "albums_failed": self.albums_failed,
            "recovered": self.recovered,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "reason": self.reason,
            "albums": [
                {
                    "artist": a.artist,
                    "album": a.album,
                    "year": a.year,
                    "tracks": a.tracks,
                    "staging_path": a.staging_path,
                    "result": a.result,
                    "reason": a.reason,
                    "isrcs": a.isrcs,
                    "moves": [list(m) for m in a.moves],
                }
                for a in self.albums
            ],
        }


# -- planning -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Track:
    src: str
    dst: str
    title: str
    artist: str
    isrc: str | None
    number: int | None


@dataclass(slots=True)
class _Plan:
    key: str
    artist: str
    title: str
    year: int | None
    folder: str
    tracks: list[_Track]

    def album_payload(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "artist": self.artist,
            "title": self.title,
            "year": self.year,
            "tracks": [{"isrc": t.isrc, "title": t.title, "artist": t.artist} for t in self.tracks],
            "files": [os.path.basename(t.dst) for t in self.tracks],
        }

    def moves(self) -> list[tuple[str, str]]:
        return [(t.src, t.dst) for t in self.tracks]

    def outcome(self, result: Any, reason: str | None = None) -> AlbumOutcome:
        return AlbumOutcome(
            artist=self.artist,
            album=self.title,
            year=self.year,
            tracks=len(self.tracks),
            staging_path=self.folder,
            result=result,
            reason=reason,
            isrcs=[t.isrc for t in self.tracks],
            moves=self.moves(),
        )


def _most_common(values: Iterable[str]) -> str:
    counts = Counter(values)
    # Most common first; ties broken by the text itself, so a plan never depends on file order.
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]


def plan_albums(
    files: Sequence[tuple[FoundFile, AudioTags]], staging_root: str
) -> tuple[list[_Plan], list[tuple[str, str, str]]]:
    """Groups tagged files into album plans; returns (plans, [(path, reason, detail)] left out)."""
    groups: dict[str, list[tuple[FoundFile, AudioTags]]] = defaultdict(list)
    left_out: list[tuple[str, str, str]] = []
    for found, tags in files:
        key = album_key(tags)
        if key is None or tags.title is None:
            missing = [
                name
                for name, value in (
                    ("title", tags.title),
                    ("artist", album_artist(tags)),
                    ("album", tags.album),
                )
                if value is None
            ]
            left_out.append((found.path, "missing_tags", "no " + ", ".join(missing) + " tag"))
            continue
        groups[key].append((found, tags))
    plans = []
    for key in sorted(groups):
        members = groups[key]
        artist = clip(_most_common(album_artist(t) or "" for _, t in members))
        title = clip(_most_common(t.album or "" for _, t in members))
        year = majority_year(t.year for _, t in members)
        folder = os.path.join(staging_root, safe_name(artist), album_folder_name(year, title))
        tracks = []
        for found, tags in sorted(
            members, key=lambda m: (m[1].track_number or 10**6, m[1].title or "", m[0].path)
        ):
            assert tags.title is not None
            extension = os.path.splitext(found.path)[1]
            tracks.append(
                _Track(
                    src=found.path,
                    dst=os.path.join(
                        folder, track_file_name(tags.track_number, tags.title, extension)
                    ),
                    title=clip(tags.title),
                    artist=clip(tags.artist or artist),
                    isrc=isrc_as_tagged(tags.isrc),
                    number=tags.track_number,
                )
            )
        plans.append(_Plan(key, artist, title, year, folder, tracks))
    return plans, left_out


# -- reading --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Read:
    total: int = 0
    waiting: list[FoundFile] = field(default_factory=list)
    tagged: list[tuple[FoundFile, AudioTags]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def read_inbound(
    inbound: str,
    reader: TagReader,
    *,
    workers: int,
    rate_limit: float,
    settle_seconds: float,
    progress: Progress | None = None,
    now: float | None = None,
) -> _Read:
    """Walks ``inbound`` and reads every settled file's tags with ``workers`` threads."""
    result = _Read()
    cutoff = (time.time() if now is None else now) - settle_seconds
    ready: list[FoundFile] = []
    for found in walk(inbound):
        result.total += 1
        if settle_seconds > 0 and found.mtime > cutoff:
            result.waiting.append(found)
        else:
            ready.append(found)
    limiter = RateLimiter(rate_limit)

    def read_one(found: FoundFile) -> AudioTags | TagReadError:
        limiter.acquire()
        try:
            return reader.read(found.path)
        except TagReadError as exc:
            return exc

    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan-read") as pool:
        for found, tags in zip(ready, pool.map(read_one, ready), strict=True):
            if isinstance(tags, TagReadError):
                result.failed.append((found.path, tags.reason, tags.detail))
            else:
                result.tagged.append((found, tags))
            done += 1
            if progress is not None:
                progress("reading", done, len(ready))
    return result


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Libraries:
    inbound_name: str
    inbound: str
    staging_name: str
    staging: str


async def load_settings(conn: Any) -> ScanSettings:
    """The current ``staging_scan.*`` settings (ScanError names a bad one)."""
    rows = await conn.fetch(Q["scan_settings"])
    return parse_settings({row["key"]: row["value"] for row in rows})


async def _libraries(conn: Any) -> _Libraries:
    rows = await conn.fetch(Q["scan_libraries"])
    chosen: dict[str, tuple[str, str]] = {}
    for kind in ("inbound", "staging"):
        found = [(r["name"], r["path"]) for r in rows if r["type"] == kind]
        if len(found) != 1:
            names = ", ".join(repr(name) for name, _ in found) or "none"
            raise ScanError(
                f"{kind}_library",
                f"library.libraries must hold exactly one library of type {kind!r} "
                f"(found {len(found)}: {names})",
            )
        chosen[kind] = found[0]
    return _Libraries(
        chosen["inbound"][0], chosen["inbound"][1], chosen["staging"][0], chosen["staging"][1]
    )


def _check_folders(libraries: _Libraries, settings: ScanSettings, dry_run: bool) -> None:
    inbound, staging = libraries.inbound, libraries.staging
    if not os.path.isdir(inbound):
        raise ScanError(
            "inbound_unavailable",
            f"library {libraries.inbound_name!r} (inbound): {inbound} is not a folder "
            "(missing or not a directory)",
        )
    if not os.access(inbound, os.R_OK | os.X_OK | os.W_OK):
        raise ScanError(
            "inbound_unavailable",
            f"library {libraries.inbound_name!r} (inbound): {inbound} is not readable and "
            "writable by this process (files are moved out of it)",
        )
    if not os.path.isdir(staging):
        raise ScanError(
            "staging_unavailable",
            f"library {libraries.staging_name!r} (staging): {staging} is not a folder "
            "(missing or not a directory)",
        )
    if not os.access(staging, os.W_OK | os.X_OK):
        raise ScanError(
            "staging_unavailable",
            f"library {libraries.staging_name!r} (staging): {staging} is not writable by this "
            "process",
        )
    if is_within(inbound, staging) or is_within(staging, inbound):
        raise ScanError(
            "libraries_overlap",
            f"the inbound folder {inbound} and the staging folder {staging} must not contain "
            "each other",
        )
    work = settings.scan_db_data_path
    if is_within(work, inbound) or is_within(work, staging):
        raise ScanError(
            "invalid_setting",
            f"staging_scan.scan_db_data_path must be outside every library (got {work!r})",
        )
    if not dry_run:
        try:
            os.makedirs(work, exist_ok=True)
        except OSError as exc:
            raise ScanError(
                "scan_db_data_path_unavailable",
                f"staging_scan.scan_db_data_path {work}: cannot create it ({exc.strerror})",
            ) from exc
        if not os.access(work, os.W_OK | os.X_OK):
            raise ScanError(
                "scan_db_data_path_unavailable",
                f"staging_scan.scan_db_data_path {work} is not writable by this process",
            )


def _move_album(plan: _Plan, checkpoint: Checkpoint, counter: list[int]) -> None:
    os.makedirs(os.path.dirname(plan.folder), exist_ok=True)
    os.mkdir(plan.folder)  # FileExistsError: never stage into an existing folder
    sources = set()
    for track in plan.tracks:
        counter[0] += 1
        number = counter[0]

        def numbered(point: str, number: int = number) -> None:
            checkpoint(f"{point}:{number}")

        move_file(track.src, track.dst, numbered)
        sources.add(os.path.dirname(track.src))
        checkpoint(f"moved:{number}")
    for folder in (plan.folder, os.path.dirname(plan.folder), *sorted(sources)):
        fsync_dir(folder)


def _finish_moves(moves: Sequence[tuple[str, str]]) -> list[str]:
    # The crash may have come before the album's folder was made.
    for folder in {os.path.dirname(dst) for _, dst in moves}:
        os.makedirs(folder, exist_ok=True)
    return [finish_move(src, dst) for src, dst in moves]


def _undo_album(moves: Sequence[tuple[str, str]], folder: str | None, staging_root: str) -> None:
    for src, dst in moves:
        with contextlib.suppress(OSError):
            undo_move(src, dst)
    if folder:
        remove_empty_dirs(folder, staging_root)


async def _write_rows(
    conn: Any, journal_id: int, scan_id: int, folder: str, album: dict[str, Any]
) -> int:
    """Step 3: the album's rows and the journal row's deletion, one transaction."""
    async with conn.transaction():
        outbox_id = await enqueue_album(
            conn, title=album["title"], artist=album["artist"], tracks=album["tracks"]
        )
        album_id = await conn.fetchval(
            Q["scan_insert_album"],
            album["title"],
            album["artist"],
            orjson.dumps(album["tracks"]).decode(),
            outbox_id,
        )
        await conn.fetchval(
            Q["scan_insert_staging_item"],
            folder,
            scan_id,
            album["key"],
            album["artist"],
            album["title"],
            album["year"],
            len(album["tracks"]),
            orjson.dumps(album["files"]).decode(),
            album_id,
            outbox_id,
        )
        await conn.execute(Q["scan_journal_delete"], journal_id)
    return outbox_id


class _Run:
    """The state of one run while it holds the lock."""

    def __init__(
        self,
        conn: Any,
        scan_id: int,
        reader: TagReader,
        settings: ScanSettings,
        libraries: _Libraries,
        summary: ScanSummary,
        metrics: ScanMetrics | None,
        progress: Progress | None,
        checkpoint: Checkpoint,
    ) -> None:
        self.conn = conn
        self.scan_id = scan_id
        self.reader = reader
        self.settings = settings
        self.libraries = libraries
        self.summary = summary
        self.metrics = metrics
        self.progress = progress
        self.checkpoint = checkpoint
        self.moves_done = [0]

    def _album_log(self, event: str, outcome: AlbumOutcome, **extra: Any) -> None:
        fields = {
            "scan_id": self.scan_id,
            "album": outcome.album,
            "artist": outcome.artist,
            "year": outcome.year,
            "total_tracks": outcome.tracks,
            "staging_path": outcome.staging_path,
            "reason": outcome.reason,
            **extra,
        }
        if outcome.result == "failed":
            log.warning(event, result="error", **fields)
        else:
            log.info(event, result="success", **fields)

    async def recover(self) -> None:
        """Rolls every journal row forward (module docstring); dry runs only report them."""
        rows = await self.conn.fetch(Q["scan_journal_pending"])
        if not rows:
            return
        if self.summary.dry_run:
            log.warning("scan_journal_pending", scan_id=self.scan_id, albums=len(rows))
            return
        for row in rows:
            album = orjson.loads(row["album"])
            moves = [(src, dst) for src, dst in orjson.loads(row["moves"])]
            states = await asyncio.to_thread(_finish_moves, moves)
            outcome = AlbumOutcome(
                artist=album["artist"],
                album=album["title"],
                year=album["year"],
                tracks=len(moves),
                staging_path=row["staging_path"],
                result="recovered",
                isrcs=[t["isrc"] for t in album["tracks"]],
                moves=moves,
            )
            if "conflict" in states:
                outcome.result, outcome.reason = "failed", "recovery_conflict"
                conflicts = [m for m, s in zip(moves, states, strict=True) if s == "conflict"]
                log.error(
                    "scan_recovery_conflict",
                    scan_id=self.scan_id,
                    staging_path=row["staging_path"],
                    conflicts=conflicts,
                    hint="both paths hold different files; resolve by hand, then delete the "
                    "library.scan_journal row or leave it for the next run",
                )
                self.summary.albums.append(outcome)
                continue
            kept = [i for i, state in enumerate(states) if state != "missing"]
            if len(kept) < len(moves):
                log.warning(
                    "scan_recovery_files_missing",
                    scan_id=self.scan_id,
                    staging_path=row["staging_path"],
                    missing=[moves[i][0] for i in range(len(moves)) if i not in kept],
                )
            album["tracks"] = [album["tracks"][i] for i in kept]
            album["files"] = [album["files"][i] for i in kept]
            outcome.tracks = len(kept)
            outcome.isrcs = [t["isrc"] for t in album["tracks"]]
            if not kept:
                await self.conn.execute(Q["scan_journal_delete"], row["id"])
                await asyncio.to_thread(
                    remove_empty_dirs, row["staging_path"], self.libraries.staging
                )
                outcome.result, outcome.reason = "failed", "files_missing"
            else:
                await asyncio.to_thread(fsync_dir, row["staging_path"])
                outbox_id = await _write_rows(
                    self.conn, row["id"], row["scan_id"], row["staging_path"], album
                )
                self.summary.recovered += 1
                self._album_log("scan_album_recovered", outcome, outbox_id=outbox_id)
            if outcome.result == "failed":
                self._album_log("scan_album_failed", outcome)
            self.summary.albums.append(outcome)

    async def stage(self, plan: _Plan) -> AlbumOutcome:
        """Steps 1-3 of the module docstring for one album."""
        if self.summary.dry_run:
            return plan.outcome("would_stage")
        moves = plan.moves()
        journal_id = await self.conn.fetchval(
            Q["scan_journal_insert"],
            self.scan_id,
            plan.folder,
            orjson.dumps(plan.album_payload()).decode(),
            orjson.dumps(moves).decode(),
        )
        await _reach(self.checkpoint, "journal_written")
        try:
            await asyncio.to_thread(_move_album, plan, self.checkpoint, self.moves_done)
        except OSError as exc:
            # Nothing committed: put back what moved, forget the plan, report the album.
            created = not isinstance(exc, FileExistsError) or exc.filename != plan.folder
            await asyncio.to_thread(
                _undo_album, moves, plan.folder if created else None, self.libraries.staging
            )
            await self.conn.execute(Q["scan_journal_delete"], journal_id)
            reason = "destination_exists" if isinstance(exc, FileExistsError) else "move_failed"
            return plan.outcome("failed", f"{reason}: {exc}")
        await _reach(self.checkpoint, "before_commit")
        try:
            outbox_id = await _write_rows(
                self.conn, journal_id, self.scan_id, plan.folder, plan.album_payload()
            )
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            # The database refused these rows (and will again): undo the moves.
            await asyncio.to_thread(_undo_album, moves, plan.folder, self.libraries.staging)
            await self.conn.execute(Q["scan_journal_delete"], journal_id)
            return plan.outcome("failed", f"rows_rejected: {exc}")
        await _reach(self.checkpoint, "committed")
        # Tidy the inbound folder: sub-folders the album emptied go (never the library's root).
        for folder in sorted({os.path.dirname(src) for src, _ in moves}, reverse=True):
            await asyncio.to_thread(remove_empty_dirs, folder, self.libraries.inbound)
        outcome = plan.outcome("staged")
        self._album_log("scan_album_staged", outcome, outbox_id=outbox_id)
        return outcome

    async def run(self) -> None:
        settings, summary = self.settings, self.summary
        await self.recover()
        read = await asyncio.to_thread(
            read_inbound,
            self.libraries.inbound,
            self.reader,
            workers=settings.workers,
            rate_limit=settings.rate_limit,
            settle_seconds=settings.settle_seconds,
            progress=self.progress,
        )
        summary.files_total = read.total
        summary.files_waiting = len(read.waiting)
        skipped: Counter[str] = Counter()
        for path, reason, detail in read.failed:
            skipped[reason] += 1
            log.warning(
                "scan_file_skipped", scan_id=self.scan_id, path=path, reason=reason, error=detail
            )
        plans, left_out = plan_albums(read.tagged, self.libraries.staging)
        for path, reason, detail in left_out:
            skipped[reason] += 1
            log.warning(
                "scan_file_skipped", scan_id=self.scan_id, path=path, reason=reason, error=detail
            )
        summary.files_skipped = dict(skipped)
        waiting_dirs = {os.path.dirname(f.path) for f in read.waiting}
        if read.waiting:
            log.info(
                "scan_files_waiting",
                scan_id=self.scan_id,
                files=len(read.waiting),
                settle_seconds=settings.settle_seconds,
            )
        staged_before = {
            row["staging_path"]
            for row in await self.conn.fetch(
                Q["scan_staged_paths"], [plan.folder for plan in plans]
            )
        }
        for done, plan in enumerate(plans, start=1):
            if any(os.path.dirname(t.src) in waiting_dirs for t in plan.tracks):
                outcome = plan.outcome("waiting", "files_settling")
            elif len({t.dst for t in plan.tracks}) < len(plan.tracks):
                outcome = plan.outcome("failed", "duplicate_tracks: two files would get one name")
            elif plan.folder in staged_before:
                outcome = plan.outcome("failed", "already_staged")
            elif await asyncio.to_thread(os.path.lexists, plan.folder):
                outcome = plan.outcome("failed", "destination_exists")
            else:
                outcome = await self.stage(plan)
            if outcome.result == "failed":
                self._album_log("scan_album_failed", outcome)
            elif outcome.result == "would_stage":
                self._album_log("scan_album_would_stage", outcome, moves=outcome.moves)
            summary.albums.append(outcome)
            if self.progress is not None:
                self.progress("staging", done, len(plans))


def _no_checkpoint(point: str) -> None:
    pass


async def _reach(checkpoint: Checkpoint, point: str) -> None:
    """Calls a checkpoint from the event loop; off the loop when one is set (a debug hold
    blocks, and the loop must go on handling signals meanwhile)."""
    if checkpoint is not _no_checkpoint:
        await asyncio.to_thread(checkpoint, point)


def _record_metrics(metrics: ScanMetrics | None, summary: ScanSummary, seconds: float) -> None:
    if metrics is None:
        return
    metrics.runs.labels(result=summary.result).inc()
    if summary.result == "skipped":
        return
    metrics.duration.observe(seconds)
    if summary.result in ("success", "partial"):
        metrics.last_success.set(time.time())
    for album in summary.albums:
        if album.result != "waiting":
            metrics.albums.labels(result=album.result).inc()
    files: Counter[str] = Counter(summary.files_skipped)
    files["waiting"] += summary.files_waiting
    for album in summary.albums:
        if album.result in ("staged", "recovered"):
            files["staged"] += album.tracks
        elif album.result == "would_stage":
            files["would_stage"] += album.tracks
        elif album.result == "failed":
            files["album_failed"] += album.tracks
    for result, count in files.items():
        if count:
            metrics.files.labels(result=result).inc(count)


def _write_report(settings: ScanSettings, summary: ScanSummary) -> None:
    """``<scan_db_data_path>/scan-<id>.json``: the run's plan and outcomes; the last 20 kept."""
    folder = settings.scan_db_data_path
    path = os.path.join(folder, f"scan-{summary.scan_id:08d}.json")
    part = path + ".part"
    with open(part, "wb") as out:
        out.write(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2))
    os.replace(part, path)
    reports = sorted(n for n in os.listdir(folder) if n.startswith("scan-") and n.endswith(".json"))
    for old in reports[:-REPORTS_KEPT]:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, old))


async def run_cycle(
    dsn: str,
    reader: TagReader,
    *,
    trigger: Trigger = "once",
    dry_run: bool = False,
    require_enabled: bool = False,
    host: str = "",
    metrics: ScanMetrics | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
) -> ScanSummary:
    """Runs one scan cycle now (see the module docstring); never raises for a failed run.

    ``dry_run`` forces a dry run (``--dry-run``); the ``staging_scan.dry_run`` setting can
    only add one. ``require_enabled`` (the scheduler) skips the run when the
    ``staging_scan.enabled`` setting reads false at the moment it starts.
    """
    started = time.monotonic()
    checkpoint = checkpoint or _no_checkpoint
    summary = ScanSummary(scan_id=None, result="failed", trigger=trigger, dry_run=dry_run)
    correlation = uuid.uuid4().hex[:12]
    conn: Any = None
    locked = False
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
        await conn.execute(Q["scan_session"])
        if not await conn.fetchval(Q["scan_try_lock"], LOCK_KEY):
            summary.result, summary.reason = "skipped", "run_in_progress"
            log.warning(
                "scan_skipped",
                trigger=trigger,
                reason="run_in_progress",
                detail="another process holds the scan lock; this tick is skipped",
            )
            _record_metrics(metrics, summary, 0.0)
            return summary
        locked = True
        if metrics is not None:
            metrics.running.set(1)
        await _reach(checkpoint, "locked")
        await conn.fetch(Q["scan_mark_interrupted"])
        settings: ScanSettings | None = None
        libraries: _Libraries | None = None
        problem: ScanError | None = None
        try:
            settings = await load_settings(conn)
            if require_enabled and not settings.enabled:
                summary.result, summary.reason = "skipped", "disabled"
                log.info("scan_skipped", trigger=trigger, reason="disabled")
                _record_metrics(metrics, summary, 0.0)
                return summary
            summary.dry_run = dry_run or settings.dry_run
            summary.workers, summary.rate_limit = settings.workers, settings.rate_limit
            libraries = await _libraries(conn)
            summary.inbound_path, summary.staging_path = libraries.inbound, libraries.staging
        except ScanError as exc:
            problem = exc
        scan_id = await conn.fetchval(
            Q["scan_run_start"],
            trigger,
            summary.dry_run,
            host or correlation,
            summary.inbound_path,
            summary.staging_path,
            summary.workers,
            summary.rate_limit,
        )
        summary.scan_id = scan_id
        structlog.contextvars.bind_contextvars(scan_id=scan_id)
        log.info(
            "scan_started",
            scan_id=scan_id,
            trigger=trigger,
            inbound_path=summary.inbound_path,
            staging_path=summary.staging_path,
            dry_run=summary.dry_run,
            workers=summary.workers,
            rate_limit=summary.rate_limit,
            settle_seconds=settings.settle_seconds if settings else None,
            scan_db_data_path=settings.scan_db_data_path if settings else None,
        )
        try:
            if problem is not None:
                raise problem
            assert settings is not None and libraries is not None
            _check_folders(libraries, settings, summary.dry_run)
            await _Run(
                conn, scan_id, reader, settings, libraries, summary, metrics, progress, checkpoint
            ).run()
            summary.result = "partial" if summary.albums_failed else "success"
            if not summary.dry_run:
                try:
                    await asyncio.to_thread(_write_report, settings, summary)
                except OSError as exc:
                    log.warning("scan_report_not_written", scan_id=scan_id, error=str(exc))
        except ScanError as exc:
            summary.result, summary.reason, summary.error = "failed", exc.reason, str(exc)
            log.error("scan_failed", scan_id=scan_id, reason=exc.reason, error=str(exc))
        summary.duration_ms = int((time.monotonic() - started) * 1000)
        await conn.execute(
            Q["scan_run_finish"],
            scan_id,
            summary.result,
            summary.files_total,
            sum(summary.files_skipped.values()),
            summary.files_waiting,
            summary.albums_total,
            summary.albums_success,
            summary.albums_failed,
            summary.recovered,
            summary.duration_ms,
            summary.error,
        )
    except _DB_ERRORS as exc:
        summary.result, summary.reason = "failed", "database"
        summary.error = f"{type(exc).__name__}: {exc}"
        log.error("scan_failed", scan_id=summary.scan_id, reason="database", error=summary.error)
    finally:
        if metrics is not None and locked:
            metrics.running.set(0)
        if conn is not None:
            if locked:
                with contextlib.suppress(*_DB_ERRORS):
                    await conn.fetchval(Q["scan_unlock"], LOCK_KEY)
            with contextlib.suppress(*_DB_ERRORS):
                await conn.close()
        structlog.contextvars.unbind_contextvars("scan_id")
    summary.duration_ms = int((time.monotonic() - started) * 1000)
    log.info(
        "scan_summary",
        scan_id=summary.scan_id,
        result=summary.result,
        trigger=trigger,
        inbound_path=summary.inbound_path,
        staging_path=summary.staging_path,
        albums_total=summary.albums_total,
        albums_success=summary.albums_success,
        albums_failed=summary.albums_failed,
        files_total=summary.files_total,
        files_skipped=sum(summary.files_skipped.values()),
        files_waiting=summary.files_waiting,
        recovered=summary.recovered,
        duration_ms=summary.duration_ms,
        dry_run=summary.dry_run,
        rate_limit=summary.rate_limit,
        reason=summary.reason,
    )
    _record_metrics(metrics, summary, summary.duration_ms / 1000)
    return summary
