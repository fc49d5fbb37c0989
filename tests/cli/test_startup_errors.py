"""Start-up failures end with one line naming the problem and the fix (the CLI as a process).

Against a real PostgreSQL from the fixtures: an unmigrated database, a database that is down,
a role that does not exist, a database that does not exist, and DSNs that are not PostgreSQL
URLs. Exit code 2 for what configuration fixes, 1 for "the server is down, try again";
``relay`` and ``api`` wait for a server that is down instead, one log line per attempt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from outbox_relay.http.write_api import create_app
from outbox_relay.testing.postgres import free_port

# Slow (one CLI process per command and fault): CI runs it, -m "not slow" leaves it out.
pytestmark = pytest.mark.slow

ENV_KEYS = ("DATABASE_URL", "INNGEST_EVENT_KEY", "INNGEST_DEV", "QDRANT_URL", "QDRANT_PATH")
MIGRATE = "run `outbox-relay migrate` with this DATABASE_URL"
NOT_POSTGRES = (
    "DATABASE_URL must be a postgresql:// DSN ({got}), e.g. postgresql://app:secret@db:5432/app"
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    return {
        **base,
        "OUTBOX_LOG_FORMAT": "json",
        "INNGEST_DEV": "1",
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "OUTBOX_HTTP_PORT": "0",
        "OUTBOX_API_PORT": "0",
        **extra,
    }


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outbox_relay", *args],
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failure ends with; no traceback before it."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, (result.stdout, result.stderr)
    return lines[-1]


def with_user(dsn: str, user: str, database: str | None = None) -> str:
    parts = urllib.parse.urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    path = f"/{database}" if database is not None else parts.path
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}", path=path))


def down_dsn() -> str:
    """A DSN whose port nothing listens on: connections are refused."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/app"


def _database(dsn: str) -> str:
    return urllib.parse.urlsplit(dsn).path.lstrip("/")


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["requeue", "--all"],
        ["relay"],
        ["api"],
        ["scan", "--once"],
        ["scan"],
        ["worker"],
    ],
)
def test_an_unmigrated_database_says_run_migrate(
    args: list[str], fresh_database_url: str, tmp_path: Path
) -> None:
    result = run(
        tmp_path,
        *args,
        DATABASE_URL=fresh_database_url,
        OUTBOX_SCAN_HTTP_PORT="0",
        OUTBOX_WORKER_PORT="0",
    )

    assert result.returncode == 2
    assert last_line(result) == (
        f'outbox-relay {args[0]}: database "{_database(fresh_database_url)}" is not migrated '
        f"(outbox.messages does not exist): {MIGRATE}"
    )


def test_a_database_missing_a_migration_of_this_release_says_run_migrate(
    database_url: str, pg_query: object, tmp_path: Path
) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM outbox.schema_migrations WHERE version = 9")

    result = run(tmp_path, "status", DATABASE_URL=database_url)

    assert result.returncode == 2
    assert last_line(result) == (
        f'outbox-relay status: database "{_database(database_url)}" lacks migration(s) '
        f"009_scan: {MIGRATE}"
    )


@pytest.mark.parametrize("command", ["status", "requeue", "migrate", "scan"])
def test_a_database_that_is_down_is_one_line_and_exit_1(command: str, tmp_path: Path) -> None:
    dsn = down_dsn()
    args = {"requeue": [command, "--all"], "scan": [command, "--once"]}.get(command, [command])

    result = run(tmp_path, *args, DATABASE_URL=dsn)

    assert result.returncode == 1
    port = urllib.parse.urlsplit(dsn).port
    assert last_line(result) == (
        f"outbox-relay {command}: cannot reach PostgreSQL at 127.0.0.1:{port} (connection "
        "refused): start it, or fix the host and port in DATABASE_URL"
    )


@pytest.mark.parametrize("command", ["status", "relay", "api", "migrate"])
def test_a_role_that_does_not_exist_is_a_login_error(
    command: str, database_url: str, tmp_path: Path
) -> None:
    dsn = with_user(database_url, "nobody:secret-pw")
    where = urllib.parse.urlsplit(dsn)

    result = run(tmp_path, command, DATABASE_URL=dsn)

    assert result.returncode == 2
    assert last_line(result) == (
        f"outbox-relay {command}: PostgreSQL at {where.hostname}:{where.port}/"
        f'{_database(dsn)} refused the login (role "nobody" does not exist): fix the user and '
        "password in DATABASE_URL"
    )
    assert "secret-pw" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["status", "relay"])
def test_a_database_that_does_not_exist_names_it(
    command: str, database_url: str, tmp_path: Path
) -> None:
    dsn = with_user(database_url, "postgres", database="no_such_db")
    where = urllib.parse.urlsplit(dsn)

    result = run(tmp_path, command, DATABASE_URL=dsn)

    assert result.returncode == 2
    assert last_line(result) == (
        f'outbox-relay {command}: database "no_such_db" does not exist on '
        f"{where.hostname}:{where.port}: create it, or fix the database name in DATABASE_URL"
    )


@pytest.mark.parametrize(
    ("dsn", "got"),
    [("mysql://app:hunter2@db/app", "got a mysql:// URL"), ("notadsn", "got no scheme")],
    ids=["mysql", "notadsn"],
)
@pytest.mark.parametrize("command", ["relay", "api", "status", "migrate", "requeue"])
def test_a_dsn_that_is_not_postgresql_is_refused_at_once(
    command: str, dsn: str, got: str, tmp_path: Path
) -> None:
    args = [command, "--all"] if command == "requeue" else [command]

    started = time.monotonic()
    result = run(tmp_path, *args, DATABASE_URL=dsn)

    assert result.returncode == 2
    assert last_line(result) == f"outbox-relay {command}: " + NOT_POSTGRES.format(got=got)
    assert result.stdout == ""  # no retry loop, not one log line
    assert "hunter2" not in result.stderr
    assert time.monotonic() - started < 60


# -- a database that is down: relay and api wait ------------------------------------------------


@pytest.fixture
def waiting_process(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[subprocess.Popen[str]]:
    command, port_variable = request.param
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "outbox_relay", command],
        env=_env(tmp_path, DATABASE_URL=down_dsn(), **{port_variable: str(port)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.port = port  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def _read_events(
    process: subprocess.Popen[str], wanted: int, deadline: float
) -> list[dict[str, object]]:
    assert process.stdout is not None
    events: list[dict[str, object]] = []
    while sum(e["event"] == "database_unavailable" for e in events) < wanted:
        assert time.monotonic() < deadline, events
        line = process.stdout.readline()
        assert line, ("the process ended", process.wait(), events)
        events.append(json.loads(line))
    return events


@pytest.mark.parametrize(
    "waiting_process",
    [("relay", "OUTBOX_HTTP_PORT"), ("api", "OUTBOX_API_PORT")],
    ids=["relay", "api"],
    indirect=True,
)
async def test_relay_and_api_wait_for_a_database_that_is_down_one_line_per_attempt(
    waiting_process: subprocess.Popen[str],
) -> None:
    events = _read_events(waiting_process, 3, time.monotonic() + 60)

    # Nothing but the start and one warning per attempt, with a growing attempt number.
    waits = [e for e in events if e["event"] == "database_unavailable"]
    others = {str(e["event"]) for e in events} - {"database_unavailable"}
    assert others <= {"relay_http_listening", "api_listening"}
    assert [w["attempt"] for w in waits] == [1, 2, 3]
    assert all(w["level"] == "warning" and float(str(w["retry_in_s"])) >= 0 for w in waits)
    assert "cannot reach PostgreSQL at 127.0.0.1:" in str(waits[0]["error"])
    assert waiting_process.poll() is None  # still waiting, not exited

    # /readyz says why it is not ready.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{waiting_process.port}/readyz") as response,  # type: ignore[attr-defined]
    ):
        assert response.status == 503
        body = await response.json()
    if "checks" in body:  # the relay's
        assert body["status"] == "not_ready"
        assert body["reasons"]["database"].startswith(
            "waiting for the database: cannot reach PostgreSQL at 127.0.0.1:"
        )
        assert "listen" in body["reasons"]
    else:  # the write API's
        assert body["status"] == "unavailable"
        assert body["reason"].startswith("the database cannot be reached: ")


# -- the write API on an unmigrated database ----------------------------------------------------


async def test_the_write_api_answers_503_with_the_reason_on_an_unmigrated_database(
    fresh_database_url: str,
) -> None:
    async with TestClient(TestServer(create_app(fresh_database_url))) as client:
        response = await client.post(
            "/v1/library/tracks",
            json={"isrc": "USRC17607839", "title": "t", "artist": "a", "album": "b"},
        )
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        body = await response.json()
        assert body["error"] == "database_not_migrated"
        assert body["detail"].endswith(f"{MIGRATE}; nothing was written")

        ready = await client.get("/readyz")
        assert ready.status == 503
        assert await ready.json() == {
            "status": "unavailable",
            "reason": f'database "{_database(fresh_database_url)}" is not migrated '
            f"(outbox.messages does not exist): {MIGRATE}",
        }


# -- a wrong password (a server of its own: the session's trusts every login) ------------------


def test_a_wrong_password_is_a_login_error(tmp_path: Path) -> None:
    import psycopg

    from outbox_relay.testing.postgres import LocalPostgres

    with LocalPostgres(fast=True) as pg:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'right-pw'")
        # The first matching line wins: this role must give its password over TCP.
        hba = pg.data_dir / "pg_hba.conf"
        hba.write_text("host all app 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        dsn = f"postgresql://app:wrong-pw@127.0.0.1:{pg.port}/postgres"

        for command in ("status", "relay"):
            result = run(tmp_path, command, DATABASE_URL=dsn)

            assert result.returncode == 2
            assert last_line(result) == (
                f"outbox-relay {command}: PostgreSQL at 127.0.0.1:{pg.port}/postgres refused the "
                'login (password authentication failed for user "app"): fix the user and '
                "password in DATABASE_URL"
            )
            assert "wrong-pw" not in result.stdout + result.stderr
