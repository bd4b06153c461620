"""How client exceptions become esm's source errors, and the hint for missing credentials."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from structlog.testing import capture_logs

from esm.aws import errors as _aws
from esm.aws.errors import CREDENTIALS_HINT, translate_error
from esm.errors import (
    ExpiredIterator,
    ResourceNotFound,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
)


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "GetRecords")


@pytest.mark.parametrize(
    ("exc", "kind", "retriable"),
    [
        (_client_error("ExpiredIteratorException"), ExpiredIterator, True),
        (_client_error("ProvisionedThroughputExceededException"), ThroughputExceeded, True),
        (_client_error("ResourceNotFoundException"), ResourceNotFound, False),
        (_client_error("AccessDeniedException"), SourceError, False),
        (_client_error("InternalFailure"), TransientSourceError, True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), TransientSourceError, True),
        (NoCredentialsError(), TransientSourceError, True),
    ],
)
def test_client_errors_map_to_the_error_tree(
    exc: Exception, kind: type[SourceError], retriable: bool
) -> None:
    error = translate_error(exc, "GetRecords")
    assert type(error) is kind
    assert error.retriable is retriable
    assert str(error).startswith("GetRecords: ")


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
