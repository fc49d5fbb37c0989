"""The loop against real services in containers (issue 11 §9): PostgreSQL, Qdrant and the real
Inngest dev server instead of the embedded parts and the stand-in.

Needs a reachable Docker engine, ``OUTBOX_TEST_CONTAINERS=1`` and ``pip install
'outbox-relay[containers]'`` (testcontainers). Where no engine runs, as on this project's CI, the
module is skipped with the reason "no Docker engine": **this path is not exercised by CI.**

The images are the ones ``docker-compose.yml`` pins. The worker and the relay run as processes
on the host; the dev server calls the worker back through ``host.docker.internal``.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from outbox_relay.domain.isrc import point_id
from outbox_relay.testing.postgres import free_port
from outbox_relay.testing.relay_process import WORKER_TEST_ENV, spawn_relay, spawn_worker


def _docker_reachable() -> bool:
    """``GET /_ping`` on the engine's socket (DOCKER_HOST unix:// or the default one)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return bool(host)  # tcp:// and friends: let testcontainers find out
    path = host.removeprefix("unix://")
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        sock.connect(path)
        connection = http.client.HTTPConnection("docker")
        connection.sock = sock
        connection.request("GET", "/_ping")
        return connection.getresponse().status == 200
    except OSError:
        return False


if not _docker_reachable():
    pytest.skip("no Docker engine", allow_module_level=True)
if os.environ.get("OUTBOX_TEST_CONTAINERS") != "1":
    pytest.skip("set OUTBOX_TEST_CONTAINERS=1 to run against containers", allow_module_level=True)
containers = pytest.importorskip("testcontainers.core.container")
postgres_module = pytest.importorskip("testcontainers.postgres")

pytestmark = pytest.mark.slow

ISRC = "USRC17607839"


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, Any]]:
    worker_port = free_port()
    postgres = postgres_module.PostgresContainer("postgres:15.18", driver=None)
    qdrant = containers.DockerContainer("qdrant/qdrant:v1.20.0").with_exposed_ports(6333)
    inngest = (
        containers.DockerContainer("inngest/inngest:v1.43.0")
        .with_command(
            "inngest dev --host 0.0.0.0 --port 8288 --no-discovery "
            f"-u http://host.docker.internal:{worker_port}/api/inngest"
        )
        .with_exposed_ports(8288)
        .with_kwargs(extra_hosts={"host.docker.internal": "host-gateway"})
    )
    with postgres, qdrant, inngest:
        yield {
            "dsn": postgres.get_connection_url(),
            "qdrant_url": f"http://{qdrant.get_container_host_ip()}:"
            f"{qdrant.get_exposed_port(6333)}",
            "inngest_url": f"http://{inngest.get_container_host_ip()}:"
            f"{inngest.get_exposed_port(8288)}",
            "worker_port": worker_port,
        }


async def _poll_indexed(dsn: str, timeout: float) -> asyncpg.Record:
    deadline = time.monotonic() + timeout
    while True:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow("SELECT * FROM library.track_path WHERE isrc = $1", ISRC)
        finally:
            await conn.close()
        if row is not None and row["ingestion_status"] == "indexed":
            return row
        if time.monotonic() > deadline:
            raise TimeoutError(f"not indexed in {timeout} s: {row}")
        await asyncio.sleep(0.5)


async def test_add_index_and_re_add_against_real_services(
    services: dict[str, Any], tmp_path: Path
) -> None:
    from outbox_relay.db.migrate import migrate

    dsn = services["dsn"]
    await migrate(dsn)
    env = {**WORKER_TEST_ENV, "QDRANT_URL": services["qdrant_url"], "INNGEST_DEV": "1"}
    worker = spawn_worker(
        name="worker",
        dsn=dsn,
        event_api_base_url=services["inngest_url"],
        log_dir=tmp_path,
        qdrant_path=tmp_path / "unused",
        with_relay=False,
        worker_port=services["worker_port"],
        env={**env, "OUTBOX_WORKER_HOST": "0.0.0.0"},
    )
    relay = spawn_relay(
        name="relay", dsn=dsn, event_api_base_url=services["inngest_url"], log_dir=tmp_path,
        env=env,
    )  # fmt: skip
    try:
        await worker.wait_ready()
        await relay.wait_ready()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.fetchval("SELECT outbox.enqueue_track($1, 'T', 'A', 'B')", ISRC)
            row = await _poll_indexed(dsn, 120)
            assert str(row["point_id"]) == point_id(ISRC)
            again = await conn.fetchval("SELECT outbox.enqueue_track($1, 'T', 'A', 'B')", ISRC)
            deadline = time.monotonic() + 30
            while (
                status := await conn.fetchrow(
                    "SELECT status, skip_reason FROM outbox.messages WHERE id = $1", again
                )
            )["status"] == "pending":
                assert time.monotonic() < deadline, "the re-added row was never processed"
                await asyncio.sleep(0.2)
            assert (status["status"], status["skip_reason"]) == ("skipped", "already_indexed")
        finally:
            await conn.close()
    finally:
        assert worker.stop() == 0, worker.output()
        assert relay.stop() == 0, relay.output()
