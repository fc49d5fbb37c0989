"""Fixtures of the inbound scan's tests: real folders, a real migrated database, real audio."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest


@dataclass
class ScanEnv:
    """A database with one inbound and one staging library, and their folders."""

    dsn: str
    root: Path
    inbound: Path
    staging: Path
    work: Path

    def sql(self, statement: Any, params: Any = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description is not None else []

    def set(self, key: str, value: str) -> None:
        self.sql(
            "UPDATE library.settings SET value = %s WHERE key = %s", (value, f"staging_scan.{key}")
        )

    def files(self) -> dict[str, str]:
        """Every file under the root (relative path → SHA-256), the work folder left out."""
        found = {}
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = Path(folder) / name
                if self.work in path.parents:
                    continue
                found[str(path.relative_to(self.root))] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
        return found

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the library and outbox tables the scan writes (scan_runs left out)."""
        return {
            table: self.sql(f"SELECT * FROM {table} ORDER BY 1")  # type: ignore[arg-type]
            for table in (
                "library.albums",
                "library.tracks",
                "library.staging_items",
                "library.scan_journal",
                "library.settings",
                "library.libraries",
                "outbox.messages",
            )
        }

    def staged_consistency(self) -> list[str]:
        """Problems: staged album folders without rows, rows without files, journal rows."""
        problems = []
        rows = self.sql("SELECT staging_path, files FROM library.staging_items")
        by_path = {path: files for path, files in rows}
        for path, files in by_path.items():
            for name in files:
                if not (Path(path) / name).is_file():
                    problems.append(f"row without file: {path}/{name}")
        for artist in self.staging.iterdir():
            for album in artist.iterdir():
                if str(album) not in by_path:
                    problems.append(f"folder without row: {album}")
                else:
                    on_disk = sorted(p.name for p in album.iterdir())
                    if on_disk != sorted(by_path[str(album)]):
                        problems.append(f"files differ from the row: {album}: {on_disk}")
        journal = self.sql("SELECT staging_path FROM library.scan_journal")
        problems += [f"journal row left: {path}" for (path,) in journal]
        return problems


@pytest.fixture
def scan_env(database_url: str, tmp_path: Path) -> Iterator[ScanEnv]:
    root = tmp_path / "libraries"
    env = ScanEnv(database_url, root, root / "inbound", root / "staging", tmp_path / "scan-db")
    env.inbound.mkdir(parents=True)
    env.staging.mkdir()
    env.sql(
        "INSERT INTO library.libraries (name, type, path) VALUES "
        "('Inbound', 'inbound', %s), ('Staging', 'staging', %s)",
        (str(env.inbound), str(env.staging)),
    )
    env.set("scan_db_data_path", str(env.work))
    env.set("settle_seconds", "0")
    yield env
