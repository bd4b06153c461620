"""Backoff schedules: exponential with jitter, for failed invocations and failed reads."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff from `initial` doubling up to `maximum` seconds, each delay stretched
    by up to a quarter at random so that shards failing together do not retry in lockstep."""

    initial: float = 1.0
    maximum: float = 300.0
    multiplier: float = 2.0

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `failures`-th consecutive failure (1-based)."""
        if failures <= 0:
            return 0.0
        base = self.initial * self.multiplier ** min(failures - 1, 64)
        return min(self.maximum, base * (rng or random).uniform(1.0, 1.25))
