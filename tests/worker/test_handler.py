"""The worker's functions through the real SDK handler over real HTTP, driven by hand with the
executor's request shape (research/worker-scan-notify.md §2): memoised steps, 206/200/500
answers, ``x-inngest-no-retry``. This proves the functions without trusting any executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest

from outbox_relay.domain.isrc import point_id
from outbox_relay.worker.functions import APP_ID

from .conftest import Worker

ISRC = "USRC17607839"
DATA = {"isrc": ISRC, "title": "Bohemian Rhapsody", "artist": "Queen", "album": "A Night"}
TRACK_FN = f"{APP_ID}-track-ingestion"


@dataclass
class Drive:
    """One run driven by hand: the memo the executor would keep, and every answer."""

    url: str
    fn_id: str
    event: dict[str, Any]
    run_id: str = "01JRUNTEST0000000000000000"
    steps: dict[str, Any] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)

    async def post(
        self, session: aiohttp.ClientSession, attempt: int = 0
    ) -> tuple[int, Any, dict[str, str]]:
        body = {
            "event": self.event,
            "events": [self.event],
            "steps": self.steps,
            "ctx": {
                "fn_id": self.fn_id,
                "run_id": self.run_id,
                "step_id": "step",
                "attempt": attempt,
                "max_attempts": 6,
                "stack": {"stack": list(self.stack), "current": len(self.stack)},
                "disable_immediate_execution": False,
                "use_api": False,
                "env": "dev",
            },
            "version": 1,
            "use_api": False,
        }
        async with session.post(
            self.url,
            params={"fnId": self.fn_id, "stepId": "step"},
            data=orjson.dumps(body),
            headers={"content-type": "application/json", "x-inngest-server-kind": "dev"},
        ) as response:
            return response.status, orjson.loads(await response.read()), dict(response.headers)

    async def until_done(
        self, session: aiohttp.ClientSession, limit: int = 20
    ) -> tuple[int, Any, dict[str, str]]:
        """Memoise each StepRun and call again, as the executor does, until a final answer."""
        for _ in range(limit):
            status, body, headers = await self.post(session)
            if status != 206:
                return status, body, headers
            for op in body:
                assert op["op"] == "StepRun", op
                self.ops.append(op["name"])
                self.steps[op["id"]] = {"data": op.get("data")}
                self.stack.append(op["id"])
        raise AssertionError(f"no final answer after {limit} requests: {self.ops}")


def requested(data: dict[str, Any], event_id: str = f"track-ingestion-{ISRC}") -> dict[str, Any]:
    return {"name": "track/ingestion.requested", "data": data, "id": event_id, "ts": 1, "user": {}}


async def test_a_run_memoises_each_step_and_completes(worker: Worker) -> None:
    drive = Drive(worker.url, TRACK_FN, requested(DATA))
    async with aiohttp.ClientSession() as session:
        status, body, _ = await drive.until_done(session)
    assert status == 200
    # One step an answer, in order, each under its stable name.
    assert drive.ops == [
        "record-indexing",
        "build-document",
        "embed-document",
        "upsert-point",
        "record-indexed",
        "emit-completion",
    ]
    # Seven requests ran the function, but each step's body ran once (memoised afterwards).
    assert len(worker.embedder.calls) == 1
    assert worker.index.writes == 1
    assert body["isrc"] == ISRC and body["runId"] == drive.run_id
    assert body["result"]["pointId"] == point_id(ISRC)
    assert body["result"]["embeddingDimensions"] == 8
    assert body["durationMs"] >= 0
    # The completion event went to the Event API with a per-run id.
    sent = [e for e in worker.standin.events if e.name == "track/ingestion.completed"]
    assert [e.id for e in sent] == [f"track-ingestion-completed-{drive.run_id}"]
    assert sent[0].data == body
    row = (await worker.store.status([ISRC]))[ISRC]
    assert (row["status"], row["run_id"], row["event_id"]) == (
        "indexed",
        drive.run_id,
        f"track-ingestion-{ISRC}",
    )
    metrics = worker.parts.metrics
    assert metrics.runs_completed.labels(function="track-ingestion")._value.get() == 1


async def test_an_embedder_that_is_down_answers_step_error_then_step_failed(
    worker: Worker,
) -> None:
    worker.embedder.fail_always = True
    drive = Drive(worker.url, TRACK_FN, requested(DATA))
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # record-indexing, build-document
            status, body, _ = await drive.post(session)
            assert status == 206 and body[0]["op"] == "StepRun"
            drive.steps[body[0]["id"]] = {"data": body[0]["data"]}
            drive.stack.append(body[0]["id"])
        status, body, headers = await drive.post(session, attempt=0)
        assert status == 206
        assert body[0]["op"] == "StepError" and body[0]["name"] == "embed-document"
        assert body[0]["error"]["name"] == "EmbeddingError"
        assert headers.get("x-inngest-no-retry") != "true"
        row = (await worker.store.status([ISRC]))[ISRC]
        assert row["status"] == "indexing" and row["attempts"] == 1
        assert "EmbeddingError" in row["last_error"]

        # The last attempt: the SDK says the step failed for good.
        status, body, _ = await drive.post(session, attempt=5)
        assert status == 206 and body[0]["op"] == "StepFailed"
        row = (await worker.store.status([ISRC]))[ISRC]
        assert row["attempts"] == 6


async def test_a_malformed_event_is_recorded_and_fails_without_retry(worker: Worker) -> None:
    drive = Drive(worker.url, TRACK_FN, requested({"isrc": ISRC, "title": " ", "album": "A"}))
    async with aiohttp.ClientSession() as session:
        status, body, headers = await drive.until_done(session)
    assert drive.ops == ["record-rejected"]
    assert status == 500
    assert headers["x-inngest-no-retry"] == "true"
    assert body["name"] == "NonRetriableError"
    assert "data.title: must be a non-empty string" in body["message"]
    assert "data.artist: Field required" in body["message"]
    row = (await worker.store.status([ISRC]))[ISRC]
    assert row["status"] == "failed"
    assert "data.title" in row["last_error"]


async def test_an_unreadable_isrc_is_logged_not_recorded(worker: Worker) -> None:
    drive = Drive(worker.url, TRACK_FN, requested({"isrc": "nope", "title": "T"}))
    async with aiohttp.ClientSession() as session:
        status, body, headers = await drive.until_done(session)
    assert status == 500 and headers["x-inngest-no-retry"] == "true"
    assert "data.isrc: must be 12 upper-case letters or digits" in body["message"]
    assert await worker.store.status(["NOPE"]) == {}


async def test_the_failure_handler_records_failed_and_sends_the_failed_event(
    worker: Worker,
) -> None:
    failed_run = "01JFAILEDRUN00000000000000"
    failure = {
        "name": "inngest/function.failed",
        "id": "01JFAILUREEVENT00000000000",
        "ts": 1,
        "data": {
            "error": {"name": "EmbeddingError", "message": "down", "stack": ""},
            "event": requested(DATA),
            "function_id": TRACK_FN,
            "run_id": failed_run,
        },
    }
    drive = Drive(worker.url, f"{TRACK_FN}-failure", failure, run_id="01JHANDLER0000000000000000")
    async with aiohttp.ClientSession() as session:
        status, body, _ = await drive.until_done(session)
    assert status == 200
    assert drive.ops == ["record-failed", "emit-failure"]
    assert body["recorded"] is True and body["reason"] == "retries_exhausted"
    row = (await worker.store.status([ISRC]))[ISRC]
    assert (row["status"], row["last_error"], row["run_id"], row["attempts"]) == (
        "failed",
        "EmbeddingError: down",
        failed_run,
        6,
    )
    [sent] = [e for e in worker.standin.events if e.name == "track/ingestion.failed"]
    assert sent.data == {"isrc": ISRC, "error": "EmbeddingError: down", "runId": failed_run}


@pytest.mark.parametrize(
    "data",
    [{"isrcs": []}, {"isrcs": "USRC17607839"}, {}],
)
async def test_a_malformed_batch_reprocess_fails_without_retry(
    worker: Worker, data: dict[str, Any]
) -> None:
    event = {"name": "track/ingestion.batch-reprocess", "data": data, "id": "b1", "ts": 1}
    drive = Drive(worker.url, f"{APP_ID}-track-ingestion-batch-reprocess", event)
    async with aiohttp.ClientSession() as session:
        status, body, headers = await drive.until_done(session)
    assert status == 500 and headers["x-inngest-no-retry"] == "true"
    assert "data.isrcs" in body["message"]


async def test_sync_registers_the_flow_control_the_docstring_names(worker: Worker) -> None:
    registration = await worker.standin.sync(worker.url)
    assert set(registration["function_ids"]) == {
        TRACK_FN,
        f"{TRACK_FN}-failure",
        f"{APP_ID}-track-ingestion-batch-reprocess",
    }
    config = worker.standin.executor.functions[TRACK_FN]
    assert config.raw["idempotency"] == (
        "has(event.data.force) && event.data.force == true ? event.id : event.data.isrc"
    )
    # Inngest (and the stand-in) turn idempotency into a rate limit of 1 per 24 h on the key.
    assert config.rate_limit is not None and config.rate_limit.reason == "idempotency"
    key = config.rate_limit.key
    assert key is not None
    assert [(c.key.source if c.key else None, c.limit) for c in config.concurrency] == [
        ("event.data.isrc", 1),
        (None, 10),
    ]
    assert config.max_attempts == 6
    assert config.throttle is None  # the fixture's settings: throttle off
    assert config.priority is not None
    assert key.evaluate({"event": {"id": "e1", "data": {"isrc": ISRC}}}) == ISRC
    assert key.evaluate({"event": {"id": "e2", "data": {"isrc": ISRC, "force": True}}}) == "e2"
