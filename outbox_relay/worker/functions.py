"""The ingestion worker's Inngest functions (DESIGN.md, "Ingestion worker").

``track-ingestion`` on ``track/ingestion.requested``: steps ``record-indexing``,
``build-document``, ``embed-document``, ``upsert-point``, ``record-indexed`` and
``emit-completion`` (``track/ingestion.completed``). A malformed event is recorded in the
step ``record-rejected`` and fails without retry (``NonRetriableError``). When a run fails for
good, its failure handler (``track-ingestion-failure``, on ``inngest/function.failed``) runs the
steps ``record-failed`` and ``emit-failure`` (``track/ingestion.failed``).

``track-ingestion-batch-reprocess`` on ``track/ingestion.batch-reprocess`` ``{isrcs}``: step
``look-up-tracks``, then ``request-reingestion-<n>`` sending up to 100 forced
``track/ingestion.requested`` events each.

Step names are part of the run's durable state: Inngest memoises each step's result under a
hash of its name, so **renaming a step breaks the runs in flight** (a renamed step runs again,
a removed one's memo is an unknown step). Add new names; never rename or reuse old ones.

The flow-control settings, exactly as registered with Inngest (registered function ids are
``outbox-relay-worker-<fn id>``):

- idempotency (one run per key per 24 h, per function)::

      has(event.data.force) && event.data.force == true ? event.id : event.data.isrc

  A plain request is keyed by its ISRC, so the same track is ingested once however often it is
  added; a forced one (``force: true``) by its event id, which is unique per forced request
  (``track-ingestion-<ISRC>-<outbox row id>``, or ``-reprocess-<run id>`` from a batch
  re-process), so it runs again.
- concurrency: ``[{"key": "event.data.isrc", "limit": 1}, {"limit": OUTBOX_WORKER_CONCURRENCY}]``
  (one run per ISRC at a time, at most 10 runs of the function at a time by default).
- throttle: ``{"limit": OUTBOX_WORKER_THROTTLE_LIMIT, "period": OUTBOX_WORKER_THROTTLE_PERIOD}``
  (10 a minute by default; limit 0 registers no throttle).
- priority: ``has(event.data.priority) ? event.data.priority : 0`` (seconds, -600..600).
- retries: ``OUTBOX_WORKER_RETRIES`` (5 by default: 6 attempts a step).

The batch re-process function has retries only; its forced requests go through
``track-ingestion``'s own limits.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import inngest
import structlog

from outbox_relay.errors import MalformedEventError
from outbox_relay.worker.events import (
    BATCH_REPROCESS,
    COMPLETED,
    FAILED,
    REQUESTED,
    parse_batch_reprocess,
    parse_requested,
    readable_isrc,
)
from outbox_relay.worker.steps import IngestionSteps, WorkerParts, split_isrcs
from outbox_relay.worker.store import RunRef

log = structlog.get_logger("outbox_relay.worker")

APP_ID: Final = "outbox-relay-worker"
TRACK_INGESTION: Final = "track-ingestion"
BATCH_REPROCESS_FN: Final = "track-ingestion-batch-reprocess"

ISRC_KEY: Final = "event.data.isrc"
IDEMPOTENCY: Final = (
    "has(event.data.force) && event.data.force == true ? event.id : event.data.isrc"
)
PRIORITY: Final = "has(event.data.priority) ? event.data.priority : 0"

# Forced requests a batch re-process sends per step.
SEND_CHUNK: Final = 100


@dataclass(frozen=True, slots=True)
class FunctionSettings:
    """Retries and flow control of ``track-ingestion``; defaults are the seed system's."""

    retries: int = 5
    concurrency: int = 10
    throttle_limit: int = 10
    throttle_period_s: int = 60

    def __post_init__(self) -> None:
        # Checked here, not when Inngest syncs: the SDK only validates at serialisation time.
        if not 0 <= self.retries <= 20:
            raise ValueError("retries must be between 0 and 20 (Inngest's maximum)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.throttle_limit < 0:
            raise ValueError("throttle limit must be 0 (no throttle) or more")
        if self.throttle_period_s < 1:
            raise ValueError("throttle period must be at least 1 second")


def _mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (failure events are not validated)."""
    return value if isinstance(value, Mapping) else {}


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def create_functions(
    client: inngest.Inngest, parts: WorkerParts, settings: FunctionSettings | None = None
) -> list[inngest.Function[Any]]:
    """The worker's functions, bound to ``client`` and ``parts``, ready for a serve adapter."""
    settings = settings or FunctionSettings()
    steps = IngestionSteps(parts)
    metrics = parts.metrics

    async def timed_step(
        ctx: inngest.Context,
        function: str,
        name: str,
        body: Any,
        *args: Any,
        run: RunRef | None = None,
    ) -> Any:
        """``step.run(name, ...)`` that measures each real execution and records its errors."""

        async def execute() -> Any:
            began = time.perf_counter()
            try:
                result = await body(*args)
            except Exception as exc:
                metrics.step_duration.labels(function, name, "error").observe(
                    time.perf_counter() - began
                )
                metrics.step_errors.labels(function, name).inc()
                error = _error_text(exc)
                log.warning(
                    "ingestion_step_error",
                    isrc=run.isrc if run else None,
                    step=name,
                    attempt=ctx.attempt + 1,
                    result="error",
                    error=error,
                    run_id=ctx.run_id,
                )
                if run is not None:
                    await steps.record_attempt_error(run, ctx.attempt + 1, f"{name}: {error}")
                raise
            metrics.step_duration.labels(function, name, "ok").observe(time.perf_counter() - began)
            if run is not None and ctx.attempt > 0:
                await steps.record_retry_success(run, ctx.attempt + 1)
            return result

        return await ctx.step.run(name, execute)

    async def track_ingestion_failed(ctx: inngest.Context) -> dict[str, Any]:
        """Failure handler: records ``failed`` and sends ``track/ingestion.failed``."""
        data = ctx.event.data
        failure = _mapping(data.get("error"))
        error_name = str(failure.get("name") or "Error")
        error = f"{error_name}: {failure.get('message') or 'unknown error'}"
        original = _mapping(data.get("event"))
        original_data = _mapping(original.get("data"))
        run_id = str(data.get("run_id") or "")
        isrc = readable_isrc(original_data)
        malformed = error_name == "NonRetriableError"
        reason = "malformed_event" if malformed else "retries_exhausted"
        recorded = False
        if isrc is not None:
            run = RunRef(
                isrc=isrc,
                run_id=run_id,
                event_id=str(original.get("id") or "") or None,
                forced=original_data.get("force") is True,
            )
            attempts = 1 if malformed else settings.retries + 1
            outcome = await timed_step(
                ctx, TRACK_INGESTION, "record-failed", steps.record_failed, run, attempts, error
            )
            recorded = bool(outcome["recorded"])
        log.error(
            "ingestion_failed",
            isrc=isrc,
            trackTitle=original_data.get("title"),
            result="error",
            reason=reason,
            error=error,
            run_id=run_id,
            recorded=recorded,
        )
        sent: list[str] = []
        if isrc is not None:
            sent = await ctx.step.send_event(
                "emit-failure",
                [
                    inngest.Event(
                        name=FAILED,
                        id=f"track-ingestion-failed-{run_id}",
                        data={"isrc": isrc, "error": error, "runId": run_id},
                    )
                ],
            )
        metrics.runs_failed.labels(function=TRACK_INGESTION, reason=reason).inc()
        return {"isrc": isrc, "recorded": recorded, "reason": reason, "sent": sent}

    async def reject(ctx: inngest.Context, exc: MalformedEventError) -> None:
        """Records a malformed event's failure (status row when the ISRC is readable) and logs."""
        isrc = readable_isrc(ctx.event.data)

        async def record() -> dict[str, Any]:
            log.error(
                "validation_error",
                isrc=isrc,
                result="error",
                reason="malformed_event",
                error=str(exc),
                run_id=ctx.run_id,
                event_id=ctx.event.id,
            )
            if isrc is None:
                return {"recorded": False}
            run = RunRef(isrc=isrc, run_id=ctx.run_id, event_id=ctx.event.id or None, forced=False)
            return await steps.record_failed(run, ctx.attempt + 1, f"MalformedEventError: {exc}")

        await timed_step(ctx, TRACK_INGESTION, "record-rejected", record)

    @client.create_function(
        fn_id=TRACK_INGESTION,
        name="Track ingestion",
        trigger=inngest.TriggerEvent(event=REQUESTED),
        retries=settings.retries,
        concurrency=[
            inngest.Concurrency(limit=1, key=ISRC_KEY),
            inngest.Concurrency(limit=settings.concurrency),
        ],
        throttle=(
            inngest.Throttle(
                limit=settings.throttle_limit,
                period=datetime.timedelta(seconds=settings.throttle_period_s),
            )
            if settings.throttle_limit
            else None
        ),
        idempotency=IDEMPOTENCY,
        priority=inngest.Priority(run=PRIORITY),
        on_failure=track_ingestion_failed,
    )
    async def track_ingestion(ctx: inngest.Context) -> dict[str, Any]:
        """Indexes one track: status, document, embedding, point, status, completion event."""
        try:
            request = parse_requested(ctx.event.data)
        except MalformedEventError as exc:
            await reject(ctx, exc)
            raise inngest.NonRetriableError(f"malformed {REQUESTED} event: {exc}") from None

        run = RunRef(
            isrc=request.isrc,
            run_id=ctx.run_id,
            event_id=ctx.event.id or None,
            forced=request.force,
        )

        def attempt() -> int:
            return ctx.attempt + 1

        # Step names below are durable state: never rename one (see the module docstring).
        started = await timed_step(
            ctx,
            TRACK_INGESTION,
            "record-indexing",
            lambda: steps.record_indexing(run, attempt(), request),
            run=run,
        )
        document = await timed_step(
            ctx, TRACK_INGESTION, "build-document", steps.build_document, request, run=run
        )
        vector = await timed_step(
            ctx, TRACK_INGESTION, "embed-document", steps.embed, document, run=run
        )
        point = await timed_step(
            ctx, TRACK_INGESTION, "upsert-point", steps.upsert, document, vector, run=run
        )
        indexed = await timed_step(
            ctx,
            TRACK_INGESTION,
            "record-indexed",
            lambda: steps.record_indexed(run, attempt(), request.title, started["startedAtMs"]),
            run=run,
        )
        result = {
            "pointId": point["pointId"],
            "collection": point["collection"],
            "embedder": parts.embedder.name,
            "embeddingDimensions": len(vector),
            "forced": request.force,
            "hasArtwork": request.artwork_url is not None,
        }
        completion = {
            "isrc": request.isrc,
            "runId": ctx.run_id,
            "completedAt": indexed["indexedAt"],
            "durationMs": indexed["durationMs"],
            "result": result,
        }
        await ctx.step.send_event(
            "emit-completion",
            [
                inngest.Event(
                    name=COMPLETED, id=f"track-ingestion-completed-{ctx.run_id}", data=completion
                )
            ],
        )
        # Reached once per run: every step above is memoised by now.
        metrics.runs_completed.labels(function=TRACK_INGESTION).inc()
        return completion

    @client.create_function(
        fn_id=BATCH_REPROCESS_FN,
        name="Track ingestion: batch re-process",
        trigger=inngest.TriggerEvent(event=BATCH_REPROCESS),
        retries=settings.retries,
    )
    async def batch_reprocess(ctx: inngest.Context) -> dict[str, Any]:
        """One forced ``track/ingestion.requested`` per ISRC the library knows, in steps."""
        try:
            request = parse_batch_reprocess(ctx.event.data)
        except MalformedEventError as exc:
            log.error(
                "validation_error",
                result="error",
                reason="malformed_event",
                error=str(exc),
                run_id=ctx.run_id,
                event_id=ctx.event.id,
            )
            raise inngest.NonRetriableError(f"malformed {BATCH_REPROCESS} event: {exc}") from None
        valid, invalid = split_isrcs(request.isrcs)

        async def look_up() -> dict[str, Any]:
            found: dict[str, Any] = await steps.look_up_library(valid)
            metrics.runs_started.labels(function=BATCH_REPROCESS_FN).inc()
            # Library rows passed the same checks as events, but hold them to the model anyway:
            # a row that would be a malformed event is reported, not sent.
            usable, rejected = [], list(invalid)
            for track in found["tracks"]:
                try:
                    parse_requested(_forced_request(track))
                except MalformedEventError:
                    rejected.append(track["isrc"])
                else:
                    usable.append(track)
            found["tracks"] = usable
            if found["unknown"] or rejected:
                metrics.reprocess_unknown.inc(len(found["unknown"]) + len(rejected))
                log.warning(
                    "reprocess_unknown_isrcs",
                    result="skipped",
                    reason="unknown_isrc",
                    unknown=found["unknown"],
                    invalid=rejected,
                    run_id=ctx.run_id,
                )
            found["invalid"] = rejected
            return found

        found = await timed_step(ctx, BATCH_REPROCESS_FN, "look-up-tracks", look_up)
        tracks: list[dict[str, Any]] = found["tracks"]
        sent = 0
        for index in range(0, len(tracks), SEND_CHUNK):
            chunk = tracks[index : index + SEND_CHUNK]
            events = [
                inngest.Event(
                    name=REQUESTED,
                    # Unique per re-process run (so idempotency lets it run), stable across this
                    # step's retries (so a re-sent chunk is one run per track, not two).
                    id=f"track-ingestion-{track['isrc']}-reprocess-{ctx.run_id}",
                    data=_forced_request(track),
                )
                for track in chunk
            ]
            ids = await ctx.step.send_event(f"request-reingestion-{index // SEND_CHUNK}", events)
            sent += len(ids)
        summary = {
            "requested": sent,
            "unknown": found["unknown"],
            "invalid": found["invalid"],
        }
        log.info(
            "reprocess_scheduled",
            result="success",
            scheduled_count=sent,
            skipped_count=len(found["unknown"]) + len(found["invalid"]),
            run_id=ctx.run_id,
        )
        metrics.runs_completed.labels(function=BATCH_REPROCESS_FN).inc()
        return summary

    return [track_ingestion, batch_reprocess]


def _forced_request(track: dict[str, Any]) -> dict[str, Any]:
    """A ``track/ingestion.requested`` data with ``force``, keys absent when unset (DESIGN.md)."""
    data: dict[str, Any] = {
        "isrc": track["isrc"],
        "title": track["title"],
        "artist": track["artist"],
        "album": track["album"],
    }
    if track.get("artworkUrl") is not None:
        data["artworkUrl"] = track["artworkUrl"]
    data["force"] = True
    return data
