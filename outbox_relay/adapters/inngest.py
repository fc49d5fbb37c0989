"""Publishes events to Inngest's Event API (``POST /e/{key}``) over one keep-alive session.

The SDK's ``send()`` hides what reliable delivery needs (status codes, ``Retry-After``, the ids
of a partial acceptance, its own retries), so this publisher speaks the SDK's wire format
directly and reports every event's fate:

- a 200 whose id count matches: all accepted;
- a 400 with the ids of the events accepted before the bad one: those are accepted, the next
  one is rejected (charged an attempt), the rest are sent again at once;
- a 4xx that does not point at one event: the request is split in halves until it does;
- connection errors, timeouts, 5xx, 429, 401/403 and malformed answers: an outage. Nothing more
  is sent; the unsent events go back to the outbox uncharged.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import aiohttp
import orjson
import structlog
from prometheus_client import Histogram

from outbox_relay import __version__
from outbox_relay.adapters.http_headers import retry_after_seconds
from outbox_relay.domain.events import TrackEvent, encode_batch
from outbox_relay.errors import EventApiUnavailable
from outbox_relay.metrics import RelayMetrics
from outbox_relay.ports import PublishResult

log = structlog.get_logger(__name__)

MAX_EVENTS_PER_REQUEST: Final = 5000
# 400 messages about the request as a whole: they say nothing about which event is at fault.
_REQUEST_LEVEL_ERRORS: Final = ("Cannot have more than", "request body", "Request body")
# Two budget deadlines closer than this are the same instant (float sums of the slot differ).
_SAME_INSTANT: Final = 1e-6


class RequestBudget:
    """At most ``requests`` per sliding ``window`` seconds (Inngest Cloud: 75 per 5 s per key),
    spread evenly over the window.

    Two rules, both enforced:

    - **Pacing** (GCRA): one request a slot, with a burst of ``burst`` after a quiet spell. A
      relay that publishes one small batch per notification would otherwise spend the whole
      budget in the first half second and then wait out the rest of the window with rows piling
      up; paced, it waits about one slot, and the rows that arrive meanwhile join the next batch
      (the loop waits for its slot *before* it claims: :meth:`wait_turn`).
    - **The server's window**: a request counts from the moment its answer arrived
      (:meth:`settle`), not from when it was sent: the server counted it at some moment in
      between, so however the network delays vary, the server never sees one request too many
      in its window. (A request still unanswered a whole window after it was sent stops counting
      until its answer comes; an Event API that slow is close to an outage anyway.)

    The pace is chosen so that the second rule never has to act for requests sent one at a
    time (the relay's): the burst comes out of the window's budget — a slot is
    ``window / (requests - burst + 1)``, 5 s / 73 = 68.5 ms for Inngest Cloud — and the pace
    counts from answers too (:meth:`settle`). Any ``requests`` consecutive requests then span a
    whole window between the first one's answer and the last one's start. Paced at
    ``window / requests`` instead, a burst was paid back one window later all at once: the
    window rule stopped the relay for the burst's extra slots (about three slots of latency
    for the rows that arrived meanwhile, issue 10 §1).
    """

    def __init__(
        self,
        requests: int,
        window: float,
        burst: int = 3,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        """``on_wait(rule, seconds)`` is told of every wait, by the rule that caused it
        (``pace`` or ``window``)."""
        self.requests = requests
        self.window = window
        self.burst = min(burst, requests)
        # The burst's extra requests are taken out of the window's budget.
        self.interval = window / (requests - self.burst + 1)
        self._tolerance = (self.burst - 1) * self.interval
        self._next_at = 0.0  # GCRA's theoretical arrival time
        self._marks: list[float] = []  # sorted
        self._lock = asyncio.Lock()
        self._on_wait = on_wait

    def describe(self) -> str:
        return (
            f"{self.requests} requests / {self.window:g} s, paced: one per "
            f"{self.interval * 1000:.1f} ms after a burst of {self.burst}"
        )

    def _wait(self, now: float) -> tuple[float, str]:
        """Seconds until a request may start (0: now), and the rule that holds it back."""
        del self._marks[: bisect.bisect_right(self._marks, now - self.window)]
        paced = max(0.0, self._next_at - self._tolerance - now)
        if len(self._marks) >= self.requests:
            full = self.window - (now - self._marks[0])
            # After a burst the two rules can meet exactly (see the class's docstring): a tie
            # is the pace's doing.
            if full > paced + _SAME_INSTANT:
                return full, "window"
            paced = max(paced, full)
        return paced, "pace"

    async def _sleep_until_free(self) -> None:
        first = True
        while True:
            delay, rule = self._wait(time.monotonic())
            if delay <= 0:
                return
            if rule == "window" and first:
                # Sequential requests never get here (see the class's docstring); concurrent
                # ones, or a clock that jumped, may.
                log.info("request_budget_window_wait", wait_ms=round(delay * 1000, 1))
            first = False
            if self._on_wait is not None:
                self._on_wait(rule, delay)
            await asyncio.sleep(delay)

    async def wait_turn(self) -> None:
        """Returns when a request could start at once; takes nothing."""
        await self._sleep_until_free()

    async def acquire(self) -> float:
        """Waits for a slot and takes it; returns its mark, for :meth:`settle` once answered."""
        async with self._lock:
            await self._sleep_until_free()
            return self._take(time.monotonic())

    def _take(self, now: float) -> float:
        self._next_at = max(self._next_at, now) + self.interval
        bisect.insort(self._marks, now)
        return now

    def settle(self, mark: float, now: float | None = None) -> None:
        """The request holding ``mark`` is over: it counts from now on, in the window and in
        the pace (the next slot is at least one interval after this answer, less the burst's
        tolerance)."""
        answered = time.monotonic() if now is None else now
        i = bisect.bisect_left(self._marks, mark)
        if i < len(self._marks) and self._marks[i] == mark:
            del self._marks[i]
        bisect.insort(self._marks, answered)
        self._next_at = max(self._next_at, answered + self.interval)


def _seed_header() -> str:
    # Makes the ULIDs Inngest returns deterministic for this request, as the SDK does.
    return f"{int(time.time() * 1000)},{base64.b64encode(os.urandom(10)).decode()}"


class _OutOfTime(Exception):
    """The batch's deadline came before this request could be started."""


class _Accepted:
    __slots__ = ("ids",)

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids


class _Refused:
    """A 4xx: ``accepted`` events went through before ``error`` stopped the request."""

    __slots__ = ("accepted", "error", "points_at_event")

    def __init__(self, accepted: list[str], error: str, points_at_event: bool) -> None:
        self.accepted = accepted
        self.error = error
        self.points_at_event = points_at_event


class EventApiPublisher:
    """The real :class:`~outbox_relay.ports.Publisher`."""

    def __init__(
        self,
        *,
        origin: str,
        event_key: str,
        timeout: float,
        metrics: RelayMetrics,
        max_request_bytes: int = 3 * 1024 * 1024,
        budget: tuple[int, float] | None = None,
    ) -> None:
        """``budget`` is (requests, window seconds) for the client-side request budget; None
        sends as fast as answers come (a dev or self-hosted server has no limit)."""
        self._url = f"{origin.rstrip('/')}/e/{event_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._metrics = metrics
        # The request duration histogram of each status class, bound at its first request
        # (labels() costs a lock and a lookup, once a request).
        self._request_durations: dict[str, Histogram] = {}
        self._max_request_bytes = max_request_bytes
        self._budget = (
            RequestBudget(*budget, on_wait=self._budget_waited) if budget is not None else None
        )
        self._session: aiohttp.ClientSession | None = None
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"outbox-relay/{__version__}",
            "x-inngest-sdk": f"outbox-relay:v{__version__}",
        }

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16, keepalive_timeout=30),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _budget_waited(self, rule: str, seconds: float) -> None:
        self._metrics.request_budget_wait.labels(rule=rule).inc(seconds)

    # -- public ------------------------------------------------------------------------------

    def describe_budget(self) -> str:
        """The client-side request budget in a few words (for the start-up log line)."""
        return "none" if self._budget is None else self._budget.describe()

    async def wait_turn(self) -> None:
        if self._budget is not None:
            await self._budget.wait_turn()

    async def probe(self) -> None:
        """An empty array: Inngest answers 2xx without storing anything.

        Any 2xx in the Event API's JSON shape will do: the open-source server answers
        ``{"ids": [""]}``, but nothing guarantees that Inngest Cloud answers an empty array the
        same way, and insisting on one id would keep a relay paused for good.
        """
        response = await self._post(b"[]", expected=None)
        if isinstance(response, _Refused):
            raise EventApiUnavailable("4xx", f"probe refused: {response.error}")

    async def publish(
        self, events: Sequence[TrackEvent], deadline: float | None = None
    ) -> PublishResult:
        result = PublishResult()
        pending: deque[list[TrackEvent]] = deque(self._chunks(events))
        while pending:
            chunk = pending.popleft()
            if result.outage is not None or result.out_of_time:
                result.unsent.extend(chunk)
                continue
            try:
                response = await self._post(
                    encode_batch(chunk), expected=len(chunk), deadline=deadline
                )
            except EventApiUnavailable as outage:
                result.outage = outage
                result.unsent.extend(chunk)
                continue
            except _OutOfTime:
                result.out_of_time = True
                result.unsent.extend(chunk)
                continue
            if isinstance(response, _Accepted):
                result.accepted.extend(zip(chunk, response.ids, strict=True))
                continue
            accepted = len(response.accepted)
            result.accepted.extend(zip(chunk[:accepted], response.accepted, strict=True))
            rest = chunk[accepted:]
            if len(rest) == 1 or (response.points_at_event and rest):
                result.rejected.append((rest[0], response.error))
                if len(rest) > 1:
                    pending.appendleft(rest[1:])
            elif rest:
                # Narrow the request down: only the offending events should be charged.
                middle = len(rest) // 2
                pending.appendleft(rest[middle:])
                pending.appendleft(rest[:middle])
        return result

    # -- internals ---------------------------------------------------------------------------

    def _chunks(self, events: Sequence[TrackEvent]) -> list[list[TrackEvent]]:
        """Requests of at most 5,000 events and at most the request size limit."""
        # Nearly every batch fits in one request: its brackets, bodies and commas.
        if (
            len(events) <= MAX_EVENTS_PER_REQUEST
            and 1 + len(events) + sum(len(event.body) for event in events)
            <= self._max_request_bytes
        ):
            return [list(events)] if events else []
        chunks: list[list[TrackEvent]] = []
        current: list[TrackEvent] = []
        size = 2  # the brackets
        for event in events:
            grows = event.size + (1 if current else 0)
            if current and (
                len(current) >= MAX_EVENTS_PER_REQUEST or size + grows > self._max_request_bytes
            ):
                chunks.append(current)
                current, size, grows = [], 2, event.size
            current.append(event)
            size += grows
        if current:
            chunks.append(current)
        return chunks

    async def _post(
        self, body: bytes, *, expected: int | None, deadline: float | None = None
    ) -> _Accepted | _Refused:
        timeout = self._timeout
        if self._budget is None:
            if deadline is not None and time.monotonic() + (timeout.total or 0.0) > deadline:
                raise _OutOfTime
            return await self._send(body, timeout, expected)
        mark = await self._budget.acquire()
        try:
            # Never start a request whose timeout could outlast the batch's lease. Shortening
            # the timeout instead would make answers that are merely slow look lost, and resend
            # them.
            if deadline is not None and time.monotonic() + (timeout.total or 0.0) > deadline:
                raise _OutOfTime
            return await self._send(body, timeout, expected)
        finally:
            self._budget.settle(mark)

    async def _send(
        self, body: bytes, timeout: aiohttp.ClientTimeout, expected: int | None
    ) -> _Accepted | _Refused:
        headers = {**self._headers, "x-inngest-event-id-seed": _seed_header()}
        started = time.perf_counter()
        try:
            async with self._client().post(
                self._url, data=body, headers=headers, timeout=timeout
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            self._observe("error", started)
            raise self._failure("timeout", f"no answer within {timeout.total} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            self._observe("error", started)
            # str(exc) of some aiohttp errors holds the URL, and the URL holds the event key.
            detail = type(exc).__name__ + (f": {exc.strerror}" if isinstance(exc, OSError) else "")
            if isinstance(exc, aiohttp.ClientConnectorError):
                detail = f"{type(exc).__name__}: {exc.os_error.strerror or exc.os_error}"
            raise self._failure("connection", detail) from None
        self._observe(f"{status // 100}xx", started)
        return self._interpret(status, raw, retry_after, expected)

    def _interpret(
        self, status: int, raw: bytes, retry_after: float | None, expected: int | None
    ) -> _Accepted | _Refused:
        """``expected`` is the number of events sent; None (a probe) takes any id count."""
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        snippet = str(error) if error else raw[:200].decode("utf-8", "replace").strip()
        if 200 <= status < 300:
            ids = body.get("ids") if isinstance(body, dict) else None
            if (
                isinstance(ids, list)
                and (expected is None or len(ids) == expected)
                and all(isinstance(i, str) for i in ids)
                and error is None
            ):
                return _Accepted(ids)
            raise self._failure(
                "bad_response",
                f"{status} with {len(ids) if isinstance(ids, list) else 'no'} ids "
                f"for {expected if expected is not None else 'a probe of no'} events: {snippet}",
            )
        if status == 429:
            raise self._failure("429", snippet or "rate limited", retry_after)
        if status >= 500:
            raise self._failure("5xx", f"{status}: {snippet}", retry_after)
        if status in (401, 403):
            raise self._failure(
                "auth", f"{status}: {snippet} (check INNGEST_EVENT_KEY)", retry_after
            )
        if status == 408:
            raise self._failure("timeout", f"{status}: {snippet}", retry_after)
        if 400 <= status < 500:
            self._metrics.publish_failures.labels(cause="4xx").inc()
            ids = body.get("ids") if isinstance(body, dict) else None
            accepted = [i for i in ids if isinstance(i, str) and i] if isinstance(ids, list) else []
            if expected is not None and len(accepted) >= expected:
                raise self._failure(
                    "bad_response", f"{status} claiming {len(accepted)} of {expected} accepted"
                )
            message = f"{status}: {snippet}" if snippet else str(status)
            points_at_event = (
                isinstance(ids, list)
                and status == 400
                and not any(marker in message for marker in _REQUEST_LEVEL_ERRORS)
            )
            return _Refused(accepted, message, points_at_event)
        raise self._failure("bad_response", f"unexpected status {status}: {snippet}")

    def _failure(
        self, cause: str, detail: str, retry_after: float | None = None
    ) -> EventApiUnavailable:
        self._metrics.publish_failures.labels(cause=cause).inc()
        return EventApiUnavailable(cause, detail, retry_after)

    def _observe(self, status_class: str, started: float) -> None:
        histogram = self._request_durations.get(status_class)
        if histogram is None:
            histogram = self._metrics.event_api_request_duration.labels(status_class=status_class)
            self._request_durations[status_class] = histogram
        histogram.observe(time.perf_counter() - started)
