"""The one translator of AWS client failures into esm's error tree, and the call wrapper that
applies it: every AWS call esm makes goes through `aws_call`, so nothing else catches a client's
exceptions blindly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import (
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)

from esm.errors import (
    AccessDenied,
    DataTrimmed,
    EsmError,
    ExpiredIterator,
    NoCredentials,
    ReadTimedOut,
    ResourceNotFound,
    ServiceUnreachable,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
)
from esm.log import get_logger

__all__ = [
    "CREDENTIALS_HINT",
    "Refusal",
    "aws_call",
    "error_code",
    "refusal",
    "translate_error",
]

_log = get_logger(component="aws")

# Error codes by what they mean, across Kinesis, DynamoDB Streams, Lambda, SQS (query and
# JSON protocols), SNS, S3 and KMS. A code not listed here is classified by its HTTP status.
_CODES: Mapping[str, type[SourceError]] = {
    **dict.fromkeys(
        (
            "ProvisionedThroughputExceededException",
            "LimitExceededException",
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
        ),
        ThroughputExceeded,
    ),
    "ExpiredIteratorException": ExpiredIterator,
    "TrimmedDataAccessException": DataTrimmed,
    **dict.fromkeys(
        (
            "ResourceNotFoundException",
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
            "NotFound",
            "NotFoundException",
            "NoSuchBucket",
        ),
        ResourceNotFound,
    ),
    **dict.fromkeys(
        (
            "AccessDenied",
            "AccessDeniedException",
            "AuthorizationError",
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
            "KMSAccessDeniedException",
        ),
        AccessDenied,
    ),
    # 4xx answers that another try can fix: a slow upload, credentials being refreshed, a
    # resource still busy (a fan-out subscription open within 5 s of the last, a consumer
    # not ACTIVE yet).
    **dict.fromkeys(
        (
            "RequestTimeout",
            "RequestTimeoutException",
            "ExpiredToken",
            "ExpiredTokenException",
            "RequestExpired",
            "ResourceInUseException",
        ),
        TransientSourceError,
    ),
    # The request itself is wrong: sending it again fails the same way.
    **dict.fromkeys(("ValidationException", "InvalidArgumentException"), SourceError),
}

# What a call that got no answer at all raises: botocore's connection and HTTP errors,
# aiohttp's, and the OSError family (resets, DNS, timeouts).
_UNREACHABLE: tuple[type[BaseException], ...] = (
    BotocoreConnectionError,
    HTTPClientError,
    aiohttp.ClientError,
    OSError,
)

# What to do when botocore finds no credentials at all: most often esm runs against a local
# emulator, which takes any key, from a shell where none is set. A client looks for
# credentials once, when it is created, so only a restart picks up new ones.
CREDENTIALS_HINT = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any value "
    "works for an emulator such as moto or LocalStack) or AWS_PROFILE, or run with a role; "
    "then restart esm"
)

# The hints already logged: each is worth saying once per process, not once per retry.
_hints_given: set[str] = set()


def _hint_once(hint: str) -> None:
    if hint not in _hints_given:
        _hints_given.add(hint)
        _log.warning(hint)


def _response(exc: BaseException | None) -> Mapping[str, Any]:
    """The parsed error answer of a botocore ClientError (or anything shaped like one)."""
    response = getattr(exc, "response", None)
    return response if isinstance(response, Mapping) else {}


def error_code(exc: BaseException | None) -> str | None:
    """The AWS error code of a refused call (`ThrottlingException`), None for any other failure."""
    code = (_response(exc).get("Error") or {}).get("Code")
    return str(code) if code is not None else None


def _http_status(exc: BaseException | None) -> int | None:
    status = (_response(exc).get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _by_status(status: int | None) -> type[SourceError]:
    if status == 429:
        return ThroughputExceeded
    if status is not None and 400 <= status < 500:
        # Refused for a reason of its own (KMS key disabled, a bad parameter): an operator
        # has to act before another try can succeed.
        return SourceError
    # 5xx, or no status at all: the service's trouble, worth another try.
    return TransientSourceError


def translate_error(exc: BaseException, what: str) -> SourceError:
    """The error in esm's tree for a failed AWS call; `what` names the call in the message
    (`GetRecords`, `on-failure destination ARN: SendMessage`). The class says what it means
    and `.retriable` whether waiting can help; the caller raises it `from exc`."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, NoCredentialsError):
        # Retried like any other read error, so that the daemon stays up and says what is
        # wrong; the hint, once, says what the repeated error does not.
        _hint_once(CREDENTIALS_HINT)
        return NoCredentials(f"{what}: no AWS credentials found")
    message = f"{what}: {exc}"
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return ReadTimedOut(message)
    if isinstance(exc, _UNREACHABLE):
        return ServiceUnreachable(message)
    code = error_code(exc)
    kind = _CODES.get(code) if code is not None else None
    return (kind or _by_status(_http_status(exc)))(message)


@contextlib.contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Translate whatever the AWS call(s) inside raise into esm's error tree:

        with aws_call("GetRecords"):
            answer = await client.get_records(ShardIterator=iterator, Limit=limit)

    Errors already in esm's tree pass unchanged; cancellation is not an Exception and passes
    too. The original client exception stays the translated error's `__cause__`.
    """
    try:
        yield
    except EsmError:
        raise
    except Exception as exc:
        # The AWS boundary: whatever a client raises, and botocore, aiohttp and the OS raise
        # many kinds, leaves as one of esm's errors (ruff's BLE allows it: it re-raises).
        raise translate_error(exc, what) from exc


@dataclass(frozen=True)
class Refusal:
    """What AWS answered when it refused a call: for callers that report more than the error
    class says (Lambda's Invoke reports the code, status and Retry-After of a throttle)."""

    code: str
    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    response: Mapping[str, Any] = field(default_factory=dict)


def refusal(error: BaseException) -> Refusal | None:
    """The refusal behind an error raised by `aws_call`, None when AWS never answered."""
    cause = error.__cause__ if isinstance(error, EsmError) else error
    response = _response(cause)
    if not response:
        return None
    error_part: Mapping[str, Any] = response.get("Error") or {}
    metadata: Mapping[str, Any] = response.get("ResponseMetadata") or {}
    return Refusal(
        code=str(error_part.get("Code") or ""),
        status=int(metadata.get("HTTPStatusCode") or 0),
        message=str(error_part.get("Message") or response.get("message") or "").strip(),
        headers=metadata.get("HTTPHeaders") or {},
        response=response,
    )
