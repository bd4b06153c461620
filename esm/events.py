"""AWS event shapes built from source records: the Lambda event a function receives."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from esm.model import InvokeResult, Record, ResultKind
from esm.positions import container_sequence


def kinesis_entry(
    *,
    shard_id: str,
    sequence_number: str,
    partition_key: str,
    data_b64: str,
    arrival: float,
    stream_arn: str,
    region: str,
    identity_arn: str,
) -> dict[str, Any]:
    """One element of a Kinesis event's "Records", field for field as Lambda sends it."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": data_b64,
            # Epoch seconds as a JSON number, to the millisecond, as Lambda writes it.
            "approximateArrivalTimestamp": round(arrival, 3),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": identity_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def dynamodb_entry(
    *,
    raw: Mapping[str, Any],
    change: Mapping[str, Any],
    created: float | None,
    keys: Mapping[str, Any],
    new_image: Mapping[str, Any] | None,
    old_image: Mapping[str, Any] | None,
    stream_arn: str,
    region: str,
) -> dict[str, Any]:
    """One element of a DynamoDB event's "Records", field for field as Lambda sends it.

    `raw` is the GetRecords record and `change` its "dynamodb" part; `keys` and the images are
    given separately, already in DynamoDB JSON with binary values in base64.
    """
    dynamodb: dict[str, Any] = {}
    if created is not None:
        # DynamoDB rounds the creation time down to the second and Lambda writes it as an
        # integer; emulators that keep the fraction get the same shape.
        dynamodb["ApproximateCreationDateTime"] = int(created)
    dynamodb["Keys"] = keys
    if new_image is not None:
        dynamodb["NewImage"] = new_image
    if old_image is not None:
        dynamodb["OldImage"] = old_image
    dynamodb["SequenceNumber"] = change["SequenceNumber"]
    if "SizeBytes" in change:
        dynamodb["SizeBytes"] = change["SizeBytes"]
    if "StreamViewType" in change:
        dynamodb["StreamViewType"] = change["StreamViewType"]
    entry: dict[str, Any] = {
        "eventID": raw["eventID"],
        "eventName": raw["eventName"],
        # Passed through: "1.1" on AWS; the published samples (and moto) say "1.0".
        "eventVersion": raw.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }
    identity = raw.get("userIdentity")
    if identity:
        # GetRecords names the fields Type/PrincipalId; the Lambda event type/principalId.
        entry["userIdentity"] = {
            "type": identity.get("Type"),
            "principalId": identity.get("PrincipalId"),
        }
    return entry


def create_record(
    *, sequence: str, order: int, key: str, arrival: float, entry: dict[str, Any]
) -> Record:
    """A `Record` carrying `entry`, sized exactly for the 6 MB payload limit."""
    return Record(sequence, order, key, arrival, len(orjson.dumps(entry)) + 1, entry)


def encode_event(records: Sequence[Record], fields: Mapping[str, Any] | None = None) -> bytes:
    """The JSON event for a batch: `{"Records": [...]}` in record order, then `fields`
    (the top-level fields of a tumbling-window event).

    Encoding the entries again is cheaper than keeping each record's bytes and joining them:
    orjson writes a 1,000-record event into one buffer faster than bytes.join copies it.
    """
    event: dict[str, Any] = {"Records": [r.entry for r in records]}
    if fields:
        event.update(fields)
    return orjson.dumps(event)


# --------------------------------------------------------------------------- failure records

FailureSource = Literal["kinesis", "dynamodb"]
FailureCondition = Literal["RetryAttemptsExhausted", "RecordAgeExceeded"]

# The batch-info key of a failure record, by source.
_BATCH_INFO_KEY: dict[str, str] = {
    "kinesis": "KinesisBatchInfo",
    "dynamodb": "DDBStreamBatchInfo",
}


def iso_utc(epoch: float, *, millis: bool = True) -> str:
    """`epoch` as ISO-8601 UTC: `2019-11-14T00:38:04.835Z`, or `2019-11-14T00:13:19Z`."""
    if millis:
        # Round in integer milliseconds: 0.835 as a float is 0.83499..., and the
        # microseconds of a datetime built from it would print .834.
        total_ms = round(epoch * 1000)
        moment = datetime.fromtimestamp(total_ms // 1000, tz=UTC)
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{total_ms % 1000:03d}Z"
    moment = datetime.fromtimestamp(int(epoch // 1), tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def stream_failure_record(
    *,
    source: FailureSource,
    records: Sequence[Record],
    shard_id: str,
    stream_arn: str,
    function_arn: str,
    condition: FailureCondition,
    invoke_count: int,
    last_result: InvokeResult | None,
    request_id: str,
    now: float,
) -> dict[str, Any]:
    """The on-failure record Lambda sends for a given-up Kinesis or DynamoDB Streams batch.

    `responseContext` describes the last answer of the function; it is left out when the
    function never answered (only throttles and system errors), since there is no status,
    version or error to report, and always for `RecordAgeExceeded`, as AWS writes it even
    for records that expired after many function errors.
    """
    if not records:
        raise ValueError("a failure record describes at least one record")
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
    }
    if (
        condition != "RecordAgeExceeded"
        and last_result is not None
        and last_result.kind in (ResultKind.SUCCESS, ResultKind.FUNCTION_ERROR)
    ):
        function_error = None
        if last_result.kind is ResultKind.FUNCTION_ERROR:
            function_error = last_result.function_error or "Unhandled"
        # A success here is a partial failure: the function answered, and named failed items.
        record["responseContext"] = {
            "statusCode": last_result.status_code,
            "executedVersion": last_result.executed_version,
            "functionError": function_error,
        }
    # Kinesis reports arrival times to the millisecond; DynamoDB Streams only knows seconds.
    millis = source == "kinesis"
    record["version"] = "1.0"
    record["timestamp"] = iso_utc(now)
    record[_BATCH_INFO_KEY[source]] = {
        "shardId": shard_id,
        # A KPL user record's SEQUENCE:SUB is in its container, which the stream knows.
        "startSequenceNumber": container_sequence(records[0].sequence),
        "endSequenceNumber": container_sequence(records[-1].sequence),
        "approximateArrivalOfFirstRecord": iso_utc(records[0].arrival, millis=millis),
        "approximateArrivalOfLastRecord": iso_utc(records[-1].arrival, millis=millis),
        "batchSize": len(records),
        "streamArn": stream_arn,
    }
    return record


def s3_failure_object(record: Mapping[str, Any], payload: bytes) -> bytes:
    """The S3 on-failure object: `record` plus `payload`, the invocation event as a JSON string."""
    return orjson.dumps({**record, "payload": payload.decode("utf-8")})


def s3_failure_key(mapping_uuid: str, shard_id: str, now: float) -> str:
    """`aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID>`."""
    moment = datetime.fromtimestamp(int(now // 1), tz=UTC)
    return (
        f"aws/lambda/{mapping_uuid}/{shard_id}/{moment:%Y/%m/%d}/"
        f"{moment:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
    )


# ------------------------------------------------------------------------------------- SQS

# The order of the system attributes in the events Lambda sends, as its published samples
# and captured events show them (standard and FIFO queues, X-Ray, dead-letter redrive).
# Attributes SQS adds later follow in the order ReceiveMessage returned them.
_SQS_ATTRIBUTE_ORDER = (
    "DeadLetterQueueSourceArn",
    "ApproximateReceiveCount",
    "AWSTraceHeader",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
)


def _blob(value: bytes | bytearray | memoryview | str) -> bytes:
    # botocore sends a str given for a blob as its UTF-8 bytes; do the same.
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _b64(value: bytes | bytearray | memoryview | str) -> str:
    return base64.b64encode(_blob(value)).decode("ascii")


def _length_prefixed(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def md5_of_body(body: str) -> str:
    """MD5OfBody: the hex MD5 of the body's UTF-8 bytes."""
    return hashlib.md5(body.encode("utf-8"), usedforsecurity=False).hexdigest()


def md5_of_message_attributes(attributes: Mapping[str, Mapping[str, Any]]) -> str:
    """MD5OfMessageAttributes as SQS computes it, for attributes in the API shape
    (`{"DataType": ..., "StringValue" | "BinaryValue": ...}`).

    Attributes are taken in ascending name order; each contributes its name and its data
    type (custom suffix included), each as a 4-byte big-endian length and UTF-8 bytes, then
    one transport byte (1 for String and Number, 2 for Binary) and the value, again
    length-prefixed: UTF-8 for strings, the raw bytes for binary.
    """
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        value = attributes[name]
        data_type = str(value["DataType"])
        digest.update(_length_prefixed(name.encode("utf-8")))
        digest.update(_length_prefixed(data_type.encode("utf-8")))
        if data_type.split(".", 1)[0] == "Binary":
            digest.update(b"\x02")
            digest.update(_length_prefixed(_blob(value["BinaryValue"])))
        else:
            digest.update(b"\x01")
            digest.update(_length_prefixed(str(value["StringValue"]).encode("utf-8")))
    return digest.hexdigest()


def _sqs_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    attribute: dict[str, Any] = {}
    if value.get("StringValue") is not None:
        attribute["stringValue"] = value["StringValue"]
    if value.get("BinaryValue") is not None:
        attribute["binaryValue"] = _b64(value["BinaryValue"])
    # SQS reserves the list values and never fills them; Lambda always writes both lists.
    attribute["stringListValues"] = list(value.get("StringListValues") or [])
    attribute["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues") or []]
    attribute["dataType"] = value["DataType"]
    return attribute


def sqs_entry(message: Mapping[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """One element of an SQS event's "Records", field for field as Lambda sends it.

    `message` is one ReceiveMessage message as botocore returns it, received with every
    system attribute and every message attribute. All the system attributes SQS returned
    are kept, as strings. md5OfMessageAttributes comes before md5OfBody, where events captured
    from Lambda carry it, and is JSON null for a message without attributes, as AWS sends it.
    """
    returned: Mapping[str, Any] = message.get("Attributes") or {}
    attributes = {name: str(returned[name]) for name in _SQS_ATTRIBUTE_ORDER if name in returned}
    for name, value in returned.items():
        attributes.setdefault(name, str(value))
    message_attributes: Mapping[str, Mapping[str, Any]] = message.get("MessageAttributes") or {}
    body = message["Body"]
    entry: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": attributes,
        "messageAttributes": {
            name: _sqs_message_attribute(value) for name, value in message_attributes.items()
        },
    }
    entry["md5OfMessageAttributes"] = (
        message.get("MD5OfMessageAttributes") or md5_of_message_attributes(message_attributes)
        if message_attributes
        else None
    )
    entry["md5OfBody"] = message.get("MD5OfBody") or md5_of_body(body)
    entry["eventSource"] = "aws:sqs"
    entry["eventSourceARN"] = queue_arn
    entry["awsRegion"] = region
    return entry


def sqs_record(
    message: Mapping[str, Any], *, queue_arn: str, region: str, order: int = 0
) -> Record:
    """A `Record` for one received SQS message.

    Messages have no sequence number to compare, so `order` is the caller's: a number that
    grows with every message it receives. The message ID is the record's sequence (it is
    what a function names in batchItemFailures), the message group its key ("" on standard
    queues) and SentTimestamp its arrival; a message received without SentTimestamp
    arrives now.
    """
    entry = sqs_entry(message, queue_arn=queue_arn, region=region)
    attributes = entry["attributes"]
    sent = attributes.get("SentTimestamp")
    return create_record(
        sequence=entry["messageId"],
        order=order,
        key=attributes.get("MessageGroupId", ""),
        arrival=int(sent) / 1000 if sent else time.time(),
        entry=entry,
    )
