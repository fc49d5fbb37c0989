"""Capped exponential backoff with full jitter: one policy for reconnects, probes and retries.

Full jitter (a uniform draw between 0 and the capped exponential) spreads replicas that failed
together, so they do not return together and knock the recovering service over again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """The delay before try ``n`` is uniform in [floor, min(cap, base * 2**n)]."""

    base: float
    cap: float
    floor: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.floor <= self.base <= self.cap):
            raise ValueError("backoff needs 0 <= floor <= base <= cap")

    def ceiling(self, failures: int | None = None) -> float:
        n = self.failures if failures is None else failures
        # 2**n overflows floats for a very long outage; the cap is reached long before n=64.
        return min(self.cap, math.ldexp(self.base, min(n, 64)))

    def delay(self, failures: int | None = None) -> float:
        """A delay for the given number of failures so far (default: those recorded)."""
        return self.rng.uniform(self.floor, max(self.floor, self.ceiling(failures)))

    def next_delay(self) -> float:
        """Records one more failure and returns the delay to wait before the next try."""
        wait = self.delay()
        self.failures += 1
        return wait

    def reset(self) -> None:
        self.failures = 0
