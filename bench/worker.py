"""The ingestion worker's benchmark: ingestions a second, and commit → ``indexed`` latency.

``python -m bench.worker [--burst 300] [--rate 10] [--seconds 20] [--concurrency 10]`` runs the
whole loop on this machine: a throwaway PostgreSQL (durable defaults), the Inngest stand-in
(Event API and executor, in this process), and ``outbox-relay worker --with-relay`` as a process
with the built-in lexical embedder (1024 dimensions) and embedded Qdrant. This process writes
tracks as an application does (library row and ``outbox.enqueue_track`` in one transaction) and
reads the outcome from ``library.track_path``.

Two phases, on fresh ISRCs each:

- **burst**: ``--burst`` tracks committed at once; ingestions a second = tracks / (last
  ``indexed_at`` − first commit).
- **steady**: ``--rate`` tracks a second for ``--seconds``; commit → ``indexed`` p50/p99, where
  commit is the outbox row's ``created_at`` and indexed the status row's ``indexed_at`` (one
  clock: the database's).

Where the time goes: the worker's ``outbox_relay_worker_step_duration_seconds`` (sum / count per
step), the relay's commit → accepted, and the executor's requests (count, mean round trip).
Throttle is off (``OUTBOX_WORKER_THROTTLE_LIMIT=0``): the seed's default of 10 starts a minute
would cap everything at 0.17 ingestions a second, which is a policy, not a speed.
``--smoke`` runs both phases tiny. On a shared machine absolute numbers drift.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from outbox_relay.db.migrate import migrate
from outbox_relay.testing.inngest import EventApiStandIn
from outbox_relay.testing.postgres import LocalPostgres
from outbox_relay.testing.relay_process import WORKER_TEST_ENV, WorkerProcess, spawn_worker
from outbox_relay.worker.functions import APP_ID

TRACK_FN = f"{APP_ID}-track-ingestion"


def _isrc(prefix: str, n: int) -> str:
    return f"{prefix}{n:08d}"


async def _write(pool: asyncpg.Pool, isrc: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        outbox_id = await conn.fetchval(
            "SELECT outbox.enqueue_track($1, $2, 'Bench Artist', 'Bench Album')",
            isrc,
            f"Track {isrc}",
        )
        await conn.execute(
            "INSERT INTO library.tracks (isrc, title, artist, album, outbox_id) "
            "VALUES ($1, $2, 'Bench Artist', 'Bench Album', $3)",
            isrc,
            f"Track {isrc}",
            outbox_id,
        )


async def _wait_indexed(pool: asyncpg.Pool, prefix: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = await pool.fetchval(
            "SELECT count(*) FROM library.track_ingestion "
            "WHERE status = 'indexed' AND isrc LIKE $1 || '%'",
            prefix,
        )
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {count} {prefix}* tracks indexed after {timeout} s")
        await asyncio.sleep(0.1)


async def _latencies(pool: asyncpg.Pool, prefix: str) -> dict[str, float]:
    rows = await pool.fetch(
        "SELECT extract(epoch FROM i.indexed_at - m.created_at) AS latency, "
        "extract(epoch FROM m.created_at) AS committed, "
        "extract(epoch FROM i.indexed_at) AS indexed "
        "FROM library.tracks t JOIN outbox.messages m ON m.id = t.outbox_id "
        "JOIN library.track_ingestion i ON i.isrc = t.isrc WHERE t.isrc LIKE $1 || '%'",
        prefix,
    )
    latencies = sorted(float(r["latency"]) for r in rows)
    span = max(float(r["indexed"]) for r in rows) - min(float(r["committed"]) for r in rows)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "tracks": len(latencies),
        "span_s": round(span, 3),
        "ingestions_per_s": round(len(latencies) / span, 2),
        "commit_to_indexed_p50_ms": round(pct(0.50) * 1000, 1),
        "commit_to_indexed_p99_ms": round(pct(0.99) * 1000, 1),
        "commit_to_indexed_max_ms": round(latencies[-1] * 1000, 1),
    }


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+-]+)$")


async def _where_time_goes(worker: WorkerProcess) -> dict[str, Any]:
    """Mean duration of each executed step, from the worker's /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{worker.http_port}/metrics") as response,
    ):
        text = await response.text()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    relay: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match["name"], match["labels"], float(match["value"])
        step = re.search(r'step="([^"]+)"', labels)
        if 'outcome="ok"' in labels and step and name.startswith("outbox_relay_worker_step"):
            if name.endswith("_sum"):
                sums[step[1]] = sums.get(step[1], 0.0) + value
            elif name.endswith("_count"):
                counts[step[1]] = counts.get(step[1], 0.0) + value
    for line in text.splitlines():
        if line.startswith("outbox_relay_commit_to_accepted_seconds_sum "):
            relay["sum"] = float(line.split()[-1])
        if line.startswith("outbox_relay_commit_to_accepted_seconds_count "):
            relay["count"] = float(line.split()[-1])
    steps = {
        step: {
            "executions": int(counts[step]),
            "mean_ms": round(sums[step] / counts[step] * 1000, 2),
        }
        for step in sorted(counts)
        if counts[step]
    }
    accepted = round(relay["sum"] / relay["count"] * 1000, 1) if relay.get("count") else None
    return {"steps": steps, "relay_commit_to_accepted_mean_ms": accepted}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _executor_figures(standin: EventApiStandIn) -> dict[str, Any]:
    runs = standin.executor.runs_of(TRACK_FN, "completed")
    requests = [r for run in runs for r in run.requests]
    per_run = [len(run.requests) for run in runs]
    spans = [
        (run.ended_at - run.started_at) * 1000
        for run in runs
        if run.ended_at is not None and run.started_at is not None
    ]
    return {
        "runs": len(runs),
        "requests_per_run": round(statistics.mean(per_run), 2) if per_run else None,
        "request_round_trip_mean_ms": (
            round(statistics.mean(r.duration_ms for r in requests), 2) if requests else None
        ),
        "run_start_to_end_p50_ms": round(statistics.median(spans), 1) if spans else None,
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp, LocalPostgres() as pg:
        folder = Path(tmp)
        await migrate(pg.dsn)
        async with EventApiStandIn(retry_base_s=0.5) as standin:
            worker = spawn_worker(
                name="worker",
                dsn=pg.dsn,
                event_api_base_url=standin.base_url,
                log_dir=folder,
                qdrant_path=folder / "qdrant",
                env={
                    **WORKER_TEST_ENV,
                    "OUTBOX_LOG_LEVEL": "warning",
                    "OUTBOX_WORKER_CONCURRENCY": str(args.concurrency),
                    "OUTBOX_POLL_INTERVAL": "1",
                },
            )
            pool = await asyncpg.create_pool(pg.dsn, min_size=2, max_size=8)
            try:
                await worker.wait_ready(60)
                await standin.sync(worker.serve_url)
                # Warm up: the first run creates the collection and opens the pools.
                await _write(pool, _isrc("WARM", 1))
                await _wait_indexed(pool, "WARM", 1, 60)
                worker_cpu = _cpu_s(worker.proc.pid)
                usage = resource.getrusage(resource.RUSAGE_SELF)
                own_cpu = usage.ru_utime + usage.ru_stime

                began = time.monotonic()
                await asyncio.gather(*(_write(pool, _isrc("BRST", n)) for n in range(args.burst)))
                await _wait_indexed(pool, "BRST", args.burst, 600)
                burst = await _latencies(pool, "BRST")
                burst["wall_s"] = round(time.monotonic() - began, 3)

                total = int(args.rate * args.seconds)
                start = time.monotonic()
                for n in range(total):
                    # A steady write rate: each write at its own time slot, never bunched.
                    delay = start + n / args.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await _write(pool, _isrc("STDY", n))
                await _wait_indexed(pool, "STDY", total, 600)
                steady = await _latencies(pool, "STDY")
                steady["write_rate_per_s"] = args.rate
                usage = resource.getrusage(resource.RUSAGE_SELF)
                ingestions = args.burst + total
                cpu = {
                    # the worker process: uvicorn, the SDK, the steps, the relay, embedded Qdrant
                    "worker_process_ms_per_ingestion": round(
                        (_cpu_s(worker.proc.pid) - worker_cpu) / ingestions * 1000, 2
                    ),
                    # this process: the stand-in (Event API, executor) and the writes
                    "standin_and_writer_ms_per_ingestion": round(
                        (usage.ru_utime + usage.ru_stime - own_cpu) / ingestions * 1000, 2
                    ),
                }
                return {
                    "burst": burst,
                    "steady": steady,
                    "where_time_goes": await _where_time_goes(worker),
                    "executor": _executor_figures(standin),
                    "cpu": cpu,
                    "settings": {
                        "embedder": "builtin-lexical",
                        "dimensions": 1024,
                        "concurrency": args.concurrency,
                        "throttle": "off",
                        "qdrant": "embedded, shared with the relay (--with-relay)",
                    },
                }
            finally:
                await pool.close()
                code = worker.stop()
                if code != 0:
                    print(worker.output()[-3000:], file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny phases, for CI")
    parser.add_argument("--output", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.burst, args.rate, args.seconds = 5, 5.0, 1.0
    figures = asyncio.run(bench(args))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
