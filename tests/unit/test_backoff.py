"""The one backoff policy: capped exponential with full jitter."""

from __future__ import annotations

import random

import pytest

from outbox_relay.backoff import Backoff


def test_ceiling_doubles_then_caps() -> None:
    backoff = Backoff(base=0.5, cap=30.0)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_delays_stay_within_floor_and_ceiling_and_spread() -> None:
    backoff = Backoff(base=1.0, cap=8.0, floor=0.25, rng=random.Random(7))
    delays = [backoff.delay(3) for _ in range(2000)]
    assert min(delays) >= 0.25 and max(delays) <= 8.0
    # full jitter: the draws cover the range rather than cluster at the ceiling
    assert min(delays) < 1.0 and max(delays) > 7.0


def test_next_delay_counts_failures_and_reset_starts_over() -> None:
    backoff = Backoff(base=1.0, cap=100.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    assert backoff.failures == 5
    assert backoff.ceiling() == 32
    backoff.reset()
    assert backoff.ceiling() == 1.0


def test_a_very_long_outage_does_not_overflow() -> None:
    assert Backoff(base=1.0, cap=30.0).delay(10_000) <= 30.0


def test_inconsistent_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="floor <= base <= cap"):
        Backoff(base=10.0, cap=1.0)
