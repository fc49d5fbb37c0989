"""The worker's event models: what it accepts and what it sends (DESIGN.md, "Event").

``track/ingestion.requested`` is validated as the seed system's worker validates it; anything
else is a malformed event, which fails without retry (``NonRetriableError``) with a message that
names each field and its rule. The models of the events the worker sends document their shape;
``tests/worker/test_contract.py`` holds every event the relay emits against
:class:`TrackIngestionRequested`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from outbox_relay.errors import MalformedEventError

REQUESTED: Final = "track/ingestion.requested"
COMPLETED: Final = "track/ingestion.completed"
FAILED: Final = "track/ingestion.failed"
BATCH_REPROCESS: Final = "track/ingestion.batch-reprocess"
# Sent by Inngest when a run has failed for good; it triggers the failure handler.
FUNCTION_FAILED: Final = "inngest/function.failed"

# The most ISRCs one batch-reprocess event may name: its forced requests are sent in steps of
# SEND_CHUNK, and Inngest caps a run at 1,000 steps.
MAX_REPROCESS_ISRCS: Final = 10_000

_ISRC = re.compile(r"[A-Z0-9]{12}")
_URL = re.compile(r"https?://\S+", re.IGNORECASE)
_BLANK = " \t\n\r\f\v"


def _isrc(value: str) -> str:
    if _ISRC.fullmatch(value) is None:
        raise ValueError("must be 12 upper-case letters or digits (normalised ISRC)")
    return value


def _non_empty(value: str) -> str:
    if not value.strip(_BLANK):
        raise ValueError("must be a non-empty string")
    return value


def _url(value: str) -> str:
    if _URL.fullmatch(value) is None:
        raise ValueError("must be an http(s) URL without spaces")
    return value


Isrc = Annotated[StrictStr, AfterValidator(_isrc)]
Text = Annotated[StrictStr, AfterValidator(_non_empty)]
Url = Annotated[StrictStr, AfterValidator(_url)]


class TrackIngestionRequested(BaseModel):
    """``data`` of ``track/ingestion.requested``; unknown keys are ignored, as the seed does."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    isrc: Isrc
    title: Text
    artist: Text
    album: Text
    artwork_url: Url | None = Field(None, alias="artworkUrl")
    priority: StrictInt | None = Field(None, ge=-600, le=600)
    force: StrictBool = False


class TrackIngestionCompleted(BaseModel):
    """``data`` of ``track/ingestion.completed``, as the seed system's worker sends it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    isrc: Isrc
    run_id: StrictStr = Field(alias="runId")
    completed_at: StrictStr = Field(alias="completedAt")
    duration_ms: StrictInt = Field(alias="durationMs", ge=0)
    result: dict[str, Any]


class TrackIngestionFailed(BaseModel):
    """``data`` of ``track/ingestion.failed``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    isrc: Isrc
    error: StrictStr
    run_id: StrictStr = Field(alias="runId")


class BatchReprocessRequested(BaseModel):
    """``data`` of ``track/ingestion.batch-reprocess``: ISRCs as written (normalised later)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    isrcs: list[StrictStr] = Field(min_length=1, max_length=MAX_REPROCESS_ISRCS)


def describe(exc: ValidationError, prefix: str = "data") -> str:
    """``data.title: must be a non-empty string; data.isrc: Field required``."""
    problems = []
    for error in exc.errors():
        where = ".".join([prefix, *(str(part) for part in error["loc"])])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def parse_requested(data: Any) -> TrackIngestionRequested:
    """Validates ``track/ingestion.requested`` data; raises ``MalformedEventError``."""
    if not isinstance(data, Mapping):
        raise MalformedEventError(f"data: must be an object, not {type(data).__name__}")
    try:
        return TrackIngestionRequested.model_validate(dict(data))
    except ValidationError as exc:
        raise MalformedEventError(describe(exc)) from None


def parse_batch_reprocess(data: Any) -> BatchReprocessRequested:
    """Validates ``track/ingestion.batch-reprocess`` data; raises ``MalformedEventError``."""
    if not isinstance(data, Mapping):
        raise MalformedEventError(f"data: must be an object, not {type(data).__name__}")
    try:
        return BatchReprocessRequested.model_validate(dict(data))
    except ValidationError as exc:
        raise MalformedEventError(describe(exc)) from None


def readable_isrc(data: Any) -> str | None:
    """The event's ISRC if it is a valid one (to record a malformed event's failure), else None."""
    if not isinstance(data, Mapping):
        return None
    raw = data.get("isrc")
    if not isinstance(raw, str):
        return None
    isrc = raw.strip().upper()
    return isrc if _ISRC.fullmatch(isrc) else None
