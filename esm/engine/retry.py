"""Backoff schedules: exponential with jitter, for failed invocations and failed reads."""

from __future__ import annotations

import enum
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


class GiveUpCondition(enum.Enum):
    """Why a stream batch was given up: the `condition` of its on-failure record."""

    RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
    RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """MaximumRetryAttempts and MaximumRecordAgeInSeconds of a stream mapping (-1: no limit)."""

    maximum_retry_attempts: int = -1
    maximum_record_age_seconds: float = -1

    def too_old(self, oldest_arrival: float, now: float) -> bool:
        """The oldest record of a batch has outlived MaximumRecordAgeInSeconds."""
        limit = self.maximum_record_age_seconds
        return limit >= 0 and now - oldest_arrival > limit

    def exhausted(self, function_errors: int) -> bool:
        """The batch failed once more than MaximumRetryAttempts allows retries for."""
        limit = self.maximum_retry_attempts
        return limit >= 0 and function_errors > limit
