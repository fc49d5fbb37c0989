"""A faithful stand-in of Inngest's Event API, with fault switches, for tests, benchmarks, the demo.

No Inngest server can run on the machines this project is tested on, so this module plays the part
of ``POST /e/{event_key}`` as the open-source Inngest server implements it (``pkg/api/api.go``,
``pkg/eventstream/eventstream.go``, ``pkg/event/{event,inbound,id,legacy_types}.go``) and records
what it accepted, so that tests can assert "received N events" and "exactly one ingestion run".

What it reproduces, and why each detail matters to a publisher:

* The body is one event object or an array; events are taken **one by one, in order**. The first bad
  event (or body problem) ends the request with ``400 {"ids": [...], "status": 400, "error": ...}``
  where ``ids`` are the ULIDs of the events accepted *before* it (``[""]`` when none were): those
  events were accepted and will run. A publisher must treat a 400 as a partial acceptance.
* Body rules from ``ParseStream``: an empty body (or an empty array) is a ``200 {"ids": [""]}``; a
  first token that is not ``{`` or ``[`` gives ``Request body must contain an event object or an
  array of event objects``; a single object is measured *before* it is parsed (trailing whitespace
  counts); array elements are measured as their raw bytes; more than 5,000 elements gives
  ``Cannot have more than 5000 events in a batch`` after the first 5,000 were taken; JSON syntax
  errors carry Go's ``encoding/json`` messages (``unexpected end of JSON input`` for a truncated
  object, ``unexpected EOF`` inside an array, ``invalid character 'x' ...``); anything after the
  closing ``]`` of an array is never read, and an array cut short *between* elements is accepted.
* Event rules from ``NormalizeInbound``/``Validate``: Go's type errors (``json: cannot unmarshal
  string into Go struct field raw.data of type map[string]interface {}``), ``event name is reserved
  for internal use: <name>`` (any case of ``inngest/``), ``event name is empty``, ``timestamp is
  before Jan 1, 1980`` / ``timestamp is after Jan 1, 2100`` (``ts`` of 0 or absent means "now"),
  ``data._inngest`` removed.
* The ids are Inngest's own ULIDs, never the caller's ``id``. With ``x-inngest-event-id-seed:
  <unix_ms>,<base64 of 10 bytes>`` they are derived exactly as ``event.SeededIDFromString`` does:
  the 1-based position of the event in the request is added to the last four entropy bytes
  (big-endian, wrapping), so a retried request gets the same ids back. A malformed seed silently
  falls back to random ids, as in Inngest.
* Keys: dev mode accepts any key; with a key set, an unknown key gets
  ``401 {"status": 401, "message": "", "error": "Event key not found"}`` and an empty key
  ``Event key is required``.
* Response bytes as Go writes them: a trailing newline, HTML-escaped ``<>&`` in errors, and for
  200/400 *no* explicit Content-Type, so Go's sniffing sends ``text/plain; charset=utf-8`` (a
  publisher must not insist on ``application/json``). ``X-Inngest-Server-Kind`` is ``dev``.
* Runs: Inngest does not de-duplicate at ingest (a repeated ``id`` is accepted with a fresh ULID);
  the run scheduler starts at most one run per function and idempotency key within 24 h of the
  first run (``SET NX EX 24h``). The key is the event ``id``, or the event's ULID when it has none
  (``NewBaseTrackedEvent``) — so an id-less event retried under the same seed does not run twice.
  These ``Run`` records count what *a* function on the event's name would start (one function per
  event name assumed), whether or not a function is registered: the relay's tests assert on them.
* Functions: once an SDK app syncs (``POST /fn/register``, or :meth:`EventApiStandIn.sync`), the
  stand-in also plays Inngest's executor (:attr:`EventApiStandIn.executor`, :mod:`.executor`):
  matching events start real runs of the app's functions over the SDK's HTTP protocol, per
  function, with retries, flow control and ``inngest/function.failed``.

What it adds: fault switches (refused connections, dropped connections before or after the events
were recorded, 5xx with JSON or HTML bodies, 429 with ``Retry-After``, hung requests, rejection of
chosen events, Cloud's rate limit, latency), a Python API for in-process use, an HTTP control
surface (``/_standin/...``, optionally on its own port so it keeps working while the Event API port
refuses connections), and a command line: ``python -m outbox_relay.testing.inngest --port 8288``.

Known simplifications: form-encoded bodies are not parsed (they get the invalid-body error),
``meta`` is not validated, a float ``ts`` is quoted in its Python spelling in the type error, and
the real server's race between parsing element k+1 and publishing element k (which can lose event
k's id when element k+1 is malformed) is resolved deterministically: every event before the bad one
is accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import logging
import math
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, TypeAlias

import aiohttp
import orjson
import structlog
from aiohttp import web

from outbox_relay.backoff import Backoff
from outbox_relay.testing.inngest.executor import (
    BACKOFF_TABLE_S,
    Executor,
    RunRecord,
    SyncError,
    run_filter,
)
from outbox_relay.testing.inngest.faults import (
    FAULT_TYPES,
    ActiveFault,
    Drop,
    Fault,
    FaultKind,
    FaultT,
    Hang,
    Latency,
    RateLimit,
    Refuse,
    Reject,
    Status5xx,
    Status429,
    check_fault,
    fault_from_json,
    fault_json,
)
from outbox_relay.testing.inngest.rules import (
    ABSOLUTE_MAX_EVENT_SIZE,
    CLIENT_MAX_SIZE,
    MAX_EVENTS,
    RUN_IDEMPOTENCY_PERIOD_S,
    SEED_HEADER,
    Event,
    normalize,
)
from outbox_relay.testing.inngest.wire import (
    GO_SNIFFED_TEXT,
    HTML_ERROR_PAGE,
    encode_ulid,
    go_json,
    ids_body,
    parse_event_id_seed,
    seeded_ulid,
    split_body,
)

_log = structlog.get_logger("outbox_relay.testing.inngest")


# --- Records ------------------------------------------------------------------------------------


class RecordedEvent(NamedTuple):
    """One event the stand-in accepted, in acceptance order."""

    ulid: str
    """The id Inngest returned for it."""
    name: str
    id: str | None
    """The caller's ``id`` (None when absent or empty)."""
    data: dict[str, Any]
    ts: int
    """Milliseconds; the receive time when the caller sent none."""
    received_at: float
    event_key: str
    request_no: int


class Run(NamedTuple):
    """One function run Inngest would start."""

    key: str
    """The idempotency key: the event ``id``, or its ULID when it has none."""
    event_name: str
    ulid: str
    event_id: str | None
    started_at: float
    request_no: int


Outcome: TypeAlias = Literal["answered", "dropped", "abandoned"]


class RequestRecord(NamedTuple):
    """One request to ``/e/{key}``, recorded when it finished."""

    request_no: int
    event_key: str
    seed: str | None
    received_at: float
    status: int | None
    """The status answered; None when the connection was dropped."""
    outcome: Outcome
    """``abandoned``: hung, and the client had gone when it was released."""
    events_sent: int | None
    """Events found in the body (None when it was not read)."""
    events_accepted: int
    fault: str | None
    duration_ms: float


# --- The stand-in -------------------------------------------------------------------------------


class EventApiStandIn:
    """Inngest's Event API on a loopback port, recording what it accepts, with fault switches.

    Use ``async with EventApiStandIn() as api:`` (or ``await api.start()`` / ``await api.stop()``),
    point the publisher at ``api.base_url``, then assert on ``api.events``, ``api.runs_for(id)``,
    ``api.run_count()``, ``api.status_counts`` and friends, waiting with ``await
    api.wait_for_events(n)``. Inject faults with ``await api.inject(Status5xx(503), times=2)`` and
    clear them with ``await api.clear("status_5xx")`` (or ``await api.clear()`` for all).
    """

    def __init__(
        self,
        *,
        keys: Iterable[str] | None = None,
        max_event_size: int = ABSOLUTE_MAX_EVENT_SIZE,
        max_events: int = MAX_EVENTS,
        server_kind: str = "dev",
        response_content_type: str = GO_SNIFFED_TEXT,
        control_on_main: bool = True,
        run_period_s: float = RUN_IDEMPOTENCY_PERIOD_S,
        clock: Callable[[], float] = time.time,
        retry_base_s: float = BACKOFF_TABLE_S[0],
        request_timeout_s: float = 300.0,
    ) -> None:
        """Configure; nothing listens until ``start()``.

        ``keys``: the accepted event keys (None: dev mode, any key). ``response_content_type``: what
        200/400 answers say (the dev server's sniffed ``text/plain``; Cloud may differ).
        ``control_on_main``: also serve ``/_standin/*`` on the Event API port. ``clock``: wall time
        for receive times, default ``ts`` and the 24 h run window (tests may move it forward).
        ``retry_base_s`` and ``request_timeout_s`` configure the executor (:attr:`executor`): the
        first delay of Inngest's retry table (15 s; tests use milliseconds) and how long a request
        to a function may take.
        """
        self._keys: frozenset[str] | None = None if keys is None else frozenset(keys)
        self.max_event_size = max_event_size
        self.max_events = max_events
        self._server_kind = server_kind
        self._content_type = response_content_type
        self._control_on_main = control_on_main
        self._run_period_s = run_period_s
        self._clock = clock

        self._events: list[RecordedEvent] = []
        self._runs: list[Run] = []
        self._run_windows: dict[tuple[str, str], float] = {}
        self._runs_by_key: Counter[str] = Counter()
        self._requests: list[RequestRecord] = []
        self._status_counts: Counter[int] = Counter()
        self._request_count = 0
        self._dropped = 0
        self._hung_total = 0
        self._hung_now = 0
        self._hung_requests: dict[int, web.Request] = {}  # by id(): requests are not hashable

        self._faults: dict[str, ActiveFault] = {}
        self._rate_windows: dict[str, deque[float]] = {}
        self._hang_release = asyncio.Event()
        self._refusing = False
        self._stopping = False

        self._changed = asyncio.Event()
        self._waiters = 0

        self._host = "127.0.0.1"
        self._port: int | None = None
        self._control_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._control_runner: web.AppRunner | None = None

        # Plays Inngest's executor once an SDK app syncs; until then it costs one attribute read
        # per event.
        self._executor = Executor(
            retry_base_s=retry_base_s,
            request_timeout_s=request_timeout_s,
            server_kind=server_kind,
            window_s=run_period_s,
            clock=clock,
        )

    # -- lifecycle --

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, control_port: int | None = None
    ) -> str:
        """Listen on ``host:port`` (0 picks a free port) and return the base URL.

        ``control_port`` (0 picks one) serves only ``/_standin/*``, and keeps serving while the
        Event API port refuses connections.
        """
        if self._runner is not None:
            raise RuntimeError("the stand-in is already started")
        self._host = host
        self._stopping = False
        self._runner = web.AppRunner(self._main_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._listen(port)
        self._control_port = None
        if control_port is not None:
            self._control_runner = web.AppRunner(
                self._control_app(), access_log=None, shutdown_timeout=1.0
            )
            await self._control_runner.setup()
            sock = _bound_socket(host, control_port)
            self._control_port = sock.getsockname()[1]
            await web.SockSite(self._control_runner, sock).start()
        _log.info(
            "standin_started",
            base_url=self.base_url,
            control_url=self.control_url,
            keys_enforced=self._keys is not None,
        )
        return self.base_url

    async def stop(self) -> None:
        """Stop listening; hung requests are dropped, open connections closed."""
        if self._runner is None:
            return
        self._stopping = True
        self._release_hung_now()
        await self._executor.stop()
        for runner in (self._control_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._site = self._control_runner = None
        self._refusing = False
        _log.info("standin_stopped", requests=self._request_count, events=len(self._events))

    async def __aenter__(self) -> EventApiStandIn:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the Event API (without a trailing slash)."""
        if self._port is None:
            raise RuntimeError("the stand-in is not started")
        return f"http://{_url_host(self._host)}:{self._port}"

    @property
    def port(self) -> int:
        """The Event API port (kept while refusing)."""
        if self._port is None:
            raise RuntimeError("the stand-in is not started")
        return self._port

    @property
    def control_url(self) -> str | None:
        """Base URL of the separate control port, if one was asked for."""
        if self._control_port is None:
            return None
        return f"http://{_url_host(self._host)}:{self._control_port}"

    def event_url(self, key: str = "test") -> str:
        """The URL to POST events to with this key."""
        return f"{self.base_url}/e/{key}"

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        sock = _bound_socket(self._host, port)
        self._port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    # -- configuration --

    def set_keys(self, keys: Iterable[str] | None) -> None:
        """Accept only these event keys from now on (None: dev mode, any key)."""
        self._keys = None if keys is None else frozenset(keys)

    # -- faults --

    async def inject(self, fault: Fault, *, times: int | None = None) -> None:
        """Switch a fault on, replacing one of the same kind.

        ``times``: it affects only the next N requests it applies to (a ``reject`` counts requests
        in which it rejected an event, a ``rate_limit`` requests it refused), then clears itself.
        ``Refuse`` cannot be counted (the kernel refuses, not us) and stays until cleared.
        """
        check_fault(fault)
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if isinstance(fault, Refuse):
            if times is not None:
                raise ValueError("refuse cannot be limited by times: clear it instead")
            await self._refuse()
        else:
            self._faults[fault.kind] = ActiveFault(fault, times)
        _log.info("standin_fault_set", fault=fault_json(fault), times=times)

    async def clear(self, kind: FaultKind | str | None = None) -> None:
        """Switch one fault kind off (None: all). Clearing ``hang`` releases hung requests;
        clearing ``refuse`` listens again on the same port."""
        kinds = list(FAULT_TYPES) if kind is None else [kind]
        for name in kinds:
            if name not in FAULT_TYPES:
                raise ValueError(f"unknown fault kind {name!r}")
            if name == "refuse":
                await self._accept_again()
            else:
                self._faults.pop(name, None)
            if name == "hang":
                self._release_hung_now()
            if name == "rate_limit":
                self._rate_windows.clear()
        _log.info("standin_fault_cleared", fault=kind or "all")

    def release_hung(self) -> None:
        """Release the requests hung so far (the ``hang`` fault, if still on, hangs new ones)."""
        self._release_hung_now()

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The active faults as JSON-ready dicts (with ``times_left`` and ``fired``)."""
        out = [
            {**fault_json(a.fault), "times_left": a.remaining, "fired": a.fired}
            for a in self._faults.values()
        ]
        if self._refusing:
            out.insert(0, {"kind": "refuse", "times_left": None, "fired": None})
        return out

    @property
    def refusing(self) -> bool:
        """Whether the Event API port is closed."""
        return self._refusing

    async def _refuse(self) -> None:
        if self._refusing:
            return
        if self._site is None:
            raise RuntimeError("the stand-in is not started")
        self._refusing = True
        await self._site.stop()  # closes the listening socket: new connects are refused
        self._site = None
        # An outage also breaks the connections a client keeps alive; abort them so that no request
        # slips through on one.
        assert self._runner is not None and self._runner.server is not None
        for handler in self._runner.server.connections:
            if handler.transport is not None:
                handler.transport.abort()
        _log.info("standin_refusing", port=self._port)

    async def _accept_again(self) -> None:
        if not self._refusing:
            return
        self._refusing = False
        if self._runner is not None and self._port is not None:
            await self._listen(self._port)
        _log.info("standin_accepting", port=self._port)

    def _fire(
        self, cls: type[FaultT], applies: Callable[[FaultT], bool] = lambda fault: True
    ) -> FaultT | None:
        """The active fault of this type if ``applies`` to this request; it is then consumed."""
        active = self._faults.get(cls.kind)
        if active is None or not isinstance(active.fault, cls) or not applies(active.fault):
            return None
        self._consume(active)
        return active.fault

    def _consume(self, active: ActiveFault) -> None:
        active.fired += 1
        if active.remaining is not None:
            active.remaining -= 1
            if active.remaining <= 0 and self._faults.get(active.fault.kind) is active:
                del self._faults[active.fault.kind]

    def _release_hung_now(self) -> None:
        self._hang_release.set()
        self._hang_release = asyncio.Event()

    # -- what it recorded --

    @property
    def events(self) -> Sequence[RecordedEvent]:
        """Every accepted event, in acceptance order (a live view: do not modify)."""
        return self._events

    @property
    def event_count(self) -> int:
        """How many events were accepted."""
        return len(self._events)

    def events_with_id(self, event_id: str) -> list[RecordedEvent]:
        """The accepted events carrying this caller ``id``."""
        return [e for e in self._events if e.id == event_id]

    def events_by_id(self) -> dict[str | None, list[RecordedEvent]]:
        """Accepted events grouped by caller ``id`` (None: events without one)."""
        grouped: dict[str | None, list[RecordedEvent]] = {}
        for event in self._events:
            grouped.setdefault(event.id, []).append(event)
        return grouped

    @property
    def runs(self) -> Sequence[Run]:
        """Every run started, in order."""
        return self._runs

    def run_count(self) -> int:
        """How many runs were started in all."""
        return len(self._runs)

    def runs_for(self, event_id: str) -> int:
        """How many runs this idempotency key (an event ``id``, or a ULID) started."""
        return self._runs_by_key.get(event_id, 0)

    def duplicate_runs(self) -> dict[str, int]:
        """Keys that started more than one run (only possible 24 h apart): should be empty."""
        return {k: n for k, n in self._runs_by_key.items() if n > 1}

    @property
    def requests(self) -> Sequence[RequestRecord]:
        """Every finished request to ``/e/{key}``, in the order they finished."""
        return self._requests

    @property
    def request_count(self) -> int:
        """Requests received on ``/e/{key}`` (including those still in progress)."""
        return self._request_count

    @property
    def status_counts(self) -> Mapping[int, int]:
        """Responses sent, by status code (dropped requests are in ``dropped_count``)."""
        return self._status_counts

    @property
    def dropped_count(self) -> int:
        """Requests whose connection was aborted without an answer (including abandoned ones)."""
        return self._dropped

    @property
    def hung_count(self) -> int:
        """Requests that were hung, in all."""
        return self._hung_total

    @property
    def hung_now(self) -> int:
        """Requests hung right now."""
        return self._hung_now

    def hung_clients_gone(self) -> int:
        """Hung requests whose client already closed the connection (they will be abandoned)."""
        return sum(
            1
            for r in self._hung_requests.values()
            if r.transport is None or r.transport.is_closing()
        )

    async def reset(self, *, faults: bool = True) -> None:
        """Forget everything recorded (and, by default, clear every fault)."""
        if faults:
            await self.clear()
        self._events.clear()
        self._runs.clear()
        self._run_windows.clear()
        self._runs_by_key.clear()
        self._requests.clear()
        self._status_counts.clear()
        self._rate_windows.clear()
        self._request_count = self._dropped = self._hung_total = 0
        self._executor.reset()
        self._notify()

    def summary(self) -> dict[str, Any]:
        """Counts and faults as a JSON-ready dict (what ``GET /_standin/state`` returns)."""
        return {
            "base_url": self.base_url if self._port is not None else None,
            "control_url": self.control_url,
            "refusing": self._refusing,
            "keys_enforced": self._keys is not None,
            "request_count": self._request_count,
            "status_counts": {str(k): v for k, v in sorted(self._status_counts.items())},
            "dropped_count": self._dropped,
            "hung_count": self._hung_total,
            "hung_now": self._hung_now,
            "event_count": len(self._events),
            "run_count": len(self._runs),
            "duplicate_runs": self.duplicate_runs(),
            "faults": self.faults,
            **({"executor": self._executor.summary()} if self._executor.active else {}),
        }

    # -- the executor --

    @property
    def executor(self) -> Executor:
        """Inngest's executor: registered functions and their runs (see :mod:`.executor`)."""
        return self._executor

    async def sync(
        self, serve_url: str, timeout: float = 30.0, *, wait_for_app_s: float = 0.0
    ) -> dict[str, Any]:
        """Sync an SDK app as Inngest's UI or CLI does: ``PUT <serve url>``, which makes the SDK
        register its functions at ``{its INNGEST_API_BASE_URL}/fn/register``.

        Returns the registration (``function_ids``, ``modified``...). Raises :class:`SyncError`
        when the PUT fails or the SDK registered somewhere else or was refused (the SDK answers
        the PUT with 200 even then, so the registration itself is checked). ``wait_for_app_s``:
        while the app refuses connections, try again (capped exponential backoff) for this long,
        as the dev server's ``-u <url>`` waits for an app that is still starting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_for_app_s
        backoff = Backoff(base=0.05, cap=1.0, floor=0.02)
        while True:
            try:
                return await self._sync_once(serve_url, timeout)
            except SyncError as exc:
                refused = isinstance(exc.__cause__, aiohttp.ClientConnectorError | OSError)
                wait = backoff.next_delay()
                if not refused or loop.time() + wait > deadline:
                    raise
                _log.debug("standin_sync_waiting", url=serve_url, error=str(exc))
                await asyncio.sleep(wait)

    async def _sync_once(self, serve_url: str, timeout: float) -> dict[str, Any]:
        deploy_id = str(uuid.uuid4())
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                session.put(
                    serve_url,
                    params={"deployId": deploy_id},
                    headers={"x-inngest-server-kind": self._server_kind},
                ) as response,
            ):
                status, body = response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SyncError(f"PUT {serve_url} failed: {exc!r}") from exc
        found = [r for r in self._executor.registrations if r.deploy_id == deploy_id]
        if not found:
            raise SyncError(
                f"PUT {serve_url} answered {status} {body[:500]!r} but the SDK did not register "
                f"with this stand-in: is its API base URL (INNGEST_API_BASE_URL) {self.base_url}?"
            )
        registration = found[-1]
        if registration.error is not None:
            raise SyncError(f"the stand-in refused the sync of {serve_url}: {registration.error}")
        _log.info("standin_synced", url=serve_url, functions=registration.function_ids)
        return registration.to_json()

    # -- waiting --

    async def wait_for(
        self,
        predicate: Callable[[EventApiStandIn], bool],
        timeout: float = 5.0,
        what: str = "the condition",
    ) -> None:
        """Wait until ``predicate(self)`` holds; re-checked after every change, no polling.

        Raises ``TimeoutError`` saying what was awaited and what the stand-in saw.
        """
        if predicate(self):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"timed out after {timeout:g} s waiting for {what}; the stand-in has "
                    f"{len(self._events)} events, {len(self._runs)} runs, "
                    f"{self._request_count} requests (statuses {dict(self._status_counts)}, "
                    f"{self._dropped} dropped, {self._hung_now} hung), faults {self.faults}"
                )
            changed = self._changed
            self._waiters += 1
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass  # the loop re-checks and reports
            finally:
                self._waiters -= 1

    async def wait_for_events(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` events were accepted."""
        await self.wait_for(lambda s: len(s._events) >= n, timeout, f"{n} events")

    async def wait_for_runs(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` runs were started."""
        await self.wait_for(lambda s: len(s._runs) >= n, timeout, f"{n} runs")

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` requests finished (answered, dropped or abandoned)."""
        await self.wait_for(lambda s: len(s._requests) >= n, timeout, f"{n} finished requests")

    async def wait_for_hung(self, n: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` requests are hung right now."""
        await self.wait_for(lambda s: s._hung_now >= n, timeout, f"{n} hung requests")

    def _notify(self) -> None:
        # Swap the event before setting it so that a waiter re-arms on a fresh one; skipped when
        # nobody waits, which keeps the hot path at one attribute read.
        if self._waiters:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    # -- the Event API --

    def _main_app(self) -> web.Application:
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        app.router.add_post("/e/{key}", self._handle_events)
        app.router.add_post("/e/", self._handle_events)
        app.router.add_get("/health", self._handle_health)
        app.router.add_post("/fn/register", self._handle_register)
        if self._control_on_main:
            self._add_control_routes(app)
        return app

    async def _handle_register(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            payload = None
            error = f"Invalid request: {exc}"
            return web.Response(
                status=400,
                body=go_json({"error": error, "status": 400, "data": None}),
                headers=self._headers("application/json"),
            )
        status, answer = self._executor.register(
            payload,
            deploy_id=request.query.get("deployId"),
            expected_kind=request.headers.get("x-inngest-expected-server-kind"),
        )
        return web.Response(
            status=status, body=go_json(answer), headers=self._headers("application/json")
        )

    def _headers(self, content_type: str) -> dict[str, str]:
        return {"Content-Type": content_type, "X-Inngest-Server-Kind": self._server_kind}

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.Response(
            body=go_json({"status": 200, "message": "OK"}),
            headers=self._headers("application/json"),
        )

    async def _handle_events(self, request: web.Request) -> web.StreamResponse:
        self._request_count += 1
        request_no = self._request_count
        t0 = time.perf_counter()
        received_at = self._clock()
        key = request.match_info.get("key", "")
        seed = request.headers.get(SEED_HEADER)

        def finish(
            status: int | None,
            outcome: Outcome,
            sent: int | None,
            accepted: int,
            fault: str | None,
        ) -> None:
            if status is None:
                self._dropped += 1
            else:
                self._status_counts[status] += 1
            duration_ms = (time.perf_counter() - t0) * 1000
            self._requests.append(
                RequestRecord(
                    request_no,
                    key,
                    seed,
                    received_at,
                    status,
                    outcome,
                    sent,
                    accepted,
                    fault,
                    duration_ms,
                )
            )
            _log.debug(
                "standin_request",
                request_no=request_no,
                status=status,
                outcome=outcome,
                events_sent=sent,
                events_accepted=accepted,
                fault=fault,
                duration_ms=round(duration_ms, 3),
            )
            self._notify()

        def drop(
            stage: str, sent: int | None = None, accepted: int = 0, outcome: Outcome = "dropped"
        ) -> web.StreamResponse:
            transport = request.transport
            if transport is not None:
                transport.abort()
            finish(None, outcome, sent, accepted, f"drop:{stage}")
            # Never sent: aiohttp sees the closed transport and gives up on the answer quietly.
            return web.Response(status=500)

        if self._faults:
            latency = self._fire(Latency)
            if latency is not None and latency.seconds > 0:
                await asyncio.sleep(latency.seconds)
            if self._fire(Hang) is not None and not await self._hang(request):
                # Released after its client left (or at shutdown): nobody to answer.
                return drop("hang", outcome="dropped" if self._stopping else "abandoned")
            if self._fire(Drop, lambda f: f.stage == "before_body"):
                return drop("before_body")

        body = await request.read()

        if self._faults:
            early = self._early_fault(key)
            if early == "drop":
                return drop("after_body")
            if early is not None:
                status, payload, headers = early
                finish(status, "answered", None, 0, _fault_name(status))
                return web.Response(status=status, body=payload, headers=headers)

        if not key or (self._keys is not None and key not in self._keys):
            key_error = "Event key is required" if not key else "Event key not found"
            finish(401, "answered", None, 0, None)
            return web.Response(
                status=401,
                body=go_json({"status": 401, "message": "", "error": key_error}),
                headers=self._headers("application/json"),
            )

        status, ids, error, sent, reject_fired = self._ingest(body, key, request_no, seed)
        accepted = len(ids)

        if self._faults:
            if self._fire(Drop, lambda f: f.stage == "after_record"):
                return drop("after_record", sent, accepted)
            gateway = self._fire(Status5xx, lambda f: f.after_record)
            if gateway is not None:
                code, payload, headers = self._status_5xx(gateway)
                finish(code, "answered", sent, accepted, "status_5xx:after_record")
                return web.Response(status=code, body=payload, headers=headers)

        finish(status, "answered", sent, accepted, "reject" if reject_fired else None)
        headers = self._headers(self._content_type)
        return web.Response(status=status, body=ids_body(ids, status, error), headers=headers)

    async def _hang(self, request: web.Request) -> bool:
        """Hold a request until released; True if it should go on, False to drop it."""
        release = self._hang_release
        self._hung_total += 1
        self._hung_now += 1
        self._hung_requests[id(request)] = request
        self._notify()
        try:
            await release.wait()
        finally:
            self._hung_now -= 1
            self._hung_requests.pop(id(request), None)
        transport = request.transport
        return not (self._stopping or transport is None or transport.is_closing())

    def _early_fault(self, key: str) -> Literal["drop"] | tuple[int, bytes, dict[str, str]] | None:
        """Faults that answer (or drop) once the body is read, before Inngest would look at it."""
        if self._fire(Drop, lambda f: f.stage == "after_body"):
            return "drop"
        gateway = self._fire(Status5xx, lambda f: not f.after_record)
        if gateway is not None:
            return self._status_5xx(gateway)
        too_many = self._fire(Status429)
        if too_many is not None:
            return self._status_429(too_many.retry_after)
        active = self._faults.get(RateLimit.kind)
        if active is not None and isinstance(active.fault, RateLimit):
            retry_after = self._rate_limited(key, active.fault)
            if retry_after is not None:
                self._consume(active)  # only a refused request counts towards ``times``
                return self._status_429(retry_after)
        return None

    def _status_5xx(self, fault: Status5xx) -> tuple[int, bytes, dict[str, str]]:
        phrase = _phrase(fault.status)
        if fault.body == "html":
            page = HTML_ERROR_PAGE.format(code=fault.status, phrase=phrase)
            return fault.status, page.encode(), self._headers("text/html")
        payload = {"error": fault.message or phrase, "status": fault.status}
        return fault.status, go_json(payload), self._headers("application/json")

    def _status_429(self, retry_after: int) -> tuple[int, bytes, dict[str, str]]:
        headers = self._headers("application/json")
        headers["Retry-After"] = str(retry_after)
        payload = {"error": "rate limit exceeded", "status": 429}
        return 429, go_json(payload), headers

    def _rate_limited(self, key: str, limit: RateLimit) -> int | None:
        """Seconds to wait if this request is over the limit, else None (and it is counted)."""
        now = time.monotonic()
        window = self._rate_windows.setdefault(key, deque())
        while window and window[0] <= now - limit.window_s:
            window.popleft()
        if len(window) >= limit.limit:
            return max(1, math.ceil(window[0] + limit.window_s - now))
        window.append(now)
        return None

    def _ingest(
        self, body: bytes, key: str, request_no: int, seed_header: str | None
    ) -> tuple[int, list[str], str | None, int, bool]:
        """Take the events of one body in order; (status, ids, error, events found, rejected)."""
        items, error = split_body(body, self.max_event_size, self.max_events)
        ids: list[str] = []
        if not items:
            return (200 if error is None else 400), ids, error, 0, False
        now = self._clock()
        now_ms = int(now * 1000)
        seed = parse_event_id_seed(seed_header) if seed_header else None
        entropy = os.urandom(10 * len(items)) if seed is None else b""
        random_prefix = now_ms.to_bytes(6, "big")
        reject_fault = self._faults.get("reject")
        rejected = False
        period = self._run_period_s
        windows = self._run_windows
        record = self._events.append
        executor = self._executor if self._executor.active else None
        for position, item in enumerate(items):
            event = normalize(item, now_ms)
            if type(event) is str:
                error = event
                break
            assert isinstance(event, Event)
            if reject_fault is not None:
                reject = reject_fault.fault
                if isinstance(reject, Reject) and reject.matches(item, event):
                    self._consume(reject_fault)
                    error = reject.message_for(item)
                    rejected = True
                    break
            ulid = None
            if seed is not None:
                ulid = seeded_ulid(seed[0], seed[1], position + 1)
            if ulid is None:
                offset = 10 * position
                chunk = entropy[offset : offset + 10] if entropy else os.urandom(10)
                ulid = encode_ulid(random_prefix + chunk)
            recorded = RecordedEvent(
                ulid, event.name, event.id, event.data, event.ts, now, key, request_no
            )
            record(recorded)
            ids.append(ulid)
            if executor is not None:
                executor.on_event(recorded._asdict())
            # The run scheduler's idempotency: SET NX EX 24h on (function, id-or-ULID).
            run_key = event.id or ulid
            window_key = (event.name, run_key)
            started = windows.get(window_key)
            if started is None or now - started >= period:
                windows[window_key] = now
                self._runs.append(Run(run_key, event.name, ulid, event.id, now, request_no))
                self._runs_by_key[run_key] += 1
        # Without a break every event was taken; a body error after them still makes it a 400.
        return (200 if error is None else 400), ids, error, len(items), rejected

    # -- the control surface --

    def _control_app(self) -> web.Application:
        app = web.Application()
        self._add_control_routes(app)
        return app

    def _add_control_routes(self, app: web.Application) -> None:
        app.router.add_get("/_standin/state", self._control_state)
        app.router.add_get("/_standin/events", self._control_events)
        app.router.add_get("/_standin/wait", self._control_wait)
        app.router.add_post("/_standin/faults", self._control_inject)
        app.router.add_delete("/_standin/faults", self._control_clear)
        app.router.add_delete("/_standin/faults/{kind}", self._control_clear)
        app.router.add_post("/_standin/release", self._control_release)
        app.router.add_post("/_standin/reset", self._control_reset)
        app.router.add_post("/_standin/config", self._control_config)
        app.router.add_get("/_standin/functions", self._control_functions)
        app.router.add_get("/_standin/runs", self._control_runs)
        app.router.add_get("/_standin/runs/wait", self._control_runs_wait)
        app.router.add_post("/_standin/runs/{run_id}/cancel", self._control_cancel)
        app.router.add_post("/_standin/sync", self._control_sync)

    @staticmethod
    def _json(payload: Any, status: int = 200) -> web.Response:
        body = orjson.dumps(payload)
        return web.Response(status=status, body=body, content_type="application/json")

    async def _control_state(self, request: web.Request) -> web.Response:
        state = self.summary()
        # ?runs_for=<id>&runs_for=<id>: run counts of chosen keys, without listing every key.
        keys = request.query.getall("runs_for", [])
        if keys:
            state["runs_for"] = {key: self.runs_for(key) for key in keys}
        return self._json(state)

    async def _control_events(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError:
            return self._json({"error": "since and limit must be integers"}, 400)
        chosen = self._events[since : None if limit is None else since + limit]
        events = [{"seq": since + n, **event._asdict()} for n, event in enumerate(chosen)]
        listing: dict[str, Any] = {"event_count": len(self._events), "events": events}
        if request.query.get("runs") in ("1", "true"):
            listing["runs"] = [run._asdict() for run in self._runs]
        return self._json(listing)

    async def _control_wait(self, request: web.Request) -> web.Response:
        try:
            timeout = float(request.query.get("timeout", "5"))
            wanted = {
                name: int(request.query[name])
                for name in ("events", "runs", "requests", "hung")
                if name in request.query
            }
        except ValueError:
            error = "events, runs, requests, hung and timeout must be numbers"
            return self._json({"error": error}, 400)
        counters: dict[str, Callable[[EventApiStandIn], int]] = {
            "events": lambda s: len(s._events),
            "runs": lambda s: len(s._runs),
            "requests": lambda s: len(s._requests),
            "hung": lambda s: s._hung_now,
        }
        what = ", ".join(f"{n} {name}" for name, n in wanted.items()) or "nothing"
        try:
            await self.wait_for(
                lambda s: all(counters[name](s) >= n for name, n in wanted.items()), timeout, what
            )
        except TimeoutError as exc:
            return self._json({"error": str(exc), **self.summary()}, 408)
        return self._json(self.summary())

    async def _control_inject(self, request: web.Request) -> web.Response:
        try:
            spec = orjson.loads(await request.read())
            specs = spec if isinstance(spec, list) else [spec]
            parsed = [fault_from_json(s) for s in specs]
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            return self._json({"error": f"bad fault: {exc}"}, 400)
        if self._control_port is None and any(isinstance(f, Refuse) for f, _ in parsed):
            # Once the only port refuses, nothing could clear the fault over HTTP.
            return self._json({"error": "refuse needs a separate control port (control_port)"}, 409)
        for fault, times in parsed:
            await self.inject(fault, times=times)
        return self._json({"faults": self.faults})

    async def _control_clear(self, request: web.Request) -> web.Response:
        kind = request.match_info.get("kind")
        try:
            await self.clear(kind)
        except ValueError as exc:
            return self._json({"error": str(exc)}, 400)
        return self._json({"faults": self.faults})

    async def _control_release(self, request: web.Request) -> web.Response:
        self.release_hung()
        return self._json({"faults": self.faults})

    async def _control_reset(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            options = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            options = None
        if not isinstance(options, dict):
            return self._json({"error": "the body must be a JSON object"}, 400)
        await self.reset(faults=bool(options.get("faults", True)))
        return self._json(self.summary())

    async def _control_config(self, request: web.Request) -> web.Response:
        try:
            options = orjson.loads(await request.read())
            if "keys" in options:
                keys = options["keys"]
                if keys is not None and not (
                    isinstance(keys, list) and all(isinstance(k, str) for k in keys)
                ):
                    raise ValueError("keys must be a list of strings or null")
                self.set_keys(keys)
            if "max_event_size" in options:
                size = options["max_event_size"]
                if type(size) is not int or size < 1:
                    raise ValueError("max_event_size must be a positive integer")
                self.max_event_size = size
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            return self._json({"error": str(exc)}, 400)
        return self._json(
            {"keys_enforced": self._keys is not None, "max_event_size": self.max_event_size}
        )

    # -- the executor's control surface: a separate process (the demo) reads runs here --

    async def _control_functions(self, request: web.Request) -> web.Response:
        executor = self._executor
        return self._json(
            {
                "functions": [fn.to_json() for fn in executor.functions.values()],
                "registrations": [r.to_json() for r in executor.registrations],
            }
        )

    def _runs_json(self, request: web.Request, runs: Sequence[RunRecord]) -> dict[str, Any]:
        query = request.query
        chosen = run_filter(
            runs, query.get("function_id"), query.get("status"), query.get("event_id")
        )
        return {
            "runs": [run.to_json() for run in chosen],
            "skipped": [s.to_json() for s in self._executor.skipped],
            "internal_events": self._executor.internal_events,
            "summary": self._executor.summary(),
        }

    async def _control_runs(self, request: web.Request) -> web.Response:
        return self._json(self._runs_json(request, self._executor.runs))

    async def _control_runs_wait(self, request: web.Request) -> web.Response:
        """``?function_id=..&status=..&count=N&timeout=S``: answer once N runs match."""
        try:
            count = int(request.query.get("count", "1"))
            timeout = float(request.query.get("timeout", "10"))
        except ValueError:
            return self._json({"error": "count and timeout must be numbers"}, 400)
        function_id = request.query.get("function_id")
        status = request.query.get("status")
        event_id = request.query.get("event_id")
        try:
            runs = await self._executor.wait_for_runs(
                lambda rs: len(run_filter(rs, function_id, status, event_id)) >= count,
                timeout,
                f"{count} runs (function {function_id or 'any'}, status {status or 'any'})",
            )
        except TimeoutError as exc:
            return self._json(
                {"error": str(exc), **self._runs_json(request, self._executor.runs)}, 408
            )
        return self._json(self._runs_json(request, runs))

    async def _control_cancel(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        return self._json({"run_id": run_id, "cancelled": self._executor.cancel(run_id)})

    async def _control_sync(self, request: web.Request) -> web.Response:
        """``{"url": "<serve url>"}``: sync that app (the stand-in sends the PUT)."""
        try:
            options = orjson.loads(await request.read())
            url = options["url"]
            wait_s = options.get("wait_s", 0.0)
            if not isinstance(url, str):
                raise TypeError("url must be a string")
            if not isinstance(wait_s, int | float) or isinstance(wait_s, bool) or wait_s < 0:
                raise TypeError("wait_s must be a number of seconds >= 0")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return self._json({"error": f'the body must be {{"url": ...}}: {exc}'}, 400)
        try:
            return self._json(await self.sync(url, wait_for_app_s=float(wait_s)))
        except SyncError as exc:
            return self._json({"error": str(exc)}, 502)


def _fault_name(status: int) -> str:
    return "status_429" if status == 429 else "status_5xx"


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Server Error"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bound_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to host:port; SO_REUSEADDR lets a refused port be re-bound
    while old connections linger in TIME_WAIT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


# --- Running it as a process ----------------------------------------------------------------------


#: How long ``--sync-url`` waits for its app to answer.
SYNC_WAIT_S = 600.0


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8288,
    control_port: int | None = None,
    keys: Iterable[str] | None = None,
    max_event_size: int = ABSOLUTE_MAX_EVENT_SIZE,
    server_kind: str = "dev",
    retry_base_s: float = BACKOFF_TABLE_S[0],
    sync_urls: Sequence[str] = (),
    ready: Callable[[EventApiStandIn], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a stand-in until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is None).

    ``ready`` is called once it listens. Each of ``sync_urls`` is synced as soon as its app
    answers (waiting up to ``SYNC_WAIT_S``), as the dev server's ``-u <url>`` does.
    """
    standin = EventApiStandIn(
        keys=keys,
        max_event_size=max_event_size,
        server_kind=server_kind,
        retry_base_s=retry_base_s,
    )
    stop_event = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if stop is None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop_event.set)
    await standin.start(host, port, control_port)

    async def sync_when_up(url: str) -> None:
        try:
            await standin.sync(url, wait_for_app_s=SYNC_WAIT_S)
        except SyncError as exc:
            _log.error("standin_sync_failed", url=url, error=str(exc))

    syncs = [loop.create_task(sync_when_up(url)) for url in sync_urls]
    try:
        if ready is not None:
            ready(standin)
        await stop_event.wait()
    finally:
        for task in syncs:
            task.cancel()
        await asyncio.gather(*syncs, return_exceptions=True)
        await standin.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m outbox_relay.testing.inngest``: print one JSON line when ready, serve until
    SIGTERM/SIGINT, exit 0. Logs go to stderr as JSON lines."""
    parser = argparse.ArgumentParser(
        prog="python -m outbox_relay.testing.inngest",
        description="A stand-in of Inngest's Event API for tests, benchmarks and the demo.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8288, help="Event API port (0: any free port)")
    parser.add_argument(
        "--control-port", type=int, default=None, help="separate port for /_standin/* (0: any)"
    )
    parser.add_argument("--keys", default=None, help="comma-separated event keys (default: any)")
    parser.add_argument("--max-event-size", type=int, default=ABSOLUTE_MAX_EVENT_SIZE)
    parser.add_argument("--server-kind", default="dev", choices=["dev", "cloud"])
    parser.add_argument(
        "--sync-url",
        action="append",
        default=[],
        help="an SDK app's serve URL to sync once it answers (repeatable), like the dev "
        "server's -u",
    )
    parser.add_argument(
        "--retry-base-delay",
        type=float,
        default=BACKOFF_TABLE_S[0],
        help="seconds before a function's first retry; Inngest's later delays scale with it "
        "(default: Inngest's 15)",
    )
    levels = ["debug", "info", "warning", "error"]
    parser.add_argument("--log-level", default="info", choices=levels)
    args = parser.parse_args(argv)

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(args.log_level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    keys = [k for k in args.keys.split(",") if k] if args.keys is not None else None

    def announce(standin: EventApiStandIn) -> None:
        line = {
            "event": "standin_ready",
            "base_url": standin.base_url,
            "control_url": standin.control_url,
            "pid": os.getpid(),
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()

    asyncio.run(
        serve(
            host=args.host,
            port=args.port,
            control_port=args.control_port,
            keys=keys,
            max_event_size=args.max_event_size,
            server_kind=args.server_kind,
            retry_base_s=args.retry_base_delay,
            sync_urls=args.sync_url,
            ready=announce,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
