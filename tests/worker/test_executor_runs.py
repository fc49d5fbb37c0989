"""The worker's functions run by the stand-in's executor over the SDK's real HTTP protocol:
retries with backoff, idempotency on the ISRC unless forced, the failure handler, batch
re-processing. Fakes for the embedder and index (so a test can make them fail), the real
PostgreSQL for the status rows."""

from __future__ import annotations

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
FAILURE_FN = f"{TRACK_FN}-failure"
BATCH_FN = f"{APP_ID}-track-ingestion-batch-reprocess"


async def send(worker: Worker, *events: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{worker.standin.base_url}/e/test", data=orjson.dumps(list(events))) as r,
    ):
        assert r.status == 200, await r.text()


def requested(data: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {"name": "track/ingestion.requested", "data": data, "id": event_id}


@pytest.fixture
async def synced(worker: Worker) -> Worker:
    await worker.standin.sync(worker.url)
    return worker


async def test_indexed_once_then_skipped_by_idempotency_until_forced(synced: Worker) -> None:
    executor = synced.standin.executor
    await send(synced, requested(DATA, f"track-ingestion-{ISRC}"))
    [run] = await executor.wait_for_status(TRACK_FN, "completed")
    assert run.output["result"]["pointId"] == point_id(ISRC)

    # The same track again, under another event id (another outbox row's retry, say): the
    # function's idempotency key is the ISRC, so no second run.
    await send(synced, requested(DATA, "another-id"))
    await executor.wait_for_runs(
        lambda runs: any(s.reason == "idempotency" for s in executor.skipped), 5, "a skip"
    )
    assert len(executor.runs_of(TRACK_FN)) == 1

    # Forced: its own event id is its key, so it runs again.
    await send(synced, requested(DATA | {"force": True}, f"track-ingestion-{ISRC}-42"))
    await executor.wait_for_status(TRACK_FN, "completed", count=2)
    assert synced.index.writes == 2
    row = (await synced.store.status([ISRC]))[ISRC]
    assert (row["status"], row["forced"], row["event_id"]) == (
        "indexed",
        True,
        f"track-ingestion-{ISRC}-42",
    )
    completed = [e for e in synced.standin.events if e.name == "track/ingestion.completed"]
    assert len(completed) == 2


async def test_an_embedder_down_for_a_while_is_retried_and_the_track_indexed(
    synced: Worker,
) -> None:
    synced.embedder.fail_next = 2
    await send(synced, requested(DATA, f"track-ingestion-{ISRC}"))
    [run] = await synced.standin.executor.wait_for_status(TRACK_FN, "completed")
    assert run.attempts == 3
    row = (await synced.store.status([ISRC]))[ISRC]
    assert (row["status"], row["attempts"], row["last_error"]) == ("indexed", 3, None)
    assert (
        synced.parts.metrics.step_errors.labels("track-ingestion", "embed-document")._value.get()
        == 2
    )


async def test_an_embedder_failing_every_attempt_ends_failed_with_the_failed_event(
    synced: Worker,
) -> None:
    synced.embedder.fail_always = True
    await send(synced, requested(DATA, f"track-ingestion-{ISRC}"))
    executor = synced.standin.executor
    [run] = await executor.wait_for_status(TRACK_FN, "failed")
    assert run.attempts == synced.settings.retries + 1
    [handler] = await executor.wait_for_status(FAILURE_FN, "completed")
    assert handler.output["recorded"] is True
    row = (await synced.store.status([ISRC]))[ISRC]
    assert row["status"] == "failed"
    assert "connection refused" in row["last_error"]
    assert row["run_id"] == run.run_id
    [failed] = [e for e in synced.standin.events if e.name == "track/ingestion.failed"]
    assert failed.data["isrc"] == ISRC and failed.data["runId"] == run.run_id
    assert "connection refused" in failed.data["error"]
    assert synced.index.points == {}
    metrics = synced.parts.metrics
    assert metrics.runs_failed.labels("track-ingestion", "retries_exhausted")._value.get() == 1
    assert metrics.runs_completed.labels(function="track-ingestion")._value.get() == 0
    assert metrics.step_errors.labels("track-ingestion", "embed-document")._value.get() == 6


async def test_a_malformed_event_fails_at_once_and_is_recorded(synced: Worker) -> None:
    await send(synced, requested({"isrc": ISRC, "title": "T"}, "bad-1"))
    executor = synced.standin.executor
    [run] = await executor.wait_for_status(TRACK_FN, "failed")
    assert run.attempts == 1  # NonRetriableError: no retry
    await executor.wait_for_status(FAILURE_FN, "completed")
    row = (await synced.store.status([ISRC]))[ISRC]
    assert row["status"] == "failed" and "data.artist" in row["last_error"]
    assert synced.embedder.calls == []
    metrics = synced.parts.metrics
    assert metrics.runs_failed.labels("track-ingestion", "malformed_event")._value.get() == 1


async def test_batch_reprocess_forces_known_isrcs_and_reports_unknown(
    synced: Worker, database_url: str
) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO library.tracks (isrc, title, artist, album, outbox_id) VALUES "
            "('USRC17607839', 'Bohemian Rhapsody', 'Queen', 'Opera', 1), "
            "('GBAYE0000001', 'One', 'Band', 'Album', 2)"
        )
    await send(synced, requested(DATA, f"track-ingestion-{ISRC}"))
    executor = synced.standin.executor
    await executor.wait_for_status(TRACK_FN, "completed")

    await send(
        synced,
        {
            "name": "track/ingestion.batch-reprocess",
            "data": {"isrcs": ["usrc17607839", "GBAYE0000001", "ZZZZ00000000", "nope"]},
        },
    )
    [batch] = await executor.wait_for_status(BATCH_FN, "completed")
    assert batch.output == {"requested": 2, "unknown": ["ZZZZ00000000"], "invalid": ["nope"]}
    # Both run, the already indexed one included: forced requests pass idempotency.
    await executor.wait_for_status(TRACK_FN, "completed", count=3)
    forced = [r for r in executor.runs_of(TRACK_FN) if r.event["data"].get("force")]
    assert sorted(r.event["data"]["isrc"] for r in forced) == ["GBAYE0000001", ISRC]
    assert {r.event["data"]["title"] for r in forced} == {"Bohemian Rhapsody", "One"}
    status = await synced.store.status([ISRC, "GBAYE0000001"])
    assert {row["status"] for row in status.values()} == {"indexed"}


async def test_an_index_down_for_a_while_is_retried_and_the_track_indexed(
    synced: Worker,
) -> None:
    synced.index.fail_next = 3
    await send(synced, requested(DATA, f"track-ingestion-{ISRC}"))
    [run] = await synced.standin.executor.wait_for_status(TRACK_FN, "completed")
    assert run.attempts == 4
    assert list(synced.index.points) == [point_id(ISRC)]
    row = (await synced.store.status([ISRC]))[ISRC]
    assert (row["status"], row["attempts"]) == ("indexed", 4)
