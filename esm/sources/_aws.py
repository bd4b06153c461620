"""What every AWS-backed source shares: error translation and the wire-form GetRecords hook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from esm.errors import (
    ExpiredIterator,
    ResourceNotFound,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
)

# Error codes that waiting can fix (throttling, service trouble) versus ones it cannot.
_THROTTLE_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException"}
)
_FATAL_CODES = frozenset(
    {"AccessDeniedException", "ValidationException", "InvalidArgumentException"}
)


# Marks a GetRecords answer whose records `keep_wire_records` left in their wire form.
WIRE_FORM = "EsmWireForm"


def keep_wire_records(
    operation_model: Any,
    response_dict: dict[str, Any],
    customized_response_dict: dict[str, Any],
    **_: Any,
) -> None:
    """botocore hook for GetRecords: keep each record's Data in base64 and its arrival time
    in epoch seconds, as they travel.

    botocore would base64-decode every Data and build a datetime for every record, only for
    the Lambda event to base64-encode the data again; that round trip is most of the cost of
    reading. A successful JSON answer is parsed here with orjson and botocore is handed an
    empty body; errors and any other protocol go through botocore untouched.
    """
    if response_dict.get("status_code") != 200:
        return
    if getattr(operation_model.service_model, "resolved_protocol", None) != "json":
        return
    body = response_dict.get("body")
    if not isinstance(body, bytes) or not body:
        return
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(answer, dict) or not isinstance(answer.get("Records"), list):
        return
    answer[WIRE_FORM] = True
    customized_response_dict.update(answer)
    response_dict["body"] = b"{}"


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error") or {}
        code = error.get("Code")
        return str(code) if code is not None else None
    return None


def translate_error(exc: Exception, what: str) -> SourceError:
    """Map a client exception to esm's error tree (retriable or not)."""
    code = error_code(exc)
    message = f"{what}: {exc}"
    if code == "ExpiredIteratorException":
        return ExpiredIterator(message)
    if code in _THROTTLE_CODES:
        return ThroughputExceeded(message)
    if code == "ResourceNotFoundException":
        return ResourceNotFound(message)
    if code in _FATAL_CODES:
        return SourceError(message)
    # 5xx, KMS throttling, connection and read timeouts: all worth another try.
    return TransientSourceError(message)
