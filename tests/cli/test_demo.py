"""``outbox-relay demo`` run as a user runs it: a process, with the user's environment.

The demo must never touch a user's data (issue 8, point 1): an exported ``DATABASE_URL`` is left
alone, ``--database-url`` works in a database of the demo's own, and a relay is never started
on an outbox holding rows the demo did not write.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
import pytest

from outbox_relay.db.migrate import migrate
from outbox_relay.testing.postgres import LocalPostgres

# Slow (demo processes, servers and signals): CI runs it, -m "not slow" leaves it out.
pytestmark = pytest.mark.slow

if TYPE_CHECKING:
    # For annotations only: test modules do not import conftest at run time.
    from conftest import PgServer

# Whatever the developer running the suite has exported must not leak into the demo's runs.
USER_ENV = ("DATABASE_URL", "INNGEST_EVENT_API_BASE_URL", "INNGEST_EVENT_KEY", "INNGEST_DEV")


def demo(*args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in USER_ENV}
    return subprocess.run(
        [sys.executable, "-m", "outbox_relay", "demo", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def query(dsn: str, statement: LiteralString) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement).fetchall()


def enqueue_real_work(dsn: str) -> None:
    """What a user's database holds: a library row and its pending outbox row, not yet relayed."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(
            "WITH o AS (SELECT outbox.enqueue_track('GBUM71029604', 'Real Song', 'Real Artist', "
            "'Real Album') AS id) INSERT INTO library.tracks (isrc, title, artist, album, "
            "outbox_id) SELECT 'GBUM71029604', 'Real Song', 'Real Artist', 'Real Album', id FROM o"
        )


def snapshot(dsn: str) -> dict[str, Any]:
    """Everything of the user's database the demo could have touched."""
    return {
        "outbox": query(dsn, "SELECT * FROM outbox.messages ORDER BY id"),
        "tracks": query(dsn, "SELECT * FROM library.tracks ORDER BY id"),
        "albums": query(dsn, "SELECT * FROM library.albums ORDER BY id"),
    }


def schemas(dsn: str) -> set[str]:
    return {row[0] for row in query(dsn, "SELECT nspname FROM pg_namespace")}


def demo_databases(admin_dsn: str) -> list[str]:
    rows = query(
        admin_dsn, "SELECT datname FROM pg_database WHERE datname LIKE 'outbox\\_relay\\_demo\\_%'"
    )
    return [row[0] for row in rows]


def assert_every_write_accounted_for(stdout: str) -> None:
    """The demo's events and runs match its writes.

    Nine events: eight distinct ISRCs, Lose Yourself twice (same event id, one run). On a busy
    machine the worker can index the first Lose Yourself before the relay checks the second
    (they are separate writes, and a relay checks Qdrant per batch): the second is then skipped
    as already_indexed, one event fewer, and the path table says so. Either way, eight runs.
    """
    received = re.search(r"received (\d+) events from the relay", stdout)
    second = re.search(
        r"^   #2 +USRC17607839 +Lose Yourself +(published|skipped: already_indexed)", stdout, re.M
    )
    assert received and second, stdout
    assert int(received[1]) == (9 if second[1] == "published" else 8), stdout
    assert "...and 8 track/ingestion.completed events" in stdout, stdout  # every run's


def test_an_exported_database_url_is_left_alone(database_url: str) -> None:
    enqueue_real_work(database_url)
    before = snapshot(database_url)
    assert query(database_url, "SELECT status FROM outbox.messages") == [("pending",)]

    result = demo(DATABASE_URL=database_url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "DATABASE_URL is set and left alone" in result.stdout
    assert "a throwaway local server on 127.0.0.1:" in result.stdout
    assert_every_write_accounted_for(result.stdout)
    # The album added by TIDAL ids: two ISRCs looked up in the catalog stand-in, one id unknown.
    assert "tidal:75413016     -> QMJMT1701237" in result.stdout
    assert "tidal:99999999999  -> unknown to the catalog" in result.stdout
    # The pending row is still pending, untouched to the last column; no demo rows beside it.
    assert snapshot(database_url) == before


def test_an_exported_database_url_gets_no_schemas(fresh_database_url: str) -> None:
    before = schemas(fresh_database_url)
    result = demo(DATABASE_URL=fresh_database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert schemas(fresh_database_url) == before
    assert not {"outbox", "library"} & before


def test_database_url_flag_works_in_a_database_of_its_own(
    database_url: str, pg_server: PgServer
) -> None:
    enqueue_real_work(database_url)
    before = snapshot(database_url)

    result = demo("--database-url", database_url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "YOUR server" in result.stdout and "(--database-url)" in result.stdout
    assert "database outbox_relay_demo_" in result.stdout
    assert_every_write_accounted_for(result.stdout)
    assert snapshot(database_url) == before
    # Its own database is gone again.
    assert demo_databases(pg_server.admin_dsn) == []


@pytest.fixture
def own_server() -> Iterator[LocalPostgres]:
    """A server of this test's own: it migrates template1, which no other test may see."""
    with LocalPostgres(fast=True) as pg:
        yield pg


def test_database_url_flag_leaves_a_server_as_it_found_it_or_refuses(
    own_server: LocalPostgres,
) -> None:
    admin = own_server.dsn
    roles = "SELECT rolname FROM pg_roles WHERE rolname = 'outbox_relay_role'"
    assert query(admin, roles) == []

    ran = demo("--database-url", admin)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # The cluster-wide role its migration created went with its database.
    assert query(admin, roles) == []
    assert demo_databases(admin) == []
    assert schemas(admin) == schemas(own_server.dsn_for("template1"))

    # A template1 with outbox rows hands them to every new database: the demo must refuse.
    template1 = own_server.dsn_for("template1")
    asyncio.run(migrate(template1))
    enqueue_real_work(template1)
    before = snapshot(template1)

    refused = demo("--database-url", admin)

    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "refusing to run a relay" in lines[0]
    assert "1 row(s) the demo did not write" in lines[0]
    assert snapshot(template1) == before
    assert demo_databases(admin) == []


# -- demo --serve: what it lists, and that a signal leaves nothing behind ---------------------


class ServingDemo:
    """A ``demo --serve`` process, its output file and its own temporary folder."""

    def __init__(self, tmp_path: Path, *args: str, stale_pid: int | None = None) -> None:
        # Not under tmp_path (0700): when root, PostgreSQL runs as another user, who must get
        # through every parent folder.
        self.tmp = Path(tempfile.mkdtemp(prefix="outbox-demo-test-"))
        self.tmp.chmod(0o711)
        if stale_pid is not None:
            # What a SIGKILLed demo leaves: its folder, stamped with a process that is gone.
            stale = self.tmp / "outbox-relay-demo-killed"
            (stale / "outbox-pg-x" / "data").mkdir(parents=True)
            (stale / "owner").write_text(f"{stale_pid} {socket.gethostname()}\n")
        self.state = tmp_path / "state"
        self.out_path = tmp_path / "stdout.txt"
        self.err_path = tmp_path / "stderr.txt"
        base = {k: v for k, v in os.environ.items() if k not in USER_ENV}
        # Its own TMPDIR: what it leaves behind is then exactly what is in there.
        env = {**base, "TMPDIR": str(self.tmp), "XDG_STATE_HOME": str(self.state)}
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "outbox_relay", "demo", "--serve", *args],
                env=env,
                stdout=out,
                stderr=err,
            )

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    def wait_for_output(self, text: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            if self.proc.poll() is not None:
                pytest.fail(f"demo exited {self.proc.returncode}:\n{self.out}\n{self.err}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} after {timeout} s:\n{self.out}")
            time.sleep(0.05)
        return self.out

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def stop(self, sig: signal.Signals, timeout: float = 60.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"demo still running {timeout} s after {sig.name}:\n{self.out}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Callable[..., ServingDemo]]:
    started: list[ServingDemo] = []

    def start(*args: str, stale_pid: int | None = None) -> ServingDemo:
        started.append(ServingDemo(tmp_path, *args, stale_pid=stale_pid))
        return started[-1]

    yield start
    for demo_process in started:
        demo_process.close()


def banner_value(out: str, label: str) -> str:
    match = re.search(rf"^  {re.escape(label)} +(\S+)", out, re.MULTILINE)
    assert match, (label, out)
    return match.group(1)


def http(url: str, *, method: str = "GET", body: bytes | None = None, **headers: str) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_lists_what_it_runs_and_a_signal_removes_every_folder(
    serving: Callable[..., ServingDemo], sig: signal.Signals
) -> None:
    demo_process = serving()
    out = demo_process.wait_for_output("_standin/faults \\")
    api = banner_value(out, "write API")
    relay = banner_value(out, "relay metrics").removesuffix("/metrics")
    token = banner_value(out, "admin token")
    events = banner_value(out, "stand-in events").rstrip(",")
    faults = banner_value(out, "fault switches")
    database_url = re.search(r"export DATABASE_URL=(\S+)", out)
    assert database_url, out
    assert any(demo_process.tmp.iterdir()), "the demo's folder should be in its TMPDIR"

    status, body = http(banner_value(out, "its OpenAPI"))
    assert status == 200 and json.loads(body)["openapi"].startswith("3.")
    assert http(f"{api}/healthz")[0] == 200
    assert http(f"{relay}/healthz")[0] == 200
    assert b"outbox_relay_" in http(f"{relay}/metrics")[1]
    assert http(f"{relay}/admin/status")[0] == 401
    assert http(f"{relay}/admin/status", authorization=f"Bearer {token}")[0] == 200
    # 9 from the relay (2 of them looked up in the catalog stand-in), 8
    # track/ingestion.completed from the worker's runs: the demo waited for every run to end
    # before it printed them, so all 17 are there already.
    assert "...and 8 track/ingestion.completed events" in out
    assert int(json.loads(http(events)[1])["event_count"]) == 17
    fault = json.dumps({"kind": "status_5xx", "status": 503, "times": 1}).encode()
    assert http(faults, method="POST", body=fault)[0] == 200
    assert http(faults, method="DELETE")[0] == 200
    # The export line is enough for `outbox-relay status` from another terminal.
    base = {k: v for k, v in os.environ.items() if k not in USER_ENV}
    status_run = subprocess.run(
        [sys.executable, "-m", "outbox_relay", "status", "--json"],
        env={**base, "DATABASE_URL": database_url.group(1)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status_run.returncode == 0, status_run.stderr
    counts = {row["status"]: row["count"] for row in json.loads(status_run.stdout)["statuses"]}
    assert counts["published"] == 9

    assert demo_process.stop(sig) == 0, demo_process.err
    assert list(demo_process.tmp.iterdir()) == []
    port = urllib.parse.urlsplit(database_url.group(1)).port
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2)
    logged = [
        json.loads(line)
        for line in (demo_process.state / "outbox-relay" / "demo.log").read_text().splitlines()
    ]
    by_event = {entry["event"]: entry for entry in logged}
    assert {
        "demo_database_created",
        "demo_database_dropped",
        "relay_http_listening",
        "worker_listening",
    } <= set(by_event)
    assert by_event["worker_listening"]["with_relay"] is True
    assert by_event["demo_stopped"]["signal"] == sig.name
    assert by_event["demo_stopped"]["workdir_removed"] is True
    assert token not in (demo_process.state / "outbox-relay" / "demo.log").read_text()


def test_the_demo_closes_the_loop(serving: Callable[..., ServingDemo]) -> None:
    """Added → published → run by the worker → point in Qdrant → ``indexed`` in SQL; the track
    added again is skipped as ``already_indexed`` because the relay found the worker's point."""
    demo_process = serving()
    out = demo_process.wait_for_output("_standin/faults \\")
    database_url = re.search(r"export DATABASE_URL=(\S+)", out)
    assert database_url, out
    dsn = database_url.group(1)
    assert "ONE client shared by the worker" in out
    assert "outbox #15: skipped, already_indexed" in out

    paths = query(
        dsn,
        "SELECT outbox_id, isrc, outbox_status, skip_reason, event_id, run_id, "
        "ingestion_status FROM library.track_path WHERE isrc ~ '^[A-Z0-9]{12}$' "
        "ORDER BY outbox_id",
    )
    published = [p for p in paths if p[2] == "published"]
    assert {p[1] for p in published} == {
        "USRC17607839",
        "GBAYE0601498",
        "USWB10002390",
        "USWB10002391",
        "USWB10002392",
        "USWB10002394",
        # the album added by TIDAL ids: its ISRCs looked up in the catalog (migration 015)
        "QMJMT1701237",
        "QMJMT1701238",
    }
    assert all(p[6] == "indexed" for p in paths), paths
    # The same track added again: skipped at the relay, no event; its first run indexed it.
    [again] = [p for p in paths if p[2] == "skipped"]
    assert again[1:5] == ("GBAYE0601498", "skipped", "already_indexed", None)

    # Every indexed track's run is a completed run of the stand-in, started by its event.
    control = banner_value(out, "stand-in runs").rstrip(",").removesuffix("/runs")
    status, body = http(f"{control}/runs?function_id=outbox-relay-worker-track-ingestion")
    assert status == 200
    runs = {run["run_id"]: run for run in json.loads(body)["runs"]}
    # one for each ISRC above
    assert len(runs) == 8
    for outbox_id, isrc, _, _, event_id, run_id, _ in published:
        assert runs[run_id]["status"] == "completed", (outbox_id, runs[run_id])
        assert runs[run_id]["event"]["id"] == event_id == f"track-ingestion-{isrc}"
        assert run_id in out  # the path table shows it
    worker_metrics = banner_value(out, "worker metrics")
    metrics = http(worker_metrics)[1].decode().splitlines()
    completed = [
        line
        for line in metrics
        if line.startswith("outbox_relay_worker_runs_completed_total{")
        and 'track-ingestion"' in line
    ]
    assert completed and completed[0].endswith(" 8.0"), completed

    assert demo_process.stop(signal.SIGTERM) == 0, demo_process.err
    assert list(demo_process.tmp.iterdir()) == []


def test_a_signal_while_it_starts_removes_every_folder_and_a_killed_runs_too(
    serving: Callable[..., ServingDemo],
) -> None:
    dead = subprocess.Popen(["true"])  # its process id is free again once it is reaped
    dead.wait()
    demo_process = serving(stale_pid=dead.pid)
    demo_process.wait_for_output("... starting PostgreSQL")
    assert demo_process.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in demo_process.err
    assert "Traceback" not in demo_process.err
    assert list(demo_process.tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("notadsn", "--database-url must be a postgresql:// URL"),
        ("postgresql://nobody@127.0.0.1:1/postgres", "cannot connect"),
    ],
)
def test_a_database_url_it_cannot_use_is_one_line_and_exit_2(url: str, says: str) -> None:
    result = demo("--database-url", url, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr


@pytest.fixture
def outside_event_api() -> Iterator[str]:
    """An Event API of "the user's" (a stand-in process that takes one key only); its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "outbox_relay.testing.inngest", "--port", "0", "--keys", "user-key"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["base_url"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_event_api_comes_from_the_flag_never_from_the_environment(
    outside_event_api: str,
) -> None:
    def events_received() -> int:
        return int(json.loads(http(f"{outside_event_api}/_standin/state")[1])["event_count"])

    exported = demo(INNGEST_EVENT_API_BASE_URL=outside_event_api, INNGEST_EVENT_KEY="user-key")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "LOCAL STAND-IN" in exported.stdout
    assert events_received() == 0

    flagged = demo(
        "--event-api-url",
        outside_event_api,
        INNGEST_EVENT_API_BASE_URL="http://127.0.0.1:1",
        INNGEST_EVENT_KEY="user-key",
    )
    assert flagged.returncode == 0, flagged.stdout + flagged.stderr
    assert f"Event API    {outside_event_api} (--event-api-url)" in flagged.stdout
    # Synced with that server, which ran the worker's functions: 9 events from the relay and the
    # 8 runs' track/ingestion.completed, all sent with the user's key.
    assert events_received() == 17
