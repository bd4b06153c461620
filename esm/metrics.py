"""Every Prometheus metric esm exports, defined once, on a registry of its own per daemon.

Names mirror the CloudWatch metrics AWS publishes for event source mappings
(PolledEventCount -> esm_polled_events_total, IteratorAge -> esm_iterator_age_seconds, ...).
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from esm import __version__

# No `_created` series beside each counter and histogram: they double the series a scrape
# returns and no dashboard or alert uses them. This must run before any metric is created.
disable_created_metrics()  # type: ignore[no-untyped-call]

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
    """The daemon's metrics. Labels: `mapping` (the mapping's name) and `shard` where it
    applies. Besides esm's own: esm_build_info, and the process_* and python_* metrics of
    the Python client's process, platform and garbage collector collectors."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # The client's standard collectors, on this registry (the client's default registry
        # has them already).
        if r is not REGISTRY:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.build_info = Info("esm_build", "The esm version running, and its Python.", registry=r)
        self.build_info.info({"version": __version__, "python_version": platform.python_version()})
        self.mapping_info = Info(
            "esm_mapping",
            "Each configured mapping: its name (the `mapping` label of every other metric), "
            "its UUID, function, event source ARN and source kind.",
            ["mapping"],
            registry=r,
        )
        self.concurrent_invocations = Gauge(
            "esm_concurrent_invocations",
            "Invocations of the mapping's function in flight now (ConcurrentExecutions).",
            ["mapping"],
            registry=r,
        )
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
        self.seconds_since_last_read = Gauge(
            "esm_source_seconds_since_last_read",
            "Seconds since the shard's reader last read the source successfully (an empty page "
            "counts); 0 while the reader waits for the function to take what it read.",
            ["mapping", "shard"],
            registry=r,
        )
        self.seconds_since_last_receive = Gauge(
            "esm_queue_seconds_since_last_receive",
            "Seconds since the mapping's pollers last received from the queue successfully (an "
            "empty receive counts); 0 while every poller is delivering a batch.",
            ["mapping"],
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
        self.leases_held = Gauge(
            "esm_leases_held",
            "Shard leases this process holds and reads (state.backend dynamodb).",
            ["mapping"],
            registry=r,
        )
        self.leases_taken = Counter(
            "esm_leases_taken",
            "Shard leases taken: free ones, and expired ones of workers presumed dead.",
            ["mapping"],
            registry=r,
        )
        self.leases_stolen = Counter(
            "esm_leases_stolen",
            "Shard leases asked of a busier worker to even out the load (handed over after "
            "its final checkpoint).",
            ["mapping"],
            registry=r,
        )
        self.leases_lost = Counter(
            "esm_leases_lost",
            "Shard leases this process lost: taken by another worker, or given up because its "
            "own heartbeat could not be written in time.",
            ["mapping"],
            registry=r,
        )
        self.lease_heartbeat_failures = Counter(
            "esm_lease_heartbeat_failures",
            "Heartbeat writes to the lease table that failed.",
            ["worker"],
            registry=r,
        )
        self.mapping_paused = Gauge(
            "esm_mapping_paused",
            "1 while the mapping is paused by an operator (esm pause), else 0.",
            ["mapping"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "esm_circuit_breaker_open",
            "1 while the mapping's circuit breaker is open or probing (half open), else 0.",
            ["mapping"],
            registry=r,
        )
        self.circuit_opened = Counter(
            "esm_circuit_breaker_opened",
            "Times the mapping's circuit breaker opened after failed invocations in a row.",
            ["mapping"],
            registry=r,
        )
        self.aws_calls = Counter(
            "esm_aws_calls",
            "AWS calls esm made, by service, operation and outcome (ok; throttled; conflict: "
            "a conditional write that found the item changed; error), each counted once "
            "whatever the retries inside it.",
            ["service", "operation", "outcome"],
            registry=r,
        )
        self.aws_call_duration = Histogram(
            "esm_aws_call_duration_seconds",
            "How long AWS calls took, retries included, by service and operation.",
            ["service", "operation"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )

    def aws_call(self, service: str, operation: str, outcome: str, seconds: float) -> None:
        """Count and time one AWS call (`esm.aws.call_metrics` tells of each)."""
        self.aws_calls.labels(service, operation, outcome).inc()
        self.aws_call_duration.labels(service, operation).observe(seconds)

    def describe_mappings(self, mappings: Iterable[MappingInfo]) -> None:
        """Export esm_mapping_info for each mapping of the configuration."""
        for mapping in mappings:
            self.mapping_info.labels(mapping.name).info(
                {
                    "uuid": mapping.uuid,
                    "function": mapping.function,
                    "event_source_arn": mapping.event_source_arn,
                    "source": mapping.source,
                }
            )

    def track_shard_reads(
        self, mapping: str, shard: str, clock: Callable[[], float] = time.monotonic
    ) -> ReadClock:
        """The read clock of a shard's reader, exported as esm_source_seconds_since_last_read
        until `forget_shard_reads`."""
        reads = ReadClock(clock)
        self.seconds_since_last_read.labels(mapping, shard).set_function(reads.seconds)
        return reads

    def forget_shard_reads(self, mapping: str, shard: str) -> None:
        """Drop the read clock's series of a shard no reader reads any more (finished, or the
        runner stopped): a reader that is gone is not failing."""
        with contextlib.suppress(KeyError):
            self.seconds_since_last_read.remove(mapping, shard)

    def track_queue_receives(
        self, mapping: str, clock: Callable[[], float] = time.monotonic
    ) -> ReadClock:
        """The read clock shared by a queue mapping's pollers, exported as
        esm_queue_seconds_since_last_receive until `forget_queue_receives`."""
        reads = ReadClock(clock)
        self.seconds_since_last_receive.labels(mapping).set_function(reads.seconds)
        return reads

    def forget_queue_receives(self, mapping: str) -> None:
        with contextlib.suppress(KeyError):
            self.seconds_since_last_receive.remove(mapping)

    def forget_shard(self, mapping: str, shard: str) -> None:
        """Drop a finished shard's per-shard series so closed shards do not linger."""
        with contextlib.suppress(KeyError):
            self.iterator_age.remove(mapping, shard)
        self.forget_shard_reads(mapping, shard)


@dataclass(frozen=True)
class MappingInfo:
    """What esm_mapping_info says about one mapping."""

    name: str
    uuid: str
    function: str
    event_source_arn: str
    source: str


class ReadClock:
    """How long the readers of one source have gone without a successful read: the value of
    a seconds-since-last-read gauge, computed when it is scraped.

    Several readers may share one clock (an SQS mapping's pollers). It counts only while at
    least one of them is trying to read: a reader waiting for the function to take what it
    read (back-pressure from a slow or failing function) is not failing to read, and a
    blocked function already shows in the iterator age or the queue's backlog. So the value
    is 0 while no reader is reading, and starts again from 0 when one resumes.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since = clock()
        self._reading = 0

    def succeeded(self) -> None:
        """A read answered (an empty answer too): the source is reachable and serving."""
        self._since = self._clock()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Around a reader's attempts to read (calls, and the backoff between failed ones)."""
        if not self._reading:
            self._since = self._clock()
        self._reading += 1
        try:
            yield
        finally:
            self._reading -= 1

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Inside `reading`, around a reader's wait for the pipeline to take what it read."""
        self._reading -= 1
        try:
            yield
        finally:
            if not self._reading:
                self._since = self._clock()
            self._reading += 1

    def seconds(self) -> float:
        if not self._reading:
            return 0.0
        # A clock stepped backwards (wall time) must not make the gauge negative.
        return max(0.0, self._clock() - self._since)
