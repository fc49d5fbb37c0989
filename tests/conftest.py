"""Shared fixtures: a real PostgreSQL for the whole session, a migrated template, a clone a test.

By default the session starts its own throwaway server from the machine's PostgreSQL binaries
(:class:`outbox_relay.testing.postgres.LocalPostgres`, durability off for speed). Set
``OUTBOX_TEST_DATABASE_URL=postgresql://user@host:port/db`` to use an existing server instead: the
suite then only creates and drops its own ``outbox_template_*``/``outbox_test_*`` databases there
(the role needs CREATEDB) and never touches the others; tests that must stop or restart
PostgreSQL are skipped.

Fixtures:

- ``pg_server`` (session): the server, as a :class:`PgServer`.
- ``template_database`` (session): a database migrated once per session.
- ``database_url`` (function): a fresh clone of the template (``CREATE DATABASE ... TEMPLATE``),
  dropped afterwards. This is what most tests want.
- ``fresh_database_url`` (function): an empty database, for migration tests.
- ``restartable_pg`` (function): a dedicated, migrated :class:`LocalPostgres` a test may stop,
  kill and restart (``.dsn`` is the migrated database; commits survive ``stop("immediate")``).
- ``pg_query`` (function): ``pg_query(dsn, "SELECT ...", params)`` -> rows, for assertions.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, LiteralString, TypeVar

import psycopg
import pytest
import structlog
from psycopg import sql

from outbox_relay.testing.postgres import (
    LocalPostgres,
    create_database,
    drop_database,
    dsn_with_database,
)

# The relay harness (fixtures ``standin`` and ``harness``) for every folder of the suite.
pytest_plugins = ("relay.harness",)

TEST_DATABASE_URL_ENV = "OUTBOX_TEST_DATABASE_URL"

log = structlog.get_logger("tests.conftest")

T = TypeVar("T")
Rows = list[tuple[Any, ...]]
PgQuery = Callable[..., Rows]


def _redact(dsn: str) -> str:
    """The URL without its password, for messages."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs ``factory()`` to completion on a private event loop in a worker thread.

    Sync fixtures need async code (the migrator). ``asyncio.run`` on the main thread would work
    between tests, but it resets the thread's current event loop when it finishes, which is the
    loop pytest-asyncio manages; a separate thread keeps the two apart, and also works if a
    loop happens to be running.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fixture-loop") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def migrate_database(dsn: str) -> list[str]:
    """Applies the project's migrations to ``dsn``; returns the names applied."""
    # Imported here, not at the top: the fixtures module must load (and the embedded-server
    # tests run) even while the migrator is broken or being rewritten.
    from outbox_relay.db.migrate import migrate

    return run_coroutine(lambda: migrate(dsn))


def query(dsn: str, statement: LiteralString, params: Sequence[Any] = ()) -> Rows:
    """Runs one statement in autocommit on a short-lived connection; returns its rows.

    Synchronous on purpose, for assertions. From an async test it blocks the event loop for
    the duration: keep it to quick reads that no lock held by the code under test can stall.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description is not None else []


@dataclass
class PgServer:
    """The session's PostgreSQL: one this run started (``local``) or an external one."""

    admin_dsn: str
    local: LocalPostgres | None
    server_version_num: int

    @property
    def external(self) -> bool:
        """True when the server came from ``OUTBOX_TEST_DATABASE_URL``."""
        return self.local is None

    def dsn_for(self, dbname: str) -> str:
        """URL of database ``dbname`` on this server."""
        return dsn_with_database(self.admin_dsn, dbname)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Creates ``name`` (a clone of ``template`` if given) and returns its URL."""
        # FILE_COPY (15+) copies the template's files: measured 12 ms a clone on tmpfs against
        # 21 ms for the default WAL_LOG, which writes every page to WAL. Its extra checkpoints
        # cost little on a server without fsync. Older servers only know file copy anyway.
        strategy: Literal["file_copy"] | None = None
        if template is not None and self.server_version_num >= 150000:
            strategy = "file_copy"
        create_database(self.admin_dsn, name, template=template, strategy=strategy)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drops ``name``, disconnecting whoever still uses it."""
        drop_database(self.admin_dsn, name)

    def require_restartable(self) -> LocalPostgres:
        """The local server, or a skip: an external server is not ours to stop."""
        if self.local is None:
            pytest.skip(
                f"needs a PostgreSQL this run can stop and restart; {TEST_DATABASE_URL_ENV} "
                "points at an external server"
            )
        return self.local


@dataclass(frozen=True)
class TemplateDatabase:
    """The migrated template every ``database_url`` is cloned from."""

    name: str
    applied: tuple[str, ...]


def _unique_name(prefix: str) -> str:
    # Random, not sequential: several runs may share one external server.
    return f"{prefix}_{secrets.token_hex(6)}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (started here unless OUTBOX_TEST_DATABASE_URL is set)."""
    external = os.environ.get(TEST_DATABASE_URL_ENV)
    if external:
        if urllib.parse.urlsplit(external).scheme not in ("postgresql", "postgres"):
            # asyncpg (the relay's driver) only takes URLs, and so do these fixtures.
            pytest.fail(
                f"{TEST_DATABASE_URL_ENV} must be a postgresql://user@host:port/db URL",
                pytrace=False,
            )
        try:
            with psycopg.connect(external, autocommit=True, connect_timeout=10) as conn:
                version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        except psycopg.Error as exc:
            pytest.fail(
                f"{TEST_DATABASE_URL_ENV}={_redact(external)}: cannot connect: {exc}",
                pytrace=False,
            )
        if version < 130000:
            # DROP DATABASE ... WITH (FORCE) appeared in 13.
            pytest.fail(f"{TEST_DATABASE_URL_ENV}: PostgreSQL 13 or newer is needed", pytrace=False)
        yield PgServer(admin_dsn=external, local=None, server_version_num=version)
        return

    began = time.monotonic()
    with LocalPostgres(fast=True) as pg:
        version = int(query(pg.dsn, "SHOW server_version_num")[0][0])
        log.info("test_postgres_ready", dsn=pg.dsn, seconds=round(time.monotonic() - began, 3))
        yield PgServer(admin_dsn=pg.dsn, local=pg, server_version_num=version)


@pytest.fixture(scope="session")
def template_database(pg_server: PgServer) -> Iterator[TemplateDatabase]:
    """A database migrated once per session; tests get clones of it, never it."""
    name = _unique_name("outbox_template")
    dsn = pg_server.create_database(name)
    try:
        began = time.monotonic()
        applied = migrate_database(dsn)
        # No connection may remain on a template while it is cloned ("source database is being
        # accessed by other users"): refuse new ones and end any the migrator left behind.
        with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        log.info(
            "test_template_migrated",
            database=name,
            applied=applied,
            seconds=round(time.monotonic() - began, 3),
        )
        yield TemplateDatabase(name=name, applied=tuple(applied))
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def database_url(pg_server: PgServer, template_database: TemplateDatabase) -> Iterator[str]:
    """URL of a migrated database of this test's own, dropped afterwards."""
    name = _unique_name("outbox_test")
    dsn = pg_server.create_database(name, template=template_database.name)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def fresh_database_url(pg_server: PgServer) -> Iterator[str]:
    """URL of an empty (not migrated) database of this test's own, dropped afterwards."""
    name = _unique_name("outbox_fresh")
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def _migrated_cluster() -> Iterator[Path]:
    """A stopped, migrated cluster that ``restartable_pg`` copies (faster than initdb)."""
    if os.environ.get(TEST_DATABASE_URL_ENV):
        pytest.skip(
            f"needs a PostgreSQL this run can stop and restart; {TEST_DATABASE_URL_ENV} points "
            "at an external server"
        )
    snapshot = LocalPostgres(fast=True)
    try:
        snapshot.start()
        migrate_database(snapshot.dsn)
        snapshot.stop("fast")
        yield snapshot.data_dir
    finally:
        snapshot.cleanup()


@pytest.fixture
def restartable_pg(_migrated_cluster: Path) -> Iterator[LocalPostgres]:
    """A server of this test's own, migrated (``.dsn``), that it may stop and restart.

    Restarts keep the port and the data. Stopped and removed afterwards whatever state the test
    left it in.
    """
    # synchronous_commit back on: with it off, an immediate stop (a crash) loses the last
    # commits, and fault tests check exactly that committed rows survive one.
    pg = LocalPostgres(
        fast=True, settings={"synchronous_commit": "on"}, copy_from=_migrated_cluster
    )
    try:
        pg.start()
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def pg_query() -> PgQuery:
    """``pg_query(dsn, statement, params=())`` -> list of row tuples (see :func:`query`)."""
    return query


# --------------------------------------------------------------------------------------------
# Both cores (pytest-xdist)
# --------------------------------------------------------------------------------------------
#
# pyproject's addopts asks for ``-n auto``; this hook decides what "auto" is. A run over several
# test files gets a worker a core: each worker starts its own PostgreSQL and migrates its own
# template (the session fixtures above, once per worker), about 2-3 s of start-up that the
# quick tier wins back many times. A run of one file (or of tests in one file) stays in this
# process: it starts fastest there, and --pdb and print debugging behave as usual. So does a run
# with -s (``--capture=no``): a worker's output never reaches the terminal, and the fault tests'
# FIGURE lines are read that way (docs/reliability.md). ``-n N`` sets the number, ``-n 0`` runs
# in this process whatever the selection, and PYTEST_XDIST_AUTO_NUM_WORKERS=N overrides "auto"
# as xdist documents.


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """Workers for ``-n auto``: one a usable core; none for a single test file or with -s."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own implementation reads it
    if config.getoption("capture") == "no":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    files = _selected_test_files(config)
    if (cores or 1) < 2 or files < 2:
        return 0
    return min(cores or 1, files)


def _selected_test_files(config: pytest.Config) -> int:
    """How many test files the command line's paths (or ``testpaths``) name, before collection."""
    import fnmatch

    patterns = config.getini("python_files")
    count = 0
    for arg in config.args:
        path = config.invocation_params.dir / arg.split("::", 1)[0]
        if path.is_dir():
            count += sum(
                1
                for found in path.rglob("*.py")
                if any(fnmatch.fnmatch(found.name, pattern) for pattern in patterns)
            )
        else:
            count += 1  # a file, a node id, or something pytest will complain about itself
    return count


# --------------------------------------------------------------------------------------------
# The suite leaves nothing in /tmp
# --------------------------------------------------------------------------------------------
#
# The session gets a temporary folder of its own and hands it to everything it starts: TMPDIR
# (inherited by every process a test runs: relays, the demo, the stand-in) and tempfile's cached
# default for this process. Whatever a test, a fixture or a child process forgets in there is
# then exactly what is left at the end, however busy the machine's shared /tmp is, and the run
# fails naming it. pytest's own tmp_path folders and the XDG state folder (the demo's log) live
# in there too; they are the suite's by design, not leaks, and go with the folder.
# Fast PostgreSQL clusters live in /dev/shm when it is roomy: those stamped with this process
# are checked as well.

_TMP_STATE: dict[str, Any] = {}
_SESSION_PREFIX = "outbox-tests-"
_SESSION_OWNER = ".owner"
_OWN_ENTRIES = ("pytest-of-", "xdg-state", _SESSION_OWNER)


def _sweep_killed_sessions(parent: Path) -> None:
    """Removes the folders of sessions that were killed (SIGKILL, a CI timeout) before their end."""
    import shutil
    import socket

    host = socket.gethostname()
    for folder in parent.glob(_SESSION_PREFIX + "*"):
        try:
            pid_text, owner_host = (folder / _SESSION_OWNER).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if owner_host != host:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue


def pytest_configure(config: pytest.Config) -> None:
    import socket
    import tempfile

    _sweep_killed_sessions(Path(tempfile.gettempdir()))
    base = Path(tempfile.mkdtemp(prefix=_SESSION_PREFIX))
    (base / _SESSION_OWNER).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    # When root, PostgreSQL runs as another user, who must get through to its folders in here.
    base.chmod(0o711)
    _TMP_STATE.update(
        base=base,
        environ={name: os.environ.get(name) for name in ("TMPDIR", "XDG_STATE_HOME")},
        tempdir=tempfile.tempdir,
    )
    os.environ["TMPDIR"] = str(base)
    os.environ["XDG_STATE_HOME"] = str(base / "xdg-state")
    tempfile.tempdir = str(base)


def _leftovers(base: Path) -> list[str]:
    found = [
        str(entry) for entry in sorted(base.iterdir()) if not entry.name.startswith(_OWN_ENTRIES)
    ]
    shm = Path("/dev/shm")
    stamp = f"{os.getpid()} "
    for folder in sorted(shm.glob("outbox-pg-*")) if shm.is_dir() else []:
        try:
            owner = (folder / "owner").read_text()
        except OSError:
            continue
        if owner.startswith(stamp):
            found.append(str(folder))
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails the run when tests left files behind; removes the session's folder either way."""
    import shutil
    import tempfile

    base: Path | None = _TMP_STATE.get("base")
    if base is None:
        return
    config = session.config
    # An xdist worker's folder sits inside the controller's (it inherits TMPDIR); it checks its
    # own and its own PostgreSQL folders, and hands what it found to the controller, which
    # reports and fails the run (a worker's summary is never shown).
    leftovers = config.stash.get(_LEFTOVERS, []) + _leftovers(base)
    if hasattr(config, "workeroutput"):
        config.workeroutput["leftovers"] = leftovers
    if leftovers:
        config.stash[_LEFTOVERS] = leftovers
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(base, ignore_errors=True)
    for name, value in _TMP_STATE["environ"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    tempfile.tempdir = _TMP_STATE["tempdir"]


_LEFTOVERS = pytest.StashKey[list[str]]()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the xdist controller: collects what a worker found left behind (before our finish)."""
    found = getattr(node, "workeroutput", {}).get("leftovers", [])
    if found:
        node.config.stash[_LEFTOVERS] = node.config.stash.get(_LEFTOVERS, []) + found


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    leftovers = config.stash.get(_LEFTOVERS, [])
    if leftovers:
        terminalreporter.section("files the tests left behind (removed now; fix their cleanup)")
        for path in leftovers:
            terminalreporter.line(path)
