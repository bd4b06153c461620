"""A shard's lease as KCL stores it, and the sentinels its checkpoint may hold.

A lease says which worker reads a shard (`owner`) and where reading stands (`checkpoint`).
`counter` is the fencing token: every take, steal, release and checkpoint writes on the
condition that owner and counter are still what the writer last saw, and bumps the counter,
so a worker that lost a lease can never write over its new owner. Liveness is not kept in
the lease (KCL renews every lease every few seconds, a write per shard); see `liveness`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

from esm.model import Checkpoint, IteratorType, StartPosition
from esm.positions import decode_position, split_sub_sequence

__all__ = [
    "AT_TIMESTAMP",
    "LATEST",
    "SENTINELS",
    "SHARD_END",
    "TRIM_HORIZON",
    "Lease",
    "checkpoint_of",
    "sentinel_of",
    "start_of",
]

TRIM_HORIZON: Final = "TRIM_HORIZON"
LATEST: Final = "LATEST"
AT_TIMESTAMP: Final = "AT_TIMESTAMP"
SHARD_END: Final = "SHARD_END"
SENTINELS: Final = frozenset({TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END})
"""Checkpoint values that are not sequence numbers (KCL's ExtendedSequenceNumber)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One shard's lease item (KCL's attribute in brackets)."""

    shard_id: str
    """The shard (`leaseKey`, without esm's per-mapping prefix)."""
    counter: int = 0
    """The fencing token (`leaseCounter`)."""
    owner: str | None = None
    """The worker reading the shard (`leaseOwner`); None when nobody holds it."""
    checkpoint: str = TRIM_HORIZON
    """The last settled sequence number, or a sentinel (`checkpoint`)."""
    sub_sequence: int = 0
    """The position inside a KPL aggregate (`checkpointSubSequenceNumber`)."""
    parents: frozenset[str] = field(default_factory=frozenset)
    """The shards it was split or merged from (`parentShardId`, a string set)."""
    children: frozenset[str] = field(default_factory=frozenset)
    """The shards it ended into, set when it reaches SHARD_END (`childShardIds`)."""
    owner_switches: int = 0
    """Owners since the last checkpoint (`ownerSwitchesSinceCheckpoint`)."""
    checkpoint_owner: str | None = None
    """During a handoff, the previous owner, which may still write its final checkpoint
    (`checkpointOwner`, KCL 3's graceful handoff); None otherwise."""
    start: str | None = None
    """esm's exact position when `checkpoint` cannot say it (esm's own attribute
    `esmStartingPosition`; KCL ignores it): where a seek put the shard
    (`AT_TIMESTAMP:<epoch seconds>`, `AT_SEQUENCE_NUMBER:<sequence>`), which the next
    checkpoint clears, or a checkpoint inside a KPL container (`SEQUENCE:SUB`)."""

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    @property
    def in_handoff(self) -> bool:
        return self.checkpoint_owner is not None

    def taken_by(self, worker: str) -> Lease:
        """This lease after `worker` takes it (free, expired or stolen)."""
        switches = self.owner_switches + (1 if self.owner != worker else 0)
        return replace(
            self,
            owner=worker,
            counter=self.counter + 1,
            owner_switches=switches,
            checkpoint_owner=None,
        )

    def handed_to(self, worker: str) -> Lease:
        """This lease after `worker` asks its owner to hand it over: the owner stays
        allowed to write its final checkpoint until it lets go."""
        return replace(
            self,
            owner=worker,
            counter=self.counter + 1,
            owner_switches=self.owner_switches + 1,
            checkpoint_owner=self.owner,
        )

    def checkpointed(self, checkpoint: str, children: frozenset[str] = frozenset()) -> Lease:
        # Inside a KPL container (SEQUENCE:SUB): KCL's checkpoint and sub-sequence number,
        # and esm's exact text beside them (a sub-sequence 0 alone would read as the whole
        # record).
        sequence, sub = split_sub_sequence(checkpoint)
        return replace(
            self,
            checkpoint=sequence,
            sub_sequence=sub or 0,
            counter=self.counter + 1,
            owner_switches=0,
            children=children or self.children,
            start=checkpoint if sub is not None else None,
        )

    def sought(self, position: str | None, *, finished: bool = False) -> Lease:
        """This lease after a seek to `position` (a seek's checkpoint text: a sentinel,
        `AT_TIMESTAMP:<epoch>` or `AT_SEQUENCE_NUMBER:<sequence>`; `finished` for a closed
        shard at LATEST): free, so that its owner stops reading it (fenced: it can never
        checkpoint over the seek) and the next taker starts there."""
        checkpoint, start = _lease_position(position, finished)
        return replace(
            self,
            owner=None,
            checkpoint_owner=None,
            counter=self.counter + 1,
            checkpoint=checkpoint,
            sub_sequence=0,
            owner_switches=0,
            start=start,
        )

    def released(self) -> Lease:
        """This lease after its owner lets go of it (shutdown, or the end of a handoff)."""
        if self.checkpoint_owner is not None:
            return replace(self, checkpoint_owner=None, counter=self.counter + 1)
        return replace(self, owner=None, counter=self.counter + 1)


def _lease_position(position: str | None, finished: bool) -> tuple[str, str | None]:
    """The `checkpoint` (KCL's nearest meaning) and esm's `start` of a seek position."""
    if finished:
        return SHARD_END, None
    if position is None or position in (TRIM_HORIZON, LATEST):
        return position or TRIM_HORIZON, None
    kind, _, value = position.partition(":")
    if kind == AT_TIMESTAMP:
        return AT_TIMESTAMP, position
    if kind == "AT_SEQUENCE_NUMBER" and value.isdigit():
        # KCL reads on after its checkpoint: the record itself is esm's to read again.
        return value, position
    raise ValueError(f"{position!r} is not a seek position")


def checkpoint_of(lease: Lease) -> Checkpoint | None:
    """esm's checkpoint of a lease; None when reading starts at the mapping's position."""
    if lease.checkpoint == SHARD_END:
        return Checkpoint(None, finished=True)
    if lease.checkpoint in SENTINELS:
        return None
    return Checkpoint(lease.checkpoint)


def start_of(lease: Lease, at_timestamp: float | None) -> StartPosition | None:
    """Where a new owner starts reading: after the checkpoint, or at the lease's initial
    position sentinel; None for a finished shard."""
    if lease.checkpoint == SHARD_END:
        return None
    if lease.start is not None:
        if (sought := decode_position(lease.start)) is not None:
            return sought
        if split_sub_sequence(lease.start)[1] is not None:
            # Inside a KPL container: the source reads it again and skips what was settled.
            return StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, lease.start)
    if lease.checkpoint == TRIM_HORIZON:
        return StartPosition(IteratorType.TRIM_HORIZON)
    if lease.checkpoint == LATEST:
        return StartPosition(IteratorType.LATEST)
    if lease.checkpoint == AT_TIMESTAMP:
        return StartPosition(IteratorType.AT_TIMESTAMP, timestamp=at_timestamp)
    return StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, lease.checkpoint)


def sentinel_of(checkpoint: Checkpoint) -> str:
    """The lease's checkpoint value for esm's `checkpoint`."""
    if checkpoint.finished:
        return SHARD_END
    if checkpoint.sequence is None:
        return TRIM_HORIZON
    return checkpoint.sequence
