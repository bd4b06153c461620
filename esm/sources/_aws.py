"""What every AWS-backed source shares: error translation and the wire-form GetRecords hook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from botocore.exceptions import NoCredentialsError

from esm.errors import (
    ExpiredIterator,
    ResourceNotFound,
    SourceError,
    ThroughputExceeded,
    TransientSourceError,
)
from esm.log import get_logger

_log = get_logger(component="aws")

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


def translate_error(exc: Exception, what: str) -> SourceError:
    """Map a client exception to esm's error tree (retriable or not)."""
    if isinstance(exc, NoCredentialsError):
        # Still retried like any read error, so the daemon stays up and says what is wrong;
        # the hint, once, says what the repeated error does not.
        _hint_once(CREDENTIALS_HINT)
        return TransientSourceError(f"{what}: no AWS credentials found")
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
