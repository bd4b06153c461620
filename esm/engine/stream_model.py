"""What the stream engine knows of a mapping and its shards: settings, phases, /status."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from esm.engine.batcher import BatchLimits
from esm.engine.driver import InFlight
from esm.engine.retry import Backoff
from esm.engine.seek import describe_target
from esm.model import Record, ShardInfo, StartPosition

# Kinesis allows 5 GetRecords calls per second per shard, shared by every consumer.
MIN_POLL_INTERVAL_SECONDS = 0.2


class ShardPhase(enum.Enum):
    """Where a shard is in its life, as far as this mapping is concerned."""

    WAITING = "waiting"
    """Known, but a parent shard is not finished yet: reading it now would break order."""
    READING = "reading"
    """A worker is reading and delivering it."""
    FINISHED = "finished"
    """Closed, read to its end and every record settled: its children may start."""


@dataclass(frozen=True)
class StreamSettings:
    """How one mapping reads and batches a sharded stream."""

    mapping_id: str
    """The mapping's UUID: the key of its checkpoints."""
    starting_position: StartPosition
    limits: BatchLimits
    poll_interval: float = 1.0
    """Seconds between GetRecords calls on an idle shard."""
    busy_poll_interval: float = MIN_POLL_INTERVAL_SECONDS
    """Seconds between GetRecords calls while records keep coming (5 calls/s on Kinesis)."""
    records_limit: int = 10_000
    discovery_interval: float = 10.0
    """Seconds between ListShards calls that find new shards (resharding)."""
    parallelization: int = 1
    """ParallelizationFactor: batches of one shard in flight at once, one per lane."""
    tumbling_window_seconds: int = 0
    """TumblingWindowInSeconds: 0 for none. A windowed shard runs one lane (state is per
    shard)."""
    record_filter: Callable[[Record], bool] | None = None
    """FilterCriteria: True for records to deliver; None delivers everything."""
    read_backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=30.0))
    checkpoint_backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=30.0))
    mapping_name: str = ""
    """The mapping's name, its `mapping` in metrics and logs; empty: the id."""

    @property
    def label(self) -> str:
        """The mapping's `mapping` label in metrics and logs."""
        return self.mapping_name or self.mapping_id


@dataclass
class ShardState:
    """What the runner knows of a shard, shown in /status."""

    info: ShardInfo
    phase: ShardPhase = ShardPhase.WAITING
    checkpoint: str | None = None
    seek: StartPosition | None = None
    """Where a seek moved the shard (`esm seek`): read from here until a checkpoint is saved."""
    iterator_age: float | None = None
    in_flight: dict[int, InFlight] = field(default_factory=dict)
    """Batches being delivered, by lane (ParallelizationFactor lanes per shard)."""
    last_read_error: str | None = None
    batches_delivered: int = 0
    records_delivered: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "parents": list(self.info.parent_ids),
            "closed": self.info.closed,
            "checkpoint": self.checkpoint,
            **({"seek": describe_target(self.seek)} if self.seek is not None else {}),
            "iterator_age_seconds": self.iterator_age,
            "batches_delivered": self.batches_delivered,
            "records_delivered": self.records_delivered,
            "in_flight": [f.as_dict() for _, f in sorted(self.in_flight.items())],
            "last_read_error": self.last_read_error,
        }
