"""The lease manager's events as Prometheus metrics."""

from __future__ import annotations

from dataclasses import dataclass

from esm.metrics import Metrics

__all__ = ["LeaseMetrics", "MappingLeaseMetrics"]


@dataclass(frozen=True)
class MappingLeaseMetrics:
    """`LeaseEvents` of one mapping."""

    metrics: Metrics
    mapping: str

    def taken(self, shard_id: str, stolen: bool) -> None:
        counter = self.metrics.leases_stolen if stolen else self.metrics.leases_taken
        counter.labels(self.mapping).inc()

    def lost(self, shard_id: str) -> None:
        self.metrics.leases_lost.labels(self.mapping).inc()

    def held(self, count: int) -> None:
        self.metrics.leases_held.labels(self.mapping).set(count)


@dataclass(frozen=True)
class LeaseMetrics:
    metrics: Metrics
    worker: str

    def heartbeat_failed(self) -> None:
        self.metrics.lease_heartbeat_failures.labels(self.worker).inc()

    def for_mapping(self, mapping: str) -> MappingLeaseMetrics:
        return MappingLeaseMetrics(self.metrics, mapping)
