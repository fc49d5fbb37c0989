"""Reliability run: the fault scenarios of ``tests/faults`` for longer, with one table of results.

Real PostgreSQL (a throwaway local server, ``synchronous_commit`` on so a crash loses no
commit), relays as real OS processes (``python -m outbox_relay relay``), the Event API
stand-in with its fault switches and the write API (both in this process), and for the
Qdrant scenarios a refused port and a TCP server that never answers.

    .venv/bin/python -m bench.reliability            # full run, several minutes
    .venv/bin/python -m bench.reliability --quick    # about a minute
    .venv/bin/python -m bench.reliability --only crash,replicas --json out.json

Every scenario checks the same invariant: each committed row that should produce an event has
its event accepted by the stand-in (``lost`` must be 0), and an event accepted more than once
carries the same id (``dup`` counts those; Inngest runs each id once). The exit status is 1 if
any row was lost, any request got a 5xx from the write API, or a scenario failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import asyncpg
from aiohttp import web

from outbox_relay.db.migrate import migrate
from outbox_relay.http.write_api import create_app
from outbox_relay.logs import configure_logging
from outbox_relay.testing.inngest import (
    EventApiStandIn,
    Fault,
    Hang,
    Latency,
    Refuse,
    Reject,
    Status5xx,
    Status429,
)
from outbox_relay.testing.postgres import LocalPostgres, create_database, free_port
from outbox_relay.testing.relay_process import (
    FAULT_ENV,
    RelayProcess,
    hanging_tcp_server,
    silent_insert,
    spawn_relay,
)


@dataclass
class Result:
    """One row of the table."""

    scenario: str
    load: float | None = None  # writes/s held during the scenario
    faults: str = ""
    inputs: int | None = None
    written: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    dead: int = 0
    drain_s: float | None = None
    recovery_s: float | None = None
    notes: str = ""
    error: str | None = None


@dataclass(frozen=True)
class Scale:
    outage_s: float
    rate: float
    crash_rows: int
    kills: int
    replica_rows: int
    reader_rows: int
    fuzz_inputs: int
    long_outage_s: float


QUICK = Scale(
    outage_s=3, rate=50, crash_rows=5000, kills=5, replica_rows=4000, reader_rows=5000,
    fuzz_inputs=500, long_outage_s=4,
)  # fmt: skip
FULL = Scale(
    outage_s=20, rate=100, crash_rows=50_000, kills=40, replica_rows=40_000, reader_rows=50_000,
    fuzz_inputs=5000, long_outage_s=30,
)  # fmt: skip


# -- the parts ----------------------------------------------------------------------------------


class Bed:
    """One scenario's world: a fresh database, the stand-in, relay processes, the write API."""

    def __init__(self, pg: LocalPostgres, dsn: str, standin: EventApiStandIn, tmp: Path) -> None:
        self.pg = pg
        self.dsn = dsn
        self.standin = standin
        self.tmp = tmp
        self.processes: list[RelayProcess] = []
        self.conn: asyncpg.Connection | None = None

    async def db(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(self.dsn)
        return self.conn

    def spawn(self, name: str, **env: str) -> RelayProcess:
        process = spawn_relay(
            name=name,
            dsn=self.dsn,
            event_api_base_url=self.standin.base_url,
            log_dir=self.tmp,
            env={**FAULT_ENV, **env},
        )
        self.processes.append(process)
        return process

    async def start(self, name: str, **env: str) -> RelayProcess:
        process = self.spawn(name, **env)
        await process.wait_ready(timeout=60)
        return process

    async def enqueue(self, count: int, prefix: str) -> None:
        await (await self.db()).execute(
            "SELECT outbox.enqueue_track($1 || lpad(i::text, 7, '0'), 'Song ' || i, 'A', 'B') "
            "FROM generate_series(1, $2) AS i",
            prefix,
            count,
        )

    async def silent_insert(self, count: int, prefix: str) -> None:
        await silent_insert(self.dsn, count, prefix)

    async def published_but_unrecorded(self) -> int:
        """Pending track rows whose event the stand-in has accepted already."""
        rows = await (await self.db()).fetch(
            "SELECT 'track-ingestion-' || upper(btrim(isrc)) AS id FROM outbox.messages "
            "WHERE kind = 'track' AND status = 'pending' AND NOT force"
        )
        accepted = self.standin.events_by_id()
        return sum(1 for row in rows if row["id"] in accepted)

    async def pending(self, up_to_id: int | None = None) -> int:
        n: int = await (await self.db()).fetchval(
            "SELECT count(*) FROM outbox.messages WHERE status = 'pending' "
            "AND ($1::bigint IS NULL OR id <= $1)",
            up_to_id,
        )
        return n

    async def drained(self, timeout: float, up_to_id: int | None = None) -> float:
        began = time.monotonic()
        while await self.pending(up_to_id):
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"not drained in {timeout} s")
            await asyncio.sleep(0.02)
        return time.monotonic() - began

    async def tally(self, result: Result) -> Result:
        """Fills written/delivered/lost/duplicates/dead from the database and the stand-in."""
        rows = await (await self.db()).fetch(
            "SELECT status, coalesce(event_id, 'track-ingestion-' || upper(btrim(isrc))) AS id "
            "FROM outbox.messages WHERE kind = 'track'"
        )
        expected = {r["id"] for r in rows if r["status"] in ("pending", "published")}
        accepted = self.standin.events_by_id()
        result.written = len(rows)
        result.delivered = len(expected & set(accepted))
        result.lost = len(expected - set(accepted))
        result.duplicates = sum(len(v) - 1 for v in accepted.values())
        result.dead = sum(1 for r in rows if r["status"] == "dead")
        if self.standin.duplicate_runs():
            result.error = f"ids run twice: {list(self.standin.duplicate_runs())[:5]}"
        return result

    async def close(self) -> None:
        for process in self.processes:
            await process.kill()
        if self.conn is not None:
            self.conn.terminate()


@dataclass
class Writer:
    """Writes tracks through the write API at a steady rate, timing each."""

    url: str
    rate: float
    prefix: str
    latencies: list[tuple[float, float]] = field(default_factory=list)
    failures: int = 0
    server_errors: int = 0
    written: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http:
            next_at = time.monotonic()
            n = 0
            while not stop.is_set():
                n += 1
                began = time.monotonic()
                body = {
                    "isrc": f"{self.prefix}{n:07d}",
                    "title": f"S{n}",
                    "artist": "A",
                    "album": "B",
                }
                try:
                    async with http.post(f"{self.url}/v1/library/tracks", json=body) as response:
                        await response.read()
                        if response.status == 201:
                            self.written += 1
                        else:
                            self.failures += 1
                            self.server_errors += response.status >= 500
                except aiohttp.ClientError:
                    self.failures += 1
                self.latencies.append((began, time.monotonic() - began))
                next_at += 1.0 / self.rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def p99_ms(self, start: float, end: float) -> float:
        values = sorted(s for b, s in self.latencies if start <= b < end)
        return 1000 * values[min(len(values) - 1, int(len(values) * 0.99))] if values else 0.0


@contextlib.asynccontextmanager
async def write_api(dsn: str) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(dsn))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# -- scenarios ----------------------------------------------------------------------------------


async def outage(bed: Bed, scale: Scale, name: str, fault: Fault) -> Result:
    await bed.start("relay")
    async with write_api(bed.dsn) as url:
        writer = Writer(url, scale.rate, "USOUT")
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        t0 = time.monotonic()
        await asyncio.sleep(scale.outage_s / 2)
        t1 = time.monotonic()
        await bed.standin.inject(fault)
        await asyncio.sleep(scale.outage_s)
        t2 = time.monotonic()
        last = await (await bed.db()).fetchval("SELECT max(id) FROM outbox.messages")
        backlog = await bed.pending()
        await bed.standin.clear()
        drain = await bed.drained(120, up_to_id=last)
        stop.set()
        await task
    await bed.drained(60)
    result = await bed.tally(Result(f"outage: {name}", drain_s=drain))
    result.load = round(writer.written / (time.monotonic() - t0), 1)
    result.faults = f"{name} for {scale.outage_s:g} s"
    result.inputs = writer.written + writer.failures
    result.notes = (
        f"backlog {backlog}; write p99 {writer.p99_ms(t0, t1):.0f} ms before, "
        f"{writer.p99_ms(t1, t2):.0f} ms during; failed writes {writer.failures}"
    )
    if writer.failures:
        result.error = f"{writer.failures} writes failed"
    return result


async def crash(bed: Bed, scale: Scale) -> Result:
    rng = random.Random(7)
    await bed.enqueue(scale.crash_rows, "USKIL")
    await bed.standin.inject(Latency(0.1))  # keeps a backlog there for every kill
    env = {"OUTBOX_LEASE_SECONDS": "1", "OUTBOX_BATCH_SIZE": "200"}
    recoveries = []
    per_kill: list[int] = []
    for _ in range(scale.kills):
        before = bed.standin.event_count
        began = time.monotonic()
        process = await bed.start("crashy", **env)
        # recovery: from the restart to its first accepted event
        await bed.standin.wait_for_events(before + 1, timeout=30)
        recoveries.append(time.monotonic() - began)
        await asyncio.sleep(rng.uniform(0.0, 0.6))
        await process.kill()
        # What this kill will make Inngest receive again: rows whose event was accepted but
        # whose outcome was not recorded when the process died. (Rows of earlier kills stay
        # that way until the backlog is drained: their lease put them behind it.)
        unrecorded = await bed.published_but_unrecorded()
        per_kill.append(unrecorded - sum(per_kill))
    await bed.standin.clear()
    await bed.start("survivor", **env)
    drain = await bed.drained(300)
    result = await bed.tally(Result("relay SIGKILL", drain_s=drain))
    result.faults = f"{scale.kills} SIGKILLs"
    result.recovery_s = round(max(recoveries), 2)
    result.notes = (
        f"restart to first event: median {sorted(recoveries)[len(recoveries) // 2]:.2f} s; "
        f"duplicates per kill: mean {result.duplicates / scale.kills:.0f}; published but "
        f"unrecorded at a kill: max {max(per_kill, default=0)} (a batch is 200)"
    )
    return result


async def replicas(bed: Bed, scale: Scale) -> Result:
    relays = [
        bed.spawn(f"replica{n}", OUTBOX_BATCH_SIZE="100", OUTBOX_LEASE_SECONDS="30")
        for n in range(4)
    ]
    del relays
    began = time.monotonic()
    for chunk in range(10):
        await bed.enqueue(scale.replica_rows // 10, f"USRP{chunk}")
    await bed.drained(300)
    result = await bed.tally(Result("4 replicas"))
    elapsed = time.monotonic() - began
    result.faults = "none (4 relay processes)"
    result.notes = f"{result.written / elapsed:.0f} rows/s in all, replica start-up included"
    if result.duplicates:
        result.error = "a row was published twice by replicas"
    return result


async def pg_restart(
    bed: Bed, scale: Scale, mode: Literal["fast", "immediate", "listen"]
) -> Result:
    await bed.start("relay", OUTBOX_POLL_INTERVAL="60", OUTBOX_BATCH_SIZE="100")
    await bed.standin.inject(Latency(0.05))
    await bed.enqueue(3000, "USMID")
    await bed.standin.wait_for_events(1, timeout=30)
    if bed.conn is not None:
        bed.conn.terminate()
        bed.conn = None
    if mode == "listen":
        conn = await asyncpg.connect(bed.dsn)
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'outbox-relay-listen' AND datname = current_database()"
        )
        await conn.close()
    else:
        await asyncio.to_thread(bed.pg.restart, mode)
    began = time.monotonic()
    await bed.standin.clear()
    await bed.silent_insert(200, "USSIL")  # no NOTIFY: only the reconnect sweep finds them
    await bed.drained(60)
    recovery = time.monotonic() - began  # from the server back (or LISTEN killed) to all out
    result = await bed.tally(
        Result(f"PostgreSQL: {'LISTEN killed' if mode == 'listen' else mode + ' restart'}")
    )
    result.recovery_s = round(recovery, 2)
    result.faults = (
        "pg_terminate_backend(listen)" if mode == "listen" else f"restart ({mode} shutdown)"
    )
    result.notes = "poll interval 60 s: the reconnect sweep, not the poll, recovered"
    return result


async def long_outage(bed: Bed, scale: Scale, name: str, fault: Fault) -> Result:
    env = {
        "OUTBOX_MAX_ATTEMPTS": "2",
        "OUTBOX_BACKOFF_BASE": "0.02",
        "OUTBOX_BACKOFF_CAP": "0.2",
        "OUTBOX_BATCH_SIZE": "50",
    }
    await bed.standin.inject(fault)
    await bed.start("relay", **env)
    await bed.enqueue(1000, "USLNG")
    await asyncio.sleep(scale.long_outage_s)
    failed = bed.standin.request_count
    charged = await (await bed.db()).fetchval("SELECT max(attempts) FROM outbox.messages")
    await bed.standin.clear()
    drain = await bed.drained(120)
    result = await bed.tally(Result(f"long outage: {name}", drain_s=drain))
    result.faults = f"{name} for {scale.long_outage_s:g} s ({failed} failed requests)"
    result.notes = "max attempts 2, probe cap 0.2 s: no row charged"
    if charged or result.dead:
        result.error = f"outage charged attempts ({charged}) or made dead letters ({result.dead})"
    return result


async def long_reader(bed: Bed, scale: Scale) -> Result:
    await bed.start("relay", OUTBOX_BATCH_SIZE="500")

    async def rate(prefix: str) -> float:
        await bed.enqueue(scale.reader_rows, prefix)
        return scale.reader_rows / await bed.drained(600)

    await rate("USWRM")
    baseline = await rate("USBAS")
    reader = await asyncpg.connect(bed.dsn)
    tx = reader.transaction(isolation="repeatable_read")
    await tx.start()
    await reader.fetchval("SELECT count(*) FROM outbox.messages")
    held = await rate("USHLD")
    await tx.rollback()
    await reader.close()
    result = await bed.tally(Result("long REPEATABLE READ reader"))
    result.faults = "snapshot held open while draining"
    result.notes = (
        f"throughput {baseline:.0f} rows/s without, {held:.0f} with: ratio {held / baseline:.2f}"
    )
    return result


async def qdrant(bed: Bed, scale: Scale, name: str) -> Result:
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(hanging_tcp_server()) if name == "hanging" else free_port()
        await bed.start("relay", QDRANT_URL=f"http://127.0.0.1:{port}", OUTBOX_QDRANT_TIMEOUT="0.5")
        latencies = []
        for n in range(10):
            began = time.monotonic()
            await bed.enqueue(50, f"USQ{n:02d}")
            await bed.standin.wait_for_events(50 * (n + 1), timeout=30)
            latencies.append(time.monotonic() - began)
        await bed.drained(30)
    result = await bed.tally(Result(f"Qdrant {name}"))
    result.faults = f"Qdrant {name} (timeout 0.5 s)"
    result.notes = f"write to accepted: max {max(latencies):.2f} s over 10 batches"
    return result


async def poison(bed: Bed, scale: Scale) -> Result:
    standin = EventApiStandIn(max_event_size=3000)
    await standin.start()
    bed.standin, original = standin, bed.standin
    try:
        bad = frozenset(f"track-ingestion-USPSN{n:07d}" for n in range(7, 1000, 97))
        await standin.inject(Reject(ids=bad, message="poisoned payload"))
        await bed.start("relay", OUTBOX_MAX_ATTEMPTS="3", OUTBOX_BATCH_SIZE="100")
        await bed.enqueue(1000, "USPSN")
        conn = await bed.db()
        for n in range(5):
            await conn.execute(
                "SELECT outbox.enqueue_track($1, repeat('t', 1000), repeat('a', 1000), "
                "repeat('b', 1000))",
                f"USBIG{n:07d}",
            )
        await bed.drained(120)
        result = await bed.tally(Result("poison + oversized"))
        reasons = await conn.fetch(
            "SELECT split_part(last_error, ':', 2) AS reason, count(*) "
            "FROM outbox.dead_letters GROUP BY 1"
        )
        result.faults = f"{len(bad)} rejected, 5 oversized"
        result.notes = "dead letters: " + ", ".join(f"{r['count']}x{r['reason']}" for r in reasons)
        if result.dead != len(bad) + 5:
            result.error = f"expected {len(bad) + 5} dead letters, got {result.dead}"
        return result
    finally:
        bed.standin = original
        await standin.stop()


def _hostile_body(rng: random.Random) -> tuple[str, bytes, str]:
    """A random request: mostly plausible JSON with a few things wrong, some pure garbage."""
    text: list[Any] = [
        "", " ", "\t", "\x00", "a\x00b", "é" * 1001, "🎵" * 600, "x" * 1000, "Song", None, 5, True,
        [], {}, "\u2028", "USRC17607839", "usrc1760783 ", "x" * 70,
    ]  # fmt: skip
    path = rng.choice(["/v1/library/tracks", "/v1/library/albums"])
    kind = rng.random()
    if kind < 0.1:
        return path, rng.randbytes(rng.randint(0, 300)), "application/json"
    if kind < 0.15:
        n = rng.randint(1, 20000)
        return path, b"[" * n + b"]" * n, "application/json"
    if kind < 0.2:
        return path, b'{"title": "a", "artist": "b"', rng.choice(["application/json", "text/plain"])
    body: dict[str, Any] = {"title": "Song", "artist": "Artist"}
    if path.endswith("tracks"):
        body |= {"album": "Album", "isrc": f"US{rng.randrange(10**10):010d}"}
        if rng.random() < 0.3:
            body["priority"] = rng.choice([0, 600, 601, -601, "5", 1.5, True, None, 10**20])
        if rng.random() < 0.2:
            body["artwork_url"] = rng.choice(["https://x.example/a.jpg", "ftp://x", "http://", 5])
    else:
        body["tracks"] = [
            {"isrc": f"US{rng.randrange(10**10):010d}", "title": rng.choice(["T", *text])}
            for _ in range(rng.randint(0, 5))
        ] if rng.random() < 0.8 else rng.choice(text)  # fmt: skip
    for _ in range(rng.randint(0, 2)):
        body[rng.choice([*body, "extra"])] = rng.choice(text)
    if rng.random() < 0.2:
        body.pop(rng.choice(list(body)))
    return path, json.dumps(body).encode(), "application/json"


async def fuzz(bed: Bed, scale: Scale) -> Result:
    rng = random.Random(4)
    statuses: dict[int, int] = {}
    began = time.monotonic()
    async with write_api(bed.dsn) as url, aiohttp.ClientSession() as http:
        for _ in range(scale.fuzz_inputs):
            path, body, content_type = _hostile_body(rng)
            async with http.post(
                url + path, data=body, headers={"Content-Type": content_type}
            ) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
    conn = await bed.db()
    orphans = await conn.fetchval(
        """SELECT (SELECT count(*) FROM library.tracks t WHERE NOT EXISTS
                     (SELECT 1 FROM outbox.messages m WHERE m.id = t.outbox_id))
                + (SELECT count(*) FROM library.albums a WHERE NOT EXISTS
                     (SELECT 1 FROM outbox.messages m WHERE m.id = a.outbox_id))
                + (SELECT count(*) FROM outbox.messages m WHERE m.parent_id IS NULL
                     AND NOT EXISTS (SELECT 1 FROM library.tracks t WHERE t.outbox_id = m.id)
                     AND NOT EXISTS (SELECT 1 FROM library.albums a WHERE a.outbox_id = m.id))"""
    )
    elapsed = time.monotonic() - began
    await bed.start("relay")
    await bed.drained(60)
    result = await bed.tally(Result("API fuzz"))
    result.inputs = scale.fuzz_inputs
    result.load = round(scale.fuzz_inputs / elapsed, 1)
    result.faults = "generated hostile requests"
    result.notes = (
        f"statuses {dict(sorted(statuses.items()))}; partial writes {orphans}; "
        "duplicates are one ISRC added more than once (one run each)"
    )
    if orphans or any(s >= 500 for s in statuses):
        result.error = f"partial writes {orphans}, statuses {statuses}"
    return result


def scenarios(scale: Scale) -> dict[str, Callable[[Bed], Awaitable[Result]]]:
    return {
        "outage-refused": lambda b: outage(b, scale, "refused", Refuse()),
        "outage-5xx": lambda b: outage(b, scale, "503", Status5xx(503, body="html")),
        "outage-hang": lambda b: outage(b, scale, "hang", Hang()),
        "crash": lambda b: crash(b, scale),
        "replicas": lambda b: replicas(b, scale),
        "pg-fast": lambda b: pg_restart(b, scale, "fast"),
        "pg-immediate": lambda b: pg_restart(b, scale, "immediate"),
        "pg-listen": lambda b: pg_restart(b, scale, "listen"),
        "long-5xx": lambda b: long_outage(b, scale, "5xx", Status5xx(503)),
        "long-429": lambda b: long_outage(b, scale, "429", Status429(retry_after=0)),
        "reader": lambda b: long_reader(b, scale),
        "qdrant-refused": lambda b: qdrant(b, scale, "refused"),
        "qdrant-hanging": lambda b: qdrant(b, scale, "hanging"),
        "poison": lambda b: poison(b, scale),
        "fuzz": lambda b: fuzz(b, scale),
    }


# -- running and the table ----------------------------------------------------------------------


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(results: list[Result]) -> str:
    head = (
        "| scenario | load held (writes/s) | faults injected | inputs tried | rows written "
        "| rows delivered | rows lost | duplicates (same id) | dead letters | drain after "
        "outage (s) | recovery after restart (s) | notes |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in results:
        cells = [
            r.scenario, r.load, r.faults, r.inputs, r.written, r.delivered, r.lost,
            r.duplicates, r.dead, r.drain_s, r.recovery_s,
            r.notes + (f" **FAILED: {r.error}**" if r.error else ""),
        ]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


async def run(scale: Scale, only: set[str] | None) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="outbox-reliability-") as folder:
        tmp = Path(folder)
        pg = LocalPostgres(fast=True, settings={"synchronous_commit": "on"})
        pg.start()
        try:
            for n, (name, scenario) in enumerate(scenarios(scale).items()):
                if only and name not in only:
                    continue
                dsn = pg.dsn_for(f"reliability_{n}")
                create_database(pg.dsn, f"reliability_{n}")
                await migrate(dsn)
                began = time.monotonic()
                async with EventApiStandIn() as standin:
                    bed = Bed(pg, dsn, standin, tmp / name)
                    bed.tmp.mkdir()
                    try:
                        result = await asyncio.wait_for(scenario(bed), timeout=900)
                    except Exception as exc:
                        traceback.print_exc()
                        result = Result(name, error=f"{type(exc).__name__}: {exc}")
                    finally:
                        await bed.close()
                results.append(result)
                print(
                    f"{name}: {time.monotonic() - began:.1f} s, lost {result.lost}, "
                    f"dup {result.duplicates}"
                    + (f", FAILED {result.error}" if result.error else ""),
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            pg.cleanup()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    only = set(args.only.split(",")) if args.only else None
    if only and (unknown := only - set(scenarios(scale))):
        parser.error(f"unknown scenarios: {sorted(unknown)}; known: {sorted(scenarios(scale))}")
    # The stand-in and the write API run in this process: only their warnings, on stderr; the
    # relays log to files. A killed relay's connection makes aiohttp log a traceback: expected.
    configure_logging("warning", "console", stream=sys.stderr)
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    began = time.monotonic()
    results = asyncio.run(run(scale, only))
    print(table(results))
    print(
        f"\n{'quick' if args.quick else 'full'} run, {time.monotonic() - began:.0f} s, "
        f"{os.cpu_count()} CPUs; lost in all: {sum(r.lost for r in results)}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if any(r.lost or r.error for r in results) else 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        # `python bench/reliability.py`: the project root on the path, as with `-m`.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
