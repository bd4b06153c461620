"""How many pollers a queue mapping runs: a pure decision from what the receives saw.

Lambda starts an SQS mapping at 5 concurrent batches, adds up to 300 a minute while messages
keep coming, goes down to 2 when the queue is idle, never passes the mapping's maximum
concurrency, and backs off when the function throttles. The engine feeds each observation in
with the seconds since the target last changed and runs as many pollers as the answer says.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Lambda's ceiling per mapping when ScalingConfig.MaximumConcurrency is not set.
DEFAULT_MAX_CONCURRENCY = 1250
# Lambda starts an SQS mapping at 5 concurrent batches and goes down to 2 when idle.
INITIAL_CONCURRENCY = 5
IDLE_CONCURRENCY = 2
# Lambda adds up to 300 concurrent invokes a minute while messages keep coming.
SCALE_UP_INTERVAL_SECONDS = 0.2
SCALE_DOWN_INTERVAL_SECONDS = 5.0


class Signal(enum.Enum):
    """What one poller just saw."""

    BUSY = "busy"
    """A receive came back with as many messages as it asked for: there are more."""
    SHORT = "short"
    """A receive came back with fewer messages than it asked for, or none."""
    THROTTLED = "throttled"
    """The function refused a batch for lack of capacity."""


@dataclass(frozen=True, slots=True)
class ScalingLimits:
    maximum: int = DEFAULT_MAX_CONCURRENCY
    """ScalingConfig.MaximumConcurrency, the function's own limit, or Lambda's ceiling."""
    initial: int = INITIAL_CONCURRENCY
    idle: int = IDLE_CONCURRENCY
    up_interval: float = SCALE_UP_INTERVAL_SECONDS
    down_interval: float = SCALE_DOWN_INTERVAL_SECONDS

    @property
    def start(self) -> int:
        """The pollers a mapping starts with."""
        return max(1, min(self.initial, self.maximum))

    @property
    def floor(self) -> int:
        """The fewest pollers an idle queue scales down to."""
        return max(1, min(self.idle, self.maximum))


def next_target(target: int, signal: Signal, since_change: float, limits: ScalingLimits) -> int:
    """The pollers to run after `signal`, `since_change` seconds after the target last changed.

    One more while receives come back full (at most one per `up_interval`), one fewer while
    they come back short (at most one per `down_interval`, not below the idle floor), half as
    many (at least one) at once on a throttle; never more than `limits.maximum`.
    """
    if signal is Signal.THROTTLED:
        return max(1, target // 2)
    if signal is Signal.BUSY:
        if target < limits.maximum and since_change >= limits.up_interval:
            return target + 1
        return min(target, limits.maximum)
    if signal is Signal.SHORT and target > limits.floor and since_change >= limits.down_interval:
        return target - 1
    return min(target, limits.maximum)
