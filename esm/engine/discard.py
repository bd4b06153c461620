"""Given-up stream batches: their failure record stored in the on-failure destination."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from esm.engine.driver import GiveUp
from esm.engine.lifecycle import Interruptible
from esm.engine.retry import Backoff
from esm.errors import SourceError, describe
from esm.events import FailureSource, stream_failure_record
from esm.metrics import Metrics
from esm.protocols import Destination


@dataclass
class OnFailureDestination:
    """Sends the failure record of each given-up batch to DestinationConfig.OnFailure.

    INVARIANT: a given-up batch is never lost silently. A destination that fails is retried
    with backoff, and the records stay unsettled (the checkpoint does not pass them) until
    the record is stored, or until shutdown, after which they are read and retried again.
    """

    destination: Destination
    source: FailureSource
    stream_arn: str
    function_arn: str
    mapping_id: str
    """The mapping's `mapping` label in metrics (the daemon gives its name)."""
    metrics: Metrics
    backoff: Backoff = field(default_factory=Backoff)
    clock: Callable[[], float] = time.time
    log: Any = None

    async def __call__(self, give_up: GiveUp, interrupt: Interruptible) -> bool:
        record = stream_failure_record(
            source=self.source,
            records=give_up.records,
            shard_id=give_up.partition,
            stream_arn=self.stream_arn,
            function_arn=self.function_arn,
            condition=give_up.condition.value,
            invoke_count=give_up.invoke_count,
            last_result=give_up.last_result,
            request_id=str(uuid.uuid4()),
            now=self.clock(),
        )
        count = len(give_up.records)
        failures = 0
        while True:
            try:
                await self.destination.send(record, give_up.payload, give_up.partition)
            except Exception as raised:  # noqa: BLE001 - plugin boundary
                # A destination (or its client) that raises something unexpected is retried
                # like one that failed: the failure record must be stored, and the daemon
                # must not end over it.
                exc = raised if isinstance(raised, SourceError) else self._contained(raised)
                failures += 1
                self.metrics.destination_delivery_failures.labels(self.mapping_id).inc()
                delay = self.backoff.delay(failures)
                if self.log is not None:
                    self.log.error(
                        "storing a failure record failed, will retry",
                        shard=give_up.partition,
                        error=str(exc),
                        retriable=exc.retriable,
                        retry_in_seconds=round(delay, 3),
                    )
                if not await interrupt.sleep(delay):
                    return False
                continue
            self.metrics.on_failure_delivered_events.labels(self.mapping_id).inc(count)
            return True

    def _contained(self, exc: Exception) -> SourceError:
        self.metrics.contained_errors.labels(self.mapping_id, "destination").inc()
        return SourceError(describe(exc))
