"""The one way tests and benchmarks start relays as OS processes (test equipment).

A relay process is ``python -m outbox_relay relay`` in an environment built from scratch for it:
the developer's own ``DATABASE_URL``, ``OUTBOX_*``, ``QDRANT_*`` and ``INNGEST_*`` variables are
not inherited, so a run depends only on what its caller passes. Its output (JSON log lines) goes
to a file beside the caller's other temporary files, for assertions and post-mortems.

Also here, because the fault tests and the reliability benchmark both need them:
:func:`silent_insert` (rows committed without a notification) and :func:`hanging_tcp_server`
(a server that accepts connections and never answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from outbox_relay.testing.postgres import free_port

#: Settings for tests that spawn a relay: quick reconnects and polls, JSON logs.
TEST_ENV: Mapping[str, str] = {
    "OUTBOX_POLL_INTERVAL": "0.2",
    "OUTBOX_BACKOFF_BASE": "0.02",
    "OUTBOX_BACKOFF_CAP": "0.3",
    "OUTBOX_PUBLISH_TIMEOUT": "5",
    "OUTBOX_LOG_FORMAT": "json",
}

#: Settings for fault scenarios (``tests/faults`` and ``bench/reliability.py`` alike): fast
#: reconnects and probes, no client-side rate limit in the way (the stand-in enforces Inngest's
#: when a scenario asks for it), a short lease so that a killed relay's rows come back quickly.
FAULT_ENV: Mapping[str, str] = {
    "OUTBOX_POLL_INTERVAL": "0.2",
    "OUTBOX_BACKOFF_BASE": "0.05",
    "OUTBOX_BACKOFF_CAP": "0.5",
    "OUTBOX_RETRY_BASE": "0.05",
    "OUTBOX_RETRY_CAP": "0.2",
    "OUTBOX_PUBLISH_TIMEOUT": "2",
    "OUTBOX_LEASE_SECONDS": "3",
    "OUTBOX_RATE_LIMIT_REQUESTS": "100000",
    "OUTBOX_RATE_LIMIT_WINDOW": "1",
    "OUTBOX_LOG_LEVEL": "info",
    "OUTBOX_LOG_FORMAT": "json",
}

_NOT_INHERITED = ("DATABASE_URL", "OUTBOX_", "QDRANT_", "INNGEST_")


@dataclass
class RelayProcess:
    """A relay running as an OS process, with its health port and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    http_port: int
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Until ``/readyz`` answers 200; fails at once, with the log, if the process exits."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        async with aiohttp.ClientSession() as http:
            while True:
                if not self.alive():
                    raise AssertionError(
                        f"relay {self.name} exited with {self.proc.returncode}:\n{self.output()}"
                    )
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"relay {self.name} not ready in {timeout} s:\n{self.output()}"
                    )
                await asyncio.sleep(0.05)

    async def metric(self, name: str, **labels: str) -> float:
        """One sample of the relay's ``/metrics`` (0 when it has not been recorded yet)."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    async def wait_asleep(self, times: int = 1, timeout: float = 20.0) -> None:
        """Until the relay has gone to sleep ``times`` times: stepped down and swept, and found
        nothing (``outbox_relay_step_downs_total{outcome="sleep"}``). After that, only a
        notification, a reconnect or the poll makes it claim again."""
        deadline = time.monotonic() + timeout
        metric = "outbox_relay_step_downs_total"
        while (slept := await self.metric(metric, outcome="sleep")) < times:
            if not self.alive():
                raise AssertionError(f"relay {self.name} exited:\n{self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"relay {self.name} slept {slept:g} times, not {times}")
            await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """SIGKILL (a crash at whatever instant the process is at), then reap it."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (the batch in flight finishes), SIGKILL if it outlasts ``timeout``."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.proc.pid)


def peak_rss_mb(pid: int) -> float:
    """A live process's peak resident memory (``VmHWM``) in MiB; NaN once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def spawn_relay(
    *,
    name: str,
    dsn: str,
    event_api_base_url: str,
    log_dir: Path,
    qdrant_path: Path | None = None,
    env: Mapping[str, str] = TEST_ENV,
    python_args: Sequence[str] = (),
    cwd: Path | None = None,
) -> RelayProcess:
    """Starts ``python [python_args] -m outbox_relay relay``; returns once started, not ready.

    ``name`` is the replica id, names the log file and the default embedded Qdrant folder.
    ``env`` comes on top of the connection settings (a test may set ``QDRANT_URL`` there to use
    a server instead of the embedded folder ``qdrant_path``, which defaults to one per name).
    ``python_args`` go before ``-m`` (``["-m", "cProfile", "-o", path]`` profiles the relay).
    """
    port = free_port()
    log_path = log_dir / f"{name}.log"
    restarts = 1
    while log_path.exists():  # a name started again keeps the earlier run's log
        restarts += 1
        log_path = log_dir / f"{name}-{restarts}.log"
    variables = {
        **{k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)},
        "DATABASE_URL": dsn,
        "INNGEST_EVENT_API_BASE_URL": event_api_base_url,
        "INNGEST_DEV": "1",
        "QDRANT_PATH": str(qdrant_path or log_dir / f"qdrant-{name}"),
        "OUTBOX_HTTP_HOST": "127.0.0.1",
        "OUTBOX_HTTP_PORT": str(port),
        "OUTBOX_REPLICA_ID": name,
        **env,
    }
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *python_args, "-m", "outbox_relay", "relay"],
            env=variables,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    return RelayProcess(name, proc, port, log_path)


async def silent_insert(dsn: str, count: int, prefix: str) -> None:
    """Commits ``count`` track rows inserted by hand, not through the enqueue functions (which
    wake sleeping relays, migration 018): no NOTIFY reaches any relay.

    Proves that a relay finds rows by its own means (reconnect sweep, poll), not by a wake-up.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO outbox.messages (kind, isrc, title, artist, album) "
            "SELECT 'track', $1 || lpad(i::text, 7, '0'), 'Silent ' || i, 'A', 'B' "
            "FROM generate_series(1, $2) AS i",
            prefix,
            count,
        )
    finally:
        await conn.close()


@contextlib.contextmanager
def hanging_tcp_server() -> Iterator[int]:
    """A port that accepts TCP connections and never sends a byte (a hung Qdrant, say)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # the kernel completes handshakes; nobody ever reads
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@dataclass
class WorkerProcess(RelayProcess):
    """``outbox-relay worker`` (by default ``--with-relay``) as an OS process.

    ``http_port`` is the worker's (``/api/inngest``, ``/healthz``, ``/readyz``, ``/metrics``); with
    the relay in the same process, its ``/readyz`` includes the relay's checks, and the relay's
    own surface is on ``relay_http_port``.
    """

    relay_http_port: int = 0

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/inngest"


#: Settings for tests that spawn a worker: no throttle (a test must not wait out the 11th start
#: of a minute), retries and relay knobs quick.
WORKER_TEST_ENV: Mapping[str, str] = {
    **TEST_ENV,
    "OUTBOX_WORKER_THROTTLE_LIMIT": "0",
    "OUTBOX_WORKER_SHUTDOWN_TIMEOUT": "10",
    "OUTBOX_LOG_LEVEL": "info",
}


def spawn_worker(
    *,
    name: str,
    dsn: str,
    event_api_base_url: str,
    log_dir: Path,
    qdrant_path: Path,
    with_relay: bool = True,
    worker_port: int | None = None,
    env: Mapping[str, str] = WORKER_TEST_ENV,
) -> WorkerProcess:
    """Starts ``python -m outbox_relay worker [--with-relay]``; returns once started, not ready.

    Give ``worker_port`` to restart a worker where Inngest (the stand-in) already calls it.
    """
    port = worker_port or free_port()
    relay_port = free_port()
    log_path = log_dir / f"{name}.log"
    restarts = 1
    while log_path.exists():
        restarts += 1
        log_path = log_dir / f"{name}-{restarts}.log"
    variables = {
        **{k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)},
        "DATABASE_URL": dsn,
        "INNGEST_EVENT_API_BASE_URL": event_api_base_url,
        "INNGEST_DEV": "1",
        "QDRANT_PATH": str(qdrant_path),
        "OUTBOX_WORKER_HOST": "127.0.0.1",
        "OUTBOX_WORKER_PORT": str(port),
        "OUTBOX_HTTP_HOST": "127.0.0.1",
        "OUTBOX_HTTP_PORT": str(relay_port),
        "OUTBOX_REPLICA_ID": name,
        **env,
    }
    args = [sys.executable, "-m", "outbox_relay", "worker"]
    if with_relay:
        args.append("--with-relay")
    with log_path.open("wb") as out:
        proc = subprocess.Popen(args, env=variables, stdout=out, stderr=subprocess.STDOUT)
    return WorkerProcess(name, proc, port, log_path, relay_http_port=relay_port)
