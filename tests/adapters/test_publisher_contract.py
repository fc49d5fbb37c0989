"""The fake publisher keeps the real one's contract: the same events, the same fates.

The fast tier of the relay loop (``tests/relay/test_loop_decisions.py``) trusts
:class:`~outbox_relay.testing.fakes.FakePublisher` to report every event's fate as
:class:`~outbox_relay.adapters.inngest.EventApiPublisher` does against Inngest. Each scenario
here runs against both (the real one over HTTP to the stand-in) and compares which events were
accepted, rejected and handed back, and the outage and deadline flags.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from outbox_relay.adapters.inngest import EventApiPublisher
from outbox_relay.domain.events import encode_event
from outbox_relay.metrics import RelayMetrics
from outbox_relay.ports import Publisher, PublishResult
from outbox_relay.testing.fakes import FakePublisher
from outbox_relay.testing.inngest import EventApiStandIn, Reject, Status5xx, Status429

TIMEOUT = 2.0

EVENTS = [
    encode_event(
        row_id=n,
        isrc=f"USPUB{n:07d}",
        title="Song",
        artist="A",
        album="B",
        artwork_url=None,
        priority=None,
        force=False,
        ts_ms=1_700_000_000_000,
    )
    for n in range(20)
]


def fates(result: PublishResult) -> dict[str, Any]:
    return {
        "accepted": [event.row_id for event, _ in result.accepted],
        "rejected": [event.row_id for event, _ in result.rejected],
        "unsent": [event.row_id for event in result.unsent],
        "outage": None
        if result.outage is None
        else (result.outage.cause, result.outage.retry_after),
        "out_of_time": result.out_of_time,
    }


# Each scenario: how to set up the stand-in, the same for the fake, and the publish deadline.
Scenario = tuple[
    Callable[[EventApiStandIn], Awaitable[None]],
    Callable[[FakePublisher], None],
    float | None,
]


async def _nothing(api: EventApiStandIn) -> None:
    del api


def _reject(*rows: int) -> Scenario:
    async def real(api: EventApiStandIn) -> None:
        await api.inject(Reject(ids=frozenset(EVENTS[n].event_id for n in rows)))

    def fake(publisher: FakePublisher) -> None:
        for n in rows:
            publisher.reject(EVENTS[n].isrc)

    return real, fake, None


async def _status_429(api: EventApiStandIn) -> None:
    await api.inject(Status429(retry_after=7))


async def _status_503(api: EventApiStandIn) -> None:
    await api.inject(Status5xx(503))


SCENARIOS: dict[str, Scenario] = {
    "all accepted": (_nothing, lambda fake: None, None),
    "one rejected mid-request": _reject(7),
    "the first and the last rejected": _reject(0, 19),
    "two rejected": _reject(3, 11),
    "429 with Retry-After": (_status_429, lambda fake: fake.go_down("429", retry_after=7), None),
    "5xx": (_status_503, lambda fake: fake.go_down("5xx"), None),
    "no time for one request": (_nothing, lambda fake: None, TIMEOUT / 2),
}


async def _publish(publisher: Publisher, deadline_in: float | None) -> PublishResult:
    deadline = None if deadline_in is None else time.monotonic() + deadline_in
    return await publisher.publish(list(EVENTS), deadline)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_the_fake_publisher_reports_the_fates_the_real_one_does(name: str) -> None:
    setup_real, setup_fake, deadline_in = SCENARIOS[name]
    async with EventApiStandIn() as api:
        await setup_real(api)
        real = EventApiPublisher(
            origin=api.base_url,
            event_key="test-key",
            timeout=TIMEOUT,
            metrics=RelayMetrics(CollectorRegistry()),
        )
        try:
            want = fates(await _publish(real, deadline_in))
        finally:
            await real.close()
    fake = FakePublisher(request_timeout=TIMEOUT)
    setup_fake(fake)
    got = fates(await _publish(fake, deadline_in))
    assert got == want
    # Every event has exactly one fate.
    assert sorted(got["accepted"] + got["rejected"] + got["unsent"]) == list(range(20))
