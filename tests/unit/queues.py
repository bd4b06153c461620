"""Builds a queue mapping the way the daemon does: an SQS reader under the queue engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from esm.aws.sqs import SqsClient
from esm.engine.batcher import BatchLimits
from esm.engine.driver import Deliverer, FunctionTarget
from esm.engine.queue import QueueEngine, QueueSettings
from esm.engine.retry import Backoff
from esm.engine.scaling import ScalingLimits
from esm.metrics import Metrics
from esm.protocols import FunctionBackend
from esm.sources.sqs import SqsReader, SqsSettings

TARGET = FunctionTarget(
    name="fn", arn="arn:aws:lambda:us-east-1:123456789012:function:fn", timeout=3
)
FAST = Backoff(0.01, 0.05)


def queue_engine(
    client: SqsClient,
    backend: FunctionBackend,
    *,
    mapping: str = "m",
    queue_arn: str = "arn:aws:sqs:us-east-1:123456789012:work",
    max_concurrency: int = 1250,
    batch_size: int = 10,
    window: float = 0.0,
    metrics: Metrics | None = None,
    backoff: Backoff = FAST,
    delivery_backoff: Backoff = FAST,
    extend_visibility: bool = True,
    clock: Callable[[], float] = time.monotonic,
    **settings: Any,
) -> QueueEngine:
    """A queue mapping on `client` invoking `backend`; `settings` are QueueSettings fields."""
    metrics = metrics or Metrics()
    reader = SqsReader(
        client,
        SqsSettings(
            queue_arn=queue_arn,
            region="us-east-1",
            mapping=mapping,
            extend_visibility=extend_visibility,
            retry_delay=backoff.delay,
        ),
        metrics,
    )
    queue_settings = QueueSettings(
        mapping=mapping,
        limits=BatchLimits(batch_size=batch_size, window_seconds=window),
        scaling=ScalingLimits(maximum=max_concurrency),
        wait_time_seconds=0,
        backoff=backoff,
        **settings,
    )
    deliverer = Deliverer(backend, TARGET, mapping, metrics, backoff=delivery_backoff)
    return QueueEngine(reader, queue_settings, deliverer, metrics, clock=clock)
