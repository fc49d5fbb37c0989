"""``outbox-relay worker`` as a user runs it: configuration errors in one line with exit 2, and a
worker whose database is down still serves, says why it is not ready, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from outbox_relay.testing.postgres import free_port
from outbox_relay.testing.relay_process import WORKER_TEST_ENV, spawn_worker

_NOT_INHERITED = ("DATABASE_URL", "OUTBOX_", "QDRANT_", "INNGEST_", "EMBEDDING_")


def run(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
    return subprocess.run(
        [sys.executable, "-m", "outbox_relay", "worker"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INNGEST_DEV": "1"}, "DATABASE_URL is not set"),
        ({"DATABASE_URL": "postgresql://u@127.0.0.1:1/db"}, "INNGEST_EVENT_KEY is not set"),
        (
            {"DATABASE_URL": "postgresql://u@127.0.0.1:1/db", "INNGEST_EVENT_KEY": "key-123456"},
            "INNGEST_SIGNING_KEY is not set",
        ),
        (
            {"DATABASE_URL": "postgresql://u@127.0.0.1:1/db", "INNGEST_DEV": "1",
             "OUTBOX_WORKER_RETRIES": "99"},
            "OUTBOX_WORKER_RETRIES: Input should be less than or equal to 20",
        ),
    ],
)  # fmt: skip
def test_configuration_errors_are_one_line_and_exit_2(env: dict[str, str], message: str) -> None:
    done = run(**env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "key-123456" not in done.stderr


@pytest.mark.slow
async def test_a_worker_with_its_database_down_serves_and_says_why(tmp_path: Path) -> None:
    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    worker = spawn_worker(
        name="worker",
        dsn=dead,
        event_api_base_url="http://127.0.0.1:9",
        log_dir=tmp_path,
        qdrant_path=tmp_path / "qdrant",
        with_relay=False,
        env=WORKER_TEST_ENV,
    )
    try:
        base = f"http://127.0.0.1:{worker.http_port}"
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                assert worker.alive(), worker.output()
                try:
                    async with session.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, worker.output()
                await asyncio.sleep(0.05)
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert await response.json() == {
                    "status": "not_ready",
                    "checks": {"database": False},
                }
            async with session.get(f"{base}/api/inngest") as response:
                assert response.status == 200
                assert (await response.json())[
                    "function_count"
                ] == 2  # the failure handler rides along
            async with session.get(f"{base}/metrics") as response:
                assert "outbox_relay_worker_runs_started_total" in await response.text()
    finally:
        assert worker.stop() == 0, worker.output()
