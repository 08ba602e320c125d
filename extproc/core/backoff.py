"""Retry delays that double from a first value up to a cap.

The informers (after a failed list or watch), the edge's sandbox watch (after a broken
stream) and `up`'s supervisor (after a crashed child) all wait so between attempts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# 2**64 times any sane first delay is past every cap; a longer streak adds nothing.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    # Seconds before the first retry.
    initial_s: float
    # The longest delay, in seconds.
    max_s: float
    # Fraction in [0, 1] of each delay removed at random, so replicas that failed together
    # do not retry together. 0: exact delays.
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(
                f"backoff must satisfy 0 < initial <= max, got {self.initial_s} and {self.max_s}"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"backoff jitter must be in [0, 1], got {self.jitter}")

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after `failures` failures in a row before this one (0: the first)."""
        doubled = self.initial_s * 2.0 ** min(max(failures, 0), _MAX_DOUBLINGS)
        return min(self.max_s, doubled) * (1.0 - self.jitter * rng())
