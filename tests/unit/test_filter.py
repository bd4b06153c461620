"""FilterCriteria: every operator, each source's payload rules, the patterns refused up front."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from esm.errors import ConfigError
from esm.filter import (
    MAX_FILTERS,
    MAX_PATTERN_CHARS,
    FilterSource,
    RecordFilter,
    compile_filters,
)

# ---------------------------------------------------------------------------------------------
# Records shaped as the function sees them in the Lambda event


def kinesis(
    data: Any = None, *, raw: bytes | None = None, partition_key: str = "1"
) -> dict[str, Any]:
    """A Kinesis entry; `data` is encoded as JSON unless `raw` bytes are given."""
    payload = raw if raw is not None else orjson.dumps(data)
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "data": base64.b64encode(payload).decode(),
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
        "awsRegion": "us-east-2",
        "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
    }


def sqs(
    body: Any, *, receive_count: str = "1", attrs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An SQS entry; a `body` that is not a str is encoded as JSON."""
    return {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": body if isinstance(body, str) else orjson.dumps(body).decode(),
        "attributes": {
            "ApproximateReceiveCount": receive_count,
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        "messageAttributes": attrs or {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-west-2:123456789012:my-queue",
        "awsRegion": "us-west-2",
    }


def ddb(
    event_name: str = "INSERT",
    *,
    keys: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    image: dict[str, Any] = {
        "ApproximateCreationDateTime": 1678831218.0,
        "Keys": keys or {"CustomerName": {"S": "AnyCompany Industries"}},
        "SequenceNumber": "111",
        "SizeBytes": 26,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        image["NewImage"] = new
    if old is not None:
        image["OldImage"] = old
    return {
        "eventID": "1",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": image,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024",
    }


def _text(pattern: Any) -> str:
    return pattern if isinstance(pattern, str) else orjson.dumps(pattern).decode()


def case(
    case_id: str, source: FilterSource, patterns: Any, entry: dict[str, Any], expected: bool
) -> Any:
    """One row: `patterns` is one pattern (object or raw JSON text) or a list of them."""
    many = patterns if isinstance(patterns, list) else [patterns]
    return pytest.param(source, [_text(p) for p in many], entry, expected, id=case_id)


def body_of(fields: dict[str, Any]) -> dict[str, Any]:
    return sqs(fields)


PERSON = {
    "person": {
        "name": "John Doe",
        "age": 30,
        "address": {"street": "123 Main St", "city": "Anytown", "country": "USA"},
    }
}
VOCAB = {"detail": {"c-count": 5, "d-count": 3, "x-limit": 301.8, "state": "running"}}
EMPLOYEES = {
    "employees": [
        {"firstName": "John", "lastName": "Doe"},
        {"firstName": "Anna", "lastName": "Smith"},
        {"firstName": "Peter", "lastName": "Jones"},
    ]
}
ORGS = {
    "UserID": {"S": "12345"},
    "Name": {"S": "John Doe"},
    "Organizations": {"L": [{"S": "Sales"}, {"S": "Marketing"}, {"S": "Support"}]},
}
ORDER: dict[str, Any] = {
    "record": 12345,
    "order": {"type": "buy", "stock": "ANYCO", "quantity": 1000},
}

MATCH_CASES = [
    # -- "Control which events Lambda sends to your function" (Lambda event filtering):
    #    the filter rule syntax table, one operator per row, on an SQS body.
    case("null-matches-null", "sqs", {"body": {"UserID": [None]}}, body_of({"UserID": None}), True),
    case("null-not-missing", "sqs", {"body": {"UserID": [None]}}, body_of({"Name": "x"}), False),
    case(
        "null-not-empty-string", "sqs", {"body": {"UserID": [None]}}, body_of({"UserID": ""}), False
    ),
    case(
        "empty-matches-empty", "sqs", {"body": {"LastName": [""]}}, body_of({"LastName": ""}), True
    ),
    case(
        "empty-not-text", "sqs", {"body": {"LastName": [""]}}, body_of({"LastName": "Doe"}), False
    ),
    case("empty-not-null", "sqs", {"body": {"LastName": [""]}}, body_of({"LastName": None}), False),
    case("equals", "sqs", {"body": {"Name": ["Alice"]}}, body_of({"Name": "Alice"}), True),
    case(
        "equals-is-case-sensitive",
        "sqs",
        {"body": {"Name": ["Alice"]}},
        body_of({"Name": "alice"}),
        False,
    ),
    case(
        "equals-ignore-case",
        "sqs",
        {"body": {"Name": [{"equals-ignore-case": "alice"}]}},
        body_of({"Name": "ALICE"}),
        True,
    ),
    case(
        "and-both",
        "sqs",
        {"body": {"Location": ["New York"], "Day": ["Monday"]}},
        body_of({"Location": "New York", "Day": "Monday"}),
        True,
    ),
    case(
        "and-one-missing",
        "sqs",
        {"body": {"Location": ["New York"], "Day": ["Monday"]}},
        body_of({"Location": "New York", "Day": "Tuesday"}),
        False,
    ),
    case(
        "or-values",
        "sqs",
        {"body": {"PaymentType": ["Credit", "Debit"]}},
        body_of({"PaymentType": "Debit"}),
        True,
    ),
    case(
        "or-values-none",
        "sqs",
        {"body": {"PaymentType": ["Credit", "Debit"]}},
        body_of({"PaymentType": "Cash"}),
        False,
    ),
    case(
        "or-fields",
        "sqs",
        {"body": {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}},
        body_of({"Location": "Boston", "Day": "Monday"}),
        True,
    ),
    case(
        "or-fields-none",
        "sqs",
        {"body": {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}},
        body_of({"Location": "Boston", "Day": "Friday"}),
        False,
    ),
    case(
        "anything-but-list",
        "sqs",
        {"body": {"Weather": [{"anything-but": ["Raining"]}]}},
        body_of({"Weather": "Sunny"}),
        True,
    ),
    case(
        "anything-but-excluded",
        "sqs",
        {"body": {"Weather": [{"anything-but": ["Raining"]}]}},
        body_of({"Weather": "Raining"}),
        False,
    ),
    case(
        "anything-but-needs-the-field",
        "sqs",
        {"body": {"Weather": [{"anything-but": ["Raining"]}]}},
        body_of({"Sky": "blue"}),
        False,
    ),
    case(
        "numeric-equals",
        "sqs",
        {"body": {"Price": [{"numeric": ["=", 100]}]}},
        body_of({"Price": 100}),
        True,
    ),
    case(
        "numeric-equals-by-value",
        "sqs",
        {"body": {"Price": [{"numeric": ["=", 100]}]}},
        body_of({"Price": 100.0}),
        True,
    ),
    case(
        "numeric-ignores-strings",
        "sqs",
        {"body": {"Price": [{"numeric": ["=", 100]}]}},
        body_of({"Price": "100"}),
        False,
    ),
    case(
        "numeric-range-top-included",
        "sqs",
        {"body": {"Price": [{"numeric": [">", 10, "<=", 20]}]}},
        body_of({"Price": 20}),
        True,
    ),
    case(
        "numeric-range-bottom-excluded",
        "sqs",
        {"body": {"Price": [{"numeric": [">", 10, "<=", 20]}]}},
        body_of({"Price": 10}),
        False,
    ),
    case(
        "numeric-range-float",
        "sqs",
        {"body": {"Price": [{"numeric": [">", 10, "<=", 20]}]}},
        body_of({"Price": 15.5}),
        True,
    ),
    case(
        "numeric-range-above",
        "sqs",
        {"body": {"Price": [{"numeric": [">", 10, "<=", 20]}]}},
        body_of({"Price": 20.01}),
        False,
    ),
    case(
        "exists-true",
        "sqs",
        {"body": {"ProductName": [{"exists": True}]}},
        body_of({"ProductName": "x"}),
        True,
    ),
    case(
        "exists-true-missing",
        "sqs",
        {"body": {"ProductName": [{"exists": True}]}},
        body_of({"Other": "x"}),
        False,
    ),
    case(
        "exists-true-null-is-a-value",
        "sqs",
        {"body": {"ProductName": [{"exists": True}]}},
        body_of({"ProductName": None}),
        True,
    ),
    case(
        "exists-false-missing",
        "sqs",
        {"body": {"ProductName": [{"exists": False}]}},
        body_of({"Other": "x"}),
        True,
    ),
    case(
        "exists-false-present",
        "sqs",
        {"body": {"ProductName": [{"exists": False}]}},
        body_of({"ProductName": "x"}),
        False,
    ),
    case(
        "prefix",
        "sqs",
        {"body": {"Region": [{"prefix": "us-"}]}},
        body_of({"Region": "us-east-1"}),
        True,
    ),
    case(
        "prefix-miss",
        "sqs",
        {"body": {"Region": [{"prefix": "us-"}]}},
        body_of({"Region": "eu-west-1"}),
        False,
    ),
    case(
        "prefix-not-numbers",
        "sqs",
        {"body": {"Region": [{"prefix": "1"}]}},
        body_of({"Region": 12}),
        False,
    ),
    case(
        "suffix",
        "sqs",
        {"body": {"FileName": [{"suffix": ".png"}]}},
        body_of({"FileName": "a.png"}),
        True,
    ),
    case(
        "suffix-miss",
        "sqs",
        {"body": {"FileName": [{"suffix": ".png"}]}},
        body_of({"FileName": "a.PNG"}),
        False,
    ),
    # Same page: "the Exists operator only works on leaf nodes" (the person.address example).
    case(
        "exists-true-on-intermediate-node",
        "sqs",
        {"body": {"person": {"address": [{"exists": True}]}}},
        body_of(PERSON),
        False,
    ),
    case(
        "exists-false-on-intermediate-node",
        "sqs",
        {"body": {"person": {"address": [{"exists": False}]}}},
        body_of(PERSON),
        True,
    ),
    case(
        "exists-false-parent-missing",
        "sqs",
        {"body": {"person": {"phone": [{"exists": False}]}}},
        body_of({"other": 1}),
        True,
    ),
    # Same page (2022 edition): partitionKey (metadata) AND Location (data), on Kinesis.
    case(
        "kinesis-doc-metadata-and-data",
        "kinesis",
        {"partitionKey": ["1"], "data": {"Location": ["Los Angeles"]}},
        kinesis({"Location": "Los Angeles"}),
        True,
    ),
    case(
        "kinesis-doc-metadata-mismatch",
        "kinesis",
        {"partitionKey": ["1"], "data": {"Location": ["Los Angeles"]}},
        kinesis({"Location": "Los Angeles"}, partition_key="2"),
        False,
    ),
    case(
        "kinesis-doc-temperature-range",
        "kinesis",
        {"data": {"Temperature": [{"numeric": [">", 50, "<=", 60]}]}},
        kinesis({"City": "Seattle", "Temperature": 55}),
        True,
    ),
    case(
        "kinesis-doc-temperature-as-string",
        "kinesis",
        {"data": {"Temperature": [{"numeric": [">", 50, "<=", 60]}]}},
        kinesis({"City": "Seattle", "Temperature": "55"}),
        False,
    ),
    case("console-example-a-is-2", "sqs", {"body": {"a": [1, 2]}}, body_of({"a": 2}), True),
    case("console-example-a-is-3", "sqs", {"body": {"a": [1, 2]}}, body_of({"a": 3}), False),
    # -- "Using event filtering with a Kinesis event source"
    case(
        "kinesis-order-type-buy",
        "kinesis",
        {"data": {"order": {"type": ["buy"]}}},
        kinesis(ORDER),
        True,
    ),
    case(
        "kinesis-order-type-sell",
        "kinesis",
        {"data": {"order": {"type": ["buy"]}}},
        kinesis({**ORDER, "order": {**ORDER["order"], "type": "sell"}}),
        False,
    ),
    case(
        "kinesis-nested-and",
        "kinesis",
        {"data": {"order": {"type": ["buy"], "quantity": [{"numeric": [">=", 1000]}]}}},
        kinesis(ORDER),
        True,
    ),
    case(
        "kinesis-nested-and-one-fails",
        "kinesis",
        {"data": {"order": {"type": ["buy"], "quantity": [{"numeric": [">", 1000]}]}}},
        kinesis(ORDER),
        False,
    ),
    case(
        "kinesis-non-json-data-drops-data-pattern",
        "kinesis",
        {"data": {"order": {"type": ["buy"]}}},
        kinesis(raw=b"Hello, this is a test."),
        False,
    ),
    case(
        "kinesis-non-json-data-exists-false-still-drops",
        "kinesis",
        {"data": {"order": [{"exists": False}]}},
        kinesis(raw=b"Hello, this is a test."),
        False,
    ),
    case(
        "kinesis-non-utf8-data",
        "kinesis",
        {"data": {"order": [{"exists": False}]}},
        kinesis(raw=b"\xff\xfe{}"),
        False,
    ),
    case(
        "kinesis-non-json-data-metadata-only",
        "kinesis",
        {"partitionKey": ["1"]},
        kinesis(raw=b"Hello, this is a test."),
        True,
    ),
    case(
        "kinesis-bad-base64",
        "kinesis",
        {"data": {"a": [{"exists": False}]}},
        {"kinesis": {"data": "not base64!", "partitionKey": "1"}},
        False,
    ),
    # -- "Using event filtering with an Amazon SQS event source"
    case(
        "sqs-request-code",
        "sqs",
        {"body": {"RequestCode": ["BBBB"]}},
        body_of({"RecordNumber": 1234, "TimeStamp": "t", "RequestCode": "BBBB"}),
        True,
    ),
    case(
        "sqs-request-code-other",
        "sqs",
        {"body": {"RequestCode": ["BBBB"]}},
        body_of({"RecordNumber": 1234, "TimeStamp": "t", "RequestCode": "AAAA"}),
        False,
    ),
    case(
        "sqs-record-number-above-9999",
        "sqs",
        {"body": {"RecordNumber": [{"numeric": [">", 9999]}]}},
        body_of({"RecordNumber": 10000}),
        True,
    ),
    case(
        "sqs-record-number-1234",
        "sqs",
        {"body": {"RecordNumber": [{"numeric": [">", 9999]}]}},
        body_of({"RecordNumber": 1234}),
        False,
    ),
    #    The body-format table: plain/plain filters, a format mismatch drops the message.
    case("sqs-plain-body-plain-pattern", "sqs", {"body": ["hello"]}, sqs("hello"), True),
    case("sqs-plain-body-plain-pattern-miss", "sqs", {"body": ["hello"]}, sqs("goodbye"), False),
    case(
        "sqs-plain-body-plain-prefix",
        "sqs",
        {"body": [{"prefix": "ERR"}]},
        sqs("ERROR: disk"),
        True,
    ),
    case(
        "sqs-plain-body-json-pattern",
        "sqs",
        {"body": {"a": [{"exists": False}]}},
        sqs("hello"),
        False,
    ),
    case("sqs-json-body-plain-pattern", "sqs", {"body": ['{"a": 1}']}, sqs('{"a": 1}'), False),
    case("sqs-json-scalar-body-plain-pattern", "sqs", {"body": ["42"]}, sqs("42"), False),
    case(
        "sqs-plain-body-metadata-only",
        "sqs",
        {"attributes": {"ApproximateReceiveCount": ["1"]}},
        sqs("hello"),
        True,
    ),
    case(
        "sqs-json-body-metadata-only",
        "sqs",
        {"awsRegion": ["us-west-2"]},
        body_of({"a": 1}),
        True,
    ),
    # -- "Using event filtering with a DynamoDB event source"
    case(
        "ddb-table-key",
        "dynamodb",
        {"dynamodb": {"Keys": {"CustomerName": {"S": ["AnyCompany Industries"]}}}},
        ddb(),
        True,
    ),
    case(
        "ddb-table-key-other",
        "dynamodb",
        {"dynamodb": {"Keys": {"CustomerName": {"S": ["Other Co"]}}}},
        ddb(),
        False,
    ),
    case(
        "ddb-new-image-or",
        "dynamodb",
        {
            "dynamodb": {
                "NewImage": {"AccountManager": {"S": ["Pat Candella", "Shirley Rodriguez"]}}
            }
        },
        ddb(new={"AccountManager": {"S": "Shirley Rodriguez"}}),
        True,
    ),
    case(
        "ddb-boolean-and-duplicate-keys",
        "dynamodb",
        '{"dynamodb": {"NewImage": {"AccountManager": {"S": ["Pat Candella"]}}},'
        ' "dynamodb": {"OldImage": {"AccountManager": {"S": ["Terry Whitlock"]}}}}',
        ddb(
            new={"AccountManager": {"S": "Pat Candella"}},
            old={"AccountManager": {"S": "Terry Whitlock"}},
        ),
        True,
    ),
    case(
        "ddb-boolean-and-duplicate-keys-one-side",
        "dynamodb",
        '{"dynamodb": {"NewImage": {"AccountManager": {"S": ["Pat Candella"]}}},'
        ' "dynamodb": {"OldImage": {"AccountManager": {"S": ["Terry Whitlock"]}}}}',
        ddb(
            new={"AccountManager": {"S": "Pat Candella"}}, old={"AccountManager": {"S": "Someone"}}
        ),
        False,
    ),
    case(
        "ddb-exists-on-intermediate-node",
        "dynamodb",
        {"dynamodb": {"NewImage": {"Organizations": [{"exists": True}]}}},
        ddb(new=ORGS),
        False,
    ),
    case(
        "ddb-exists-on-leaf",
        "dynamodb",
        {"dynamodb": {"NewImage": {"Organizations": {"L": {"S": [{"exists": True}]}}}}},
        ddb(new=ORGS),
        True,
    ),
    case(
        "ddb-numeric-on-n-string-never-matches",
        "dynamodb",
        {"dynamodb": {"Keys": {"Id": {"N": [{"numeric": [">", 100]}]}}}},
        ddb(keys={"Id": {"N": "101"}}),
        False,
    ),
    case(
        "ddb-multi-level-doc-example",
        "dynamodb",
        {"dynamodb": {"Keys": {"Id": {"N": ["101"]}}}},
        ddb(keys={"Id": {"N": "101"}}, new={"Message": {"S": "New item!"}, "Id": {"N": "101"}}),
        True,
    ),
    case("ddb-event-name", "dynamodb", {"eventName": ["INSERT"]}, ddb("INSERT"), True),
    case("ddb-event-name-other", "dynamodb", {"eventName": ["INSERT"]}, ddb("REMOVE"), False),
    case(
        "ddb-event-name-and-image",
        "dynamodb",
        {"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["shipped"]}}}},
        ddb("MODIFY", new={"status": {"S": "shipped"}}),
        True,
    ),
    case(
        "ddb-size-bytes-is-a-number",
        "dynamodb",
        {"dynamodb": {"SizeBytes": [{"numeric": ["<", 100]}]}},
        ddb(),
        True,
    ),
    # -- "Content filtering in Amazon EventBridge event patterns" / "Comparison operators"
    case(
        "prefix-ignore-case",
        "sqs",
        {"body": {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}}},
        body_of({"detail": {"service": "eventbridge"}}),
        True,
    ),
    case(
        "suffix-ignore-case",
        "sqs",
        {"body": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        body_of({"FileName": "IMAGE.PNG"}),
        True,
    ),
    case(
        "anything-but-string",
        "sqs",
        {"body": {"detail": {"state": [{"anything-but": "initializing"}]}}},
        body_of(VOCAB),
        True,
    ),
    case(
        "anything-but-number-excluded",
        "sqs",
        {"body": {"detail": {"x-limit": [{"anything-but": 301.8}]}}},
        body_of(VOCAB),
        False,
    ),
    case(
        "anything-but-numbers",
        "sqs",
        {"body": {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}},
        body_of(VOCAB),
        True,
    ),
    case(
        "anything-but-prefix",
        "sqs",
        {"body": {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}},
        body_of({"detail": {"state": "initializing"}}),
        False,
    ),
    case(
        "anything-but-suffix",
        "sqs",
        {"body": {"FileName": [{"anything-but": {"suffix": ".png"}}]}},
        body_of({"FileName": "a.jpg"}),
        True,
    ),
    case(
        "anything-but-ignore-case",
        "sqs",
        {"body": {"state": [{"anything-but": {"equals-ignore-case": ["initializing"]}}]}},
        body_of({"state": "INITIALIZING"}),
        False,
    ),
    case(
        "complex-example",
        "sqs",
        {
            "body": {
                "detail": {
                    "state": [{"anything-but": "initializing"}],
                    "c-count": [{"numeric": [">", 0, "<=", 5]}],
                    "d-count": [{"numeric": ["<", 10]}],
                    "x-limit": [{"numeric": ["=", 3.018e2]}],
                }
            }
        },
        body_of(VOCAB),
        True,
    ),
    case(
        "or-inside-and",
        "sqs",
        {
            "body": {
                "source": ["aws.cloudwatch"],
                "$or": [
                    {"metricName": ["CPUUtilization"]},
                    {"metricType": ["MetricType"], "namespace": ["AWS/EC2"]},
                ],
            }
        },
        body_of({"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2"}),
        True,
    ),
    case(
        "or-inside-and-source-differs",
        "sqs",
        {
            "body": {
                "source": ["aws.cloudwatch"],
                "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
            }
        },
        body_of({"source": "aws.ec2", "namespace": "AWS/EC2"}),
        False,
    ),
    # -- Arrays in events (Event Ruler "JSON Array Matching", EventBridge "arrays" semantics)
    case(
        "array-object-element",
        "sqs",
        {"body": {"employees": {"firstName": ["Anna"]}}},
        body_of(EMPLOYEES),
        True,
    ),
    case(
        "array-same-element",
        "sqs",
        {"body": {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}},
        body_of(EMPLOYEES),
        True,
    ),
    case(
        "array-conditions-across-elements",
        "sqs",
        {"body": {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}},
        body_of(EMPLOYEES),
        False,
    ),
    case(
        "array-of-arrays",
        "sqs",
        {"body": {"employees": {"firstName": ["Peter"]}}},
        body_of({"employees": [[EMPLOYEES["employees"][0]], [EMPLOYEES["employees"][2]]]}),
        True,
    ),
    case(
        "array-of-values-intersects",
        "sqs",
        {"body": {"resources": ["arn:b", "arn:z"]}},
        body_of({"resources": ["arn:a", "arn:b"]}),
        True,
    ),
    case(
        "array-of-values-disjoint",
        "sqs",
        {"body": {"resources": ["arn:z"]}},
        body_of({"resources": ["arn:a", "arn:b"]}),
        False,
    ),
    case(
        "anything-but-on-array-any-element",
        "sqs",
        {"body": {"weather": [{"anything-but": "Raining"}]}},
        body_of({"weather": ["Raining", "Sunny"]}),
        True,
    ),
    case(
        "anything-but-on-array-all-excluded",
        "sqs",
        {"body": {"weather": [{"anything-but": "Raining"}]}},
        body_of({"weather": ["Raining"]}),
        False,
    ),
    case(
        "exists-on-empty-array",
        "sqs",
        {"body": {"tags": [{"exists": True}]}},
        body_of({"tags": []}),
        False,
    ),
    case(
        "exists-false-empty-array",
        "sqs",
        {"body": {"tags": [{"exists": False}]}},
        body_of({"tags": []}),
        True,
    ),
    case(
        "numeric-on-array",
        "sqs",
        {"body": {"scores": [{"numeric": [">=", 90]}]}},
        body_of({"scores": [10, 95]}),
        True,
    ),
    # -- Metadata keys (matched against the record as the function sees it)
    case("kinesis-event-name", "kinesis", {"eventName": ["aws:kinesis:record"]}, kinesis({}), True),
    case(
        "kinesis-region-prefix", "kinesis", {"awsRegion": [{"prefix": "eu-"}]}, kinesis({}), False
    ),
    case(
        "kinesis-nested-partition-key",
        "kinesis",
        {"kinesis": {"partitionKey": [{"prefix": "1"}]}},
        kinesis({}, partition_key="12"),
        True,
    ),
    case(
        "kinesis-arrival-numeric",
        "kinesis",
        {"approximateArrivalTimestamp": [{"numeric": [">", 1545084650]}]},
        kinesis({}),
        True,
    ),
    case(
        "sqs-receive-count",
        "sqs",
        {"attributes": {"ApproximateReceiveCount": ["1"]}},
        sqs("x", receive_count="3"),
        False,
    ),
    case(
        "sqs-message-attribute",
        "sqs",
        {"messageAttributes": {"kind": {"stringValue": ["audit"]}}},
        sqs("x", attrs={"kind": {"stringValue": "audit", "dataType": "String"}}),
        True,
    ),
    case(
        "sqs-message-attribute-and-body",
        "sqs",
        {"messageAttributes": {"kind": {"stringValue": ["audit"]}}, "body": {"a": [1]}},
        sqs({"a": 2}, attrs={"kind": {"stringValue": "audit", "dataType": "String"}}),
        False,
    ),
    # -- $or at the top level, mixing the payload and metadata
    case(
        "top-or-metadata-branch-with-plain-data",
        "kinesis",
        {"$or": [{"data": {"type": ["buy"]}}, {"partitionKey": ["vip"]}]},
        kinesis(raw=b"plain text", partition_key="vip"),
        True,
    ),
    case(
        "top-or-data-branch",
        "kinesis",
        {"$or": [{"data": {"type": ["buy"]}}, {"partitionKey": ["vip"]}]},
        kinesis({"type": "buy"}),
        True,
    ),
    case(
        "top-or-neither",
        "kinesis",
        {"$or": [{"data": {"type": ["buy"]}}, {"partitionKey": ["vip"]}]},
        kinesis({"type": "sell"}),
        False,
    ),
    # -- Several filters: a record passes if any one matches
    case(
        "or-across-filters-second",
        "kinesis",
        [{"data": {"type": ["buy"]}}, {"data": {"type": ["sell"]}}],
        kinesis({"type": "sell"}),
        True,
    ),
    case(
        "or-across-filters-none",
        "kinesis",
        [{"data": {"type": ["buy"]}}, {"data": {"type": ["sell"]}}],
        kinesis({"type": "hold"}),
        False,
    ),
    case(
        "or-across-filters-metadata-and-data",
        "kinesis",
        [{"partitionKey": ["vip"]}, {"data": {"type": ["buy"]}}],
        kinesis(raw=b"plain", partition_key="vip"),
        True,
    ),
    case("no-filters-pass-everything", "kinesis", [], kinesis(raw=b"anything"), True),
    # -- Types are never confused
    case("number-not-bool", "sqs", {"body": {"flag": [1]}}, body_of({"flag": True}), False),
    case("bool-matches-bool", "sqs", {"body": {"flag": [True]}}, body_of({"flag": True}), True),
    case("false-not-zero", "sqs", {"body": {"flag": [False]}}, body_of({"flag": 0}), False),
    case("string-not-number", "sqs", {"body": {"id": ["300"]}}, body_of({"id": 300}), False),
    case("number-exact-by-value", "sqs", {"body": {"id": [300]}}, body_of({"id": 300.0}), True),
    case(
        "big-integer-exact",
        "sqs",
        '{"body": {"account": [123456789012345678901]}}',
        sqs('{"account": 123456789012345678901}'),
        True,
    ),
    case(
        "numeric-not-bool",
        "sqs",
        {"body": {"flag": [{"numeric": [">", 0]}]}},
        body_of({"flag": True}),
        False,
    ),
    case(
        "anything-but-strings-passes-numbers",
        "sqs",
        {"body": {"v": [{"anything-but": ["a"]}]}},
        body_of({"v": 7}),
        True,
    ),
    case(
        "value-or-operator-in-one-list",
        "sqs",
        {"body": {"v": ["exact", {"prefix": "pre"}, {"numeric": ["<", 0]}]}},
        body_of({"v": -3}),
        True,
    ),
]


@pytest.mark.parametrize(("source", "patterns", "entry", "expected"), MATCH_CASES)
def test_pattern_table(
    source: FilterSource, patterns: list[str], entry: dict[str, Any], expected: bool
) -> None:
    assert compile_filters(patterns, source=source).matches(entry) is expected


def test_the_table_is_large() -> None:
    assert len(MATCH_CASES) >= 60


# ---------------------------------------------------------------------------------------------
# Patterns refused when the mapping is configured

INVALID_CASES = [
    pytest.param("kinesis", "{", "is not valid JSON", id="not-json"),
    pytest.param("kinesis", "", "is not valid JSON", id="empty-string"),
    pytest.param("sqs", '{"body": {"a": [NaN]}}', "is not valid JSON", id="nan"),
    pytest.param("sqs", '["a"]', "must be a JSON object", id="not-an-object"),
    pytest.param("sqs", "{}", "empty object", id="empty-pattern"),
    pytest.param("sqs", '{"body": {}}', "empty objects are not allowed", id="empty-nested-object"),
    pytest.param(
        "sqs",
        '{"body": {"a": "x"}}',
        'must be a list of values or an object, got "x"',
        id="leaf-not-list",
    ),
    pytest.param("sqs", '{"awsRegion": 5}', "must be a list of values", id="leaf-number"),
    pytest.param("sqs", '{"body": {"a": []}}', "empty lists are not allowed", id="empty-list"),
    pytest.param("sqs", '{"body": {"a": [["x"]]}}', "cannot be matched", id="nested-list"),
    pytest.param("sqs", '{"body": {"a": [1e999]}}', "cannot be matched", id="infinite-number"),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"regex": "x.*"}]}}',
        "unknown operator 'regex'",
        id="unknown-operator",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"wildcard": "*.png"}]}}',
        "does not support wildcard",
        id="wildcard",
    ),
    pytest.param(
        "sqs", '{"body": {"a": [{"cidr": "10.0.0.0/24"}]}}', "does not support cidr", id="cidr"
    ),
    pytest.param("sqs", '{"body": {"a": [{}]}}', "exactly one operator", id="empty-operator"),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"prefix": "a", "suffix": "b"}]}}',
        "exactly one operator",
        id="two-operators",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"numeric": [">", 1, "<"]}]}}',
        "operator/number pairs",
        id="numeric-odd",
    ),
    pytest.param(
        "sqs", '{"body": {"a": [{"numeric": []}]}}', "operator/number pairs", id="numeric-empty"
    ),
    pytest.param(
        "sqs", '{"body": {"a": [{"numeric": 5}]}}', "operator/number pairs", id="numeric-not-list"
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"numeric": [">", "1"]}]}}',
        "must be a number",
        id="numeric-string-bound",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"numeric": [">", true]}]}}',
        "must be a number",
        id="numeric-bool-bound",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"numeric": ["!=", 1]}]}}',
        'unknown comparison "!="',
        id="numeric-op",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"numeric": [">", 5, "<", 1]}]}}',
        "range is empty",
        id="numeric-empty-range",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"numeric": [">", 5, "<", 5]}]}}',
        "range is empty",
        id="numeric-open-point",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"numeric": ["<", 5, ">", 1]}]}}',
        "followed by an upper",
        id="numeric-order",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"numeric": ["=", 1, "<", 3]}]}}',
        '"=" alone',
        id="numeric-equals-plus",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"numeric": [">", 1, ">", 3]}]}}',
        "lower bound",
        id="numeric-two-lower",
    ),
    pytest.param(
        "sqs", '{"body": {"a": [{"prefix": 5}]}}', "prefix takes a string", id="prefix-number"
    ),
    pytest.param(
        "sqs", '{"body": {"a": [{"suffix": ["x"]}]}}', "suffix takes a string", id="suffix-list"
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"prefix": {"equals-ignore-case": 5}}]}}',
        "prefix takes a string",
        id="prefix-eic",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"equals-ignore-case": 5}]}}',
        "equals-ignore-case takes a string",
        id="eic",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"exists": "true"}]}}',
        "exists takes true or false",
        id="exists-text",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"anything-but": null}]}}',
        "anything-but null",
        id="anything-but-null",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"anything-but": true}]}}',
        "anything-but true",
        id="anything-but-bool",
    ),
    pytest.param(
        "sqs", '{"body": {"a": [{"anything-but": []}]}}', "non-empty list", id="anything-but-empty"
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"anything-but": ["a", 1]}]}}',
        "only numbers",
        id="anything-but-mixed",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"anything-but": {"prefix": ""}}]}}',
        "non-empty string",
        id="anything-but-empty-prefix",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"anything-but": {"wildcard": "*x"}}]}}',
        "exactly one of prefix, suffix or equals-ignore-case",
        id="anything-but-wildcard",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": [{"anything-but": {"equals-ignore-case": [1]}}]}}',
        "list of strings",
        id="anything-but-eic-number",
    ),
    pytest.param("sqs", '{"body": {"$or": {"a": ["x"]}}}', "$or takes a list", id="or-not-list"),
    pytest.param("sqs", '{"body": {"$or": [{"a": ["x"]}]}}', "at least 2", id="or-single"),
    pytest.param(
        "sqs", '{"$or": [{"a": ["x"]}, "b"]}', "non-empty object", id="or-entry-not-object"
    ),
    pytest.param("sqs", '{"$or": [{"a": ["x"]}, {}]}', "non-empty object", id="or-entry-empty"),
    pytest.param(
        "kinesis", '{"data": ["text"]}', "plain string is refused", id="kinesis-plain-data-pattern"
    ),
    pytest.param(
        "kinesis", '{"data": "text"}', "must be a list of values", id="kinesis-data-scalar"
    ),
    pytest.param(
        "kinesis",
        '{"kinesis": {"data": {"a": ["x"]}}}',
        'top-level "data" key',
        id="kinesis-inner-data",
    ),
    pytest.param("dynamodb", '{"dynamodb": ["x"]}', "object pattern", id="dynamodb-not-object"),
    pytest.param(
        "sqs",
        '{"body": {"a": ["' + "x" * MAX_PATTERN_CHARS + '"]}}',
        "characters long, at most 4096",
        id="too-long",
    ),
    # Within 4096 characters, but deeper than compiling (or Python's JSON parser) can recurse.
    pytest.param(
        "sqs",
        '{"body": ' + '{"a":' * 600 + '["x"]' + "}" * 600 + "}",
        "the pattern nests more than 100 levels deep",
        id="too-deep",
    ),
    pytest.param(
        "sqs",
        '{"body": {"a": ' + "[" * 2000 + "]" * 2000 + "}}",
        "the pattern nests more than 100 levels deep",
        id="too-deep-for-json",
    ),
    pytest.param("sqs", "null", "must be a JSON object", id="null"),
]


@pytest.mark.parametrize(("source", "pattern", "fragment"), INVALID_CASES)
def test_invalid_patterns(source: FilterSource, pattern: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_filters(['{"eventSource": ["x"]}', pattern], source=source)
    assert len(info.value.problems) == 1, info.value.problems
    (problem,) = info.value.problems
    assert problem.startswith("Filters[1]"), problem
    assert fragment in problem, problem


def test_every_problem_of_every_filter_is_reported_with_its_place() -> None:
    patterns = [
        '{"data": {"order": {"type": "buy", "qty": [{"numeric": [">"]}]}}}',
        '{"eventName": ["aws:kinesis:record"]}',
        '{"data": {"$or": [{"a": [{"exists": 1}]}, {"b": ["x"]}]}}',
    ]
    with pytest.raises(ConfigError) as info:
        compile_filters(patterns, source="kinesis")
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith("Filters[0] at data.order.type:")
    assert problems[1].startswith("Filters[0] at data.order.qty:")
    assert problems[2].startswith("Filters[2] at data.$or[0].a:")


def test_more_than_five_filters_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        compile_filters(['{"eventName": ["x"]}'] * (MAX_FILTERS + 1), source="dynamodb")
    assert info.value.problems == ["Filters: 6 filters given, at most 5 are allowed per mapping"]


def test_a_pattern_of_exactly_4096_characters_is_accepted() -> None:
    head, tail = '{"body": {"a": ["', '"]}}'
    text = "x" * (MAX_PATTERN_CHARS - len(head) - len(tail))
    pattern = head + text + tail
    assert len(pattern) == MAX_PATTERN_CHARS
    assert compile_filters([pattern], source="sqs").matches(sqs({"a": text}))


def test_a_pattern_nested_one_hundred_levels_deep_is_accepted() -> None:
    # The pattern, "body", 97 objects and the list of values: 100 levels.
    pattern = '{"body": ' + '{"a": ' * 97 + '["x"]' + "}" * 97 + "}"
    record: Any = "x"
    for _ in range(97):
        record = {"a": record}
    assert compile_filters([pattern], source="sqs").matches(sqs(record))


def test_unknown_source_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown event source"):
        compile_filters([], source="kafka")  # type: ignore[arg-type]


def test_duplicate_leaf_keys_keep_the_last() -> None:
    f = compile_filters(['{"body": {"a": ["x"], "a": ["y"]}}'], source="sqs")
    assert f.matches(sqs({"a": "y"}))
    assert not f.matches(sqs({"a": "x"}))


def test_the_filter_describes_itself() -> None:
    f = compile_filters(['{"eventName": ["INSERT"]}'], source="dynamodb")
    assert len(f) == 1
    assert f.patterns == ('{"eventName": ["INSERT"]}',)
    assert f.source == "dynamodb"
    assert "dynamodb" in repr(f)
    assert isinstance(compile_filters([], source="sqs"), RecordFilter)


# ---------------------------------------------------------------------------------------------
# The payload is decoded lazily and at most once per record


class CountingKinesis(dict[str, Any]):
    """A record's "kinesis" object that counts reads of its data."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        if key == "data":
            CountingKinesis.reads += 1
        return super().get(key, default)


def _counted(data: Any, partition_key: str = "1") -> dict[str, Any]:
    entry = kinesis(data, partition_key=partition_key)
    entry["kinesis"] = CountingKinesis(entry["kinesis"])
    CountingKinesis.reads = 0
    return entry


def test_data_is_decoded_once_for_several_data_filters() -> None:
    f = compile_filters(
        ['{"data": {"type": ["a"]}}', '{"data": {"type": ["b"]}}', '{"data": {"type": ["c"]}}'],
        source="kinesis",
    )
    entry = _counted({"type": "c"})
    assert f.matches(entry)
    assert CountingKinesis.reads == 1


def test_data_is_not_decoded_when_a_metadata_filter_matches() -> None:
    f = compile_filters(
        ['{"data": {"type": ["a"]}}', '{"partitionKey": ["vip"]}'], source="kinesis"
    )
    entry = _counted({"type": "a"}, partition_key="vip")
    assert f.matches(entry)
    assert CountingKinesis.reads == 0


def test_data_is_not_decoded_when_the_metadata_half_fails() -> None:
    f = compile_filters(['{"partitionKey": ["vip"], "data": {"type": ["a"]}}'], source="kinesis")
    entry = _counted({"type": "a"}, partition_key="regular")
    assert not f.matches(entry)
    assert CountingKinesis.reads == 0


# ---------------------------------------------------------------------------------------------
# Any JSON at all: the filter answers, it never raises

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from("abc"), children, max_size=4)
    ),
    max_leaves=20,
)
EVERY_OPERATOR = [
    '{"data": {"a": ["x", 1, true, null, ""], "b": [{"prefix": "p"}, {"suffix": "s"}]}}',
    '{"data": {"a": [{"equals-ignore-case": "X"}, {"prefix": {"equals-ignore-case": "Y"}}]}}',
    '{"data": {"b": {"c": [{"numeric": [">", 0, "<=", 5]}, {"anything-but": ["x"]}]}}}',
    '{"data": {"$or": [{"a": [{"exists": false}]}, {"c": [{"anything-but": {"prefix": "q"}}]}]}}',
    '{"partitionKey": [{"exists": true}], "data": {"a": [{"anything-but": [1, 2]}]}}',
]


@given(data=json_values)
def test_any_json_data_gets_an_answer(data: Any) -> None:
    f = compile_filters(EVERY_OPERATOR, source="kinesis")
    assert f.matches(kinesis(data)) in (True, False)
    g = compile_filters([p.replace('"data"', '"body"') for p in EVERY_OPERATOR], source="sqs")
    assert g.matches(sqs(data)) in (True, False)
