"""``outbox-relay demo``: the whole system on this machine, for a first look.

It starts a throwaway PostgreSQL from the system's binaries, the Event API stand-in (which also
plays Inngest's executor), the ingestion worker with the relay beside it, and the write API; adds
a sample library through the HTTP API, waits until the worker has indexed it, adds one track
again to show it skipped as ``already_indexed``, and prints each track's path.

The worker and the relay run in the demo's own process as ``outbox-relay worker --with-relay``
runs them (:class:`outbox_relay.apps.worker.WorkerService`): embedded Qdrant locks its folder to
one process, so the relay's existence check and the worker's point writer share one embedded
client. With ``--event-api-url`` the worker is synced with that server instead (``PUT`` on its
serve URL, as Inngest's "sync" does), which then runs the functions.

The demo never touches a user's data. ``DATABASE_URL`` and ``INNGEST_EVENT_API_BASE_URL`` are
left alone even when exported (anyone who runs the relay has them set, and a relay pointed at
them would claim real outbox rows and publish them to the stand-in, where they are lost). Only
the explicit ``--database-url`` and ``--event-api-url`` flags bring in servers of the user's; even
then the demo works in a database of its own (``outbox_relay_demo_<random>``, dropped at the end)
and refuses to start a relay on an outbox holding rows it did not write.

Everything temporary lives in one folder (``$TMPDIR/outbox-relay-demo-*``: the PostgreSQL
cluster, embedded Qdrant), removed when the demo ends, however it ends: after the walkthrough,
on Ctrl-C or SIGTERM (signal handlers only stop the work; the cleanup runs as the stack unwinds),
and after a SIGKILL by the next demo, which sweeps folders whose owner process is gone. The
structured logs go to ``$XDG_STATE_HOME/outbox-relay/demo.log`` (``~/.local/state/...``), one file
rewritten by each run, so they can be read afterwards without piling up in /tmp.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg
import structlog
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from outbox_relay.cli.progress import Progress
from outbox_relay.config import Settings
from outbox_relay.db.migrate import migrate
from outbox_relay.db.queries import QUERIES
from outbox_relay.errors import ConfigurationError
from outbox_relay.http.server import start_site
from outbox_relay.logs import configure_logging

log = structlog.get_logger("outbox_relay.demo")

WORKDIR_PREFIX: Final = "outbox-relay-demo-"
_OWNER_FILE: Final = "owner"
# Every demo database starts with this, so an operator can tell one (and a leftover) at a glance.
DEMO_DATABASE_PREFIX = "outbox_relay_demo_"
ALREADY_INDEXED_TRACK: dict[str, Any] = {
    "isrc": "GBAYE0601498",
    "title": "Paranoid Android",
    "artist": "Radiohead",
    "album": "OK Computer",
}
SAMPLE_TRACKS: list[dict[str, Any]] = [
    {"isrc": "usrc17607839", "title": "Lose Yourself", "artist": "Eminem", "album": "8 Mile"},
    # the same track added again: same event id, so Inngest runs the ingestion once (on a busy
    # machine the first can be indexed before the relay checks this one: already_indexed)
    {"isrc": "USRC17607839", "title": "Lose Yourself", "artist": "Eminem", "album": "8 Mile"},
    {"isrc": "NOT-AN-ISRC", "title": "Bootleg", "artist": "Unknown", "album": "Tape"},
    # indexed by its run, then added again after the others: skipped as already_indexed
    ALREADY_INDEXED_TRACK,
]
# An album added by TIDAL catalog ids only (its listing has no ISRCs): the relay looks them up in
# the catalog stand-in. The first id and ISRC are the TIDAL API spec's own example; the second
# is illustrative; the third id is one the catalog does not know.
CATALOG_ALBUM: dict[str, Any] = {
    "title": "4:44",
    "artist": "JAY Z",
    "tracks": [
        {"tidalTrackId": "75413016", "title": "4:44"},
        {"tidalTrackId": "75413017", "title": "Family Feud"},
        {"tidalTrackId": "99999999999", "title": "Not in the catalog"},
    ],
}
CATALOG_ISRCS: dict[str, str] = {"75413016": "QMJMT1701237", "75413017": "QMJMT1701238"}
SAMPLE_ALBUM: dict[str, Any] = {
    "title": "Rumours",
    "artist": "Fleetwood Mac",
    "tracks": [
        {"isrc": "USWB10002390", "title": "Second Hand News"},
        {"isrc": "USWB10002391", "title": "Dreams"},
        {"isrc": "USWB10002392", "title": "Never Going Back Again"},
        {"title": "Don't Stop (no ISRC in the listing)"},
        {"isrc": "USWB10002394", "title": "Go Your Own Way", "artist": "Fleetwood Mac"},
    ],
}


progress = Progress()
say = progress.say


def _redact(dsn: str) -> str:
    """``user@host:port/db`` of a URL, without its password: what the banner shows."""
    parts = urllib.parse.urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{user}{host}{port}{parts.path or '/'}"


@dataclass
class _Env:
    """What the walkthrough and the banner need of the running stack."""

    dsn: str
    password: bool
    standin: Any
    api_url: str
    relay_url: str
    worker_url: str
    qdrant: Any
    collection: str
    admin_token: str
    event_api: str
    catalog_country: str = "US"


async def run_demo(
    settings: Settings,
    *,
    serve: bool,
    database_url: str | None = None,
    event_api_url: str | None = None,
) -> int:
    """Runs the demo; ``database_url``/``event_api_url`` come only from explicit flags.

    Returns 0, or 128 + the signal's number when a signal stopped the walkthrough (with
    ``serve``, a signal after the walkthrough is the normal way out and returns 0).
    """
    if database_url is not None and urllib.parse.urlsplit(database_url).scheme not in (
        "postgresql",
        "postgres",
    ):
        raise ConfigurationError(
            "--database-url must be a postgresql:// URL, e.g. postgresql://me@localhost:5432/postgres"
        )
    workdir = _make_workdir()
    admin_token = secrets.token_urlsafe(24)
    log_path, log_file = _open_log(workdir)
    configure_logging(
        settings.log_level, "json", [*settings.secrets(), admin_token], stream=log_file
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[signal.Signals] = []
    phase = "working"  # then "serving" (with serve), then "stopping"

    async def demo() -> None:
        nonlocal phase
        async with _stack(settings, workdir, database_url, event_api_url, admin_token) as env:
            await _walkthrough(env)
            say(f"\nStructured logs of this run: {log_path}")
            if serve:
                _print_serve_banner(env, log_path)
                phase = "serving"
                await stop.wait()
            phase = "stopping"
            say(f"\nStopping, and removing {workdir}")

    work = asyncio.create_task(demo(), name="demo")

    def on_signal(sig: signal.Signals) -> None:
        # Only stops the work; the cleanup runs as the stack unwinds. A signal while it
        # already stops (a second Ctrl-C, say) must not cut the cleanup short.
        if received or phase == "stopping":
            return
        received.append(sig)
        if phase == "serving":
            stop.set()
        else:
            say(f"\n{sig.name}: stopping, and removing {workdir}")
            work.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await work
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        shutil.rmtree(workdir, ignore_errors=True)
        log.info(
            "demo_stopped",
            signal=received[0].name if received else None,
            workdir=str(workdir),
            workdir_removed=not workdir.exists(),
        )
        log_file.close()
    if received and phase != "stopping":
        print(
            f"demo: stopped by {received[0].name}; removed {workdir} and everything it started",
            file=sys.stderr,
        )
        return 128 + received[0].value
    return 0


def _open_log(workdir: Path) -> tuple[Path, Any]:
    """The run's log file: in the state folder, else (unwritable) in the throwaway folder."""
    try:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        path = Path(state) / "outbox-relay" / "demo.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, path.open("w", encoding="utf-8")
    except (OSError, RuntimeError):  # RuntimeError: no home folder to be found
        path = workdir / "demo.log"
        return path, path.open("w", encoding="utf-8")


def _make_workdir() -> Path:
    """The run's one temporary folder, stamped with its owner so a later run can sweep it."""
    _sweep_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    (workdir / _OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    # When root, PostgreSQL runs as another user, who must get through to its folder in here.
    workdir.chmod(0o711)
    return workdir


def _sweep_stale_workdirs() -> None:
    """Removes the folders of demos that died without cleaning up (SIGKILL, power loss)."""
    host = socket.gethostname()
    for folder in Path(tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            pid_text, owner_host = (folder / _OWNER_FILE).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if owner_host != host or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue


@contextlib.asynccontextmanager
async def _stack(
    settings: Settings,
    workdir: Path,
    database_url: str | None,
    event_api_url: str | None,
    admin_token: str,
) -> AsyncIterator[_Env]:
    """Starts every part, embedded unless a flag names a server; stops them in reverse."""
    from outbox_relay.apps.worker import WorkerService
    from outbox_relay.http.write_api import create_app
    from outbox_relay.testing.inngest import EventApiStandIn
    from outbox_relay.testing.postgres import LocalPostgres
    from outbox_relay.testing.tidal import CatalogStandIn, StandInTrack

    async with contextlib.AsyncExitStack() as stack:
        say("outbox-relay demo\n=================")
        if database_url is None:
            # Dynamic shared memory as files in the cluster's folder, not POSIX segments in
            # /dev/shm: even a SIGKILLed demo then leaves nothing once its folder is swept.
            pg = LocalPostgres(parent_dir=workdir, settings={"dynamic_shared_memory_type": "mmap"})
            # Registered before the start: a start interrupted half-way is cleaned up too.
            stack.callback(pg.cleanup)
            with progress.step("starting PostgreSQL (initdb, then a server of the demo's own)"):
                await asyncio.to_thread(pg.start)
            admin_dsn = pg.dsn
            server = f"a throwaway local server on 127.0.0.1:{pg.port} (binaries: {pg.bindir})"
        else:
            admin_dsn = database_url
            server = f"YOUR server {_redact(database_url)} (--database-url)"
        with progress.step("creating the demo's database and applying the migrations"):
            dsn = await _own_database(stack, admin_dsn)
            await migrate(dsn)
            await _refuse_rows_it_did_not_write(dsn)
        say(f"PostgreSQL   {server},")
        say(
            f"             database {urllib.parse.urlsplit(dsn).path[1:]} "
            "(created for this run, dropped at the end)"
        )
        if database_url is None and settings.database_url is not None:
            say(
                "             DATABASE_URL is set and left alone: the demo never uses it "
                "(--database-url URL runs it on a server of yours, in a database of its own)"
            )

        standin: EventApiStandIn | None = None
        event_key = settings.inngest_event_key
        if event_api_url is not None:
            origin = event_api_url.rstrip("/")
            say(f"Event API    {origin} (--event-api-url)")
        else:
            standin = EventApiStandIn()
            origin = await standin.start()
            stack.push_async_callback(standin.stop)
            # A key of the user's environment is for their Inngest, not for the stand-in.
            event_key = None
            say(f"Event API    LOCAL STAND-IN of Inngest's Event API at {origin}")
            say(
                "             (--event-api-url http://127.0.0.1:8288 publishes to a real Inngest "
                "dev server instead)"
            )

        titles = {t["tidalTrackId"]: t["title"] for t in CATALOG_ALBUM["tracks"]}
        catalog = CatalogStandIn(
            StandInTrack(id=i, isrc=isrc, title=titles[i], artist="JAY Z", album="4:44")
            for i, isrc in CATALOG_ISRCS.items()
        )
        await catalog.start()
        stack.push_async_callback(catalog.stop)
        say(f"Catalog      LOCAL STAND-IN of the TIDAL catalog at {catalog.base_url}")

        qdrant_path = workdir / "qdrant"
        demo_settings = settings.model_copy(
            update={
                "tidal_client_id": catalog.client_id,
                "tidal_client_secret": SecretStr(catalog.client_secret),
                "tidal_api_base_url": catalog.api_base_url,
                "tidal_auth_url": catalog.auth_url,
                "database_url": SecretStr(dsn),
                "inngest_event_api_base_url": origin,
                # The worker's SDK syncs with the same server: the stand-in, or the dev server.
                "inngest_api_base_url": origin,
                "inngest_event_key": event_key,
                # Dev mode: the SDK takes unsigned requests from a local executor (the stand-in
                # or `inngest-cli dev`); an event key of the user's, with the flag, is still sent.
                "inngest_dev": "1",
                "qdrant_url": None,
                "qdrant_path": str(qdrant_path),
                "http_host": "127.0.0.1",
                "http_port": 0,
                "worker_host": "127.0.0.1",
                "worker_port": 0,
                "embedding_url": None,
                "poll_interval": 0.5,
                "admin_token": SecretStr(admin_token),
            }
        )
        with progress.step("starting the worker, the relay beside it, and the write API"):
            # The arrangement of `outbox-relay worker --with-relay`, in the demo's own process:
            # embedded Qdrant locks its folder to one process, so the relay's existence check
            # and the worker's point writer share one embedded client.
            service = WorkerService(demo_settings, registry=CollectorRegistry(), with_relay=True)
            service_task = asyncio.create_task(service.run(), name="worker-and-relay")

            async def stop_service() -> None:
                service.stop()
                await service_task

            stack.push_async_callback(stop_service)
            runner, api_port = await start_site(create_app(dsn), "127.0.0.1", 0)
            stack.push_async_callback(runner.cleanup)
            await _started(service, service_task)
            assert service.relay is not None
            relay_port = await _relay_port(service.relay, service_task)
        with progress.step(f"syncing the worker's functions from {service.serve_url}"):
            if standin is not None:
                await standin.sync(service.serve_url, wait_for_app_s=10)
            else:
                await _sync(service.serve_url)
        say(
            f"Worker       {service.serve_url} (the Inngest functions, official SDK, FastAPI "
            f"adapter; embedder {service.embedder.name})"
        )
        say(
            f"Relay        http://127.0.0.1:{relay_port} (replica {settings.replica_id}), "
            "in the worker's process"
        )
        say(
            f"Qdrant       embedded local mode in {qdrant_path}: ONE client shared by the "
            "worker (writes points)"
        )
        say(
            "             and the relay (checks them), as `outbox-relay worker --with-relay` "
            "runs them"
        )
        say(f"Write API    http://127.0.0.1:{api_port}")
        yield _Env(
            dsn=dsn,
            password=urllib.parse.urlsplit(dsn).password is not None,
            standin=standin,
            api_url=f"http://127.0.0.1:{api_port}",
            relay_url=f"http://127.0.0.1:{relay_port}",
            worker_url=service.serve_url,
            qdrant=service.qdrant,
            collection=settings.qdrant_collection,
            admin_token=admin_token,
            event_api=origin,
            catalog_country=demo_settings.tidal_country_code,
        )


async def _relay_port(relay: Any, task: asyncio.Task[None], timeout: float = 30.0) -> int:
    """The relay's HTTP port, once it listens (or the relay's own error if it failed)."""
    deadline = time.monotonic() + timeout
    while relay.http_port is None:
        if task.done():
            task.result()
            raise ConfigurationError("the demo's relay stopped before it listened")
        if time.monotonic() > deadline:
            raise ConfigurationError(f"the demo's relay did not listen within {timeout:.0f} s")
        await asyncio.sleep(0.02)
    return int(relay.http_port)


async def _started(service: Any, task: asyncio.Task[None], timeout: float = 30.0) -> None:
    """Returns once the worker listens (or raises the service's own error if it failed)."""
    waiter = asyncio.create_task(service.started.wait())
    try:
        done, _ = await asyncio.wait({waiter, task}, timeout=timeout, return_when="FIRST_COMPLETED")
    finally:
        waiter.cancel()
    if task in done:
        task.result()
        raise ConfigurationError("the demo's worker stopped before it listened")
    if waiter not in done:
        raise ConfigurationError(f"the demo's worker did not listen within {timeout:.0f} s")


async def _sync(serve_url: str, timeout: float = 30.0) -> None:
    """Syncs the worker with the Inngest server of ``--event-api-url``, as its UI's "sync" does:
    ``PUT <serve url>`` makes the SDK register its functions at that server."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.put(serve_url, headers={"x-inngest-server-kind": "dev"}) as response,
        ):
            body = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConfigurationError(
            f"cannot sync the worker at {serve_url}: {_one_line(exc)}"
        ) from exc
    if response.status != 200:
        raise ConfigurationError(
            f"syncing the worker at {serve_url} answered {response.status}: {body[:200]}"
        )


def _print_serve_banner(env: _Env, log_path: Path) -> None:
    """Everything the demo runs, and how to reach it, while it serves."""
    api, relay = env.api_url, env.relay_url
    worker = env.worker_url.rsplit("/api/", 1)[0]
    safe_dsn = _redact(env.dsn)
    lines = [
        "",
        "Serving until Ctrl-C (or SIGTERM); then everything stops and its folders are removed.",
        "",
        f"  write API        {api}   POST /v1/library/tracks, /v1/library/albums (JSON)",
        f"  its OpenAPI      {api}/openapi.json",
        f"  its health       {api}/healthz, /readyz",
        f"  relay health     {relay}/healthz, /readyz",
        f"  relay metrics    {relay}/metrics",
        f"  relay admin      {relay}/admin/status, POST /admin/requeue (with the token)",
        f"  admin token      {env.admin_token}",
        f"  worker           {env.worker_url}   (the Inngest serve endpoint)",
        f"  worker health    {worker}/healthz, /readyz",
        f"  worker metrics   {worker}/metrics   (outbox_relay_worker_*, beside the relay's)",
    ]
    if env.standin is not None:
        control = f"{env.event_api}/_standin"
        lines += [
            f"  Event API        {env.event_api}/e/<any key>   (the local stand-in)",
            f"  stand-in events  {control}/events, /_standin/state",
            f"  stand-in runs    {control}/runs, /_standin/functions   (Inngest's executor)",
            f"  fault switches   {control}/faults   POST one to switch it on, DELETE to clear",
        ]
    else:
        lines.append(f"  Event API        {env.event_api}   (--event-api-url)")
    lines += [
        f"  PostgreSQL       {safe_dsn}",
        f"  logs             {log_path}",
        "",
        "From another terminal:",
        f"  export DATABASE_URL={_with_password_hidden(env.dsn)}"
        + ("   # and PGPASSWORD, as for your server" if env.password else ""),
        "  outbox-relay status",
        f"  curl -X POST {api}/v1/library/tracks -H 'content-type: application/json' \\",
        """    -d '{"isrc": "GBAYE9200070", "title": "Creep", "artist": "Radiohead", """
        """"album": "Pablo Honey"}'""",
        f"  curl {relay}/admin/status -H 'authorization: Bearer {env.admin_token}'",
        """  psql "$DATABASE_URL" -c 'SELECT isrc, outbox_status, run_id, ingestion_status """
        """FROM library.track_path'""",
    ]
    if env.standin is not None:
        lines += [
            f"  curl -X POST {env.event_api}/_standin/faults \\",
            """    -d '{"kind": "status_5xx", "status": 503, "times": 3}'   """
            "# the next 3 requests fail",
        ]
    say("\n".join(lines))


def _with_password_hidden(dsn: str) -> str:
    """The URL without its password (``PGPASSWORD`` supplies it), so no secret is printed."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def _own_database(stack: contextlib.AsyncExitStack, admin_dsn: str) -> str:
    """Creates ``outbox_relay_demo_<random>`` on the server, to be dropped at the end; its URL.

    Migrating it also creates the cluster-wide role ``outbox_relay_role`` when the server has
    none; a role the demo created goes again with its database, unless another database has
    granted it something meanwhile (then it stays, and the demo says so).
    """
    from outbox_relay.testing.postgres import create_database, drop_database, dsn_with_database

    name = DEMO_DATABASE_PREFIX + secrets.token_hex(4)
    try:
        role_existed = await _fetchval(admin_dsn, QUERIES["demo_relay_role_exists"])
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        raise ConfigurationError(
            f"--database-url {_redact(admin_dsn)}: cannot connect: {_one_line(exc)}"
        ) from exc
    try:
        await asyncio.to_thread(create_database, admin_dsn, name)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot create the demo's database {name} on {_redact(admin_dsn)}: "
            f"{_one_line(exc)} (the demo works in a database of its own: the role needs CREATEDB)"
        ) from exc

    async def drop() -> None:
        await asyncio.to_thread(drop_database, admin_dsn, name)
        log.info("demo_database_dropped", database=name, server=_redact(admin_dsn))
        if not role_existed:
            await _drop_relay_role(admin_dsn)

    stack.push_async_callback(drop)
    log.info(
        "demo_database_created", database=name, server=_redact(admin_dsn), role_existed=role_existed
    )
    return dsn_with_database(admin_dsn, name)


_CONNECT_ERRORS = (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def _fetchval(dsn: str, query: str) -> Any:
    conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def _drop_relay_role(admin_dsn: str) -> None:
    try:
        await _fetchval(admin_dsn, QUERIES["demo_drop_relay_role"])
    except asyncpg.DependentObjectsStillExistError:
        say("note: outbox_relay_role stays: another database was migrated and granted it rights")


async def _refuse_rows_it_did_not_write(dsn: str) -> None:
    """The demo's relay claims every row of its outbox: there must be none but the demo's.

    A fresh database can still hold rows: ``CREATE DATABASE`` copies ``template1``, and a
    ``template1`` that was migrated and written to would hand its outbox rows to the demo.
    """
    rows = await _fetchval(dsn, QUERIES["demo_outbox_rows"])
    if rows:
        name = urllib.parse.urlsplit(dsn).path[1:]
        log.error("demo_refused", reason="outbox_not_empty", database=name, rows=rows)
        raise ConfigurationError(
            f"refusing to run a relay: the outbox of the new database {name} already holds "
            f"{rows} row(s) the demo did not write (copied from template1); the demo relays "
            "only its own rows. Run it without --database-url, or on a server whose template1 "
            "has no outbox rows"
        )


async def _walkthrough(env: _Env) -> None:
    say("\n1. Adding to the library through the write API (each write also enqueues):")
    started = time.monotonic()
    async with aiohttp.ClientSession(env.api_url) as http:
        for track in SAMPLE_TRACKS:
            await _add_track(http, track)
        async with http.post("/v1/library/albums", json=SAMPLE_ALBUM) as response:
            body = await response.json()
            say(
                f"   POST /v1/library/albums  {SAMPLE_ALBUM['title']!r} "
                f"({len(SAMPLE_ALBUM['tracks'])} tracks) -> {response.status} {body}"
            )
        async with http.post("/v1/library/albums", json=CATALOG_ALBUM) as response:
            body = await response.json()
            say(
                f"   POST /v1/library/albums  {CATALOG_ALBUM['title']!r} "
                f"({len(CATALOG_ALBUM['tracks'])} tracks by TIDAL id, no ISRCs) -> "
                f"{response.status} {body}"
            )

        conn: asyncpg.Connection = await asyncpg.connect(env.dsn)
        try:
            with progress.step("waiting for the relay to drain the outbox"):
                await _wait_until(conn, "demo_pending_count", "rows still pending", 30.0)
            drained = time.monotonic() - started
            with progress.step("waiting for the worker to index the published tracks"):
                await _wait_until(conn, "demo_waiting_for_ingestion", "tracks not indexed", 60.0)
            indexed = time.monotonic() - started
            say(
                f"\n2. The relay drained the outbox in {drained * 1000:.0f} ms; every published "
                f"track was indexed {indexed * 1000:.0f} ms after the first write."
            )
            if env.standin is not None:
                # A run sends its track/ingestion.completed event after the track is marked
                # indexed: wait for the runs to end, so that the events printed are all of them.
                await _wait_for_runs(env.standin, 30.0)
                _print_events_and_runs(env.standin)
            say("   ISRCs the relay looked up in the catalog (outbox.catalog_tracks):")
            for row in await conn.fetch(QUERIES["demo_catalog_lookups"], env.catalog_country):
                found = row["isrc"] or "unknown to the catalog"
                outcome = row["status"] + (f" ({row['skip_reason']})" if row["skip_reason"] else "")
                say(f"   tidal:{row['tidal_id']:<12} -> {found:22} {row['title']!r:22} {outcome}")

            say(
                f"\n4. {ALREADY_INDEXED_TRACK['title']!r} added again: the relay finds the "
                "worker's point in Qdrant and skips it (no event, no run):"
            )
            again = await _add_track(http, ALREADY_INDEXED_TRACK)
            with progress.step("waiting for the relay to take the new row"):
                await _wait_until(conn, "demo_pending_count", "rows still pending", 30.0)
            row = await conn.fetchrow(QUERIES["demo_outbox_row"], again)
            say(f"   outbox #{row['id']}: {row['status']}, {row['skip_reason']}")

            await _print_paths(conn, env)
            rows = await conn.fetch(QUERIES["demo_skipped_tracks"])
            say(
                "\n6. Skipped, with reasons "
                "(SELECT ... FROM outbox.messages WHERE status = 'skipped'):"
            )
            width = max((len(row["isrc"]) for row in rows), default=0)  # "tidal:<id>" is longer
            for row in rows:
                say(
                    f"   #{row['id']:<3} {row['isrc']:{width}}  {row['title']!r:40} "
                    f"{row['skip_reason']}"
                )
            say("\n7. SELECT * FROM outbox.summary;")
            say(f"   {'status':<12}{'count':>6}  oldest_age")
            for row in await conn.fetch(QUERIES["demo_summary"]):
                age = "" if row["oldest_age"] is None else str(row["oldest_age"])
                say(f"   {row['status']:<12}{row['count']:>6}  {age}")
        finally:
            await conn.close()


async def _add_track(http: aiohttp.ClientSession, track: dict[str, Any]) -> int:
    """``POST /v1/library/tracks``, said as it goes; the new outbox row's id."""
    async with http.post("/v1/library/tracks", json=track) as response:
        body = await response.json()
        say(
            f"   POST /v1/library/tracks {track['isrc']!r:16} {track['title']!r:22} "
            f"-> {response.status} {body}"
        )
    if response.status != 201:
        raise ConfigurationError(f"the write API refused a demo track: {response.status} {body}")
    return int(body["outboxId"])


def _print_events_and_runs(standin: Any) -> None:
    from outbox_relay.worker.functions import APP_ID

    requested = [e for e in standin.events if e.name == "track/ingestion.requested"]
    runs = [r for r in standin.executor.runs if r.function_id == f"{APP_ID}-track-ingestion"]
    completed = [e for e in standin.events if e.name == "track/ingestion.completed"]
    say(
        f"\n3. The Event API stand-in received {len(requested)} events from the relay and, as "
        f"Inngest's executor, ran {len(runs)} ingestion runs (one per event id):"
    )
    for event in requested:
        first = not any(e.id == event.id for e in requested[: requested.index(event)])
        ran = standin.executor.runs_for_event(event.id) if first else []
        outcome = (
            ", ".join(f"run {r.run_id} {r.status}" for r in ran)
            if first
            else "same event id: no second run"
        )
        say(f"   {event.id:30} {event.data.get('title')!r:26} {outcome}")
    say(f"   ...and {len(completed)} track/ingestion.completed events, sent by the worker's runs.")


async def _print_paths(conn: asyncpg.Connection, env: _Env) -> None:
    """Each track's path from ``library.track_path``, its point looked up in Qdrant."""
    paths = await conn.fetch(QUERIES["demo_track_path"])
    ids = sorted({str(p["point_id"]) for p in paths if p["point_id"] is not None})
    found = {
        str(point.id)
        for point in await env.qdrant.retrieve(
            env.collection, ids=ids, with_payload=False, with_vectors=False
        )
    }
    say(
        "\n5. Where each track is (SELECT * FROM library.track_path; the point looked up in "
        "Qdrant):"
    )
    header = (
        f"   {'outbox':<7}{'ISRC':<14}{'title':<24}{'outbox status':<26}"
        f"{'event id':<30}{'run':<28}{'Qdrant point':<14}status"
    )
    say(header)
    say("   " + "-" * (len(header) - 3))
    for p in paths:
        outbox = "-" if p["outbox_id"] is None else f"#{p['outbox_id']}"
        status = p["outbox_status"] or "-"
        if p["skip_reason"]:
            status = f"{status}: {p['skip_reason']}"
        # The run this row's event started (a skipped row started none).
        run = p["run_id"] if p["event_id"] is not None and p["run_id"] else "-"
        point = "" if p["point_id"] is None else str(p["point_id"])
        shown_point = f"{point[:8]}…" if point in found else "-"
        say(
            f"   {outbox:<7}{p['isrc'] or '-':<14}{_cut(p['title'], 22):<24}{status:<26}"
            f"{p['event_id'] or '-':<30}{run:<28}{shown_point:<14}"
            f"{p['ingestion_status'] or '-'}"
        )
    if any(p["outbox_id"] is None for p in paths):
        say(
            "   (the view links an album track to its outbox row by the listing's ISRC or TIDAL "
            "id: one with neither has no path; its row, skipped as missing_isrc, is in 6.)"
        )


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


async def _wait_for_runs(standin: Any, timeout: float) -> None:
    """Polls the stand-in's executor until every run has ended, with a deadline."""
    deadline = time.monotonic() + timeout
    while running := sum(not run.done for run in standin.executor.runs):
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"{running} demo ingestion runs still running after {timeout:.0f} s "
                "(see the demo's log)"
            )
        await asyncio.sleep(0.05)


async def _wait_until(conn: asyncpg.Connection, query: str, what: str, timeout: float) -> None:
    """Polls a count query until it is 0, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = await conn.fetchval(QUERIES[query])
        if left == 0:
            return
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"{left} demo {what} after {timeout:.0f} s (see the demo's log)"
            )
        await asyncio.sleep(0.05)
