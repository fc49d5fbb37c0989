"""The relay's per-batch shortcuts do exactly what the per-event calls they replace did:
``log_batch`` (one ``ingestion_scheduled`` line per event), ``observe_many`` (a latency per
event), ``point_id`` (without building a UUID) and ``Outcomes.published_all`` (an outcome per
accepted event)."""

from __future__ import annotations

import hashlib
import io
import uuid

import orjson
import pytest
import structlog
from prometheus_client import CollectorRegistry, Histogram
from structlog.testing import capture_logs

from outbox_relay.domain.events import encode_event
from outbox_relay.domain.isrc import point_id
from outbox_relay.logs import configure_logging, log_batch
from outbox_relay.metrics import observe_many
from outbox_relay.ports import Outcomes

_NAMESPACE = b"6ba7b810-9dad-11d1-80b4-00c04fd430c8"


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    yield
    structlog.reset_defaults()


def _records(n: int, title: str = "Song") -> list[dict[str, object]]:
    return [
        {
            "isrc": f"USRC1760{i:04d}",
            "trackTitle": f"{title} {i}",
            "result": "success",
            "event_id": f"track-ingestion-USRC1760{i:04d}",
            "inngest_id": "01J",
            "outbox_id": i,
            "duration_ms": 1.25,
        }
        for i in range(n)
    ]


def _without_time(line: str) -> dict[str, object]:
    record = orjson.loads(line)
    assert record.pop("timestamp")
    return record  # type: ignore[no-any-return]


@pytest.mark.parametrize("secrets", [(), ("evt-key-123456",)])
def test_log_batch_writes_the_lines_the_logger_would(secrets: tuple[str, ...]) -> None:
    out = io.StringIO()
    configure_logging("info", "json", secrets=secrets, stream=out)
    log = structlog.get_logger("t")
    structlog.contextvars.bind_contextvars(scan_id="s1")
    try:
        title = "Leaked evt-key-123456" if secrets else "Song"
        for record in _records(3, title):
            log.info("ingestion_scheduled", **record)
        one_by_one = out.getvalue().splitlines()
        out.seek(0)
        out.truncate()
        log_batch(log, "info", "ingestion_scheduled", _records(3, title))
        batched = out.getvalue().splitlines()
    finally:
        structlog.contextvars.clear_contextvars()
    assert len(batched) == 3
    # Same keys in the same order, same values (only the time differs).
    for a, b in zip(one_by_one, batched, strict=True):
        assert list(orjson.loads(a)) == list(orjson.loads(b))
        assert _without_time(a) == _without_time(b)
    if secrets:
        assert "evt-key-123456" not in out.getvalue()
        assert out.getvalue().count("[redacted]") == 3


def test_log_batch_respects_the_level_and_falls_back_to_the_logger() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    log_batch(structlog.get_logger("t"), "info", "ingestion_scheduled", _records(2))
    assert out.getvalue() == ""
    configure_logging("info", "json", stream=out)
    with capture_logs() as captured:  # another processor chain: each record goes through it
        log_batch(structlog.get_logger("t"), "info", "ingestion_scheduled", _records(2))
    assert [c["event"] for c in captured] == ["ingestion_scheduled"] * 2
    assert captured[1]["outbox_id"] == 1 and captured[1]["log_level"] == "info"
    assert out.getvalue() == ""


def test_observe_many_equals_observe_per_value() -> None:
    buckets = (0.001, 0.01, 0.1, 1.0, 10.0)
    one, many = (
        Histogram(name, "h", buckets=buckets, registry=CollectorRegistry())
        for name in ("one", "many")
    )
    values = [0.0, 0.0005, 0.001, 0.0011, 0.05, 0.1, 0.7, 1.0, 9.9, 10.0, 11.0, 1e9]
    for value in values:
        one.observe(value)
    observe_many(many, values)
    observe_many(many, [])

    def samples(h: Histogram) -> list[tuple[str, dict[str, str], float]]:
        [metric] = h.collect()
        return [(s.name.split("_", 1)[1], s.labels, s.value) for s in metric.samples]

    for a, b in zip(samples(one), samples(many), strict=True):
        assert a[:2] == b[:2] and a[2] == pytest.approx(b[2])


def test_point_id_is_the_uuid_of_the_digest() -> None:
    for n in range(500):
        isrc = f"USRC1{n:07d}"
        digest = hashlib.sha256(_NAMESPACE + isrc.encode()).hexdigest()
        assert point_id(isrc) == str(uuid.UUID(digest[:32]))


def test_published_all_equals_published_per_event() -> None:
    accepted = [
        (
            encode_event(
                row_id=row_id,
                isrc=f"USRC1{row_id:07d}",
                title="Song",
                artist="Artist",
                album="Album",
                artwork_url=None,
                priority=None,
                force=row_id % 2 == 0,
                ts_ms=0,
            ),
            f"01J{row_id}",
        )
        for row_id in range(7)
    ]
    one, many = Outcomes(), Outcomes()
    for outcomes in (one, many):
        outcomes.skipped(100, "already_indexed")  # what came before stays first
    for event, inngest_id in accepted:
        one.published(event.row_id, event.event_id, inngest_id)
    many.published_all(accepted)
    many.published_all([])
    assert many == one
