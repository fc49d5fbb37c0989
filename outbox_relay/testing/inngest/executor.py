"""The stand-in as Inngest's executor: it syncs SDK apps and runs their functions over HTTP.

Test equipment. No Inngest server can run here, so :class:`Executor` plays the part of the dev
server's registration endpoint and of its executor, speaking the official SDK's own protocol
(``inngest`` 0.5: ``_internal/comm_lib/handler.py``, ``server_lib/execution_request.py``,
``step_lib``) the way the open-source server drives it (``pkg/devserver/api.go`` ``Register``,
``pkg/execution/executor/executor.go``, ``pkg/execution/driver/driver.go`` ``MarshalV1``,
``pkg/backoff``, ``pkg/execution/ratelimit``, ``pkg/constraintapi`` throttling, ``pkg/sdk``):

* **Sync**: ``PUT <serve url>`` makes the SDK POST ``{appname, functions, url, ...}`` to
  ``{api_base_url}/fn/register``; :meth:`Executor.register` validates the functions and answers as
  the dev server does (``{"ok": true, "modified": ..., "app_id", "sync_id"}``, or ``400
  {"error": ..., "status": 400}``). A re-sync replaces the app's functions.
* **Runs**: every accepted event whose name matches a function's trigger (and whose ``if``
  expression is true) schedules a run, unless the function already ran for that event ``id`` (or
  ULID) in the last 24 h, or its idempotency key (Inngest turns ``idempotency`` into a rate limit of
  1 per 24 h on that key) or rate limit says no. A run is a chain of HTTP requests
  ``POST <fn url>?fnId=<app>-<fn>&stepId=<step>`` with ``{event, events, steps, ctx, use_api}``:
  ``steps`` holds every memoised step result keyed by its hashed id (``{"data": ...}`` or
  ``{"error": ...}``), ``ctx`` the attempt, run id, stack of completed step ids and max attempts.
* **Answers**: ``206`` with step ops — ``StepRun`` (memoise, call again), ``StepPlanned`` (call with
  ``stepId=<id>``; after all planned steps, call again), ``StepError`` (retry the same request with
  backoff while attempts remain, else memoise the error), ``StepFailed`` (memoise the error, call
  again so the function sees it), ``Sleep`` (memoise null at the given time); ``200`` completes the
  run with the body as its output; anything else (``500``, other statuses, connection errors,
  timeouts) is an error retried with Inngest's backoff table up to the function's
  ``retries + 1`` attempts, unless ``x-inngest-no-retry: true``; ``retry-after`` sets the time.
  Each step (each request chain after a success) starts again at attempt 0, as in Inngest.
* **Failure**: when the attempts are spent (or the error is non-retriable), the run fails and the
  executor emits ``inngest/function.failed`` with ``{error: {name, message, stack}, event,
  function_id, run_id}``, which triggers the ``<app>-<fn>-failure`` function the SDK registered.
* **Flow control**: concurrency limits (function-wide and per key, scopes ``fn``/``env``/
  ``account``) count requests in flight, as Inngest counts steps in progress, and queued work waits
  in order of run start (then priority); throttle (a GCRA limit on run *starts* per period, which
  queues runs, never drops them); rate limit and idempotency (drop).

The expressions are evaluated by :mod:`.cel`, which refuses what it cannot evaluate when the
function is registered. Where this differs from Inngest, ``README.md`` beside this file says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import heapq
import os
import random
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

import aiohttp
import orjson
import structlog

from outbox_relay.testing.inngest.cel import Expression, ExpressionError, compile_expression
from outbox_relay.testing.inngest.rules import RUN_IDEMPOTENCY_PERIOD_S
from outbox_relay.testing.inngest.wire import encode_ulid

__all__ = [
    "BACKOFF_TABLE_S",
    "DEFAULT_RETRIES",
    "FUNCTION_FAILED_EVENT",
    "Executor",
    "FunctionConfig",
    "Registration",
    "RegistrationError",
    "RequestLog",
    "RunRecord",
    "RunStatus",
    "SkippedRun",
    "SyncError",
]

_log = structlog.get_logger("outbox_relay.testing.inngest.executor")

#: ``pkg/backoff.BackoffTable``: the delay before retry n+1 after attempt n (0-based) failed.
BACKOFF_TABLE_S: tuple[float, ...] = (15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)
#: ``TableBackoff`` adds up to 30 s of jitter (scaled with the base delay here).
BACKOFF_JITTER_S = 30.0
#: ``consts.DefaultRetryCount``: retries when a function sets none (5 attempts in all).
DEFAULT_RETRIES = 4
#: ``consts.MaxRetries``.
MAX_RETRIES = 20
#: ``consts.MaxRetryDuration``: a retry is never scheduled further away than this.
MAX_RETRY_DELAY_S = 24 * 60 * 60.0
#: The internal event emitted when a run fails for good.
FUNCTION_FAILED_EVENT = "inngest/function.failed"
#: Run priority bounds in seconds (``consts.PriorityFactorMin/Max``).
PRIORITY_MIN_S, PRIORITY_MAX_S = -600, 600

_SERVER_KIND_HEADER = "x-inngest-server-kind"
_EXPECTED_KIND_HEADER = "x-inngest-expected-server-kind"
_NO_RETRY_HEADER = "x-inngest-no-retry"
_RETRY_AFTER_HEADER = "retry-after"
_ROOT_STEP = "step"
_UNSUPPORTED_OPS = ("WaitForEvent", "InvokeFunction", "AIGateway", "Gateway", "WaitForSignal")

RunStatus: TypeAlias = Literal["queued", "running", "completed", "failed", "cancelled"]


class RegistrationError(ValueError):
    """A sync the stand-in refuses (answered 400, as the dev server answers invalid functions)."""


class SyncError(RuntimeError):
    """``sync()`` could not get the app registered; the message says what happened instead."""


# --- Registered functions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    event: str
    expression: Expression | None


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    limit: int
    key: Expression | None
    scope: str


@dataclass(frozen=True, slots=True)
class Throttle:
    limit: int
    period_s: float
    burst: int
    key: Expression | None


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int
    period_s: float
    key: Expression | None
    reason: Literal["idempotency", "rate_limit"]


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """One registered function, as the stand-in understood its config."""

    app_id: str
    id: str
    """The fully qualified id, ``<app>-<fn>`` (``<app>-<fn>-failure`` for a failure handler)."""
    name: str
    url: str
    triggers: tuple[Trigger, ...]
    max_attempts: int
    concurrency: tuple[ConcurrencyLimit, ...]
    throttle: Throttle | None
    rate_limit: RateLimit | None
    priority: Expression | None
    raw: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"app_id": self.app_id, "max_attempts": self.max_attempts, **self.raw}


@dataclass(slots=True)
class Registration:
    """One call to ``/fn/register``."""

    sync_id: str
    deploy_id: str | None
    app_id: str | None
    url: str | None
    function_ids: list[str]
    error: str | None
    modified: bool
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "sync_id": self.sync_id,
            "deploy_id": self.deploy_id,
            "app_id": self.app_id,
            "url": self.url,
            "function_ids": self.function_ids,
            "error": self.error,
            "modified": self.modified,
            "at": self.at,
        }


def _duration_s(value: Any, where: str) -> float:
    """Inngest's duration strings as the SDK writes them (``"60s"``, ``"1m"``, ``"24h"``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        raise RegistrationError(f"{where}: a duration is required, not {value!r}")
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    total = 0.0
    rest = value
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789."))
        if digits == 0:
            raise RegistrationError(f"{where}: cannot read the duration {value!r}")
        number = float(rest[:digits])
        rest = rest[digits:]
        unit = next((u for u in ("ms", "s", "m", "h", "d", "w") if rest.startswith(u)), None)
        if unit is None:
            raise RegistrationError(f"{where}: cannot read the duration {value!r}")
        total += number * units[unit]
        rest = rest[len(unit) :]
    return total


def _expression(value: Any, where: str) -> Expression | None:
    if value is None or value == "":
        return None
    try:
        return compile_expression(value)
    except ExpressionError as exc:
        raise RegistrationError(f"{where}: {exc}") from None


def _positive_int(value: Any, where: str, *, minimum: int = 1) -> int:
    if type(value) is not int or value < minimum:
        raise RegistrationError(f"{where} must be an integer >= {minimum}, not {value!r}")
    return value


_UNSUPPORTED_CONFIG = {
    "batchEvents": "event batches",
    "debounce": "debounce",
    "singleton": "singleton",
    "timeouts": "timeouts",
}


def parse_function(app_id: str, raw: Mapping[str, Any]) -> FunctionConfig:
    """Validate one function config from a sync; raises :class:`RegistrationError`."""
    fn_id = raw.get("id")
    if not isinstance(fn_id, str) or not fn_id:
        raise RegistrationError("a function has no id")
    where = f"function {fn_id!r}"
    for key, what in _UNSUPPORTED_CONFIG.items():
        if raw.get(key):
            raise RegistrationError(f"{where}: {what} ({key}) is not supported by the stand-in")
    if raw.get("cancel"):
        raise RegistrationError(f"{where}: cancellation (cancel) is not supported by the stand-in")

    triggers: list[Trigger] = []
    for n, trig in enumerate(raw.get("triggers") or []):
        if not isinstance(trig, Mapping):
            raise RegistrationError(f"{where}: triggers[{n}] must be an object")
        if "cron" in trig:
            raise RegistrationError(f"{where}: cron triggers are not supported by the stand-in")
        event = trig.get("event")
        if not isinstance(event, str) or not event:
            raise RegistrationError(f"{where}: triggers[{n}] needs an event name")
        if "*" in event:
            raise RegistrationError(
                f"{where}: wildcard event triggers ({event!r}) are not supported by the stand-in"
            )
        triggers.append(Trigger(event, _expression(trig.get("expression"), f"{where} trigger")))
    if not triggers:
        raise RegistrationError(f"{where}: at least one trigger is required")

    steps = raw.get("steps")
    step = steps.get(_ROOT_STEP) if isinstance(steps, Mapping) else None
    runtime = step.get("runtime") if isinstance(step, Mapping) else None
    url = runtime.get("url") if isinstance(runtime, Mapping) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise RegistrationError(f"No SDK URL provided for function '{fn_id}'")
    retries_cfg = step.get("retries") if isinstance(step, Mapping) else None
    retries = DEFAULT_RETRIES
    if isinstance(retries_cfg, Mapping) and retries_cfg.get("attempts") is not None:
        retries = _positive_int(retries_cfg["attempts"], f"{where} retries", minimum=0)
    retries = min(retries, MAX_RETRIES)

    concurrency: list[ConcurrencyLimit] = []
    for n, item in enumerate(raw.get("concurrency") or []):
        limit = _positive_int(item.get("limit"), f"{where} concurrency[{n}].limit", minimum=0)
        scope = item.get("scope") or "fn"
        if scope not in ("fn", "env", "account"):
            raise RegistrationError(f"{where}: concurrency[{n}].scope {scope!r} is unknown")
        key_expr = _expression(item.get("key"), f"{where} concurrency[{n}].key")
        if limit > 0:
            concurrency.append(ConcurrencyLimit(limit, key_expr, scope))

    throttle = None
    if raw.get("throttle"):
        t = raw["throttle"]
        throttle = Throttle(
            limit=_positive_int(t.get("limit"), f"{where} throttle.limit"),
            period_s=_duration_s(t.get("period"), f"{where} throttle.period"),
            burst=_positive_int(t.get("burst", 1) or 1, f"{where} throttle.burst"),
            key=_expression(t.get("key"), f"{where} throttle.key"),
        )

    rate_limit = None
    if raw.get("rateLimit"):
        r = raw["rateLimit"]
        rate_limit = RateLimit(
            limit=_positive_int(r.get("limit"), f"{where} rateLimit.limit"),
            period_s=_duration_s(r.get("period"), f"{where} rateLimit.period"),
            key=_expression(r.get("key"), f"{where} rateLimit.key"),
            reason="rate_limit",
        )
    if raw.get("idempotency"):
        # pkg/sdk: idempotency replaces any rate limit with 1 run per 24 h on the key.
        rate_limit = RateLimit(
            limit=1,
            period_s=RUN_IDEMPOTENCY_PERIOD_S,
            key=_expression(raw["idempotency"], f"{where} idempotency"),
            reason="idempotency",
        )

    priority = None
    if raw.get("priority"):
        priority = _expression(raw["priority"].get("run"), f"{where} priority.run")

    return FunctionConfig(
        app_id=app_id,
        id=fn_id,
        name=str(raw.get("name") or fn_id),
        url=url,
        triggers=tuple(triggers),
        max_attempts=retries + 1,
        concurrency=tuple(concurrency),
        throttle=throttle,
        rate_limit=rate_limit,
        priority=priority,
        raw=dict(raw),
    )


# --- Runs ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestLog:
    """One request of a run to the SDK."""

    step_id: str
    """``step`` for a discovery request, else the hashed id of the planned step it targets."""
    attempt: int
    started_at: float
    duration_ms: float = 0.0
    status: int | None = None
    """The HTTP status; None for a connection error or timeout."""
    outcome: str = "in_flight"
    """``completed``, ``steps`` (206), ``error`` (non-2xx), ``connection_error``, ``ignored``."""
    ops: list[str] = field(default_factory=list)
    """``<op>:<display name>`` of each step op in a 206."""
    error: dict[str, Any] | None = None
    retry_in_s: float | None = None
    """The delay before the retry this request's failure scheduled."""

    def to_json(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "attempt": self.attempt,
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status,
            "outcome": self.outcome,
            "ops": self.ops,
            "error": self.error,
            "retry_in_s": self.retry_in_s,
        }


@dataclass(slots=True)
class RunRecord:
    """One function run: what a test asserts on."""

    run_id: str
    function_id: str
    event: dict[str, Any]
    created_at: float
    status: RunStatus = "queued"
    started_at: float | None = None
    ended_at: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    """The final error ``{name, message, stack}`` of a failed run."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Every error any request of the run met, in order."""
    requests: list[RequestLog] = field(default_factory=list)
    steps: dict[str, Any] = field(default_factory=dict)
    """Memoised step results by hashed id (what the SDK receives as ``steps``)."""
    step_names: dict[str, str] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)
    attempts: int = 0
    """The highest attempt count any one step (or request chain) of the run reached."""
    concurrency_keys: tuple[tuple[str, int], ...] = ()
    throttle_key: str | None = None
    priority_s: int = 0
    pending_planned: set[str] = field(default_factory=set)

    @property
    def event_name(self) -> str:
        return str(self.event.get("name"))

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    def step_output(self, name: str) -> Any:
        """The memoised result of the step with this display name (KeyError if none)."""
        for hashed, shown in self.step_names.items():
            if shown == name and hashed in self.steps:
                return self.steps[hashed]
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "function_id": self.function_id,
            "event": self.event,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "attempts": self.attempts,
            "output": self.output,
            "error": self.error,
            "errors": self.errors,
            "steps": {self.step_names.get(k, k): v for k, v in self.steps.items()},
            "requests": [r.to_json() for r in self.requests],
        }


@dataclass(frozen=True, slots=True)
class SkippedRun:
    """An event that matched a function but started no run, and why."""

    function_id: str
    event_id: str
    event_name: str
    reason: Literal["event_id", "idempotency", "rate_limit", "expression_error"]
    key: str | None
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "function_id": self.function_id,
            "event_id": self.event_id,
            "event_name": self.event_name,
            "reason": self.reason,
            "key": self.key,
            "at": self.at,
        }


@dataclass(slots=True, eq=False)
class _Item:
    """One queued request of a run."""

    run: RunRecord
    fn: FunctionConfig
    step_id: str
    attempt: int
    available_at: float
    seq: int
    memo_on_start: tuple[str, Any] | None = None
    """A sleep's memo, written when the item is picked up."""


def _key_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _new_ulid(now: float) -> str:
    return encode_ulid(int(now * 1000).to_bytes(6, "big") + os.urandom(10))


def _error_dict(value: Any, fallback: str) -> dict[str, Any]:
    """``{name, message, stack}`` from an SDK error body, or a generic one."""
    if isinstance(value, Mapping):
        return {
            "name": str(value.get("name") or "Error"),
            "message": str(value.get("message") or value.get("error") or fallback),
            "stack": value.get("stack"),
        }
    if isinstance(value, str) and value:
        return {"name": "Error", "message": value, "stack": None}
    return {"name": "Error", "message": fallback, "stack": None}


def _retry_after_s(value: str, now: float) -> float | None:
    """Seconds until ``retry-after`` (seconds, RFC 3339 or an HTTP date); None if unreadable."""
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    with contextlib.suppress(TypeError, ValueError):
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - now)
    return None


class Executor:
    """Registered functions, their runs, and the loop that drives them (see the module doc).

    ``retry_base_s`` scales Inngest's backoff table (15 s, 30 s, 1 min, ...) and its 30 s jitter by
    ``retry_base_s / 15``, so tests can run the real schedule in milliseconds. ``clock`` is the
    wall clock of the 24 h windows (shared with the stand-in so tests can move it).
    ``emit`` records an internal event (``inngest/function.failed``) where the stand-in keeps them.
    """

    def __init__(
        self,
        *,
        retry_base_s: float = BACKOFF_TABLE_S[0],
        jitter: bool = True,
        request_timeout_s: float = 300.0,
        server_kind: str = "dev",
        window_s: float = RUN_IDEMPOTENCY_PERIOD_S,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if retry_base_s < 0:
            raise ValueError("retry_base_s must be >= 0")
        self.retry_base_s = retry_base_s
        self.jitter = jitter
        self.request_timeout_s = request_timeout_s
        self._server_kind = server_kind
        self._window_s = window_s
        self._clock = clock
        self._rng = rng or random.Random()

        self._functions: dict[str, FunctionConfig] = {}
        self._by_event: dict[str, list[tuple[FunctionConfig, Trigger]]] = {}
        self._apps: dict[str, tuple[str, list[str]]] = {}  # app -> (checksum, function ids)
        self.registrations: list[Registration] = []

        self._runs: list[RunRecord] = []
        self._runs_by_id: dict[str, RunRecord] = {}
        self.skipped: list[SkippedRun] = []
        self.internal_events: list[dict[str, Any]] = []
        self._windows: dict[tuple[str, str, str], list[float]] = {}
        self._tats: dict[str, float] = {}

        # Queued requests: ``_ready`` (a heap in queue order), ``_delayed`` (a heap by the time
        # they become ready: retries, sleeps, throttled starts) and ``_parked`` (per concurrency
        # key, those waiting for a slot of that key), so that each step of the loop costs
        # O(log n) however many runs wait.
        self._ready: list[tuple[float, int, _Item]] = []
        self._delayed: list[tuple[float, int, _Item]] = []
        self._parked: dict[str, list[tuple[float, int, _Item]]] = {}
        self._freed: set[str] = set()
        self._limits: dict[str, int] = {}
        self._seq = 0
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopped = False

    # -- registration --

    @property
    def active(self) -> bool:
        """Whether any function is registered (the Event API calls :meth:`on_event` only then)."""
        return bool(self._functions)

    @property
    def functions(self) -> Mapping[str, FunctionConfig]:
        return self._functions

    def register(
        self, body: Any, *, deploy_id: str | None = None, expected_kind: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Handle a ``POST /fn/register`` body; returns (status, JSON answer)."""
        now = self._clock()
        sync_id = str(uuid.uuid4())
        record = Registration(sync_id, deploy_id, None, None, [], None, False, now)
        self.registrations.append(record)
        try:
            if expected_kind and expected_kind != self._server_kind:
                raise RegistrationError(
                    f"Expected server kind {self._server_kind}, got {expected_kind}"
                )
            if not isinstance(body, Mapping):
                raise RegistrationError("Invalid request: the body must be a JSON object")
            app_id = body.get("appname")
            if not isinstance(app_id, str) or not app_id:
                raise RegistrationError("App ID required")
            record.app_id = app_id
            record.url = body.get("url") if isinstance(body.get("url"), str) else None
            raw_functions = body.get("functions")
            if not isinstance(raw_functions, list) or not raw_functions:
                raise RegistrationError("At least one function is invalid: no functions")
            parsed: list[FunctionConfig] = []
            for raw in raw_functions:
                if not isinstance(raw, Mapping):
                    raise RegistrationError("At least one function is invalid: not an object")
                try:
                    parsed.append(parse_function(app_id, raw))
                except RegistrationError as exc:
                    raise RegistrationError(f"At least one function is invalid: {exc}") from None
        except RegistrationError as exc:
            record.error = str(exc)
            _log.warning("executor_sync_refused", deploy_id=deploy_id, error=str(exc))
            self._notify()
            return 400, {"error": str(exc), "status": 400, "data": None}

        checksum = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        previous = self._apps.get(app_id)
        modified = previous is None or previous[0] != checksum
        if modified:
            for old in previous[1] if previous else []:
                self._functions.pop(old, None)
            for fn in parsed:
                self._functions[fn.id] = fn
            self._apps[app_id] = (checksum, [fn.id for fn in parsed])
            self._by_event = {}
            for fn in self._functions.values():
                for trig in fn.triggers:
                    self._by_event.setdefault(trig.event, []).append((fn, trig))
        record.function_ids = [fn.id for fn in parsed]
        record.modified = modified
        app_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"inngest-app:{app_id}"))
        _log.info(
            "executor_synced",
            app_id=app_id,
            url=record.url,
            functions=record.function_ids,
            modified=modified,
        )
        self._notify()
        return 200, {"ok": True, "modified": modified, "app_id": app_uuid, "sync_id": sync_id}

    # -- scheduling --

    def on_event(self, event: Mapping[str, Any]) -> list[RunRecord]:
        """Schedule the runs an accepted event starts (``event``: name, data, id, ts, ulid).

        Synchronous and cheap: the requests happen on the executor's loop.
        """
        matches = self._by_event.get(event["name"])
        if not matches:
            return []
        payload = {
            "name": event["name"],
            "data": event.get("data") or {},
            "id": event.get("id") or event["ulid"],
            "ts": event["ts"],
            "user": {},
        }
        variables = {"event": payload}
        started: list[RunRecord] = []
        seen: set[str] = set()
        for fn, trig in matches:
            if fn.id in seen:
                continue
            try:
                if trig.expression is not None and not trig.expression.matches(variables):
                    continue
            except ExpressionError as exc:
                # Inngest treats a condition it cannot evaluate as not matching.
                _log.warning("executor_trigger_error", function_id=fn.id, error=str(exc))
                continue
            seen.add(fn.id)
            run = self._schedule(fn, payload, variables)
            if run is not None:
                started.append(run)
        if started:
            self._kick()
        return started

    def _window_allows(self, kind: str, fn_id: str, key: str, limit: int, period: float) -> bool:
        now = self._clock()
        window = self._windows.setdefault((kind, fn_id, key), [])
        window[:] = [t for t in window if now - t < period]
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def _skip(
        self, fn: FunctionConfig, payload: dict[str, Any], reason: Any, key: str | None
    ) -> None:
        skip = SkippedRun(fn.id, payload["id"], payload["name"], reason, key, self._clock())
        self.skipped.append(skip)
        _log.info(
            "executor_run_skipped",
            function_id=fn.id,
            event_id=payload["id"],
            reason=reason,
            key=key,
        )
        self._notify()

    def _schedule(
        self, fn: FunctionConfig, payload: dict[str, Any], variables: Mapping[str, Any]
    ) -> RunRecord | None:
        try:
            rl_key = None
            if fn.rate_limit is not None:
                rl = fn.rate_limit
                value = rl.key.evaluate(variables) if rl.key is not None else fn.id
                if value is not False:  # a key that evaluates to false is not limited
                    rl_key = _key_text(value)
            concurrency_keys = []
            for n, limit in enumerate(fn.concurrency):
                # fn scope: per function and limit; env/account scope: shared across functions.
                scope = f"{fn.id}#{n}" if limit.scope == "fn" else limit.scope
                key = _key_text(limit.key.evaluate(variables)) if limit.key else ""
                concurrency_keys.append((f"{scope}:{key}", limit.limit))
            throttle_key = None
            if fn.throttle is not None:
                value = fn.throttle.key.evaluate(variables) if fn.throttle.key else ""
                throttle_key = f"{fn.id}:{_key_text(value)}"
            priority = 0
            if fn.priority is not None:
                value = fn.priority.evaluate(variables)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    priority = int(min(max(value, PRIORITY_MIN_S), PRIORITY_MAX_S))
        except ExpressionError as exc:
            _log.warning("executor_expression_error", function_id=fn.id, error=str(exc))
            self._skip(fn, payload, "expression_error", str(exc))
            return None

        # The run scheduler's idempotency: one run per function and event id (or ULID) in 24 h.
        if not self._window_allows("event_id", fn.id, payload["id"], 1, self._window_s):
            self._skip(fn, payload, "event_id", payload["id"])
            return None
        if rl_key is not None and fn.rate_limit is not None:
            rl = fn.rate_limit
            period = min(rl.period_s, self._window_s) if rl.reason == "idempotency" else rl.period_s
            if not self._window_allows(rl.reason, fn.id, rl_key, rl.limit, period):
                self._skip(fn, payload, rl.reason, rl_key)
                return None

        now = self._clock()
        run = RunRecord(
            run_id=_new_ulid(now),
            function_id=fn.id,
            event=payload,
            created_at=now,
            concurrency_keys=tuple(concurrency_keys),
            throttle_key=throttle_key,
            priority_s=priority,
        )
        self._runs.append(run)
        self._runs_by_id[run.run_id] = run
        self._enqueue(run, fn, _ROOT_STEP, 0, 0.0)
        _log.info(
            "executor_run_scheduled",
            run_id=run.run_id,
            function_id=fn.id,
            event_name=payload["name"],
            event_id=payload["id"],
        )
        self._notify()
        return run

    def _enqueue(
        self,
        run: RunRecord,
        fn: FunctionConfig,
        step_id: str,
        attempt: int,
        delay_s: float,
        memo_on_start: tuple[str, Any] | None = None,
    ) -> None:
        self._seq += 1
        loop_time = asyncio.get_running_loop().time()
        item = _Item(run, fn, step_id, attempt, loop_time + delay_s, self._seq, memo_on_start)
        if delay_s > 0:
            heapq.heappush(self._delayed, (item.available_at, item.seq, item))
        else:
            heapq.heappush(self._ready, self._order(item))
        self._kick()

    @staticmethod
    def _order(item: _Item) -> tuple[float, int, _Item]:
        # Queue order: earlier runs first (Inngest scores a run's work by its start), moved by
        # the run's priority, then the order the requests were queued.
        return (item.run.created_at - item.run.priority_s, item.seq, item)

    def _kick(self) -> None:
        if self._stopped:
            return
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop())
        self._wake.set()

    # -- the dispatch loop --

    def _backoff_s(self, attempt: int) -> float:
        scale = self.retry_base_s / BACKOFF_TABLE_S[0]
        base = BACKOFF_TABLE_S[min(attempt, len(BACKOFF_TABLE_S) - 1)] * scale
        jitter = self._rng.uniform(0, BACKOFF_JITTER_S * scale) if self.jitter else 0.0
        return base + jitter

    def _throttle_wait(self, key: str, throttle: Throttle, now: float) -> float:
        """GCRA as ``pkg/constraintapi`` throttles: 0 admits (and counts) a start, else the wait."""
        emission = throttle.period_s / throttle.limit
        tolerance = emission * (throttle.limit + throttle.burst)
        tat = max(self._tats.get(key, now), now)
        new_tat = tat + emission
        allow_at = new_tat - tolerance
        if now < allow_at:
            return allow_at - now
        self._tats[key] = new_tat
        return 0.0

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopped:
            self._wake.clear()
            now = loop.time()
            while self._delayed and self._delayed[0][0] <= now:
                item = heapq.heappop(self._delayed)[2]
                heapq.heappush(self._ready, self._order(item))
            # Slots freed since the last turn go to the requests parked on them first: they
            # were queued before anything now in _ready.
            while self._freed:
                key = self._freed.pop()
                parked = self._parked.get(key)
                while parked and self._in_flight[key] < self._limits[key]:
                    self._offer(heapq.heappop(parked)[2], now)
                if parked is not None and not parked:
                    del self._parked[key]
            while self._ready:
                self._offer(heapq.heappop(self._ready)[2], now)
            timeout = None
            if self._delayed:
                timeout = max(0.0, self._delayed[0][0] - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _offer(self, item: _Item, now: float) -> None:
        """Start ``item``'s request, or park it on a full concurrency key, or delay a throttled
        start."""
        run = item.run
        if run.done:
            return
        for key, limit in run.concurrency_keys:
            if self._in_flight[key] >= limit:
                self._limits[key] = limit
                heapq.heappush(self._parked.setdefault(key, []), self._order(item))
                return
        if run.started_at is None and item.fn.throttle is not None and run.throttle_key:
            wait = self._throttle_wait(run.throttle_key, item.fn.throttle, now)
            if wait > 0:
                item.available_at = now + wait
                heapq.heappush(self._delayed, (item.available_at, item.seq, item))
                return
        for key, limit in run.concurrency_keys:
            self._in_flight[key] += 1
            self._limits[key] = limit
        task = asyncio.get_running_loop().create_task(self._execute(item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
                # A killed worker leaves dead keep-alive connections behind; a fresh connection
                # per request keeps a retry from failing on one of them.
                connector=aiohttp.TCPConnector(force_close=True),
            )
        return self._session

    def _request_body(self, item: _Item) -> bytes:
        run = item.run
        return orjson.dumps(
            {
                "event": run.event,
                "events": [run.event],
                "steps": run.steps,
                "ctx": {
                    "fn_id": item.fn.id,
                    "run_id": run.run_id,
                    "step_id": item.step_id,
                    "attempt": item.attempt,
                    "max_attempts": item.fn.max_attempts,
                    "stack": {"stack": list(run.stack), "current": len(run.stack)},
                    "disable_immediate_execution": False,
                    "use_api": False,
                    "env": "dev",
                },
                "version": 1,
                "use_api": False,
            }
        )

    def _url(self, fn: FunctionConfig, step_id: str) -> str:
        parts = urllib.parse.urlsplit(fn.url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        query["fnId"] = fn.id
        query["stepId"] = step_id
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    async def _execute(self, item: _Item) -> None:
        run, fn = item.run, item.fn
        loop = asyncio.get_running_loop()
        if item.memo_on_start is not None:
            self._memo(run, *item.memo_on_start)
        if run.started_at is None:
            run.started_at = self._clock()
            _log.info("executor_run_started", run_id=run.run_id, function_id=fn.id)
        run.status = "running"
        run.attempts = max(run.attempts, item.attempt + 1)
        log = RequestLog(item.step_id, item.attempt, self._clock())
        run.requests.append(log)
        self._notify()
        t0 = loop.time()
        status: int | None = None
        headers: Mapping[str, str] = {}
        body: bytes = b""
        error: dict[str, Any] | None = None
        try:
            session = self._session_now()
            async with session.post(
                self._url(fn, item.step_id),
                data=self._request_body(item),
                headers={
                    "Content-Type": "application/json",
                    _SERVER_KIND_HEADER: self._server_kind,
                    "x-inngest-req-version": "1",
                },
            ) as response:
                status = response.status
                headers = {k.lower(): v for k, v in response.headers.items()}
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = {"name": type(exc).__name__, "message": str(exc) or repr(exc), "stack": None}
        finally:
            for k, _ in run.concurrency_keys:
                self._in_flight[k] -= 1
                if k in self._parked:
                    self._freed.add(k)
            self._wake.set()
        log.duration_ms = (loop.time() - t0) * 1000
        log.status = status
        try:
            if run.done:  # cancelled while the request was in flight
                log.outcome = "ignored"
                return
            if error is not None:
                log.outcome = "connection_error"
                self._fail_attempt(item, log, error, no_retry=False, retry_after=None)
                return
            parsed = self._parse(body)
            if status == 201 and isinstance(parsed, Mapping) and "status" in parsed:
                # A streamed answer: keep-alive spaces, then {"status", "headers", "body"}.
                status = int(parsed["status"])
                headers = {k.lower(): str(v) for k, v in (parsed.get("headers") or {}).items()}
                inner = parsed.get("body")
                parsed = self._parse(inner.encode()) if isinstance(inner, str) else inner
                log.status = status
            no_retry = headers.get(_NO_RETRY_HEADER) == "true"
            retry_after = headers.get(_RETRY_AFTER_HEADER)
            if status == 206:
                log.outcome = "steps"
                self._handle_ops(item, log, parsed, no_retry=no_retry, retry_after=retry_after)
            elif status == 200:
                log.outcome = "completed"
                self._complete(run, parsed)
            else:
                log.outcome = "error"
                err = _error_dict(parsed, f"HTTP {status}")
                self._fail_attempt(item, log, err, no_retry=no_retry, retry_after=retry_after)
        finally:
            self._notify()

    @staticmethod
    def _parse(body: bytes) -> Any:
        if not body.strip():
            return None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return body.decode("utf-8", "replace")

    def _handle_ops(
        self,
        item: _Item,
        log: RequestLog,
        ops: Any,
        *,
        no_retry: bool,
        retry_after: str | None,
    ) -> None:
        run, fn = item.run, item.fn
        err: dict[str, Any]
        if not isinstance(ops, list) or not ops:
            err = {"name": "Error", "message": f"a 206 answer must be a list of ops: {ops!r}"}
            self._fail_attempt(item, log, err, no_retry=False, retry_after=None)
            return
        planned: list[str] = []
        sleep_until: tuple[str, float] | None = None
        for op in ops:
            kind = op.get("op") if isinstance(op, Mapping) else None
            hashed = str(op.get("id")) if isinstance(op, Mapping) else ""
            shown = str(op.get("displayName") or op.get("name") or hashed) if kind else ""
            log.ops.append(f"{kind}:{shown}")
            if kind is None:
                err = {"name": "Error", "message": f"not a step op: {op!r}"}
                self._fail_attempt(item, log, err, no_retry=False, retry_after=None)
                return
            run.step_names[hashed] = shown
            if kind in ("StepRun", "Step"):
                self._memo(run, hashed, {"data": op.get("data")})
                run.pending_planned.discard(hashed)
            elif kind == "StepPlanned":
                planned.append(hashed)
            elif kind == "StepError" and not no_retry and item.attempt + 1 < fn.max_attempts:
                err = _error_dict(op.get("error"), "step error")
                self._fail_attempt(item, log, err, no_retry=False, retry_after=retry_after)
                return
            elif kind in ("StepError", "StepFailed"):
                # The last attempt (or a non-retriable error): memoise the error and call the
                # function again, which sees it raised from the step.
                err = _error_dict(op.get("error"), "step failed")
                run.errors.append(err)
                self._memo(run, hashed, {"error": op.get("error") or err})
                run.pending_planned.discard(hashed)
            elif kind == "Sleep":
                # The SDK names a sleep by its end time (ISO 8601, UTC).
                until = _retry_after_s(str(op.get("name") or ""), time.time())
                if until is None:
                    err = {"name": "Error", "message": f"cannot read the sleep's end {op!r}"}
                    self._fail_run(run, fn, err)
                    return
                sleep_until = (hashed, until)
            elif kind in _UNSUPPORTED_OPS:
                err = {
                    "name": "UnsupportedByStandIn",
                    "message": f"the stand-in does not implement the {kind} step op ({shown})",
                }
                self._fail_run(run, fn, err)
                return
            else:
                err = {"name": "Error", "message": f"unknown step op {kind!r}"}
                self._fail_run(run, fn, err)
                return
        if planned:
            run.pending_planned.update(planned)
            for hashed in planned:
                self._enqueue(run, fn, hashed, 0, 0.0)
            return
        if sleep_until is not None:
            hashed, delay = sleep_until
            self._enqueue(run, fn, _ROOT_STEP, 0, delay, memo_on_start=(hashed, {"data": None}))
            return
        if not run.pending_planned:
            self._enqueue(run, fn, _ROOT_STEP, 0, 0.0)

    def _memo(self, run: RunRecord, hashed: str, value: Any) -> None:
        if hashed not in run.steps:
            run.stack.append(hashed)
        run.steps[hashed] = value

    def _fail_attempt(
        self,
        item: _Item,
        log: RequestLog,
        error: dict[str, Any],
        *,
        no_retry: bool,
        retry_after: str | None,
    ) -> None:
        run, fn = item.run, item.fn
        log.error = error
        run.errors.append(error)
        if no_retry or item.attempt + 1 >= fn.max_attempts:
            self._fail_run(run, fn, error)
            return
        delay = None
        if retry_after:
            delay = _retry_after_s(retry_after, time.time())
        if delay is None:
            delay = self._backoff_s(item.attempt)
        delay = min(delay, MAX_RETRY_DELAY_S)
        log.retry_in_s = delay
        _log.info(
            "executor_attempt_failed",
            run_id=run.run_id,
            function_id=fn.id,
            attempt=item.attempt,
            error=error.get("message"),
            retry_in_s=round(delay, 3),
        )
        self._enqueue(run, fn, item.step_id, item.attempt + 1, delay, item.memo_on_start)

    def _complete(self, run: RunRecord, output: Any) -> None:
        run.status = "completed"
        run.output = output
        run.ended_at = self._clock()
        _log.info(
            "executor_run_completed",
            run_id=run.run_id,
            function_id=run.function_id,
            attempts=run.attempts,
            duration_ms=round((run.ended_at - (run.started_at or run.created_at)) * 1000, 3),
        )

    def _fail_run(self, run: RunRecord, fn: FunctionConfig, error: dict[str, Any]) -> None:
        run.status = "failed"
        run.error = error
        run.ended_at = self._clock()
        _log.warning(
            "executor_run_failed",
            run_id=run.run_id,
            function_id=fn.id,
            attempts=run.attempts,
            error=error.get("message"),
        )
        self._emit_internal(
            FUNCTION_FAILED_EVENT,
            {
                "error": {
                    "name": error.get("name"),
                    "message": error.get("message"),
                    "stack": error.get("stack"),
                },
                "event": run.event,
                "function_id": fn.id,
                "run_id": run.run_id,
            },
        )

    def _emit_internal(self, name: str, data: dict[str, Any]) -> None:
        now = self._clock()
        ulid = _new_ulid(now)
        event = {"name": name, "data": data, "id": ulid, "ulid": ulid, "ts": int(now * 1000)}
        self.internal_events.append(event)
        self.on_event(event)

    # -- control --

    def cancel(self, run_id: str) -> bool:
        """Cancel a run that has not finished; False if it had (or is unknown)."""
        run = self._runs_by_id.get(run_id)
        if run is None or run.done:
            return False
        run.status = "cancelled"
        run.ended_at = self._clock()
        self._drop_queued(lambda item: item.run is run)
        _log.info("executor_run_cancelled", run_id=run_id, function_id=run.function_id)
        self._notify()
        return True

    def _drop_queued(self, drop: Callable[[_Item], bool]) -> None:
        self._ready = [e for e in self._ready if not drop(e[2])]
        self._delayed = [e for e in self._delayed if not drop(e[2])]
        heapq.heapify(self._ready)
        heapq.heapify(self._delayed)
        for key in list(self._parked):
            kept = [e for e in self._parked[key] if not drop(e[2])]
            heapq.heapify(kept)
            if kept:
                self._parked[key] = kept
            else:
                del self._parked[key]

    @property
    def queued_requests(self) -> int:
        """Requests waiting: ready, delayed (retries, sleeps, throttle) or parked on a full key."""
        parked = sum(len(heap) for heap in self._parked.values())
        return len(self._ready) + len(self._delayed) + parked

    async def stop(self) -> None:
        """Stop the loop, abandon requests in flight, close the HTTP session."""
        self._stopped = True
        tasks = list(self._tasks)
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loop_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._stopped = False

    def reset(self) -> None:
        """Forget runs, skips, windows and internal events (registrations stay)."""
        for run in self._runs:
            if not run.done:
                run.status = "cancelled"
        self._drop_queued(lambda item: True)
        self._runs.clear()
        self._runs_by_id.clear()
        self.skipped.clear()
        self.internal_events.clear()
        self._windows.clear()
        self._tats.clear()
        self._notify()

    # -- what tests read --

    @property
    def runs(self) -> Sequence[RunRecord]:
        """Every run, in the order they were scheduled (a live view)."""
        return self._runs

    def run(self, run_id: str) -> RunRecord:
        return self._runs_by_id[run_id]

    def runs_of(self, function_id: str, status: RunStatus | None = None) -> list[RunRecord]:
        """Runs of one function (``<app>-<fn>``), optionally in one status."""
        return [
            r
            for r in self._runs
            if r.function_id == function_id and (status is None or r.status == status)
        ]

    def runs_for_event(self, event_id: str) -> list[RunRecord]:
        """Runs started by the event with this ``id`` (or, for an event without one, its ULID)."""
        return [r for r in self._runs if r.event.get("id") == event_id]

    def summary(self) -> dict[str, Any]:
        statuses = Counter(r.status for r in self._runs)
        per_function: dict[str, Counter[str]] = {}
        for r in self._runs:
            per_function.setdefault(r.function_id, Counter())[r.status] += 1
        return {
            "functions": sorted(self._functions),
            "runs": dict(statuses),
            "runs_by_function": {k: dict(v) for k, v in per_function.items()},
            "skipped": dict(Counter(s.reason for s in self.skipped)),
            "queued_requests": self.queued_requests,
            "requests_in_flight": len(self._tasks),
            "retry_base_s": self.retry_base_s,
        }

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_runs(
        self,
        predicate: Callable[[Sequence[RunRecord]], bool],
        timeout: float = 10.0,
        what: str = "the runs",
    ) -> Sequence[RunRecord]:
        """Wait until ``predicate(runs)`` holds, re-checked on every change (no polling).

        Raises ``TimeoutError`` with what was awaited and every run's state.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self._runs):
            remaining = deadline - loop.time()
            if remaining <= 0:
                states = [
                    f"{r.function_id}:{r.status}(attempts={r.attempts}, error={r.error})"
                    for r in self._runs
                ]
                raise TimeoutError(
                    f"timed out after {timeout:g} s waiting for {what}; runs: {states}; "
                    f"skipped: {[s.reason for s in self.skipped]}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self._runs

    async def wait_for_status(
        self,
        function_id: str,
        status: RunStatus,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[RunRecord]:
        """Wait until ``count`` runs of ``function_id`` are in ``status``; returns them."""
        await self.wait_for_runs(
            lambda runs: len(self.runs_of(function_id, status)) >= count,
            timeout,
            f"{count} {status} runs of {function_id}",
        )
        return self.runs_of(function_id, status)


def run_filter(
    runs: Iterable[RunRecord],
    function_id: str | None,
    status: str | None,
    event_id: str | None = None,
) -> list[RunRecord]:
    """The runs of one function, status and/or event id (None: any)."""
    return [
        r
        for r in runs
        if (function_id is None or r.function_id == function_id)
        and (status is None or r.status == status)
        and (event_id is None or r.event.get("id") == event_id)
    ]
