"""Fault switches: the ways the stand-in can misbehave on purpose, and their JSON form."""

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

import orjson

from outbox_relay.testing.inngest.rules import (
    CLOUD_RATE_LIMIT_REQUESTS,
    CLOUD_RATE_LIMIT_WINDOW_S,
    DEFAULT_REJECT_MESSAGE,
    Event,
)

# --- Faults -------------------------------------------------------------------------------------

DropStage: TypeAlias = Literal["before_body", "after_body", "after_record"]


@dataclass(frozen=True, slots=True)
class Refuse:
    """Close the listening socket (connects get ECONNREFUSED) and abort open connections."""

    kind: ClassVar[str] = "refuse"


@dataclass(frozen=True, slots=True)
class Drop:
    """Abort the connection without an answer.

    ``before_body``: as soon as the request line and headers are in; ``after_body``: after reading
    the body; ``after_record``: after the events were accepted and recorded (the answer is lost).
    """

    kind: ClassVar[str] = "drop"
    stage: DropStage = "after_body"


@dataclass(frozen=True, slots=True)
class Status5xx:
    """Answer a 5xx with a JSON body ``{"error", "status"}`` or a proxy's HTML page.

    With ``after_record`` the events are accepted and recorded first (a gateway error after Inngest
    took them).
    """

    kind: ClassVar[str] = "status_5xx"
    status: int = 502
    body: Literal["json", "html"] = "json"
    message: str | None = None
    after_record: bool = False


@dataclass(frozen=True, slots=True)
class Status429:
    """Answer 429 with ``Retry-After: <seconds>``."""

    kind: ClassVar[str] = "status_429"
    retry_after: int = 1


@dataclass(frozen=True, slots=True)
class Hang:
    """Accept the request and never answer until released (clear the fault or ``release_hung()``).

    A released request is answered normally if its client is still waiting; if the client has gone,
    it is discarded without recording anything (outcome ``abandoned``). On ``stop()`` it is dropped.
    """

    kind: ClassVar[str] = "hang"


@dataclass(frozen=True, slots=True)
class Reject:
    """Reject chosen events with a 400, in order, exactly as Inngest rejects a bad event.

    An event matches by its ``id``, by ``data[data_field]`` being in ``data_values``, or by
    ``predicate`` (called with the event object as sent). Events before it are accepted.
    """

    kind: ClassVar[str] = "reject"
    ids: frozenset[str] = frozenset()
    data_field: str | None = None
    data_values: frozenset[Any] = frozenset()
    predicate: Callable[[Mapping[str, Any]], bool] | None = None
    message: str | None = None
    """The 400's error; default ``DEFAULT_REJECT_MESSAGE`` with the event's size."""

    def matches(self, item: Mapping[str, Any], event: Event) -> bool:
        """Whether this event is to be rejected."""
        if event.id is not None and event.id in self.ids:
            return True
        if self.data_field is not None:
            value = event.data.get(self.data_field)
            with contextlib.suppress(TypeError):  # an unhashable value is in no set
                if value in self.data_values:
                    return True
        return self.predicate is not None and self.predicate(item)

    def message_for(self, item: Mapping[str, Any]) -> str:
        """The error text for a rejected event."""
        if self.message is not None:
            return self.message
        return DEFAULT_REJECT_MESSAGE % len(orjson.dumps(item))


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Answer 429 past ``limit`` requests per ``window_s`` seconds per key (sliding window)."""

    kind: ClassVar[str] = "rate_limit"
    limit: int = CLOUD_RATE_LIMIT_REQUESTS
    window_s: float = CLOUD_RATE_LIMIT_WINDOW_S


@dataclass(frozen=True, slots=True)
class Latency:
    """Delay every request by ``seconds`` before anything else happens."""

    kind: ClassVar[str] = "latency"
    seconds: float = 0.1


Fault: TypeAlias = Refuse | Drop | Status5xx | Status429 | Hang | Reject | RateLimit | Latency
FaultKind: TypeAlias = Literal[
    "refuse", "drop", "status_5xx", "status_429", "hang", "reject", "rate_limit", "latency"
]
FAULT_TYPES: dict[str, type[Fault]] = {
    cls.kind: cls for cls in (Refuse, Drop, Status5xx, Status429, Hang, Reject, RateLimit, Latency)
}


def fault_from_json(spec: Mapping[str, Any]) -> tuple[Fault, int | None]:
    """Build a fault and its ``times`` from the control surface's JSON.

    ``{"kind": "status_5xx", "status": 503, "body": "html", "times": 2}``; the other keys are the
    fault's fields (``Reject`` takes ``ids``/``data_values`` as lists; no predicate over HTTP).
    Raises ``ValueError`` with a message naming the problem.
    """
    params = dict(spec)
    kind = params.pop("kind", None)
    times = params.pop("times", None)
    cls = FAULT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_TYPES)}")
    if times is not None and (type(times) is not int or times < 1):
        raise ValueError("times must be a positive integer or null")
    if cls is Reject:
        params.pop("predicate", None)
        for name in ("ids", "data_values"):
            if name in params:
                params[name] = frozenset(params[name])
    try:
        fault = cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for fault {kind!r}: {exc}") from exc
    check_fault(fault)
    return fault, times


def check_fault(fault: Fault) -> None:
    if isinstance(fault, Drop) and fault.stage not in ("before_body", "after_body", "after_record"):
        raise ValueError(
            f"drop stage must be before_body, after_body or after_record, not {fault.stage!r}"
        )
    if isinstance(fault, Status5xx):
        if not 500 <= fault.status <= 599:
            raise ValueError(f"status_5xx needs a status from 500 to 599, not {fault.status}")
        if fault.body not in ("json", "html"):
            raise ValueError(f"status_5xx body must be json or html, not {fault.body!r}")
    if isinstance(fault, Status429) and fault.retry_after < 0:
        raise ValueError("retry_after must be >= 0")
    if isinstance(fault, RateLimit) and (fault.limit < 1 or fault.window_s <= 0):
        raise ValueError("rate_limit needs limit >= 1 and window_s > 0")
    if isinstance(fault, Latency) and fault.seconds < 0:
        raise ValueError("latency seconds must be >= 0")


def fault_json(fault: Fault) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": fault.kind}
    for name in fault.__dataclass_fields__:
        value = getattr(fault, name)
        if name == "predicate":
            out[name] = None if value is None else getattr(value, "__name__", repr(value))
        elif isinstance(value, frozenset):
            out[name] = sorted(value, key=repr)
        else:
            out[name] = value
    return out


FaultT = TypeVar("FaultT", Refuse, Drop, Status5xx, Status429, Hang, Reject, RateLimit, Latency)


@dataclass(slots=True)
class ActiveFault:
    fault: Fault
    remaining: int | None
    fired: int = 0
