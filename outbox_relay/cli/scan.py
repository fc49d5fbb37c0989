"""``outbox-relay scan --once``: the summary as tables, and a progress bar on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from outbox_relay.scan.cycle import ScanSummary


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_summary(summary: ScanSummary) -> str:
    """The run's outcome: one table of albums, one of totals."""
    lines: list[str] = []
    mode = " (dry run: nothing was changed)" if summary.dry_run else ""
    lines.append(f"scan {summary.scan_id or '-'}: {summary.result}{mode}")
    if summary.error:
        lines.append(f"error: {summary.error}")
    elif summary.reason and summary.result == "skipped":
        lines.append(f"skipped: {summary.reason} (another process holds the scan lock)")
    lines.append("")
    if summary.albums:
        rows = [
            [
                album.artist,
                album.album,
                str(album.year or ""),
                str(album.tracks),
                album.result,
                album.reason or "",
                album.staging_path,
            ]
            for album in summary.albums
        ]
        lines += _table(
            ["artist", "album", "year", "tracks", "outcome", "reason", "staging path"], rows
        )
        lines.append("")
    rate = "unlimited" if not summary.rate_limit else f"{summary.rate_limit:g}"
    totals = [
        ["inbound", summary.inbound_path or "-"],
        ["staging", summary.staging_path or "-"],
        ["files", str(summary.files_total)],
        ["files waiting (settling)", str(summary.files_waiting)],
        *(
            [f"files skipped: {reason}", str(count)]
            for reason, count in sorted(summary.files_skipped.items())
        ),
        ["albums", str(summary.albums_total)],
        ["albums " + ("that would be staged" if summary.dry_run else "staged"),
         str(summary.albums_success)],
        ["albums failed", str(summary.albums_failed)],
        ["albums recovered", str(summary.recovered)],
        ["workers", str(summary.workers or "-")],
        ["rate limit (files/s)", rate],
        ["duration", f"{summary.duration_ms} ms"],
    ]  # fmt: skip
    lines += _table(["", "value"], totals)
    return "\n".join(lines)


class ProgressBar:
    """A one-line bar on a terminal (stderr), redrawn at most 20 times a second; else nothing."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.width = width
        self._last = 0.0
        self._drawn = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.05:
            return
        self._last = now
        filled = self.width if total == 0 else self.width * done // total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{phase:<8} [{bar}] {done}/{total}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def summary_json(summary: ScanSummary) -> dict[str, Any]:
    return summary.as_dict()
