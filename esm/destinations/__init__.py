"""On-failure destinations for given-up stream batches: SQS queues, SNS topics, S3 buckets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from esm.errors import (
    ConfigError,
    ResourceNotFound,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
)
from esm.protocols import Destination

__all__ = ["create_destination", "destination_error", "parse_arn"]

# Error codes that mean "slow down": SQS (query and JSON protocols), SNS, S3, KMS.
_THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestThrottled",
        "AWS.SimpleQueueService.RequestThrottled",
        "RequestLimitExceeded",
        "SlowDown",
        "KMSThrottlingException",
        "KMS.ThrottlingException",
    }
)
# The queue, topic or bucket does not exist (or this account cannot see it).
_NOT_FOUND_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NotFound",
        "NotFoundException",
        "NoSuchBucket",
        "ResourceNotFoundException",
    }
)
# 4xx answers that another try can still fix: a slow upload, credentials being refreshed.
_TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "ExpiredToken", "RequestExpired"}
)


def _error_details(exc: BaseException) -> tuple[str | None, int | None]:
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None, None
    error = response.get("Error") or {}
    code = error.get("Code")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return (
        str(code) if code is not None else None,
        status if isinstance(status, int) else None,
    )


def destination_error(exc: Exception, what: str) -> SourceError:
    """Map a client exception raised while storing a failure record to esm's error tree.

    Throttles, 5xx answers and network failures are retriable; a missing queue, topic or
    bucket and refused access are not, though the caller still retries them with backoff:
    the checkpoint must not move past a batch whose failure record is not stored.
    """
    code, status = _error_details(exc)
    message = f"{what}: {exc}"
    if code in _THROTTLE_CODES or status == 429:
        return ThroughputExceeded(f"{message} (throttled)")
    if code in _NOT_FOUND_CODES:
        return ResourceNotFound(message)
    if code in _TRANSIENT_CODES:
        return TransientSourceError(message)
    if status is not None and 400 <= status < 500:
        # Access denied, KMS key disabled, invalid parameter: an operator has to act.
        return SourceError(message)
    # 5xx, connection refused, read timeouts, anything without an AWS answer.
    return TransientSourceError(message)


def parse_arn(arn: str) -> tuple[str, str, str, str]:
    """`(service, region, account, resource)` of `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[2] or not parts[5]:
        raise ConfigError([f"{arn!r} is not an ARN"])
    return parts[2], parts[3], parts[4], parts[5]


def create_destination(
    arn: str, *, clients: Callable[[str], Any], mapping_uuid: str
) -> Destination:
    """The destination for `arn`, chosen by its service (sqs, sns or s3).

    `clients(service_name)` returns an aiobotocore client for that service; the caller owns
    the clients and closes them.
    """
    # Imported here: each module imports `destination_error` from this package.
    from esm.destinations.s3 import S3Destination
    from esm.destinations.sns import SnsDestination
    from esm.destinations.sqs import SqsDestination

    service = parse_arn(arn)[0]
    if service == "sqs":
        return SqsDestination(clients("sqs"), arn)
    if service == "sns":
        return SnsDestination(clients("sns"), arn)
    if service == "s3":
        return S3Destination(clients("s3"), arn, mapping_uuid)
    raise ConfigError(
        [f"{arn!r}: an on-failure destination must be an SQS queue, SNS topic or S3 bucket"]
    )
