"""Prometheus metrics of the relay (prefix ``outbox_relay_``, base units, bounded labels).

Metrics hang off a registry handed in, so several relays in one test process do not collide;
the ``relay`` command uses the process-wide default registry.
"""

from __future__ import annotations

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


class RelayMetrics:
    """Every metric the relay exports."""

    def __init__(self, registry: CollectorRegistry | None = None, replica_id: str = "") -> None:
        reg = REGISTRY if registry is None else registry
        self.registry = reg
        p = "outbox_relay_"
        self.events_published = Counter(
            p + "events_published_total", "Events accepted by the Event API.", registry=reg
        )
        self.events_skipped = Counter(
            p + "events_skipped_total", "Tracks not sent, by reason.", ["reason"], registry=reg
        )
        self.publish_failures = Counter(
            p + "publish_failures_total",
            "Event API requests that failed, by cause (connection, timeout, 4xx, 5xx, 429, auth, "
            "bad_response).",
            ["cause"],
            registry=reg,
        )
        self.events_rejected = Counter(
            p + "events_rejected_total",
            "Events Inngest refused; each is charged an attempt.",
            registry=reg,
        )
        self.rows_dead = Counter(
            p + "rows_dead_total", "Rows that ran out of attempts.", registry=reg
        )
        self.rows_released = Counter(
            p + "rows_released_total",
            "Claimed rows handed back unsent because of an outage (no attempt charged).",
            registry=reg,
        )
        self.leases_lost = Counter(
            p + "leases_lost_total",
            "Rows whose outcome was not recorded because another replica had reclaimed them.",
            registry=reg,
        )
        self.batch_size = Histogram(
            p + "batch_size", "Rows claimed per batch.", buckets=_SIZE_BUCKETS, registry=reg
        )
        self.batch_duration = Histogram(
            p + "batch_duration_seconds",
            "From claim to recorded outcome, per batch.",
            buckets=_DURATION_BUCKETS,
            registry=reg,
        )
        self.commit_to_accepted = Histogram(
            p + "commit_to_accepted_seconds",
            "From the outbox row's insert to the Event API's 200, per event.",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.qdrant_check_duration = Histogram(
            p + "qdrant_check_duration_seconds",
            "Duration of the batched existence check.",
            buckets=_DURATION_BUCKETS,
            registry=reg,
        )
        self.qdrant_errors = Counter(
            p + "qdrant_errors_total",
            "Existence checks that failed or timed out (the batch was published anyway).",
            registry=reg,
        )
        self.event_api_request_duration = Histogram(
            p + "event_api_request_duration_seconds",
            "Event API requests, by status class (2xx, 4xx, 5xx, error).",
            ["status_class"],
            buckets=_DURATION_BUCKETS,
            registry=reg,
        )
        self.wakeups = Counter(
            p + "wakeups_total",
            "Loop wake-ups by cause (notify, poll, backlog, reconnect).",
            ["cause"],
            registry=reg,
        )
        self.listen_connected = Gauge(
            p + "listen_connected",
            "1 while the LISTEN connection is up.",
            registry=reg,
        )
        self.event_api_available = Gauge(
            p + "event_api_available",
            "0 while the relay considers the Event API unavailable and waits for a probe.",
            registry=reg,
        )
        self.event_api_available.set(1)
        self.pending_rows = Gauge(
            p + "pending_rows",
            "Rows waiting to be published (refreshed on an interval).",
            registry=reg,
        )
        self.dead_rows = Gauge(
            p + "dead_rows", "Dead letters waiting for an operator.", registry=reg
        )
        self.oldest_pending_age = Gauge(
            p + "oldest_pending_age_seconds",
            "Age of the oldest pending row: the relay's lag.",
            registry=reg,
        )
        self.table_dead_tuples = Gauge(
            p + "table_dead_tuples",
            "Dead tuples in outbox.messages (bloat shows here before it hurts).",
            registry=reg,
        )
        self.retention_deleted = Counter(
            p + "retention_deleted_total",
            "Finished rows deleted by retention.",
            registry=reg,
        )
        self.ready = Gauge(
            p + "ready",
            "1 when /readyz would answer 200: database reachable and LISTEN connected.",
            registry=reg,
        )
        self.info = Info(p + "build", "Version and replica id.", registry=reg)
        self.info.info({"version": __version__, "replica_id": replica_id})
        # Every known label value starts at 0, so the first increment is visible to rate().
        for reason in ("missing_isrc", "invalid_isrc", "already_indexed", "no_tracks"):
            self.events_skipped.labels(reason=reason)
        for cause in ("connection", "timeout", "4xx", "5xx", "429", "auth", "bad_response"):
            self.publish_failures.labels(cause=cause)
        for cause in ("notify", "poll", "backlog", "reconnect"):
            self.wakeups.labels(cause=cause)
        for status_class in ("2xx", "4xx", "5xx", "error"):
            self.event_api_request_duration.labels(status_class=status_class)


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
        reg = REGISTRY if registry is None else registry
        self.registry = reg
        p = "outbox_relay_scan_"
        self.runs = Counter(p + "runs_total", "Scan runs, by result.", ["result"], registry=reg)
        self.albums = Counter(
            p + "albums_total", "Albums handled by scan runs, by result.", ["result"], registry=reg
        )
        self.files = Counter(
            p + "files_total", "Inbound files seen by scan runs, by outcome.", ["result"],
            registry=reg,
        )  # fmt: skip
        self.duration = Histogram(
            p + "duration_seconds",
            "Duration of a scan run (skipped ticks excluded).",
            buckets=_SCAN_DURATION_BUCKETS,
            registry=reg,
        )
        self.last_success = Gauge(
            p + "last_success_timestamp_seconds",
            "Unix time a scan run (of any process) last succeeded; the process start if none has.",
            registry=reg,
        )
        self.enabled = Gauge(p + "enabled", "1 while staging_scan.enabled is true.", registry=reg)
        self.schedule_period = Gauge(
            p + "schedule_period_seconds",
            "Seconds between the schedule's next two runs (staging_scan.schedule).",
            registry=reg,
        )
        self.running = Gauge(p + "running", "1 while this process runs a scan.", registry=reg)
        for result in SCAN_RUN_RESULTS:
            self.runs.labels(result=result)
        for result in SCAN_ALBUM_RESULTS:
            self.albums.labels(result=result)
        for result in SCAN_FILE_RESULTS:
            self.files.labels(result=result)


_STEP_BUCKETS = (
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
    30.0,
)

# The worker's functions and steps (label values are bounded: these and nothing else).
WORKER_FUNCTIONS = ("track-ingestion", "track-ingestion-batch-reprocess")


class WorkerMetrics:
    """Every metric the ingestion worker exports (prefix ``outbox_relay_worker_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = REGISTRY if registry is None else registry
        self.registry = reg
        p = "outbox_relay_worker_"
        self.runs_started = Counter(
            p + "runs_started_total",
            "Runs whose first step executed (once per run, whatever its retries).",
            ["function"],
            registry=reg,
        )
        self.runs_completed = Counter(
            p + "runs_completed_total",
            "Runs that returned their result.",
            ["function"],
            registry=reg,
        )
        self.runs_failed = Counter(
            p + "runs_failed_total",
            "Runs that failed for good, by reason (retries_exhausted, malformed_event).",
            ["function", "reason"],
            registry=reg,
        )
        self.step_duration = Histogram(
            p + "step_duration_seconds",
            "Duration of each executed step (memoised replays are not counted), by outcome.",
            ["function", "step", "outcome"],
            buckets=_STEP_BUCKETS,
            registry=reg,
        )
        self.step_errors = Counter(
            p + "step_errors_total",
            "Step executions that raised (Inngest retries them), by step.",
            ["function", "step"],
            registry=reg,
        )
        self.ingestion_duration = Histogram(
            p + "ingestion_duration_seconds",
            "From a run's first step to its point recorded as indexed.",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.reprocess_unknown = Counter(
            p + "reprocess_unknown_isrcs_total",
            "ISRCs a batch re-process named that the library does not know (or are invalid).",
            registry=reg,
        )
        self.info = Info(p + "build", "Version of the worker.", registry=reg)
        self.info.info({"version": __version__})
        for function in WORKER_FUNCTIONS:
            self.runs_started.labels(function=function)
            self.runs_completed.labels(function=function)
            for reason in ("retries_exhausted", "malformed_event"):
                self.runs_failed.labels(function=function, reason=reason)
