"""The Inngest stand-in: the Event API (``POST /e/{key}``) with fault switches, and the executor
that runs SDK functions (test equipment; ``README.md`` says where it differs from Inngest).

Modules by concern: :mod:`.wire` (bytes as Go reads and writes them, ULIDs), :mod:`.rules` (limits
and event validation), :mod:`.faults` (the fault switches), :mod:`.server` (the aiohttp server, its
records and its control surface), :mod:`.executor` (sync, runs, retries, flow control) and
:mod:`.cel` (the expressions it evaluates). ``python -m outbox_relay.testing.inngest`` runs it as a
process.
"""

from outbox_relay.testing.inngest.executor import (
    Executor,
    RunRecord,
    SkippedRun,
    SyncError,
)
from outbox_relay.testing.inngest.faults import (
    Drop,
    Fault,
    FaultKind,
    Hang,
    Latency,
    RateLimit,
    Refuse,
    Reject,
    Status5xx,
    Status429,
    fault_from_json,
)
from outbox_relay.testing.inngest.rules import (
    ABSOLUTE_MAX_EVENT_SIZE,
    CLOUD_RATE_LIMIT_REQUESTS,
    CLOUD_RATE_LIMIT_WINDOW_S,
    DEFAULT_REJECT_MESSAGE,
    MAX_EVENTS,
    RUN_IDEMPOTENCY_PERIOD_S,
    SEED_HEADER,
)
from outbox_relay.testing.inngest.server import (
    EventApiStandIn,
    RecordedEvent,
    RequestRecord,
    Run,
    main,
    serve,
)
from outbox_relay.testing.inngest.wire import (
    derive_event_ids,
    parse_event_id_seed,
)

__all__ = [
    "ABSOLUTE_MAX_EVENT_SIZE",
    "CLOUD_RATE_LIMIT_REQUESTS",
    "CLOUD_RATE_LIMIT_WINDOW_S",
    "DEFAULT_REJECT_MESSAGE",
    "MAX_EVENTS",
    "RUN_IDEMPOTENCY_PERIOD_S",
    "SEED_HEADER",
    "Drop",
    "EventApiStandIn",
    "Executor",
    "Fault",
    "FaultKind",
    "Hang",
    "Latency",
    "RateLimit",
    "RecordedEvent",
    "Refuse",
    "Reject",
    "RequestRecord",
    "Run",
    "RunRecord",
    "SkippedRun",
    "Status5xx",
    "Status429",
    "SyncError",
    "derive_event_ids",
    "fault_from_json",
    "main",
    "parse_event_id_seed",
    "serve",
]
