"""Reading GetRecords answers in their wire form (Kinesis and DynamoDB Streams)."""

from __future__ import annotations

from typing import Any, Final

import orjson

# Marks a GetRecords answer whose records `keep_wire_records` left in their wire form.
WIRE_FORM: Final = "EsmWireForm"


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


def register_wire_records(client: Any, event_name: str) -> None:
    """Make `client` (an aiobotocore client) answer the GetRecords of `event_name`
    (`before-parse.SERVICE.GetRecords`) in wire form."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None:
        return  # not a botocore client (a test's fake): its answers are in API form already
    events.register(event_name, keep_wire_records, unique_id=f"esm-{event_name}")
