"""``outbox-relay demo``: the whole system on this machine, for a first look.

It starts a throwaway PostgreSQL from the system's binaries, embedded Qdrant, the Event API
stand-in, the write API and the relay; adds a sample library through the HTTP API; and prints
what happened.

The demo never touches a user's data. ``DATABASE_URL`` and ``INNGEST_EVENT_API_BASE_URL`` are
left alone even when exported (anyone who runs the relay has them set, and a relay pointed at
them would claim real outbox rows and publish them to the stand-in, where they are lost). Only
the explicit ``--database-url`` and ``--event-api-url`` flags bring in servers of the user's; even
then the demo works in a database of its own (``outbox_relay_demo_<random>``, dropped at the end)
and refuses to start a relay on an outbox holding rows it did not write.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from outbox_relay.config import Settings
from outbox_relay.db.migrate import migrate
from outbox_relay.db.queries import QUERIES
from outbox_relay.domain.isrc import point_id
from outbox_relay.errors import ConfigurationError
from outbox_relay.http.server import start_site
from outbox_relay.logs import configure_logging

# Every demo database starts with this, so an operator can tell one (and a leftover) at a glance.
DEMO_DATABASE_PREFIX = "outbox_relay_demo_"
ALREADY_INDEXED = "GBAYE0601498"
SAMPLE_TRACKS: list[dict[str, Any]] = [
    {"isrc": "usrc17607839", "title": "Lose Yourself", "artist": "Eminem", "album": "8 Mile"},
    # the same track added again: same event id, so Inngest runs the ingestion once
    {"isrc": "USRC17607839", "title": "Lose Yourself", "artist": "Eminem", "album": "8 Mile"},
    {"isrc": "NOT-AN-ISRC", "title": "Bootleg", "artist": "Unknown", "album": "Tape"},
    {
        "isrc": ALREADY_INDEXED,
        "title": "Paranoid Android",
        "artist": "Radiohead",
        "album": "OK Computer",
    },
]
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


def say(text: str = "") -> None:
    print(text, flush=True)


def _redact(dsn: str) -> str:
    """``user@host:port/db`` of a URL, without its password: what the banner shows."""
    parts = urllib.parse.urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{user}{host}{port}{parts.path or '/'}"


async def run_demo(
    settings: Settings,
    *,
    serve: bool,
    database_url: str | None = None,
    event_api_url: str | None = None,
) -> int:
    """Runs the demo; ``database_url``/``event_api_url`` come only from explicit flags."""
    workdir = Path(tempfile.mkdtemp(prefix="outbox-relay-demo-"))
    # Outside the throwaway folder, so it can be read after the demo cleaned up.
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in the finally below
        "w", prefix="outbox-relay-demo-", suffix=".log", delete=False
    )
    log_path = log_file.name
    configure_logging(settings.log_level, "json", settings.secrets(), stream=log_file)
    try:
        async with _stack(settings, workdir, database_url, event_api_url) as env:
            await _walkthrough(env)
            say(f"\nStructured logs of this run: {log_path}")
            if serve:
                say("\nServing until Ctrl-C:")
                say(f"  write API      {env['api_url']}/v1/library/tracks  (POST JSON)")
                say(f"  relay metrics  http://127.0.0.1:{env['relay'].http_port}/metrics")
                say(f"  database       {env['dsn']}")
                await asyncio.Event().wait()
    finally:
        log_file.close()
        if not serve:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


@contextlib.asynccontextmanager
async def _stack(
    settings: Settings, workdir: Path, database_url: str | None, event_api_url: str | None
) -> AsyncIterator[dict[str, Any]]:
    """Starts every part, embedded unless a flag names a server; stops them in reverse."""
    from outbox_relay.apps.relay import RelayService
    from outbox_relay.http.write_api import create_app
    from outbox_relay.testing.inngest import EventApiStandIn
    from outbox_relay.testing.postgres import LocalPostgres

    async with contextlib.AsyncExitStack() as stack:
        say("outbox-relay demo\n=================")
        if database_url is None:
            pg = LocalPostgres()
            # Registered before the start: a start interrupted half-way is cleaned up too.
            stack.callback(pg.cleanup)
            await asyncio.to_thread(pg.start)
            admin_dsn = pg.dsn
            server = f"a throwaway local server on 127.0.0.1:{pg.port} (binaries: {pg.bindir})"
        else:
            admin_dsn = database_url
            server = f"YOUR server {_redact(database_url)} (--database-url)"
        dsn = await _own_database(stack, admin_dsn)
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
        await migrate(dsn)
        await _refuse_rows_it_did_not_write(dsn)

        standin: EventApiStandIn | None = None
        if event_api_url is not None:
            origin = event_api_url.rstrip("/")
            say(f"Event API    {origin} (--event-api-url)")
        else:
            standin = EventApiStandIn()
            origin = await standin.start()
            stack.push_async_callback(standin.stop)
            say(f"Event API    LOCAL STAND-IN of Inngest's Event API at {origin}")
            say(
                "             (--event-api-url http://127.0.0.1:8288 publishes to a real Inngest "
                "dev server instead)"
            )

        qdrant_path = workdir / "qdrant"
        await _seed_qdrant(qdrant_path, settings.qdrant_collection)
        say(
            f"Qdrant       embedded local mode in {qdrant_path}, "
            f"with {ALREADY_INDEXED} already indexed"
        )

        relay_settings = settings.model_copy(
            update={
                "database_url": SecretStr(dsn),
                "inngest_event_api_base_url": origin,
                "inngest_dev": settings.inngest_dev or "1",
                "qdrant_url": None,
                "qdrant_path": str(qdrant_path),
                "http_host": "127.0.0.1",
                "http_port": 0,
                "poll_interval": 0.5,
            }
        )
        relay = RelayService(relay_settings, registry=CollectorRegistry())
        relay_task = asyncio.create_task(relay.run(), name="relay")

        async def stop_relay() -> None:
            relay.stop()
            await relay_task

        stack.push_async_callback(stop_relay)

        runner, api_port = await start_site(create_app(dsn), "127.0.0.1", 0)
        stack.push_async_callback(runner.cleanup)
        say(f"Write API    http://127.0.0.1:{api_port}   Relay    replica {settings.replica_id}")
        yield {
            "dsn": dsn,
            "standin": standin,
            "api_url": f"http://127.0.0.1:{api_port}",
            "relay": relay,
        }


async def _own_database(stack: contextlib.AsyncExitStack, admin_dsn: str) -> str:
    """Creates ``outbox_relay_demo_<random>`` on the server, to be dropped at the end; its URL.

    Migrating it also creates the cluster-wide role ``outbox_relay_role`` when the server has
    none; a role the demo created goes again with its database, unless another database has
    granted it something meanwhile (then it stays, and the demo says so).
    """
    from outbox_relay.testing.postgres import create_database, drop_database, dsn_with_database

    name = DEMO_DATABASE_PREFIX + secrets.token_hex(4)
    role_existed = await _fetchval(admin_dsn, QUERIES["demo_relay_role_exists"])
    try:
        await asyncio.to_thread(create_database, admin_dsn, name)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot create the demo's database {name} on {_redact(admin_dsn)}: {exc}".strip()
            + " (the demo works in a database of its own: the role needs CREATEDB)"
        ) from exc

    async def drop() -> None:
        await asyncio.to_thread(drop_database, admin_dsn, name)
        if not role_existed:
            await _drop_relay_role(admin_dsn)

    stack.push_async_callback(drop)
    return dsn_with_database(admin_dsn, name)


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
        raise ConfigurationError(
            f"refusing to run a relay: the outbox of the new database {name} already holds "
            f"{rows} row(s) the demo did not write (copied from template1); the demo relays "
            "only its own rows. Run it without --database-url, or on a server whose template1 "
            "has no outbox rows"
        )


async def _seed_qdrant(path: Path, collection: str) -> None:
    """Indexes one track, as the ingestion worker would have, so the relay can skip it."""
    from qdrant_client import AsyncQdrantClient, models

    client = AsyncQdrantClient(path=str(path))
    try:
        await client.create_collection(
            collection, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)
        )
        await client.upsert(
            collection,
            points=[
                models.PointStruct(
                    id=point_id(ALREADY_INDEXED),
                    vector=[0.1, 0.2, 0.3, 0.4],
                    payload={"isrc": ALREADY_INDEXED},
                )
            ],
        )
    finally:
        await client.close()


async def _walkthrough(env: dict[str, Any]) -> None:
    say("\n1. Adding to the library through the write API (each write also enqueues):")
    started = time.monotonic()
    async with aiohttp.ClientSession(env["api_url"]) as http:
        for track in SAMPLE_TRACKS:
            async with http.post("/v1/library/tracks", json=track) as response:
                body = await response.json()
                say(
                    f"   POST /v1/library/tracks {track['isrc']!r:16} {track['title']!r:22} "
                    f"-> {response.status} {body}"
                )
        async with http.post("/v1/library/albums", json=SAMPLE_ALBUM) as response:
            body = await response.json()
            say(
                f"   POST /v1/library/albums  {SAMPLE_ALBUM['title']!r} "
                f"({len(SAMPLE_ALBUM['tracks'])} tracks) -> {response.status} {body}"
            )

    conn: asyncpg.Connection = await asyncpg.connect(env["dsn"])
    try:
        await _wait_until_drained(conn, timeout=30.0)
        elapsed = time.monotonic() - started
        say(f"\n2. The relay drained the outbox in {elapsed * 1000:.0f} ms.")
        standin = env["standin"]
        if standin is not None:
            _print_events(standin)
        rows = await conn.fetch(QUERIES["demo_skipped_tracks"])
        say(
            "\n4. Skipped, with reasons (SELECT ... FROM outbox.messages WHERE status = 'skipped'):"
        )
        for row in rows:
            say(f"   #{row['id']:<3} {row['isrc']:14} {row['title']!r:40} {row['skip_reason']}")
        say("\n5. SELECT * FROM outbox.summary;")
        say(f"   {'status':<12}{'count':>6}  oldest_age")
        for row in await conn.fetch(QUERIES["demo_summary"]):
            age = "" if row["oldest_age"] is None else str(row["oldest_age"])
            say(f"   {row['status']:<12}{row['count']:>6}  {age}")
    finally:
        await conn.close()


def _print_events(standin: Any) -> None:
    events = standin.events
    say(
        f"\n3. The Event API stand-in received {len(events)} events "
        f"and would start {standin.run_count()} ingestion runs (one per event id):"
    )
    for event in events:
        say(f"   {event.id:34} inngest id {event.ulid}  {event.data.get('title')!r}")


async def _wait_until_drained(conn: asyncpg.Connection, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pending = await conn.fetchval(QUERIES["demo_pending_count"])
        if pending == 0:
            return
        if time.monotonic() > deadline:
            print(f"demo: {pending} rows still pending after {timeout:.0f} s", file=sys.stderr)
            raise SystemExit(1)
        await asyncio.sleep(0.05)
