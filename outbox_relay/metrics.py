"""Prometheus metrics of the relay (prefix ``outbox_relay_``, base units, bounded labels).

Metrics hang off a registry handed in, so several relays in one test process do not collide;
the ``relay`` command uses the process-wide default registry.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from typing import Final, TypeVar

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from outbox_relay import __version__

# prometheus_client adds a `*_created` series (the Unix time the series was created) beside
# every counter and histogram. Prometheus does not use it for rate() or increase(), and it
# doubled the series a scrape returns; no dashboard or alert of ours reads it. Process-wide:
# set here, where every metric of the package is defined, before any is exported.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

_LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
)
_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# Label names, or label names with every value they can take (bounded labels): each
# combination of known values is created at 0 with the metric, so the first increment is
# visible to rate() (a series that first appears at 1 shows no increase).
Labels = Sequence[str] | Mapping[str, Sequence[str]]
_M = TypeVar("_M", Counter, Histogram)


class _Declare:
    """Declares the metrics of one process: one name prefix, one registry, labels at 0."""

    def __init__(self, prefix: str, registry: CollectorRegistry | None) -> None:
        self.prefix = prefix
        self.registry = REGISTRY if registry is None else registry

    def counter(self, name: str, doc: str, labels: Labels = ()) -> Counter:
        return _at_zero(
            Counter(self.prefix + name, doc, list(labels), registry=self.registry), labels
        )

    def histogram(
        self, name: str, doc: str, buckets: Sequence[float], labels: Labels = ()
    ) -> Histogram:
        metric = Histogram(
            self.prefix + name, doc, list(labels), buckets=buckets, registry=self.registry
        )
        return _at_zero(metric, labels)

    def gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(self.prefix + name, doc, registry=self.registry)

    def info(self, name: str, doc: str, values: dict[str, str]) -> Info:
        metric = Info(self.prefix + name, doc, registry=self.registry)
        metric.info(values)
        return metric


def _at_zero(metric: _M, labels: Labels) -> _M:
    if isinstance(labels, Mapping):
        for combination in itertools.product(*labels.values()):
            metric.labels(*combination)
    return metric


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every value, in one pass: each bucket and the sum are
    incremented once (the relay observes a latency per event; per call that cost 2-4 µs).

    Only for a histogram without labels. Uses the client's bucket fields (``_upper_bounds``,
    ``_buckets``, ``_sum``): tests/unit/test_metrics_observe_many.py checks it against
    ``observe`` for the pinned prometheus_client.
    """
    if not values:
        return
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(sum(values))


class RelayMetrics:
    """Every metric the relay exports."""

    def __init__(self, registry: CollectorRegistry | None = None, replica_id: str = "") -> None:
        m = _Declare("outbox_relay_", registry)
        self.registry = m.registry
        self.events_published = m.counter(
            "events_published_total", "Events accepted by the Event API."
        )
        self.events_skipped = m.counter(
            "events_skipped_total",
            "Tracks not sent, by reason.",
            {"reason": ("missing_isrc", "invalid_isrc", "already_indexed", "no_tracks")},
        )
        self.publish_failures = m.counter(
            "publish_failures_total",
            "Event API requests that failed, by cause (connection, timeout, 4xx, 5xx, 429, auth, "
            "bad_response).",
            {"cause": ("connection", "timeout", "4xx", "5xx", "429", "auth", "bad_response")},
        )
        self.events_rejected = m.counter(
            "events_rejected_total", "Events Inngest refused; each is charged an attempt."
        )
        self.rows_dead = m.counter("rows_dead_total", "Rows that ran out of attempts.")
        self.rows_released = m.counter(
            "rows_released_total",
            "Claimed rows handed back unsent because of an outage (no attempt charged).",
        )
        self.leases_lost = m.counter(
            "leases_lost_total",
            "Rows whose outcome was not recorded because another replica had reclaimed them.",
        )
        self.batch_size = m.histogram("batch_size", "Rows claimed per batch.", _SIZE_BUCKETS)
        self.claims = m.counter(
            "claims_total",
            "Claims by scan: bounded (rows due since the last claim's floor) or full (every due "
            "row: the sweep before sleeping, and one claim a second).",
            {"scan": ("bounded", "full")},
        )
        self.batch_duration = m.histogram(
            "batch_duration_seconds",
            "From claim to recorded outcome, per batch.",
            _DURATION_BUCKETS,
        )
        self.outcome_wait = m.histogram(
            "outcome_wait_seconds",
            "How long a batch's request waited for the previous batch's outcome to be written "
            "(OUTBOX_ONE_UNRECORDED_BATCH), per batch; 0 when it was written already.",
            _DURATION_BUCKETS,
        )
        self.commit_to_accepted = m.histogram(
            "commit_to_accepted_seconds",
            "From the outbox row's insert to the Event API's 200, per event.",
            _LATENCY_BUCKETS,
        )
        self.qdrant_check_duration = m.histogram(
            "qdrant_check_duration_seconds",
            "Duration of the batched existence check.",
            _DURATION_BUCKETS,
        )
        self.qdrant_errors = m.counter(
            "qdrant_errors_total",
            "Existence checks that failed or timed out (the batch was published anyway).",
        )
        self.event_api_request_duration = m.histogram(
            "event_api_request_duration_seconds",
            "Event API requests, by status class (2xx, 4xx, 5xx, error).",
            _DURATION_BUCKETS,
            {"status_class": ("2xx", "4xx", "5xx", "error")},
        )
        self.request_budget_wait = m.counter(
            "request_budget_wait_seconds_total",
            "Seconds spent waiting for the client-side request budget, by the rule that made "
            "the relay wait: pace (its next slot) or window (the server's window was full; "
            "requests sent one at a time never wait for it).",
            {"rule": ("pace", "window")},
        )
        self.wakeups = m.counter(
            "wakeups_total",
            "Loop wake-ups by cause (notify, poll, backlog, reconnect, awake: claimed unprompted).",
            {"cause": ("notify", "poll", "backlog", "reconnect", "awake")},
        )
        self.step_downs = m.counter(
            "step_downs_total",
            "Sweeps before sleeping, by outcome: sleep (nothing left), rows (found rows), "
            "woken (a notification came while a writer that saw the relay awake was committing).",
            {"outcome": ("sleep", "rows", "woken")},
        )
        self.listen_connected = m.gauge("listen_connected", "1 while the LISTEN connection is up.")
        self.event_api_available = m.gauge(
            "event_api_available",
            "0 while the relay considers the Event API unavailable and waits for a probe.",
        )
        self.event_api_available.set(1)
        self.pending_rows = m.gauge(
            "pending_rows", "Rows waiting to be published (refreshed on an interval)."
        )
        self.dead_rows = m.gauge("dead_rows", "Dead letters waiting for an operator.")
        self.oldest_pending_age = m.gauge(
            "oldest_pending_age_seconds", "Age of the oldest pending row: the relay's lag."
        )
        self.table_dead_tuples = m.gauge(
            "table_dead_tuples",
            "Dead tuples in outbox.messages (bloat shows here before it hurts).",
        )
        self.retention_deleted = m.counter(
            "retention_deleted_total", "Finished rows deleted by retention."
        )
        # The catalog lookup (issue 13): ids resolved for tracks known by TIDAL id only.
        self.catalog_lookups = m.counter(
            "catalog_lookups_total",
            "Track ids the relay needed an ISRC for, by result: found (from the catalog), "
            "unknown (the catalog did not return it), cached (the cache answered), deferred "
            "(the catalog was unavailable or paused: the row waits, uncharged).",
            {"result": ("found", "unknown", "cached", "deferred")},
        )
        self.catalog_requests = m.counter(
            "catalog_requests_total",
            "Catalog requests (token and /tracks), by result (ok, 429, 5xx, 4xx, 401, connection, "
            "timeout, bad_response).",
            {
                "endpoint": ("token", "tracks"),
                "result": (
                    "ok",
                    "429",
                    "5xx",
                    "4xx",
                    "401",
                    "connection",
                    "timeout",
                    "bad_response",
                ),
            },
        )
        self.catalog_ids_per_request = m.histogram(
            "catalog_ids_per_request",
            "Track ids asked per /tracks request (at most 20).",
            (1, 2, 5, 10, 15, 20),
        )
        self.catalog_request_duration = m.histogram(
            "catalog_request_duration_seconds",
            "Duration of catalog requests (/tracks and the token), including retries of none.",
            _DURATION_BUCKETS,
        )
        self.catalog_cache_hits = m.counter(
            "catalog_cache_hits_total",
            "Ids answered by outbox.catalog_tracks without a request, by kind (found, unknown).",
            {"kind": ("found", "unknown")},
        )
        self.catalog_paused = m.gauge(
            "catalog_paused",
            "1 while catalog lookups are paused after an outage or refused credentials "
            "(rows needing a lookup wait; the others keep flowing).",
        )
        self.ready = m.gauge(
            "ready", "1 when /readyz would answer 200: database reachable and LISTEN connected."
        )
        self.info = m.info(
            "build", "Version and replica id.", {"version": __version__, "replica_id": replica_id}
        )


# Outcomes of a scan run, of an album and of an inbound file (bounded label values).
SCAN_RUN_RESULTS = ("success", "partial", "failed", "skipped")
SCAN_ALBUM_RESULTS = ("staged", "failed", "would_stage", "recovered")
SCAN_FILE_RESULTS = (
    "staged",
    "would_stage",
    "waiting",
    "not_audio",
    "corrupt",
    "unreadable",
    "unsupported_format",
    "missing_tags",
    "album_failed",
)
_SCAN_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class ScanMetrics:
    """Every metric the inbound scan (``outbox-relay scan``) exports, prefix ``outbox_relay_scan_``.

    ``schedule_period_seconds`` and ``enabled`` are there for the overdue alert: no success for
    two periods while enabled (prometheus/alerts.yml, OutboxRelayScanOverdue).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        m = _Declare("outbox_relay_scan_", registry)
        self.registry = m.registry
        self.runs = m.counter("runs_total", "Scan runs, by result.", {"result": SCAN_RUN_RESULTS})
        self.albums = m.counter(
            "albums_total",
            "Albums handled by scan runs, by result.",
            {"result": SCAN_ALBUM_RESULTS},
        )
        self.files = m.counter(
            "files_total",
            "Inbound files seen by scan runs, by outcome.",
            {"result": SCAN_FILE_RESULTS},
        )
        self.duration = m.histogram(
            "duration_seconds",
            "Duration of a scan run (skipped ticks excluded).",
            _SCAN_DURATION_BUCKETS,
        )
        self.last_success = m.gauge(
            "last_success_timestamp_seconds",
            "Unix time a scan run (of any process) last succeeded; the process start if none has.",
        )
        self.enabled = m.gauge("enabled", "1 while staging_scan.enabled is true.")
        self.schedule_period = m.gauge(
            "schedule_period_seconds",
            "Seconds between the schedule's next two runs (staging_scan.schedule).",
        )
        self.running = m.gauge("running", "1 while this process runs a scan.")


# A step: the relay's durations from 1 ms, up to 30 s for a slow embedding or upsert.
_STEP_BUCKETS = (*_DURATION_BUCKETS[1:], 30.0)

# The worker's functions and steps (label values are bounded: these and nothing else).
WORKER_FUNCTIONS = ("track-ingestion", "track-ingestion-batch-reprocess")


class WorkerMetrics:
    """Every metric the ingestion worker exports (prefix ``outbox_relay_worker_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        m = _Declare("outbox_relay_worker_", registry)
        self.registry = m.registry
        self.runs_started = m.counter(
            "runs_started_total",
            "Runs whose first step executed (once per run, whatever its retries).",
            {"function": WORKER_FUNCTIONS},
        )
        self.runs_completed = m.counter(
            "runs_completed_total",
            "Runs that returned their result.",
            {"function": WORKER_FUNCTIONS},
        )
        self.runs_failed = m.counter(
            "runs_failed_total",
            "Runs that failed for good, by reason (retries_exhausted, malformed_event).",
            {"function": WORKER_FUNCTIONS, "reason": ("retries_exhausted", "malformed_event")},
        )
        self.step_duration = m.histogram(
            "step_duration_seconds",
            "Duration of each executed step (memoised replays are not counted), by outcome.",
            _STEP_BUCKETS,
            ("function", "step", "outcome"),
        )
        self.step_errors = m.counter(
            "step_errors_total",
            "Step executions that raised (Inngest retries them), by step.",
            ("function", "step"),
        )
        self.ingestion_duration = m.histogram(
            "ingestion_duration_seconds",
            "From a run's first step to its point recorded as indexed.",
            _LATENCY_BUCKETS,
        )
        self.reprocess_unknown = m.counter(
            "reprocess_unknown_isrcs_total",
            "ISRCs a batch re-process named that the library does not know (or are invalid).",
        )
        self.info = m.info("build", "Version of the worker.", {"version": __version__})


#: The write API's routes, as its metrics label them (``unmatched``: no route, a 404 or 405).
API_ROUTES: Final = (
    "/v1/library/tracks",
    "/v1/library/albums",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/metrics",
    "unmatched",
)


class ApiMetrics:
    """Every metric the library write API exports (prefix ``outbox_relay_api_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        m = _Declare("outbox_relay_api_", registry)
        self.registry = m.registry
        self.requests = m.counter(
            "requests_total",
            "Requests answered, by route and status class (2xx, 4xx, 5xx; a 503 is the "
            "database down or not migrated).",
            {"route": API_ROUTES, "status_class": ("2xx", "4xx", "5xx")},
        )
        self.request_duration = m.histogram(
            "request_duration_seconds",
            "Time to answer a request, by route.",
            _DURATION_BUCKETS,
            {"route": API_ROUTES},
        )
        self.info = m.info("build", "Version of the write API.", {"version": __version__})
