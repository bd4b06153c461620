"""Every Prometheus metric esm exports, defined once, on a registry of its own per daemon.

Names mirror the CloudWatch metrics AWS publishes for event source mappings
(PolledEventCount -> esm_polled_events_total, IteratorAge -> esm_iterator_age_seconds, ...).
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    """The daemon's metrics. Labels: `mapping` (the mapping's id) and `shard` where it applies."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.polled_events = Counter(
            "esm_polled_events",
            "Records read from the event source (PolledEventCount).",
            ["mapping"],
            registry=r,
        )
        self.invoked_events = Counter(
            "esm_invoked_events",
            "Records sent to the function; retries count again (InvokedEventCount).",
            ["mapping"],
            registry=r,
        )
        self.failed_invoke_events = Counter(
            "esm_failed_invoke_events",
            "Records in invocations that failed (FailedInvokeEventCount).",
            ["mapping"],
            registry=r,
        )
        self.filtered_out_events = Counter(
            "esm_filtered_out_events",
            "Records FilterCriteria left out (FilteredOutEventCount).",
            ["mapping"],
            registry=r,
        )
        self.dropped_events = Counter(
            "esm_dropped_events",
            "Records given up on with no on-failure destination to keep them (DroppedEventCount).",
            ["mapping"],
            registry=r,
        )
        self.contained_errors = Counter(
            "esm_contained_errors",
            "Unexpected exceptions from a plugin or component (backend, destination, filter, "
            "checkpoint store, a whole mapping) caught, logged and retried instead of ending "
            "the daemon.",
            ["mapping", "component"],
            registry=r,
        )
        self.on_failure_delivered_events = Counter(
            "esm_on_failure_destination_delivered_events",
            "Records of given-up batches stored in the on-failure destination "
            "(OnFailureDestinationDeliveredEventCount).",
            ["mapping"],
            registry=r,
        )
        self.destination_delivery_failures = Counter(
            "esm_destination_delivery_failures",
            "Failed attempts to store a failure record in the on-failure destination "
            "(DestinationDeliveryFailures); esm retries until it is stored.",
            ["mapping"],
            registry=r,
        )
        self.deleted_events = Counter(
            "esm_deleted_events",
            "SQS messages deleted after processing or filtering (DeletedEventCount).",
            ["mapping"],
            registry=r,
        )
        self.batches_in_flight = Gauge(
            "esm_batches_in_flight",
            "Batches being delivered now (ConcurrentExecutions of the mapping).",
            ["mapping"],
            registry=r,
        )
        self.queue_messages = Gauge(
            "esm_queue_messages",
            "Messages in an SQS queue by state: visible (ApproximateNumberOfMessages, the "
            "backlog), in_flight, delayed; sampled periodically.",
            ["mapping", "state"],
            registry=r,
        )
        self.pollers = Gauge(
            "esm_pollers",
            "Concurrent SQS pollers of a mapping: the scaling target and those running.",
            ["mapping", "kind"],
            registry=r,
        )
        self.queue_errors = Counter(
            "esm_queue_errors",
            "Failed SQS calls by operation (receive, delete, change_visibility, attributes).",
            ["mapping", "operation"],
            registry=r,
        )
        self.function_waiting_batches = Gauge(
            "esm_function_waiting_batches",
            "Batches waiting for a slot under their function's max_concurrency.",
            ["function"],
            registry=r,
        )
        self.function_concurrent_invocations = Gauge(
            "esm_function_concurrent_invocations",
            "Invocations of a function running now, across its mappings (ConcurrentExecutions).",
            ["function"],
            registry=r,
        )
        self.weighted_choices = Counter(
            "esm_weighted_invocations",
            "Invocations of a weighted function by the target chosen for them.",
            ["function", "target"],
            registry=r,
        )
        self.invocations = Counter(
            "esm_invocations",
            "Invocations by result: success, function_error, throttle, system_error.",
            ["mapping", "result"],
            registry=r,
        )
        self.invoke_duration = Histogram(
            "esm_invoke_duration_seconds",
            "How long invocations took, whatever their result (Duration).",
            ["mapping"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "esm_batch_size_records",
            "Records per invocation.",
            ["mapping"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.iterator_age = Gauge(
            "esm_iterator_age_seconds",
            "Age of the last record of the latest batch when it was sent, or how far the "
            "shard's reader is behind its tip when idle (IteratorAge).",
            ["mapping", "shard"],
            registry=r,
        )
        self.read_errors = Counter(
            "esm_source_read_errors",
            "Failed reads from the source by reason (throttled, expired_iterator, network).",
            ["mapping", "reason"],
            registry=r,
        )
        self.shards = Gauge(
            "esm_shards_reading",
            "Shards being read now.",
            ["mapping"],
            registry=r,
        )
        self.checkpoints_saved = Counter(
            "esm_checkpoints_saved",
            "Checkpoints written to the state store.",
            ["mapping"],
            registry=r,
        )

    def forget_shard(self, mapping: str, shard: str) -> None:
        """Drop a finished shard's per-shard series so closed shards do not linger."""
        with contextlib.suppress(KeyError):
            self.iterator_age.remove(mapping, shard)
