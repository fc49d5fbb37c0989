"""The bodies of the ingestion worker's steps, free of Inngest: what each step does.

:mod:`outbox_relay.worker.functions` runs each of these inside a ``step.run`` so that Inngest
memoises its JSON result and retries it alone; the unit tests call them directly against
in-memory fakes of the embedder and the index. Every method returns JSON-ready values (they are
sent to Inngest and back).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from outbox_relay.domain.ingestion import TrackDocument, TrackPoint
from outbox_relay.domain.isrc import normalise_isrc
from outbox_relay.errors import EmbeddingError
from outbox_relay.metrics import WorkerMetrics
from outbox_relay.ports import Embedder, PointWriter
from outbox_relay.worker.events import TrackIngestionRequested
from outbox_relay.worker.store import IngestionStore, RunRef

log = structlog.get_logger("outbox_relay.worker")


@dataclass(frozen=True, slots=True)
class WorkerParts:
    """What the steps use: the two ports, the status store, metrics and the collection name."""

    embedder: Embedder
    points: PointWriter
    store: IngestionStore
    metrics: WorkerMetrics
    collection: str


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class IngestionSteps:
    """One method per step of ``track-ingestion`` (and the failure handler's write)."""

    def __init__(self, parts: WorkerParts) -> None:
        self.parts = parts

    async def record_indexing(
        self, run: RunRef, attempt: int, request: TrackIngestionRequested
    ) -> dict[str, Any]:
        """Status ``indexing``; returns the run's start, from which its duration is measured.

        The start is memoised with the step: code outside steps runs again on every request,
        so a clock read there would measure only the last request.
        """
        started = await self.parts.store.record_indexing(run, attempt)
        self.parts.metrics.runs_started.labels(function="track-ingestion").inc()
        log.info(
            "ingestion_started",
            isrc=run.isrc,
            trackTitle=request.title,
            run_id=run.run_id,
            event_id=run.event_id,
            attempt=attempt,
            forced=run.forced,
        )
        return {"startedAt": _iso(started), "startedAtMs": _ms(started)}

    async def build_document(self, request: TrackIngestionRequested) -> dict[str, Any]:
        """The text to embed and the payload, from the event (title, artist, album, artwork)."""
        document = TrackDocument(
            isrc=request.isrc,
            title=request.title,
            artist=request.artist,
            album=request.album,
            artwork_url=request.artwork_url,
        )
        return document.to_json()

    async def embed(self, document: dict[str, Any]) -> list[float]:
        """The document's vector; a wrong size or a zero vector is the embedder's error.

        Under Cosine a zero vector has no direction: stored, it would match nothing sensibly
        (the seed system stores one when it has no text; this worker never does).
        """
        embedder = self.parts.embedder
        vectors = await embedder.embed([document["text"]])
        if len(vectors) != 1:
            raise EmbeddingError(f"{embedder.name}: asked for 1 vector, got {len(vectors)}")
        vector = vectors[0]
        if len(vector) != embedder.dimensions:
            raise EmbeddingError(
                f"{embedder.name}: the vector has {len(vector)} dimensions, "
                f"EMBEDDING_DIMENSIONS is {embedder.dimensions}"
            )
        if not all(math.isfinite(x) for x in vector) or not any(vector):
            raise EmbeddingError(f"{embedder.name}: a zero or non-finite vector")
        return vector

    async def upsert(self, document: dict[str, Any], vector: Sequence[float]) -> dict[str, Any]:
        """Writes the point (id by the point-id rule, named vector, seed payload names)."""
        point = TrackPoint.of(TrackDocument.from_json(document), list(vector))
        await self.parts.points.upsert(point)
        return {"pointId": point.id, "collection": self.parts.collection}

    async def record_indexed(
        self, run: RunRef, attempt: int, title: str, started_at_ms: int
    ) -> dict[str, Any]:
        """Status ``indexed``; returns when, and the run's duration from its first step."""
        indexed = await self.parts.store.record_indexed(run, attempt)
        duration_ms = max(0, _ms(indexed) - started_at_ms)
        self.parts.metrics.ingestion_duration.observe(duration_ms / 1000)
        log.info(
            "ingestion_indexed",
            isrc=run.isrc,
            trackTitle=title,
            result="success",
            duration_ms=duration_ms,
            run_id=run.run_id,
            attempt=attempt,
        )
        return {"indexedAt": _iso(indexed), "durationMs": duration_ms}

    async def record_attempt_error(self, run: RunRef, attempt: int, error: str) -> None:
        """A step failed; best effort (the database may be what failed)."""
        try:
            await self.parts.store.record_attempt_error(run, attempt, error)
        except Exception as exc:  # the step's own error is what matters; say why this failed
            log.warning(
                "ingestion_status_write_failed",
                isrc=run.isrc,
                run_id=run.run_id,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def record_retry_success(self, run: RunRef, attempt: int) -> None:
        """A step succeeded on a retry: the row says how many attempts the run needed."""
        try:
            await self.parts.store.record_attempt(run, attempt)
        except Exception as exc:  # the step succeeded; the count is secondary
            log.warning(
                "ingestion_status_write_failed",
                isrc=run.isrc,
                run_id=run.run_id,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def record_failed(self, run: RunRef, attempts: int, error: str) -> dict[str, Any]:
        """Status ``failed`` (unless another run owns the row); returns whether it was written."""
        written = await self.parts.store.record_failed(run, attempts, error)
        return {"recorded": written}

    async def look_up_library(self, isrcs: Sequence[str]) -> dict[str, Any]:
        """The library's title, artist, album and artwork of each ISRC it knows."""
        known = await self.parts.store.library_tracks(isrcs)
        tracks = []
        for isrc in isrcs:
            track = known.get(isrc)
            if track is not None:
                tracks.append(
                    {
                        "isrc": track.isrc,
                        "title": track.title,
                        "artist": track.artist,
                        "album": track.album,
                        "artworkUrl": track.artwork_url,
                    }
                )
        unknown = [isrc for isrc in isrcs if isrc not in known]
        return {"tracks": tracks, "unknown": unknown}


def split_isrcs(raw: Sequence[str]) -> tuple[list[str], list[str]]:
    """(valid normalised ISRCs without repeats, in order; the raw values that are not ISRCs)."""
    valid: list[str] = []
    seen: set[str] = set()
    invalid: list[str] = []
    for value in raw:
        isrc = normalise_isrc(value)
        if isrc in ("missing_isrc", "invalid_isrc"):
            invalid.append(value)
        elif isrc not in seen:
            seen.add(isrc)
            valid.append(isrc)
    return valid, invalid


def elapsed_ms(began: float) -> int:
    return int((time.perf_counter() - began) * 1000)
