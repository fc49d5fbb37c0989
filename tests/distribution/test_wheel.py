"""The built wheel carries the migrations, and `migrate` run from it finds and applies them.

The migrations live at the top of the repository; pyproject.toml force-includes them in the
wheel as ``outbox_relay/_migrations``. Here the wheel is built, unpacked away from the work tree
and run as ``python -m outbox_relay migrate`` against a real PostgreSQL: nothing may come from
the repository. scripts/check-wheel (CI) installs the same wheel into a clean virtualenv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Slow (builds and installs the wheel): CI runs it, -m "not slow" leaves it out. One xdist
# worker runs the whole module: one wheel build, not one a worker from the same source tree.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "migrations"
PgQuery = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--wheel-dir", str(dist), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [built] = dist.glob("outbox_relay-*.whl")
    yield built


def test_the_wheel_carries_every_migration_unchanged(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            Path(name).name: archive.read(name)
            for name in archive.namelist()
            if name.startswith("outbox_relay/_migrations/")
        }
    source = {path.name: path.read_bytes() for path in MIGRATIONS.glob("*.sql")}
    assert source, "no migrations in the repository?"
    assert shipped == source


def test_migrate_from_the_wheel_finds_its_migrations_and_applies_them(
    wheel: Path, tmp_path: Path, fresh_database_url: str, pg_query: PgQuery
) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {
        **os.environ,
        "PYTHONPATH": str(site),  # ahead of the work tree's editable install
        "DATABASE_URL": fresh_database_url,
        "OUTBOX_LOG_FORMAT": "json",
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    where = run("-c", "from outbox_relay.db.migrate import migrations_dir; print(migrations_dir())")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()) == site / "outbox_relay" / "_migrations"

    def applied() -> list[int]:
        statement = "SELECT version FROM outbox.schema_migrations ORDER BY 1"
        return [row[0] for row in pg_query(fresh_database_url, statement)]

    first = run("-m", "outbox_relay", "migrate")
    assert first.returncode == 0, first.stdout + first.stderr
    assert applied() == [int(path.name[:3]) for path in sorted(MIGRATIONS.glob("*.sql"))]
    again = run("-m", "outbox_relay", "migrate")  # a second run applies nothing
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(applied()) == len(list(MIGRATIONS.glob("*.sql")))
