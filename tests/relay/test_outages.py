"""Inngest down or Qdrant down: writes go on, nothing is charged or lost, all drains after.

Each fault is really injected by the stand-in (refused connections, 5xx, 429 with
Retry-After, a request that never answers, an answer lost after acceptance) or by pointing
the relay at a Qdrant that refuses or hangs.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from outbox_relay.http.write_api import create_app
from outbox_relay.testing.inngest import Drop, Hang, Refuse, Status5xx, Status429

from .conftest import Harness, wait_until

OUTAGES = {
    "refused": Refuse(),
    "503-json": Status5xx(503, body="json"),
    "502-html": Status5xx(502, body="html"),
    "429": Status429(retry_after=0),
    # a request that never answers waits out the publish timeout: the slow tier
    "hang": pytest.param(Hang(), marks=pytest.mark.slow),
}


@pytest.mark.parametrize("fault", OUTAGES.values(), ids=OUTAGES.keys())
async def test_outage_keeps_rows_pending_uncharged_then_delivers_all(
    harness: Harness, fault: object
) -> None:
    await harness.standin.inject(fault)  # type: ignore[arg-type]
    relay = await harness.start_relay(publish_timeout=0.5, max_attempts=1)
    api = TestClient(TestServer(create_app(harness.dsn)))
    await api.start_server()
    try:
        # Writes keep succeeding through the API while Inngest is down.
        for n in range(10):
            response = await api.post(
                "/v1/library/tracks",
                json={
                    "isrc": f"USOUT{n:07d}",
                    "title": f"Song {n}",
                    "artist": "A",
                    "album": "B",
                },
            )
            assert response.status == 201, await response.text()
        await relay.wait_unavailable()
        # let several probes fail: the rows must stay pending, no attempt charged
        await wait_until(lambda: relay.publish_failures() >= 3)
        rows = await (await harness.conn()).fetch(
            "SELECT status, attempts FROM outbox.messages WHERE kind = 'track'"
        )
        assert len(rows) == 10
        assert {(r["status"], r["attempts"]) for r in rows} == {("pending", 0)}
        assert harness.standin.event_count == 0

        await harness.standin.clear()
        await harness.standin.wait_for_events(10, timeout=10)
        await harness.wait_settled()
    finally:
        await api.close()
    assert await harness.statuses() == {"published": 10}
    assert harness.standin.run_count() == 10
    assert await (await harness.conn()).fetchval("SELECT max(attempts) FROM outbox.messages") == 0


@pytest.mark.slow
async def test_retry_after_is_honoured(harness: Harness) -> None:
    await harness.standin.inject(Status429(retry_after=1), times=1)
    await harness.start_relay()
    await harness.enqueue_track("USRA00000001")
    await harness.standin.wait_for_events(1, timeout=10)
    first, second = harness.standin.requests[0], harness.standin.requests[1]
    assert first.status == 429
    assert second.received_at - first.received_at >= 0.95


@pytest.mark.slow
async def test_a_long_outage_never_makes_a_dead_letter(harness: Harness) -> None:
    """Many times the whole retry schedule of 5xx, with max_attempts=1: still nothing dead."""
    await harness.standin.inject(Status5xx(500))
    relay = await harness.start_relay(max_attempts=1, backoff_cap=0.05)
    await harness.enqueue_tracks(25)
    await relay.wait_unavailable()
    await wait_until(lambda: relay.publish_failures() >= 40, timeout=20)
    assert await harness.statuses() == {"pending": 25}
    await harness.standin.clear()
    await harness.wait_settled(expected=25)
    assert await harness.statuses() == {"published": 25}


async def test_an_answer_lost_after_acceptance_is_resent_with_the_same_ids(
    harness: Harness,
) -> None:
    await harness.standin.inject(Drop(stage="after_record"), times=1)
    await harness.start_relay()
    await harness.enqueue_tracks(5)
    await harness.wait_settled(expected=5)
    # Accepted twice (the first answer was lost), but each id runs once.
    assert harness.standin.event_count == 10
    assert harness.standin.run_count() == 5
    assert all(
        n == 1 for n in (harness.standin.runs_for(e.id) for e in harness.standin.events if e.id)
    )


@pytest.fixture
async def refusing_port() -> AsyncIterator[int]:
    """A loopback port where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


@pytest.fixture
async def hanging_port() -> AsyncIterator[int]:
    """A loopback port that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_qdrant_refusing_connections_fails_open(harness: Harness, refusing_port: int) -> None:
    relay = await harness.start_relay(qdrant_url=f"http://127.0.0.1:{refusing_port}")
    with capture_logs() as logs:
        await harness.enqueue_tracks(3)
        await harness.standin.wait_for_events(3)
        await harness.wait_settled()
    assert await harness.statuses() == {"published": 3}
    assert relay.service.metrics.qdrant_errors._value.get() >= 1
    assert any(e["event"] == "qdrant_error" and e["log_level"] == "error" for e in logs)


async def test_qdrant_hanging_fails_open_within_the_timeout(
    harness: Harness, hanging_port: int
) -> None:
    relay = await harness.start_relay(
        qdrant_url=f"http://127.0.0.1:{hanging_port}", qdrant_timeout=0.3
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await harness.enqueue_tracks(3)
    await harness.standin.wait_for_events(3, timeout=10)
    assert loop.time() - started < 3.0
    assert relay.service.metrics.qdrant_errors._value.get() >= 1


class CloudLikeReceiver:
    """An Event API that answers an empty array with ``{"ids": []}`` (nothing guarantees that
    Inngest Cloud answers it like the open-source server's ``{"ids": [""]}``), and 500 while
    ``down``."""

    def __init__(self) -> None:
        self.down = True
        self.events: list[dict[str, object]] = []
        self.probes = 0

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.json_response({"status": 500, "error": "down"}, status=500)
        body = orjson.loads(await request.read())
        if body == []:
            self.probes += 1
        self.events.extend(body)
        ids = [f"01CLOUD{len(self.events) + n:019d}" for n in range(len(body))]
        return web.json_response({"ids": ids, "status": 200})


async def test_a_probe_answered_with_no_ids_ends_the_pause_and_a_long_pause_is_an_error(
    harness: Harness,
) -> None:
    receiver = CloudLikeReceiver()
    app = web.Application()
    app.router.add_post("/e/{key}", receiver.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        relay = await harness.start_relay(
            inngest_event_api_base_url=str(server.make_url("")).rstrip("/"),
            backoff_cap=0.05,
            outage_alarm_after=0.5,
        )
        with capture_logs() as logs:
            await harness.enqueue_tracks(20)
            await relay.wait_unavailable()

            def probed() -> list[dict[str, Any]]:
                return [e for e in logs if e.get("action") == "probe failed; still paused"]

            await wait_until(lambda: any(e["log_level"] == "error" for e in probed()), timeout=10)
            assert probed()[0]["log_level"] == "warning"  # a short pause is routine
            assert all(e["paused_s"] >= 0.5 for e in probed() if e["log_level"] == "error")
            receiver.down = False
            await harness.wait_settled(expected=20, timeout=10)
        assert await harness.statuses() == {"published": 20}
        assert receiver.probes >= 1
        assert len(receiver.events) == 20
    finally:
        await server.close()
