"""Who is alive, judged on this worker's own clock.

A worker proves it is alive by changing its heartbeat about once a second. Another worker
never compares clocks across machines: it notes, on its own monotonic clock, when it last
saw each heartbeat change, and counts a worker dead once that is `duration` ago. A lease
whose owner has no heartbeat (a KCL worker, or one that shut down) is judged the same way
by its `leaseCounter`, as KCL judges every lease. Something seen for the first time counts
as having just changed, so a worker that starts waits a whole duration before it believes
anyone dead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from esm.leases.model import Lease

__all__ = ["Liveness"]


@dataclass
class _Seen:
    value: object
    changed_at: float


class Liveness:
    """Observations of heartbeats and lease counters, and what follows from them."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._beats: dict[str, _Seen] = {}
        self._leases: dict[tuple[str, str], _Seen] = {}

    def observe_beats(self, beats: Mapping[str, int], now: float) -> None:
        for worker, value in beats.items():
            seen = self._beats.get(worker)
            if seen is None or seen.value != value:
                self._beats[worker] = _Seen(value, now)
        for worker in set(self._beats) - set(beats):
            del self._beats[worker]  # forgotten: its leases are judged by their counters

    def observe_lease(self, table: str, lease: Lease, now: float) -> None:
        key = (table, lease.shard_id)
        value = (lease.owner, lease.counter)
        seen = self._leases.get(key)
        if seen is None or seen.value != value:
            self._leases[key] = _Seen(value, now)

    def has_beat(self, worker: str) -> bool:
        return worker in self._beats

    def alive(self, worker: str, now: float) -> bool:
        """Whether `worker`'s heartbeat changed within the last duration."""
        seen = self._beats.get(worker)
        return seen is not None and now - seen.changed_at < self.duration

    def live_workers(self, now: float) -> set[str]:
        return {worker for worker in self._beats if self.alive(worker, now)}

    def expired(self, table: str, lease: Lease, now: float) -> bool:
        """Whether `lease`'s owner may be presumed dead, so that another worker may take it."""
        if lease.owner is None:
            return False
        if lease.owner in self._beats:
            return not self.alive(lease.owner, now)
        seen = self._leases.get((table, lease.shard_id))
        return seen is not None and now - seen.changed_at >= self.duration

    def expires_at(self, table: str, lease: Lease) -> float | None:
        """When `lease` will count as expired if nothing changes (None: never by itself)."""
        if lease.owner is None:
            return None
        seen = self._beats.get(lease.owner) or self._leases.get((table, lease.shard_id))
        return None if seen is None else seen.changed_at + self.duration

    def forget_lease(self, table: str, shard_id: str) -> None:
        self._leases.pop((table, shard_id), None)

    def dead_for(self, worker: str, now: float) -> float:
        """Seconds since `worker`'s heartbeat last changed (0 when unknown)."""
        seen = self._beats.get(worker)
        return 0.0 if seen is None else now - seen.changed_at
