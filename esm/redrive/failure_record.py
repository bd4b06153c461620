"""Reading an on-failure record back: the batch it names, and the event when S3 kept it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = ["FailureRecord", "NotAFailureRecord", "parse_failure_record"]

# Where each source's failure record describes its batch.
_BATCH_INFO = {"KinesisBatchInfo": "kinesis", "DDBStreamBatchInfo": "dynamodb"}


class NotAFailureRecord(ValueError):
    """The message or object is not a stream failure record; the text says why."""


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """The given-up batch one failure record describes."""

    source: Literal["kinesis", "dynamodb"]
    shard_id: str
    start_sequence: str
    end_sequence: str
    """The first and last record of the batch, inclusive."""
    batch_size: int
    stream_arn: str
    function_arn: str | None
    condition: str | None
    payload: bytes | None = None
    """The event the function was invoked with: S3 destinations keep it, queues and topics
    do not."""

    @property
    def start(self) -> int:
        return int(self.start_sequence)

    @property
    def end(self) -> int:
        return int(self.end_sequence)


def _text(info: dict[str, Any], key: str) -> str:
    value = info.get(key)
    if not isinstance(value, str) or not value:
        raise NotAFailureRecord(f"its batch information has no {key}")
    return value


def _sequence(info: dict[str, Any], key: str) -> str:
    value = _text(info, key)
    if not value.isdigit():
        raise NotAFailureRecord(f"{key} {value!r} is not a sequence number")
    return value


def _unwrap_notification(document: dict[str, Any]) -> dict[str, Any]:
    """The failure record inside an SNS notification (a queue subscribed to the topic
    without raw message delivery gets the record wrapped)."""
    if document.get("Type") != "Notification" or not isinstance(document.get("Message"), str):
        return document
    try:
        inner = orjson.loads(document["Message"])
    except orjson.JSONDecodeError:
        raise NotAFailureRecord("an SNS notification whose message is not JSON") from None
    if not isinstance(inner, dict):
        raise NotAFailureRecord("an SNS notification whose message is not a JSON object")
    return inner


def parse_failure_record(body: bytes | str) -> FailureRecord:
    """The failure record in a message body or an S3 object, in the shapes esm and Lambda
    write (docs/destinations.md).

    :raises NotAFailureRecord: it is not JSON, or not a Kinesis or DynamoDB Streams record.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotAFailureRecord("not JSON") from None
    if not isinstance(document, dict):
        raise NotAFailureRecord("not a JSON object")
    document = _unwrap_notification(document)
    found = [key for key in _BATCH_INFO if isinstance(document.get(key), dict)]
    if not found:
        raise NotAFailureRecord("it has neither KinesisBatchInfo nor DDBStreamBatchInfo")
    info: dict[str, Any] = document[found[0]]
    size = info.get("batchSize")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise NotAFailureRecord(f"batchSize {size!r} is not a positive number")
    start, end = _sequence(info, "startSequenceNumber"), _sequence(info, "endSequenceNumber")
    if int(end) < int(start):
        raise NotAFailureRecord(f"endSequenceNumber {end} comes before {start}")
    context = document.get("requestContext")
    context = context if isinstance(context, dict) else {}
    payload = document.get("payload")
    if payload is not None and not isinstance(payload, str):
        raise NotAFailureRecord("its payload is not a JSON string")
    function_arn = context.get("functionArn")
    condition = context.get("condition")
    return FailureRecord(
        source="kinesis" if found[0] == "KinesisBatchInfo" else "dynamodb",
        shard_id=_text(info, "shardId"),
        start_sequence=start,
        end_sequence=end,
        batch_size=size,
        stream_arn=_text(info, "streamArn"),
        function_arn=function_arn if isinstance(function_arn, str) else None,
        condition=condition if isinstance(condition, str) else None,
        payload=payload.encode("utf-8") if payload is not None else None,
    )
