"""The minimal receiver of B1 answers as the Event API does: the relay's publisher accepts it."""

from __future__ import annotations

import asyncio

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
