"""The relay's metrics as Prometheus scrapes them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from outbox_relay.metrics import RelayMetrics


def test_no_created_series_beside_counters_and_histograms() -> None:
    metrics = RelayMetrics(CollectorRegistry(), replica_id="r1")
    metrics.wakeups.labels(cause="poll").inc()

    text = generate_latest(metrics.registry).decode()

    assert "outbox_relay_wakeups_total" in text
    assert "_bucket{" in text  # histograms are there, without their `_created` twin
    assert [line for line in text.splitlines() if "_created" in line] == []
