"""The Event API publisher against the stand-in over real HTTP: every event's fate is reported."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from outbox_relay.adapters.http_headers import retry_after_seconds
from outbox_relay.adapters.inngest import EventApiPublisher, RequestBudget
from outbox_relay.domain.events import TrackEvent, encode_batch, encode_event
from outbox_relay.errors import EventApiUnavailable
from outbox_relay.metrics import RelayMetrics
from outbox_relay.testing.inngest import (
    EventApiStandIn,
    Latency,
    RateLimit,
    Refuse,
    Reject,
    Status5xx,
    Status429,
)


def events(count: int, *, title: str = "Song", start: int = 0) -> list[TrackEvent]:
    return [
        encode_event(
            row_id=start + n,
            isrc=f"USPUB{start + n:07d}",
            title=title,
            artist="A",
            album="B",
            artwork_url=None,
            priority=None,
            force=False,
            ts_ms=1_700_000_000_000,
        )
        for n in range(count)
    ]


@pytest.fixture
async def api() -> AsyncIterator[EventApiStandIn]:
    async with EventApiStandIn() as standin:
        yield standin


def publisher(origin: str, key: str = "test-key", **kwargs: object) -> EventApiPublisher:
    return EventApiPublisher(
        origin=origin,
        event_key=key,
        timeout=2.0,
        metrics=RelayMetrics(CollectorRegistry()),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_batch_is_one_request_and_every_event_gets_its_ulid(
    api: EventApiStandIn,
) -> None:
    pub = publisher(api.base_url)
    try:
        result = await pub.publish(events(300))
    finally:
        await pub.close()
    assert api.request_count == 1
    assert [e.row_id for e, _ in result.accepted] == list(range(300))
    assert [ulid for _, ulid in result.accepted] == [e.ulid for e in api.events]
    assert not result.rejected and not result.unsent and result.outage is None


async def test_requests_are_split_at_5000_events(api: EventApiStandIn) -> None:
    pub = publisher(api.base_url)
    try:
        result = await pub.publish(events(12_001))
    finally:
        await pub.close()
    assert [r.events_sent for r in api.requests] == [5000, 5000, 2001]
    assert len(result.accepted) == 12_001


async def test_requests_are_split_by_size(api: EventApiStandIn) -> None:
    batch = events(40, title="x" * 200)
    limit = 4 * batch[0].size + 10
    pub = publisher(api.base_url, max_request_bytes=limit)
    try:
        result = await pub.publish(batch)
    finally:
        await pub.close()
    assert len(result.accepted) == 40
    assert api.request_count == 10
    assert all(r.events_sent == 4 for r in api.requests)


@pytest.mark.parametrize(("spare", "requests"), [(0, 1), (-1, 2)])
async def test_a_batch_of_exactly_the_size_limit_is_one_request(
    api: EventApiStandIn, spare: int, requests: int
) -> None:
    batch = events(3)
    pub = publisher(api.base_url, max_request_bytes=len(encode_batch(batch)) + spare)
    try:
        result = await pub.publish(batch)
    finally:
        await pub.close()
    assert len(result.accepted) == 3
    assert api.request_count == requests


async def test_partial_acceptance_charges_only_the_bad_event(api: EventApiStandIn) -> None:
    await api.inject(Reject(ids=frozenset({"track-ingestion-USPUB0000007"}), message="nope"))
    pub = publisher(api.base_url)
    try:
        result = await pub.publish(events(20))
    finally:
        await pub.close()
    assert [e.row_id for e, _ in result.rejected] == [7]
    assert "nope" in result.rejected[0][1]
    assert sorted(e.row_id for e, _ in result.accepted) == [n for n in range(20) if n != 7]
    # accepted before the bad one, the bad one, then the rest: two requests, no bisection
    assert api.request_count == 2
    assert api.event_count == 19


async def test_a_request_level_400_is_halved_until_accepted(api: EventApiStandIn) -> None:
    api.max_events = 4
    pub = publisher(api.base_url)
    try:
        result = await pub.publish(events(16))
    finally:
        await pub.close()
    assert len(result.accepted) == 16 and not result.rejected


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (Status5xx(503, body="html"), "5xx"),
        (Status5xx(500), "5xx"),
        (Status429(retry_after=7), "429"),
        (Refuse(), "connection"),
    ],
)
async def test_an_outage_stops_sending_and_returns_everything_unsent(
    api: EventApiStandIn, fault: object, cause: str
) -> None:
    await api.inject(fault)  # type: ignore[arg-type]
    pub = publisher(api.base_url)
    try:
        result = await pub.publish(events(6000))
    finally:
        await pub.close()
    assert result.outage is not None and result.outage.cause == cause
    assert len(result.unsent) == 6000 and not result.accepted
    assert api.request_count <= 1  # the second chunk is not even tried
    if cause == "429":
        assert result.outage.retry_after == 7


async def test_an_unknown_key_is_an_outage_not_a_rejection() -> None:
    async with EventApiStandIn(keys=["right-key"]) as api:
        pub = publisher(api.base_url, key="wrong-key")
        try:
            result = await pub.publish(events(3))
            assert result.outage is not None and result.outage.cause == "auth"
            assert "wrong-key" not in str(result.outage)
            assert len(result.unsent) == 3
        finally:
            await pub.close()


async def test_probe_succeeds_with_an_empty_array(api: EventApiStandIn) -> None:
    pub = publisher(api.base_url)
    try:
        await pub.probe()
    finally:
        await pub.close()
    assert api.event_count == 0 and api.request_count == 1


@contextlib.asynccontextmanager
async def receiver(status: int, body: bytes) -> AsyncIterator[str]:
    """An Event API that answers every request with ``status`` and ``body``; yields its origin."""

    async def answer(_: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_post("/e/{key}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_200_with_the_wrong_number_of_ids_is_a_failure() -> None:
    async with receiver(200, b'{"ids": ["01ONLYONE"], "status": 200}') as origin:
        pub = publisher(origin)
        try:
            result = await pub.publish(events(3))
        finally:
            await pub.close()
    assert result.outage is not None and result.outage.cause == "bad_response"
    assert len(result.unsent) == 3 and not result.accepted


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b'{"ids": [""], "status": 200}\n'),  # the open-source server
        (200, b'{"ids": [], "status": 200}'),  # an answer Inngest Cloud might give
        (200, b'{"ids": []}'),
        (202, b'{"ids": [], "status": 202}'),
    ],
)
async def test_a_probe_takes_any_2xx_in_the_event_apis_shape(status: int, body: bytes) -> None:
    async with receiver(status, body) as origin:
        pub = publisher(origin)
        try:
            await pub.probe()
        finally:
            await pub.close()


@pytest.mark.parametrize(
    ("status", "body", "cause"),
    [
        (200, b"<html>maintenance</html>", "bad_response"),
        (200, b'{"ids": [], "status": 200, "error": "paused"}', "bad_response"),
        (200, b'{"ids": [1], "status": 200}', "bad_response"),
        (204, b"", "bad_response"),
        (503, b'{"ids": [""], "status": 503}', "5xx"),
        (400, b'{"ids": [""], "status": 400, "error": "bad"}', "4xx"),
    ],
)
async def test_a_probe_fails_on_anything_else(status: int, body: bytes, cause: str) -> None:
    async with receiver(status, body) as origin:
        pub = publisher(origin)
        try:
            with pytest.raises(EventApiUnavailable) as caught:
                await pub.probe()
        finally:
            await pub.close()
    assert caught.value.cause == cause


def test_the_budget_paces_after_a_small_burst() -> None:
    """Inngest Cloud's 75 per 5 s: a burst of 3, then one request a slot — not 75 at once and
    then a wait for the rest of the window. The burst comes out of the window's 75, so a slot
    is 5 s / 73. (The algorithm, on a clock of its own.)"""
    budget = RequestBudget(75, 5.0)
    slot = 5.0 / 73
    assert budget.interval == pytest.approx(slot)
    assert budget.describe() == "75 requests / 5 s, paced: one per 68.5 ms after a burst of 3"
    now = 1000.0
    for _ in range(3):
        assert budget._wait(now)[0] == pytest.approx(0.0, abs=1e-9)
        budget._take(now)
    assert budget._wait(now)[0] == pytest.approx(slot)
    now += slot
    budget._take(now)
    assert budget._wait(now)[0] == pytest.approx(slot)
    # A quiet spell refills the burst, never more than the burst.
    now += 10.0
    for _ in range(3):
        assert budget._wait(now)[0] == pytest.approx(0.0, abs=1e-9)
        budget._take(now)
    assert budget._wait(now)[0] == pytest.approx(slot)


@pytest.mark.parametrize("answer_s", [0.0, 0.002, 0.05, 0.2])
def test_a_burst_is_never_paid_back_by_a_stall_a_window_later(answer_s: float) -> None:
    """A relay with work all the time sends one request at a time, each as soon as the budget
    lets it, after a quiet spell that refilled the burst. Paced at 5 s / 75 with a burst of 3,
    the window rule (75 answers per 5 s) stopped it one window after the burst for the burst's
    extra slots: the rows that came meanwhile waited about three slots (issue 10 §1, B2's
    p99 of 170-200 ms). Now no request ever waits more than one slot, the window rule never
    has to act, and the server still never sees more than 75 requests in any 5 s, whenever
    between sending and answering it counts each. (Decisions on the budget's own clock.)"""
    waits: list[tuple[str, float]] = []
    budget = RequestBudget(75, 5.0, on_wait=lambda rule, s: waits.append((rule, s)))
    now = 1000.0
    sends: list[float] = []
    answers: list[float] = []
    delays: list[float] = []
    rules: set[str] = set()
    for _ in range(4 * 75):  # four windows
        delay, rule = budget._wait(now)
        delays.append(delay)
        if delay > 0:
            rules.add(rule)
        now += delay
        sends.append(budget._take(now))
        now += answer_s
        budget.settle(sends[-1], now)
        answers.append(now)
    assert delays[:3] == [0.0, 0.0, 0.0]  # the burst, after the quiet spell
    assert max(delays) <= budget.interval + 1e-9  # never more than one slot
    assert rules <= {"pace"}  # the window rule never had to act
    # Each event's count lands somewhere between its sending and its answer: whatever the
    # server's instant, any 76 consecutive requests span more than a window.
    assert min(s - a for a, s in zip(answers, sends[75:], strict=False)) >= 5.0 - 1e-9
    assert waits == []  # _wait only computes; nothing was slept or reported


def test_the_window_rule_still_acts_for_requests_sent_concurrently() -> None:
    """Requests that overlap (never the relay's, which sends one at a time) can fill the
    window while the pace allows more: the window rule stops the next one, counting each
    from its answer."""
    budget = RequestBudget(3, 1.0)
    now = 1000.0
    marks = [budget._take(now) for _ in range(3)]  # the burst, all three in flight
    for mark in marks:
        budget.settle(mark, now + 0.9)  # slow answers
    assert budget._wait(now + 1.4) == (pytest.approx(0.5), "window")
    assert budget._wait(now + 1.9) == (0.0, "pace")


def test_the_budget_never_lets_the_window_overflow() -> None:
    """Even paced, the answers-counted window cap holds: requests still unanswered count."""
    budget = RequestBudget(4, 1.0, burst=4)
    now = 1000.0
    for _ in range(4):
        budget._take(now)
        now += 0.25  # exactly paced
    assert budget._wait(now)[0] == pytest.approx(0.0, abs=1e-9)  # the first left the window
    budget.settle(budget._take(now), now)  # answered at once: counts from now
    assert budget._wait(now)[0] > 0


async def test_the_budget_spreads_requests_over_real_time() -> None:
    budget = RequestBudget(75, 5.0)
    started = time.monotonic()
    times = []
    for _ in range(10):
        budget.settle(await budget.acquire())
        times.append(time.monotonic() - started)
    # A late request may be followed by a quicker one (the burst refills), so only the total
    # is certain: past the burst of 3, one slot each.
    assert times[-1] >= 7 * 5.0 / 75 - 0.001


async def test_waiting_for_a_turn_takes_no_slot() -> None:
    budget = RequestBudget(2, 1.0, burst=1)
    await budget.acquire()
    started = time.monotonic()
    await budget.wait_turn()  # the next slot: half a window later
    await budget.wait_turn()  # the same slot, still free
    assert time.monotonic() - started >= 0.45
    assert budget._wait(time.monotonic())[0] == pytest.approx(0.0, abs=1e-9)  # still free


async def test_without_a_budget_requests_never_wait(api: EventApiStandIn) -> None:
    pub = publisher(api.base_url, budget=None)
    try:
        started = time.monotonic()
        for n in range(100):
            await pub.wait_turn()
            assert (await pub.publish(events(1, start=n))).accepted
    finally:
        await pub.close()
    assert api.event_count == 100
    assert time.monotonic() - started < 5.0  # 75 per 5 s would have taken at least 5 s


async def test_the_client_side_rate_limit_keeps_under_the_servers(api: EventApiStandIn) -> None:
    await api.inject(RateLimit(limit=5, window_s=0.5))
    pub = publisher(api.base_url, budget=(5, 0.5))
    try:
        for n in range(12):
            result = await pub.publish(events(1, start=n))
            assert result.outage is None, result.outage
    finally:
        await pub.close()
    assert api.status_counts.get(429, 0) == 0
    assert api.event_count == 12


async def test_a_request_delayed_on_its_way_still_counts_inside_the_servers_window(
    api: EventApiStandIn,
) -> None:
    """Client and server allow the same 5 requests per 0.5 s. The first request reaches the
    server 0.3 s late (the server counts it then); counting requests from when they were sent,
    the client let the sixth go out 0.5 s after the first had been *sent*, 0.2 s after the
    server counted it: a 429. Counting from the answer keeps every window under the limit."""
    await api.inject(RateLimit(limit=5, window_s=0.5))
    await api.inject(Latency(0.3), times=1)
    pub = publisher(api.base_url, budget=(5, 0.5))
    try:
        for n in range(7):
            result = await pub.publish(events(1, start=n))
            assert result.outage is None, result.outage
    finally:
        await pub.close()
    assert api.status_counts.get(429, 0) == 0
    assert api.event_count == 7


async def test_rate_limiter_allows_a_burst_then_spaces_requests() -> None:
    limiter = RequestBudget(3, 0.3)
    started = time.monotonic()
    for _ in range(6):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.28


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("3", 3.0), ("0", 0.0), ("-4", 0.0), ("soon", None)],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_retry_after_http_date_is_in_the_future() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = retry_after_seconds(when)
    assert parsed is not None and 25 <= parsed <= 31


async def test_no_request_starts_that_could_outlast_the_deadline(api: EventApiStandIn) -> None:
    pub = publisher(api.base_url)  # a 2 s timeout
    try:
        late = await pub.publish(events(3), deadline=time.monotonic() + 1.0)
        in_time = await pub.publish(events(3), deadline=time.monotonic() + 5.0)
    finally:
        await pub.close()
    assert late.out_of_time and len(late.unsent) == 3 and late.outage is None
    assert api.request_count == 1  # only the second call sent anything
    assert len(in_time.accepted) == 3 and not in_time.out_of_time
