"""File-system steps of the scan: walking the inbound folder, reading tags, moving without loss.

A move never overwrites and never leaves a file nowhere:

- Same file system: ``link(src, dst)`` then ``unlink(src)``. ``link`` fails if ``dst`` exists
  (unlike ``rename``, which silently replaces it), and between the two calls the file has two
  names for one inode, so a crash there leaves it in both places, never in none.
- Across file systems (``link`` fails with EXDEV): copy to a hidden ``.<name>.part`` in the
  destination folder, fsync it, ``link`` it to ``dst`` (again refusing to overwrite), then remove
  the part file and the source. ``dst`` only ever appears complete.

:func:`finish_move` completes a move a crash interrupted, from whatever state it left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

PART_PREFIX: Final = "."
PART_SUFFIX: Final = ".part"


@dataclass(frozen=True, slots=True)
class FoundFile:
    path: str
    size: int
    mtime: float


def walk(root: str) -> Iterator[FoundFile]:
    """Regular files under ``root``, depth first, sorted, hidden entries (``.*``) skipped.

    Symbolic links are not followed (a link out of the inbound folder must not make the scan
    move someone else's files). Unreadable sub-folders are skipped silently by ``scandir``'s
    caller: they show up as fewer files, and the operator sees the count.
    """
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listed = sorted(entries, key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in listed:
            if entry.name.startswith("."):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                subfolders.append(entry.path)
            elif stat.S_ISREG(info.st_mode):
                yield FoundFile(entry.path, info.st_size, info.st_mtime)
        stack.extend(reversed(subfolders))


class RateLimiter:
    """At most ``rate`` acquisitions a second across threads (0 = unlimited), evenly spaced."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self._interval == 0.0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self._interval
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _part_path(dst: str) -> str:
    folder, name = os.path.split(dst)
    return os.path.join(folder, f"{PART_PREFIX}{name}{PART_SUFFIX}")


def fsync_dir(path: str) -> None:
    """Makes a folder's entries (created, removed names) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_file(src: str, dst: str, checkpoint: Callable[[str], None] | None = None) -> None:
    """Moves ``src`` to ``dst``; FileExistsError if ``dst`` exists (it is never overwritten)."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        _copy_move(src, dst)
        return
    if checkpoint is not None:
        checkpoint("linked")
    os.unlink(src)


def _copy_move(src: str, dst: str) -> None:
    part = _part_path(dst)
    with open(src, "rb") as source, open(part, "xb") as target:
        shutil.copyfileobj(source, target, 1024 * 1024)
        target.flush()
        os.fsync(target.fileno())
    shutil.copystat(src, part)
    try:
        os.link(part, dst)  # refuses to overwrite, unlike rename
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            os.unlink(part)
            raise
        # A file system without hard links: rename, after checking dst once more.
        if os.path.lexists(dst):
            os.unlink(part)
            raise FileExistsError(errno.EEXIST, "destination exists", dst) from exc
        os.rename(part, dst)
    else:
        os.unlink(part)
    os.unlink(src)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def finish_move(src: str, dst: str) -> str:
    """Completes an interrupted :func:`move_file`; returns what it found.

    ``"done"``: the file is at ``dst`` only (or now is); ``"moved"``: it had not moved yet and now
    has; ``"missing"``: it is in neither place (removed by someone else since the plan);
    ``"conflict"``: both paths hold different files and neither is touched.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_part_path(dst))  # an unfinished copy; the source is intact
    dst_exists = os.path.lexists(dst)
    src_exists = os.path.lexists(src)
    if dst_exists and not src_exists:
        return "done"
    if dst_exists and src_exists:
        # The same inode (crashed between link and unlink), or a complete copy (dst only ever
        # appears complete): the source is the spare. A different size means a different file.
        if _same_file(src, dst) or os.path.getsize(src) == os.path.getsize(dst):
            os.unlink(src)
            return "done"
        return "conflict"
    if src_exists:
        move_file(src, dst)
        return "moved"
    return "missing"


def undo_move(src: str, dst: str) -> None:
    """Moves a file back to where it came from (an album whose rows could not be written)."""
    if os.path.lexists(dst) and not os.path.lexists(src):
        os.makedirs(os.path.dirname(src), exist_ok=True)
        move_file(dst, src)


def remove_empty_dirs(path: str, stop: str) -> None:
    """Removes ``path`` and its parents while they are empty, never ``stop`` or above it."""
    stop = os.path.abspath(stop)
    current = os.path.abspath(path)
    while current != stop and current.startswith(stop + os.sep):
        try:
            os.rmdir(current)
        except OSError:
            return
        current = os.path.dirname(current)


def is_within(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or inside it (both resolved)."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)
