"""The minimal receiver of B1 answers as the Event API does: the relay's publisher accepts it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from outbox_relay.adapters.inngest import EventApiPublisher
from outbox_relay.domain.events import encode_event
from outbox_relay.metrics import RelayMetrics
from outbox_relay.testing.receiver import Counter, make_app


async def test_receiver_counts_and_acknowledges_one_id_per_event() -> None:
    counter = Counter()
    server = TestServer(make_app(counter))
    await server.start_server()
    publisher = EventApiPublisher(
        origin=str(server.make_url("/")),
        event_key="k",
        timeout=5,
        metrics=RelayMetrics(CollectorRegistry()),
    )
    try:
        waiting = asyncio.create_task(counter.wait(3, timeout=5))
        events = [
            encode_event(
                row_id=i,
                isrc=f"USRC1760783{i}",
                title="t",
                artist="a",
                album="b",
                artwork_url=None,
                priority=None,
                force=False,
                ts_ms=0,
            )
            for i in range(3)
        ]
        result = await publisher.publish(events)
        assert [event for event, _ in result.accepted] == events
        assert result.outage is None and not result.rejected
        assert await waiting is not None and counter.events == 3
        await publisher.probe()  # an empty array: 200 with no ids
        assert await counter.wait(4, timeout=0.01) is None
    finally:
        await publisher.close()
        await server.close()


async def test_receiver_notes_each_events_arrival_only_when_a_round_asks() -> None:
    counter = Counter()
    server = TestServer(make_app(counter))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:

            async def post(ids: list[str]) -> None:
                body = [{"id": i, "name": "n", "data": {}} for i in ids]
                async with http.post(server.make_url("/e/k"), json=body) as response:
                    assert response.status == 200

            async def received() -> dict[str, float]:
                async with http.get(server.make_url("/_receiver/received")) as response:
                    return dict((await response.json())["events"])

            await post(["a"])
            assert await received() == {}  # off by default: B1 pays nothing for it
            before = time.time()
            async with http.post(server.make_url("/_receiver/reset?times=1")):
                pass
            await post(["b", "c"])
            await post(["d"])
            times = await received()
            assert sorted(times) == ["b", "c", "d"] and times["b"] == times["c"]
            assert before <= times["b"] <= times["d"] <= time.time()
            assert counter.events == 3
            async with http.post(server.make_url("/_receiver/reset")):
                pass
            await post(["e"])
            assert await received() == {}
    finally:
        await server.close()
