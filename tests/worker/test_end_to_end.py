"""End to end: real PostgreSQL, ``outbox-relay worker --with-relay`` as an OS process (the relay
and the worker around one embedded Qdrant), the stand-in as Inngest's Event API and executor.

add → published → run → point → ``indexed``; the same track again → ``already_indexed`` at the
relay; forced → a second run; batch re-process; an embedder failing every attempt → ``failed``
and ``track/ingestion.failed``; the worker SIGKILLed in the middle of a step → the run retried by
the executor against the restarted worker, one point per ISRC.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from qdrant_client import AsyncQdrantClient

from outbox_relay.adapters.embeddings import LexicalEmbedder
from outbox_relay.domain.isrc import point_id
from outbox_relay.testing.inngest import EventApiStandIn
from outbox_relay.testing.relay_process import WORKER_TEST_ENV, WorkerProcess, spawn_worker
from outbox_relay.worker.functions import APP_ID

pytestmark = pytest.mark.slow

TRACK_FN = f"{APP_ID}-track-ingestion"
FAILURE_FN = f"{TRACK_FN}-failure"
BATCH_FN = f"{APP_ID}-track-ingestion-batch-reprocess"
ISRC = "USRC17607839"
DIMENSIONS = "64"


async def poll(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Polls ``check`` until it returns something truthy (a deadline, never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def status_of(dsn: str, isrc: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(dsn)
    try:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT * FROM library.track_path WHERE isrc = $1", isrc
        )
        return row
    finally:
        await conn.close()


async def add_track(dsn: str, isrc: str, title: str, *, force: bool = False) -> int:
    """What an application does: the library row and its outbox row in one transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            outbox_id: int = await conn.fetchval(
                "SELECT outbox.enqueue_track($1, $2, 'Queen', 'A Night at the Opera', force => $3)",
                isrc,
                title,
                force,
            )
            await conn.execute(
                "INSERT INTO library.tracks (isrc, title, artist, album, outbox_id) "
                "VALUES ($1, $2, 'Queen', 'A Night at the Opera', $3)",
                isrc,
                title,
                outbox_id,
            )
        return outbox_id
    finally:
        await conn.close()


async def outbox_row(dsn: str, row_id: int) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT status, skip_reason, event_id FROM outbox.messages WHERE id = $1", row_id
        )
        return row
    finally:
        await conn.close()


class Tei:
    """A loopback text-embeddings-inference server whose answers a test controls."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | fail | hang
        self.requests = 0
        self.release = asyncio.Event()
        self._embedder = LexicalEmbedder(int(DIMENSIONS))
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _embed(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        if self.mode == "fail":
            return web.Response(status=503, text="model is loading")
        if self.mode == "hang":
            await self.release.wait()
        return web.Response(
            body=orjson.dumps(await self._embedder.embed(body["inputs"])),
            content_type="application/json",
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/embed", self._embed)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def tei() -> AsyncIterator[Tei]:
    server = Tei()
    await server.start()
    yield server
    await server.stop()


def start_worker(
    name: str,
    dsn: str,
    standin: EventApiStandIn,
    tmp_path: Path,
    port: int | None = None,
    **env: str,
) -> WorkerProcess:
    return spawn_worker(
        name=name,
        dsn=dsn,
        event_api_base_url=standin.base_url,
        log_dir=tmp_path,
        qdrant_path=tmp_path / "qdrant",
        worker_port=port,
        env={**WORKER_TEST_ENV, "EMBEDDING_DIMENSIONS": DIMENSIONS, **env},
    )


async def send_event(standin: EventApiStandIn, event: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{standin.base_url}/e/test", data=orjson.dumps(event)) as response,
    ):
        assert response.status == 200


async def test_add_index_re_add_skipped_force_and_batch_reprocess(
    database_url: str, tmp_path: Path
) -> None:
    async with EventApiStandIn(retry_base_s=0.02) as standin:
        worker = start_worker("worker", database_url, standin, tmp_path)
        try:
            await worker.wait_ready()
            await standin.sync(worker.serve_url)
            executor = standin.executor

            first = await add_track(database_url, ISRC, "Bohemian Rhapsody")
            [run] = await executor.wait_for_status(TRACK_FN, "completed", timeout=30)
            path = await poll(
                lambda: _indexed(database_url, ISRC), 10, "status indexed in PostgreSQL"
            )
            assert path["outbox_id"] == first
            assert path["outbox_status"] == "published"
            assert path["event_id"] == f"track-ingestion-{ISRC}"
            assert path["run_id"] == run.run_id
            assert str(path["point_id"]) == point_id(ISRC) == run.output["result"]["pointId"]
            assert run.output["result"]["embedder"] == "builtin-lexical"

            # Added again: the relay finds the worker's point and skips it; nothing runs.
            again = await add_track(database_url, ISRC, "Bohemian Rhapsody")
            row = await poll(
                lambda: _finished(database_url, again), 15, "the re-added row's outcome"
            )
            assert (row["status"], row["skip_reason"]) == ("skipped", "already_indexed")
            assert len(executor.runs_of(TRACK_FN)) == 1

            # Forced: published although indexed, and run again.
            forced = await add_track(database_url, ISRC, "Bohemian Rhapsody", force=True)
            await executor.wait_for_status(TRACK_FN, "completed", count=2, timeout=30)
            assert (await outbox_row(database_url, forced))["event_id"] == (
                f"track-ingestion-{ISRC}-{forced}"
            )

            # Batch re-process: one forced request per known ISRC, the unknown one reported.
            await send_event(
                standin,
                {
                    "name": "track/ingestion.batch-reprocess",
                    "data": {"isrcs": [ISRC, "ZZZZ00000000"]},
                },
            )
            [batch] = await executor.wait_for_status(BATCH_FN, "completed", timeout=30)
            assert batch.output["unknown"] == ["ZZZZ00000000"]
            await executor.wait_for_status(TRACK_FN, "completed", count=3, timeout=30)
            completed = [e for e in standin.events if e.name == "track/ingestion.completed"]
            assert len(completed) == 3
        finally:
            assert worker.stop() == 0, worker.output()
        assert await _points(tmp_path) == {point_id(ISRC)}


async def test_an_embedder_failing_every_attempt_ends_failed(
    database_url: str, tmp_path: Path, tei: Tei
) -> None:
    tei.mode = "fail"
    async with EventApiStandIn(retry_base_s=0.01) as standin:
        worker = start_worker(
            "worker", database_url, standin, tmp_path, EMBEDDING_URL=tei.url,
            OUTBOX_WORKER_RETRIES="2",
        )  # fmt: skip
        try:
            await worker.wait_ready()
            await standin.sync(worker.serve_url)
            await add_track(database_url, ISRC, "Bohemian Rhapsody")
            [run] = await standin.executor.wait_for_status(TRACK_FN, "failed", timeout=30)
            assert run.attempts == 3
            await standin.executor.wait_for_status(FAILURE_FN, "completed", timeout=30)
            path = await status_of(database_url, ISRC)
            assert path is not None
            assert path["ingestion_status"] == "failed"
            assert "503" in path["ingestion_error"]
            [failed] = [e for e in standin.events if e.name == "track/ingestion.failed"]
            assert failed.data["isrc"] == ISRC and failed.data["runId"] == run.run_id
            assert tei.requests == 3
        finally:
            assert worker.stop() == 0, worker.output()


async def test_a_worker_killed_mid_step_is_retried_and_completes(
    database_url: str, tmp_path: Path, tei: Tei
) -> None:
    tei.mode = "hang"
    # Inngest's retry table scaled from 15 s to 0.5 s: time for the worker to start again.
    async with EventApiStandIn(retry_base_s=0.5) as standin:
        worker = start_worker("worker", database_url, standin, tmp_path, EMBEDDING_URL=tei.url)
        await worker.wait_ready()
        await standin.sync(worker.serve_url)
        await add_track(database_url, ISRC, "Bohemian Rhapsody")

        async def embedding_started() -> bool:
            return tei.requests >= 1

        await poll(embedding_started, 30, "the embed step to reach the embedder")
        await worker.kill()  # SIGKILL in the middle of embed-document
        tei.mode = "ok"
        tei.release.set()
        restarted = start_worker(
            "worker", database_url, standin, tmp_path, port=worker.http_port,
            EMBEDDING_URL=tei.url,
        )  # fmt: skip
        try:
            await restarted.wait_ready()
            [run] = await standin.executor.wait_for_status(TRACK_FN, "completed", timeout=60)
            assert run.attempts >= 2
            assert run.errors  # the attempt whose worker died
            path = await poll(lambda: _indexed(database_url, ISRC), 10, "status indexed")
            assert path["run_id"] == run.run_id
        finally:
            assert restarted.stop() == 0, restarted.output()
        assert await _points(tmp_path) == {point_id(ISRC)}


async def test_sigterm_lets_the_step_in_flight_finish(
    database_url: str, tmp_path: Path, tei: Tei
) -> None:
    tei.mode = "hang"
    async with EventApiStandIn(retry_base_s=0.5) as standin:
        worker = start_worker("worker", database_url, standin, tmp_path, EMBEDDING_URL=tei.url)
        await worker.wait_ready()
        await standin.sync(worker.serve_url)
        await add_track(database_url, ISRC, "Bohemian Rhapsody")

        async def embedding_started() -> bool:
            return tei.requests >= 1

        async def stopping() -> bool:
            return "worker_stopping" in worker.output()

        await poll(embedding_started, 30, "the embed step to reach the embedder")
        worker.proc.send_signal(signal.SIGTERM)
        await poll(stopping, 10, "the worker to take the signal")
        assert worker.alive()  # waiting for the request in flight
        tei.release.set()
        code = await asyncio.to_thread(worker.proc.wait, 20)
        assert code == 0, worker.output()
        [run] = standin.executor.runs_of(TRACK_FN)
        # The step in flight was answered, so Inngest kept its result.
        assert len(run.step_output("embed-document")["data"]) == int(DIMENSIONS)


async def _indexed(dsn: str, isrc: str) -> asyncpg.Record | None:
    row = await status_of(dsn, isrc)
    return row if row is not None and row["ingestion_status"] == "indexed" else None


async def _finished(dsn: str, row_id: int) -> asyncpg.Record | None:
    row = await outbox_row(dsn, row_id)
    return row if row["status"] != "pending" else None


async def _points(tmp_path: Path) -> set[str]:
    """Every point id in the collection, read once the worker process has let the folder go."""
    client = AsyncQdrantClient(path=str(tmp_path / "qdrant"))
    try:
        records, _ = await client.scroll("tracks", limit=100)
        return {str(record.id) for record in records}
    finally:
        await client.close()
