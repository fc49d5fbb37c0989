"""LocalPostgres against real PostgreSQL binaries (no mocks), and the fixtures built on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import psycopg
import pytest

import outbox_relay
from outbox_relay.errors import EmbeddedServerError
from outbox_relay.testing.postgres import (
    BINDIR_ENV,
    LocalPostgres,
    find_pg_bindir,
    free_port,
)

# Slow (starts, kills and restarts PostgreSQL servers): CI runs it, -m "not slow" leaves it out.
pytestmark = pytest.mark.slow

if TYPE_CHECKING:
    # For annotations only: test modules do not import conftest at run time.
    from conftest import PgQuery, PgServer, TemplateDatabase

REPO_ROOT = Path(outbox_relay.__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parents[1]

# Modules' own servers: copies of one initdb'd cluster, so each costs ~50 ms, not ~800.


@pytest.fixture(scope="module")
def blank_cluster() -> Iterator[Path]:
    """A stopped, freshly initialised cluster to copy."""
    pg = LocalPostgres(fast=True)
    try:
        pg.start()
        pg.stop()
        yield pg.data_dir
    finally:
        pg.cleanup()


@pytest.fixture(scope="module")
def server(blank_cluster: Path) -> Iterator[LocalPostgres]:
    """A running server shared by the tests that do not stop it."""
    with LocalPostgres(fast=True, copy_from=blank_cluster) as pg:
        yield pg


@pytest.fixture
def own_server(blank_cluster: Path) -> Iterator[LocalPostgres]:
    """A running server of the test's own, which it may stop or break."""
    pg = LocalPostgres(fast=True, settings={"synchronous_commit": "on"}, copy_from=blank_cluster)
    try:
        pg.start()
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A scratch folder the server user can traverse.

    pytest's ``tmp_path`` lives under ``/tmp/pytest-of-root`` (mode 0700) when run as root, which
    the ``postgres`` user cannot enter.
    """
    folder = Path(tempfile.mkdtemp(prefix="outbox-embedded-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _pythonpath() -> str:
    """PYTHONPATH for a child Python that must import this checkout (installed or not)."""
    return os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


def _one(dsn: str, statement: str) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(statement).fetchone()
    assert row is not None
    return row[0]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: PID 1 of a container may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def _wait_gone(pid: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


# -- start, connect, settings ---------------------------------------------------------------


def test_dsn_points_at_localhost_and_postgres_user(server: LocalPostgres) -> None:
    assert server.dsn == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    assert server.dsn_for("a b/c") == f"postgresql://postgres@127.0.0.1:{server.port}/a%20b%2Fc"
    assert server.is_running()
    assert server.pid is not None


def test_connects_with_psycopg(server: LocalPostgres) -> None:
    with psycopg.connect(server.dsn) as conn:
        row = conn.execute("SELECT current_user, inet_server_addr()::text").fetchone()
    assert row == ("postgres", "127.0.0.1/32")


async def test_connects_with_asyncpg(server: LocalPostgres) -> None:
    conn = await asyncpg.connect(server.dsn)
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()


def test_unix_socket_lives_in_the_data_folder(server: LocalPostgres) -> None:
    assert server.socket_dir == server.data_dir
    assert (server.data_dir / f".s.PGSQL.{server.port}").is_socket()
    with psycopg.connect(
        host=str(server.socket_dir), port=server.port, user="postgres", dbname="postgres"
    ) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)


def test_fast_preset_settings(server: LocalPostgres) -> None:
    for name, expected in [
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("max_connections", "200"),
        ("listen_addresses", "127.0.0.1"),
        ("dynamic_shared_memory_type", "mmap"),
    ]:
        assert _one(server.dsn, f"SHOW {name}") == expected, name


def test_default_preset_is_durable_and_extra_settings_apply(blank_cluster: Path) -> None:
    # The quote checks the config-file escaping.
    settings: dict[str, str | bool] = {
        "work_mem": "8MB",
        "jit": False,
        "application_name": "it's quoted",
    }
    with LocalPostgres(settings=settings, copy_from=blank_cluster) as pg:
        assert _one(pg.dsn, "SHOW fsync") == "on"
        assert _one(pg.dsn, "SHOW synchronous_commit") == "on"
        assert _one(pg.dsn, "SHOW max_connections") == "200"
        assert _one(pg.dsn, "SHOW work_mem") == "8MB"
        assert _one(pg.dsn, "SHOW jit") == "off"
        assert _one(pg.dsn, "SHOW application_name") == "it's quoted"


def test_invalid_setting_name_is_refused() -> None:
    with pytest.raises(EmbeddedServerError, match="invalid PostgreSQL setting name"):
        LocalPostgres(settings={"fsync = off\nport": "1"})


def test_start_from_scratch_runs_initdb(reachable_tmp: Path) -> None:
    data_dir = reachable_tmp / "cluster"
    began = time.monotonic()
    with LocalPostgres(data_dir, fast=True) as pg:
        elapsed = time.monotonic() - began
        assert (data_dir / "PG_VERSION").read_text().strip().isdigit()
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert _one(pg.dsn, "SELECT 1") == 1
        assert _one(pg.dsn, "SHOW lc_collate") == "C"
    assert elapsed < 30
    # We initialised it, so cleanup (via __exit__) removed it.
    assert not data_dir.exists()


def test_long_folder_gets_its_socket_elsewhere(reachable_tmp: Path, blank_cluster: Path) -> None:
    # sun_path holds 107 bytes: postgres cannot create a socket deeper than that.
    data_dir = reachable_tmp / ("d" * 90)
    with LocalPostgres(data_dir, fast=True, copy_from=blank_cluster) as pg:
        socket_dir = pg.socket_dir
        assert socket_dir != data_dir
        assert (socket_dir / f".s.PGSQL.{pg.port}").is_socket()
        with psycopg.connect(
            host=str(socket_dir), port=pg.port, user="postgres", dbname="postgres"
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not socket_dir.exists()
    assert not data_dir.exists()


def test_given_port_is_used(blank_cluster: Path) -> None:
    port = free_port()
    with LocalPostgres(port=port, copy_from=blank_cluster) as pg:
        assert pg.port == port
        assert _one(pg.dsn, "SHOW port") == str(port)


def test_busy_port_is_a_clear_error(blank_cluster: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        pg = LocalPostgres(port=port, copy_from=blank_cluster)
        try:
            with pytest.raises(EmbeddedServerError, match=f"port {port}.*in use"):
                pg.start()
            assert not pg.is_running()
        finally:
            pg.cleanup()


async def test_usable_from_async_code_through_to_thread(blank_cluster: Path) -> None:
    pg = LocalPostgres(fast=True, copy_from=blank_cluster)
    await asyncio.to_thread(pg.start)
    try:
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(pg.cleanup)
    assert not pg.is_running()


# -- stop, restart, kill ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate", "smart"])
def test_restart_keeps_port_and_data(own_server: LocalPostgres, mode: str) -> None:
    pg = own_server
    port, pid = pg.port, pg.pid
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept SELECT generate_series(1, 1000)")
    pg.restart(mode)  # type: ignore[arg-type]
    assert pg.is_running()
    assert pg.port == port
    assert pg.pid != pid
    assert _one(pg.dsn, "SELECT count(*) FROM kept") == 1000


async def test_restart_with_asyncpg_clients_connected(own_server: LocalPostgres) -> None:
    conn = await asyncpg.connect(own_server.dsn)
    await conn.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
    await asyncio.to_thread(own_server.restart, "immediate")
    with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    conn = await asyncpg.connect(own_server.dsn)
    try:
        assert await conn.fetchval("SELECT n FROM t") == 1
    finally:
        await conn.close()


def test_stop_then_connections_are_refused(own_server: LocalPostgres) -> None:
    pg = own_server
    dsn, pid = pg.dsn, pg.pid
    assert pid is not None
    pg.stop()
    assert not pg.is_running()
    assert pg.pid is None
    assert not _alive(pid)
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(dsn, connect_timeout=2)
    with pytest.raises(OSError):
        asyncio.run(asyncpg.connect(dsn, timeout=2))
    pg.stop()  # stopping twice is harmless
    pg.start()
    assert _one(pg.dsn, "SELECT 1") == 1


def test_smart_stop_escalates_when_clients_stay(own_server: LocalPostgres) -> None:
    with psycopg.connect(own_server.dsn, autocommit=True):
        began = time.monotonic()
        own_server.stop("smart", timeout=0.5)
        assert time.monotonic() - began < 10
    assert not own_server.is_running()


def test_stop_mode_is_validated(server: LocalPostgres) -> None:
    with pytest.raises(ValueError, match="mode"):
        server.stop("abrupt")  # type: ignore[arg-type]
    assert server.is_running()


def test_kill_then_start_recovers(own_server: LocalPostgres) -> None:
    pg = own_server
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE crash (n int)")
        conn.execute("INSERT INTO crash VALUES (7)")
    port = pg.port
    pg.kill()
    assert not pg.is_running()
    pg.start()
    assert pg.port == port
    assert _one(pg.dsn, "SELECT n FROM crash") == 7


def test_start_waits_for_orphaned_backends_of_a_killed_server(own_server: LocalPostgres) -> None:
    pg = own_server
    conn = psycopg.connect(pg.dsn, autocommit=True)
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]

    # A CPU-bound query never checks for postmaster death, so its backend outlives the kill
    # and keeps the shared memory; start() must wait instead of failing.
    def run_forever() -> None:
        # The connection breaks when the backend is killed: expected.
        with contextlib.suppress(psycopg.OperationalError):
            conn.execute("SELECT count(*) FROM generate_series(1, 10000000000)")

    busy = threading.Thread(target=run_forever, daemon=True)
    busy.start()
    time.sleep(0.2)
    pg.kill()
    reaper = threading.Timer(0.5, lambda: os.kill(backend, signal.SIGKILL))
    reaper.start()
    try:
        pg.start()
        assert _one(pg.dsn, "SELECT 1") == 1
    finally:
        reaper.cancel()
        busy.join(timeout=10)
        conn.close()


# -- several servers, folders ------------------------------------------------------------------


def test_two_servers_side_by_side(blank_cluster: Path) -> None:
    with (
        LocalPostgres(fast=True, copy_from=blank_cluster) as a,
        LocalPostgres(fast=True, copy_from=blank_cluster) as b,
    ):
        assert a.port != b.port
        assert a.data_dir != b.data_dir
        with psycopg.connect(a.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_in_a (n int)")
        assert _one(a.dsn, "SELECT to_regclass('only_in_a') IS NOT NULL") is True
        assert _one(b.dsn, "SELECT to_regclass('only_in_a') IS NOT NULL") is False
        b.restart("immediate")
        assert a.is_running()
        assert _one(a.dsn, "SELECT 1") == 1


def test_cleanup_removes_the_folder(blank_cluster: Path) -> None:
    pg = LocalPostgres(fast=True, copy_from=blank_cluster).start()
    data_dir, pid = pg.data_dir, pg.pid
    assert pid is not None and data_dir.is_dir()
    pg.cleanup()
    assert not pg.is_running()
    assert not _alive(pid)
    assert not data_dir.exists()
    assert not data_dir.parent.exists()  # the temporary base holding it
    pg.cleanup()  # twice is harmless


def test_context_manager_stops_and_removes(blank_cluster: Path) -> None:
    with LocalPostgres(fast=True, copy_from=blank_cluster) as pg:
        data_dir, pid = pg.data_dir, pg.pid
        assert pid is not None
    assert not _alive(pid)
    assert not data_dir.exists()


def test_existing_cluster_is_reused_and_kept(reachable_tmp: Path, blank_cluster: Path) -> None:
    data_dir = reachable_tmp / "kept"
    first = LocalPostgres(data_dir, fast=True)
    try:
        first.start()
        with psycopg.connect(first.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE survives (n int)")
        first.stop()
        with LocalPostgres(data_dir, fast=True) as second:
            assert _one(second.dsn, "SELECT to_regclass('survives') IS NOT NULL") is True
        # The second one adopted a cluster it did not create: it leaves it in place.
        assert (data_dir / "PG_VERSION").exists()
    finally:
        first.cleanup()
    assert not data_dir.exists()


def test_copy_from_refuses_a_running_cluster(server: LocalPostgres) -> None:
    pg = LocalPostgres(copy_from=server.data_dir)
    try:
        with pytest.raises(EmbeddedServerError, match="in use by a server"):
            pg.start()
    finally:
        pg.cleanup()


def test_non_empty_folder_without_cluster_is_refused(reachable_tmp: Path) -> None:
    (reachable_tmp / "stray.txt").write_text("not a cluster")
    with pytest.raises(EmbeddedServerError, match="neither empty nor"):
        LocalPostgres(reachable_tmp).start()
    assert (reachable_tmp / "stray.txt").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops to another user")
def test_root_runs_the_server_as_the_postgres_user(server: LocalPostgres) -> None:
    assert server.pid is not None
    assert Path(f"/proc/{server.pid}").stat().st_uid != 0
    assert server.data_dir.stat().st_uid != 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops to another user")
def test_root_with_unreachable_folder_explains(tmp_path: Path) -> None:
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    # tmp_path itself sits in a root-only folder; the server user cannot get there.
    pg = LocalPostgres(hidden / "data")
    try:
        with pytest.raises(EmbeddedServerError, match="every parent folder needs o\\+x"):
            pg.start()
    finally:
        pg.cleanup()


# -- orphan protection (a separate Python process owns the server) ------------------------------

_OWNER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from outbox_relay.testing.postgres import LocalPostgres
    pg = LocalPostgres(fast=True, copy_from=sys.argv[1]).start()
    print("SERVER", pg.pid, pg.data_dir, flush=True)
    if sys.argv[2] == "hang":
        time.sleep(600)
    # "exit": leave without stop() or cleanup(); the atexit hook must do both.
    """
)


def _spawn_owner(blank_cluster: Path, behaviour: str) -> tuple[subprocess.Popen[str], int, Path]:
    env = {**os.environ, "PYTHONPATH": _pythonpath()}
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER_SCRIPT, str(blank_cluster), behaviour],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert owner.stdout is not None
    # structlog writes to stdout too: look for our line.
    for line in owner.stdout:
        if line.startswith("SERVER "):
            _, pid, data_dir = line.split()
            return owner, int(pid), Path(data_dir)
    raise AssertionError("the owner process did not start a server")


def test_atexit_stops_and_removes_a_forgotten_server(blank_cluster: Path) -> None:
    owner, pid, data_dir = _spawn_owner(blank_cluster, "exit")
    assert owner.wait(timeout=30) == 0
    assert _wait_gone(pid), "postgres survived its owner's normal exit"
    assert not data_dir.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_server_dies_with_a_killed_owner_and_its_folder_is_swept_later(
    blank_cluster: Path,
) -> None:
    owner, pid, data_dir = _spawn_owner(blank_cluster, "hang")
    base = data_dir.parent
    try:
        assert _alive(pid)
        owner.kill()  # SIGKILL: no atexit, no finally
        owner.wait(timeout=10)
        assert _wait_gone(pid), "postgres outlived its SIGKILLed owner"
        assert base.is_dir()  # nobody could clean up...
        # ...until the next temporary cluster in the same place.
        with LocalPostgres(fast=True, copy_from=blank_cluster, parent_dir=base.parent):
            assert not base.exists()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def test_sweep_spares_folders_of_live_owners(blank_cluster: Path, server: LocalPostgres) -> None:
    # `server` belongs to this (live) process and lives in the default place.
    parent = server.data_dir.parent.parent
    with LocalPostgres(fast=True, copy_from=blank_cluster, parent_dir=parent):
        assert server.data_dir.is_dir()
        assert server.is_running()


# -- finding the binaries ----------------------------------------------------------------------


def _fake_bindir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("initdb", "postgres"):
        path = folder / name
        path.write_text("#!/bin/sh\nexit 1\n")
        path.chmod(0o755)
    return folder


def test_real_binaries_are_found() -> None:
    bindir = find_pg_bindir()
    assert (bindir / "initdb").is_file()
    assert (bindir / "postgres").is_file()


def test_bindir_override_without_binaries_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BINDIR_ENV, str(tmp_path))
    with pytest.raises(EmbeddedServerError, match=BINDIR_ENV) as caught:
        LocalPostgres()
    assert str(tmp_path) in str(caught.value)


def test_no_binaries_anywhere_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError) as caught:
        find_pg_bindir(env={"PATH": str(tmp_path)}, search_globs=(f"{tmp_path}/*/bin",))
    message = str(caught.value)
    assert BINDIR_ENV in message
    assert "apt-get install postgresql" in message


def test_highest_version_wins(tmp_path: Path) -> None:
    for version in ("9.6", "15", "10", "13"):
        _fake_bindir(tmp_path / version / "bin")
    (tmp_path / "16" / "bin").mkdir(parents=True)  # no binaries: ignored
    found = find_pg_bindir(env={"PATH": ""}, search_globs=(f"{tmp_path}/*/bin",))
    assert found == tmp_path / "15" / "bin"


def test_pg_config_without_server_binaries_is_passed_over(tmp_path: Path) -> None:
    # Debian's libpq-dev ships a pg_config whose bindir holds no server at all.
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    pg_config = path_dir / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {tmp_path / 'nothing'}\n")
    pg_config.chmod(0o755)
    expected = _fake_bindir(tmp_path / "14" / "bin")
    found = find_pg_bindir(env={"PATH": str(path_dir)}, search_globs=(f"{tmp_path}/*/bin",))
    assert found == expected


def test_pg_config_answer_is_used(tmp_path: Path) -> None:
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    expected = _fake_bindir(tmp_path / "custom" / "bin")
    pg_config = path_dir / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {expected}\n")
    pg_config.chmod(0o755)
    _fake_bindir(tmp_path / "99" / "bin")
    found = find_pg_bindir(env={"PATH": str(path_dir)}, search_globs=(f"{tmp_path}/*/bin",))
    assert found == expected


# -- database helpers --------------------------------------------------------------------------


def test_create_and_drop_database_quote_identifiers(server: LocalPostgres) -> None:
    name = 'Odd "name"; DROP DATABASE postgres; --'
    dsn = server.create_database(name)
    try:
        assert _one(dsn, "SELECT current_database()") == name
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE marker (n int)")
        clone = server.create_database(name + " clone", template=name)
        assert _one(clone, "SELECT to_regclass('marker') IS NOT NULL") is True
    finally:
        server.drop_database(name + " clone")
        # FORCE: a connection still open does not prevent the drop.
        lingering = psycopg.connect(dsn)
        server.drop_database(name)
        lingering.close()
    assert _one(server.dsn, "SELECT count(*) FROM pg_database WHERE datname LIKE 'Odd%'") == 0
    server.drop_database("never_existed")  # IF EXISTS


# -- the fixtures of tests/conftest.py ---------------------------------------------------------


def test_database_url_is_a_migrated_clone(
    database_url: str, template_database: TemplateDatabase, pg_query: PgQuery
) -> None:
    name = pg_query(database_url, "SELECT current_database()")[0][0]
    assert name.startswith("outbox_test_")
    assert name != template_database.name
    assert template_database.applied, "the template was migrated with nothing to apply"
    recorded = pg_query(
        database_url,
        "SELECT version, name FROM outbox.schema_migrations ORDER BY version",
    )
    assert [f"{v:03d}_{n}" for v, n in recorded] == list(template_database.applied)


@pytest.mark.parametrize("round_", [1, 2])
def test_database_url_is_private_to_each_test(
    database_url: str, pg_query: PgQuery, round_: int
) -> None:
    # Both rounds create the same table: the second fails if clones were shared.
    pg_query(database_url, "CREATE TABLE outbox.private_probe (n int)")
    pg_query(database_url, "INSERT INTO outbox.private_probe VALUES (%s)", (round_,))
    assert pg_query(database_url, "SELECT n FROM outbox.private_probe") == [(round_,)]


def test_template_refuses_connections(
    pg_server: PgServer, template_database: TemplateDatabase, pg_query: PgQuery
) -> None:
    rows = pg_query(
        pg_server.admin_dsn,
        "SELECT datallowconn FROM pg_database WHERE datname = %s",
        (template_database.name,),
    )
    assert rows == [(False,)]


def test_fresh_database_url_is_empty(fresh_database_url: str, pg_query: PgQuery) -> None:
    assert pg_query(fresh_database_url, "SELECT to_regnamespace('outbox')") == [(None,)]
    assert pg_query(fresh_database_url, "SELECT current_database()")[0][0].startswith(
        "outbox_fresh_"
    )


def test_restartable_pg_is_migrated_and_survives_a_crash(
    restartable_pg: LocalPostgres, pg_query: PgQuery
) -> None:
    dsn = restartable_pg.dsn
    assert pg_query(dsn, "SELECT count(*) FROM outbox.schema_migrations")[0][0] >= 1
    pg_query(dsn, "CREATE TABLE outbox.crash_probe (n int)")
    pg_query(dsn, "INSERT INTO outbox.crash_probe SELECT generate_series(1, 500)")
    port = restartable_pg.port
    restartable_pg.restart("immediate")
    assert restartable_pg.port == port
    # synchronous_commit is on here: no committed row is lost to the immediate stop.
    assert pg_query(dsn, "SELECT count(*) FROM outbox.crash_probe") == [(500,)]


def test_restartable_pg_is_not_the_session_server(
    restartable_pg: LocalPostgres, pg_server: PgServer
) -> None:
    assert pg_server.local is None or pg_server.local.port != restartable_pg.port


_EXTERNAL_TESTS = textwrap.dedent(
    """
    def test_clone(database_url, pg_query):
        assert pg_query(database_url, "SELECT count(*) FROM outbox.schema_migrations")[0][0] >= 1

    def test_fresh(fresh_database_url, pg_query):
        assert pg_query(fresh_database_url, "SELECT to_regnamespace('outbox')") == [(None,)]

    def test_restart(restartable_pg):
        raise AssertionError("must be skipped against an external server")

    def test_require_restartable(pg_server):
        pg_server.require_restartable()
        raise AssertionError("must be skipped against an external server")
    """
)


def test_external_server_mode(server: LocalPostgres, reachable_tmp: Path) -> None:
    """With OUTBOX_TEST_DATABASE_URL the fixtures use that server and leave it as they found it."""
    server.create_database("someone_elses")
    try:
        shutil.copy(TESTS_DIR / "conftest.py", reachable_tmp / "conftest.py")
        # the root conftest registers the relay harness as a plugin
        (reachable_tmp / "relay").mkdir()
        (reachable_tmp / "relay" / "__init__.py").write_text("")
        shutil.copy(TESTS_DIR / "relay" / "harness.py", reachable_tmp / "relay" / "harness.py")
        (reachable_tmp / "test_external.py").write_text(_EXTERNAL_TESTS)
        (reachable_tmp / "pytest.ini").write_text("[pytest]\n")
        env = {
            **os.environ,
            "PYTHONPATH": _pythonpath(),
            "OUTBOX_TEST_DATABASE_URL": server.dsn,
        }
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
                str(reachable_tmp),
            ],
            cwd=reachable_tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 passed, 2 skipped" in result.stdout, result.stdout
        assert "points at an external server" in result.stdout
        databases = {str(row[0]) for row in _rows(server.dsn, "SELECT datname FROM pg_database")}
        assert "someone_elses" in databases
        assert not [d for d in databases if d.startswith("outbox_")], databases
    finally:
        server.drop_database("someone_elses")


def _rows(dsn: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement).fetchall()
