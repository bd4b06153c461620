"""How AWS client failures become esm's errors (esm.aws.errors): one translator for every
caller, each error saying whether waiting can help, and the hint for missing credentials."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from structlog.testing import capture_logs

from esm.aws import errors as _aws
from esm.aws.errors import CREDENTIALS_HINT, aws_call, error_code, refusal, translate_error
from esm.errors import (
    AccessDenied,
    DataTrimmed,
    ExpiredIterator,
    NoCredentials,
    ReadTimedOut,
    ResourceNotFound,
    ServiceUnreachable,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
)
from esm.testing import FakeClientError


def _client_error(code: str, status: int | None = None, operation: str = "Op") -> ClientError:
    response: dict[str, object] = {"Error": {"Code": code, "Message": "m"}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, operation)


@pytest.mark.parametrize(
    ("exc", "kind", "retriable"),
    [
        # Streams: iterators, throughput, lineage.
        (_client_error("ExpiredIteratorException", 400), ExpiredIterator, True),
        (_client_error("TrimmedDataAccessException", 400), DataTrimmed, True),
        (_client_error("ProvisionedThroughputExceededException", 400), ThroughputExceeded, True),
        (_client_error("LimitExceededException", 400), ThroughputExceeded, True),
        (_client_error("KMSThrottlingException", 400), ThroughputExceeded, True),
        (_client_error("ResourceInUseException", 400), TransientSourceError, True),
        (_client_error("ResourceNotFoundException", 400), ResourceNotFound, False),
        (_client_error("ValidationException", 400), SourceError, False),
        (_client_error("InvalidArgumentException", 400), SourceError, False),
        (_client_error("KMSDisabledException", 400), SourceError, False),
        # Throttles of every service, and a 429 whatever its code.
        (_client_error("ThrottlingException", 400), ThroughputExceeded, True),
        (_client_error("TooManyRequestsException", 429), ThroughputExceeded, True),
        (_client_error("AWS.SimpleQueueService.RequestThrottled", 403), ThroughputExceeded, True),
        (_client_error("Throttled", 400), ThroughputExceeded, True),
        (_client_error("SlowDown", 503), ThroughputExceeded, True),
        (_client_error("Anything", 429), ThroughputExceeded, True),
        # Permissions and credentials AWS does not accept: an operator has to act.
        (_client_error("AccessDeniedException", 400), AccessDenied, False),
        (_client_error("AccessDenied", 403), AccessDenied, False),
        (_client_error("AuthorizationError", 403), AccessDenied, False),
        (_client_error("UnrecognizedClientException", 400), AccessDenied, False),
        # Missing queues, topics and buckets.
        (_client_error("AWS.SimpleQueueService.NonExistentQueue", 400), ResourceNotFound, False),
        (_client_error("QueueDoesNotExist", 400), ResourceNotFound, False),
        (_client_error("NotFound", 404), ResourceNotFound, False),
        (_client_error("NoSuchBucket", 404), ResourceNotFound, False),
        # 4xx that another try fixes; the service's own trouble.
        (_client_error("RequestTimeout", 400), TransientSourceError, True),
        (_client_error("ExpiredToken", 400), TransientSourceError, True),
        (_client_error("InternalFailure", 500), TransientSourceError, True),
        (_client_error("ServiceUnavailable", 503), TransientSourceError, True),
        (_client_error("InternalFailure"), TransientSourceError, True),
        # Another 4xx is the request's fault.
        (_client_error("KMS.DisabledException", 400), SourceError, False),
        # No answer at all.
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), ServiceUnreachable, True),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"), ServiceUnreachable, True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), ReadTimedOut, True),
        (aiohttp.ServerDisconnectedError(), ServiceUnreachable, True),
        (OSError("connection reset"), ServiceUnreachable, True),
        (TimeoutError(), ReadTimedOut, True),
        (NoCredentialsError(), NoCredentials, True),
        # The fakes' errors have the ClientError shape; anything else is worth another try.
        (FakeClientError("ExpiredIteratorException"), ExpiredIterator, True),
        (RuntimeError("a client bug"), TransientSourceError, True),
    ],
)
def test_client_errors_map_to_the_error_tree(
    exc: Exception, kind: type[SourceError], retriable: bool
) -> None:
    error = translate_error(exc, "GetRecords")
    assert type(error) is kind
    assert error.retriable is retriable
    assert str(error).startswith("GetRecords: ")


def test_the_call_wrapper_raises_the_translation_from_the_client_error() -> None:
    exc = _client_error("ThrottlingException", 400, "Publish")
    with pytest.raises(ThroughputExceeded) as caught, aws_call("Publish"):
        raise exc
    assert caught.value.__cause__ is exc
    assert caught.value.retriable
    assert error_code(caught.value.__cause__) == "ThrottlingException"


def test_the_call_wrapper_lets_esm_errors_and_cancellation_through() -> None:
    own = ResourceNotFound("already translated")
    with pytest.raises(ResourceNotFound) as caught, aws_call("GetRecords"):
        raise own
    assert caught.value is own
    with pytest.raises(asyncio.CancelledError), aws_call("GetRecords"):
        raise asyncio.CancelledError


def test_refusal_keeps_what_aws_answered() -> None:
    exc = ClientError(
        {
            "Error": {"Code": "TooManyRequestsException", "Message": " Rate Exceeded. "},
            "ResponseMetadata": {"HTTPStatusCode": 429, "HTTPHeaders": {"retry-after": "3"}},
        },
        "Invoke",
    )
    with pytest.raises(ThroughputExceeded) as caught, aws_call("Invoke"):
        raise exc
    refused = refusal(caught.value)
    assert refused is not None
    assert (refused.code, refused.status, refused.message) == (
        "TooManyRequestsException",
        429,
        "Rate Exceeded.",
    )
    assert refused.headers == {"retry-after": "3"}
    with pytest.raises(ServiceUnreachable) as unreachable, aws_call("Invoke"):
        raise OSError("refused")
    assert refusal(unreachable.value) is None


def test_missing_credentials_are_retried_with_one_hint_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_aws, "_hints_given", set())

    with capture_logs() as logs:
        errors = [translate_error(NoCredentialsError(), call) for call in ("A", "B", "A")]

    assert [str(error) for error in errors] == [
        "A: no AWS credentials found",
        "B: no AWS credentials found",
        "A: no AWS credentials found",
    ]
    assert all(error.retriable for error in errors)
    assert [(entry["log_level"], entry["event"]) for entry in logs] == [
        ("warning", CREDENTIALS_HINT)
    ]
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in CREDENTIALS_HINT
    assert "any value works for an emulator" in CREDENTIALS_HINT
