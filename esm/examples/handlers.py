"""Example Lambda handlers: a sync and an async one that count records, and one that fails."""

from __future__ import annotations

import logging
import threading
from typing import Any

import anyio

logger = logging.getLogger(__name__)

# Sync handlers run in several worker threads at once.
_lock = threading.Lock()
_invocations = 0
_records = 0


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Count the batch's records and report every one processed."""
    count = _count(event)
    logger.info(
        "handled %d records (request %s, %d ms left)",
        count,
        context.aws_request_id,
        context.get_remaining_time_in_millis(),
    )
    return {"batchItemFailures": []}


async def handle_async(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The async form of `handle`: esm awaits coroutine handlers on its event loop."""
    await anyio.sleep(0.001)  # stands in for awaiting I/O (a database, an HTTP call)
    count = _count(event)
    logger.info("handled %d records (request %s)", count, context.aws_request_id)
    return {"batchItemFailures": []}


def fail(event: dict[str, Any], context: Any) -> None:
    """Raise on every batch, so that it is retried and finally sent to the failure destination."""
    raise RuntimeError(f"example failure on a batch of {len(event.get('Records') or [])} records")


def stats() -> dict[str, int]:
    """Invocations and records that `handle` and `handle_async` have seen in this process."""
    with _lock:
        return {"invocations": _invocations, "records": _records}


def reset() -> None:
    """Start counting from zero again."""
    global _invocations, _records
    with _lock:
        _invocations = 0
        _records = 0


def _count(event: dict[str, Any]) -> int:
    global _invocations, _records
    count = len(event.get("Records") or [])
    with _lock:
        _invocations += 1
        _records += count
    return count
