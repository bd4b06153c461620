"""Every AWS call a client makes, counted and timed through botocore's own events, so that
users see what their idle shards and queues cost them (`esm_aws_calls_total`).

One call is one API operation as the caller made it, whatever retries botocore made inside
it; its outcome is that of the last attempt.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["THROTTLING_CODES", "CallObserver", "call_outcome", "instrument_client"]

CallObserver = Callable[[str, str, str, float], None]
"""Told of each finished call: (service, operation, outcome, seconds)."""

# The error codes AWS services answer when a caller is throttled.
THROTTLING_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "LimitExceededException",
        "KMSThrottlingException",
    }
)
_CONFLICT: Final = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})
_STARTED: Final = "esm_call_started"


def call_outcome(status: int, parsed: Mapping[str, Any] | None) -> str:
    """`ok`, `throttled`, `conflict` (a conditional write found the item changed) or
    `error`, from an answer's status and error code."""
    if status < 300:
        return "ok"
    error = parsed.get("Error") if parsed else None
    code = error.get("Code") if isinstance(error, Mapping) else None
    if code in THROTTLING_CODES or status == 429:
        return "throttled"
    if code in _CONFLICT:
        return "conflict"
    return "error"


def _names(event_name: str) -> tuple[str, str]:
    # "after-call.<service-id>.<Operation>"
    _, _, rest = event_name.partition(".")
    service, _, operation = rest.rpartition(".")
    return service, operation


def instrument_client(
    client: Any, observe: CallObserver, clock: Callable[[], float] = time.monotonic
) -> None:
    """Tell `observe` of every call `client` (an aiobotocore client) makes from now on."""

    def started(context: dict[str, Any], **_: Any) -> None:
        context[_STARTED] = clock()

    def answered(
        event_name: str,
        context: dict[str, Any],
        http_response: Any = None,
        parsed: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        status = getattr(http_response, "status_code", 500)
        _finish(event_name, context, call_outcome(status, parsed))

    def failed(event_name: str, context: dict[str, Any], **_: Any) -> None:
        # No answer at all: a refused connection, a read timeout, after botocore's retries.
        _finish(event_name, context, "error")

    def _finish(event_name: str, context: dict[str, Any], outcome: str) -> None:
        began = context.pop(_STARTED, None)
        seconds = clock() - began if isinstance(began, float) else 0.0
        service, operation = _names(event_name)
        # Counting must never fail the call it counts.
        with contextlib.suppress(Exception):
            observe(service, operation, outcome, seconds)

    events = client.meta.events
    # Registered first, so that the clock starts before any other handler's work.
    events.register_first("before-call", started)
    events.register("after-call", answered)
    events.register("after-call-error", failed)
