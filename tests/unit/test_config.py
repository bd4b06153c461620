"""Tests of esm.config: parsing, environment expansion and every validation rule."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from esm import config as config_module
from esm.backends.http_plugin import HttpFunctionConfig
from esm.backends.python_plugin import PythonFunctionConfig
from esm.checkpoints.plugins import SqliteStateConfig
from esm.config import (
    EsmConfig,
    MappingConfig,
    describe_config,
    load_config,
    parse_config,
    parse_source_arn,
)
from esm.errors import ConfigError
from esm.sources.plugins import DynamoDBSource, KinesisSource

KINESIS_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
DYNAMODB_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
SQS_ARN = "arn:aws:sqs:us-east-1:123456789012:orders"
FIFO_ARN = "arn:aws:sqs:us-east-1:123456789012:orders.fifo"
LAMBDA_ARN = "arn:aws:lambda:us-east-1:123456789012:function:orders"
SNS_DESTINATION = "arn:aws:sns:us-east-1:123456789012:failures"
SQS_DESTINATION = "arn:aws:sqs:us-east-1:123456789012:failures"
S3_DESTINATION = "arn:aws:s3:::failures-bucket"

BASES: dict[str, dict[str, Any]] = {
    "kinesis": {
        "FunctionName": "orders",
        "EventSourceArn": KINESIS_ARN,
        "StartingPosition": "TRIM_HORIZON",
    },
    "dynamodb": {
        "FunctionName": "orders",
        "EventSourceArn": DYNAMODB_ARN,
        "StartingPosition": "LATEST",
    },
    "sqs": {"FunctionName": "orders", "EventSourceArn": SQS_ARN},
    "fifo": {"FunctionName": "orders", "EventSourceArn": FIFO_ARN},
}
FUNCTIONS: dict[str, Any] = {"orders": {"type": "http", "url": "http://127.0.0.1:8080/"}}
DROP = object()
"""An override value that removes the key from the base mapping."""

PAST = 1_700_000_000  # 2023-11-14
FUTURE = int(time.time()) + 86_400


def build(mapping: dict[str, Any] | None = None, **sections: Any) -> str:
    data: dict[str, Any] = {"functions": FUNCTIONS, "mappings": [mapping or BASES["kinesis"]]}
    data.update(sections)
    return yaml.safe_dump(data, sort_keys=False)


def mapping_of(base: str, overrides: dict[str, Any]) -> dict[str, Any]:
    mapping = dict(BASES[base])
    for key, value in overrides.items():
        if value is DROP:
            mapping.pop(key, None)
        else:
            mapping[key] = value
    return mapping


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    try:
        parse_config(text, environ or {})
    except ConfigError as exc:
        return exc.problems
    return []


def mapping_problems(base: str, overrides: dict[str, Any]) -> list[str]:
    return problems_of(build(mapping_of(base, overrides)))


def range_problems(problems: list[str]) -> list[str]:
    """The problems left once the release's "not supported yet" refusals are set aside."""
    return [p for p in problems if "not supported yet" not in p]


def assert_reported(problems: list[str], fragments: list[str]) -> None:
    matching = [p for p in problems if all(f in p for f in fragments)]
    assert matching, f"no problem contains {fragments}: {problems}"


# --------------------------------------------------------------------------- the table

REJECTED: list[tuple[str, dict[str, Any], list[str]]] = [
    # EventSourceArn
    ("kinesis", {"EventSourceArn": DROP}, ["EventSourceArn: is required"]),
    ("kinesis", {"EventSourceArn": "orders"}, ["EventSourceArn", "is not an ARN", "stream/NAME"]),
    ("kinesis", {"EventSourceArn": "arn:aws:s3:::bucket"}, ["EventSourceArn", "'s3' ARN"]),
    (
        "kinesis",
        {"EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:orders"},
        ["EventSourceArn", "not a Kinesis stream ARN", "stream/NAME"],
    ),
    (
        "kinesis",
        {"EventSourceArn": "arn:aws:kinesis:nowhere:123456789012:stream/orders"},
        ["EventSourceArn", "region", "'nowhere'"],
    ),
    (
        "kinesis",
        {"EventSourceArn": "arn:aws:kinesis:us-east-1:1234:stream/orders"},
        ["EventSourceArn", "12 digits", "'1234'"],
    ),
    (
        "dynamodb",
        {"EventSourceArn": "arn:aws:dynamodb:us-east-1:123456789012:table/orders"},
        ["EventSourceArn", "not a DynamoDB stream ARN", "table/TABLE/stream/LABEL"],
    ),
    (
        "sqs",
        {"EventSourceArn": "arn:aws:sqs:us-east-1:123456789012:bad/queue"},
        ["EventSourceArn", "not an SQS queue ARN"],
    ),
    ("kinesis", {"EventSourceArn": 42}, ["EventSourceArn", "valid string", "got 42"]),
    # FunctionName / FunctionArn
    ("kinesis", {"FunctionName": DROP}, ["FunctionName: is required"]),
    (
        "kinesis",
        {"FunctionName": "billing"},
        ["FunctionName", "'billing'", "not defined", "orders"],
    ),
    ("kinesis", {"FunctionName": "bad name"}, ["FunctionName", "not a function name", "1 to 64"]),
    (
        "kinesis",
        {"FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:billing"},
        ["FunctionName", "'billing'", "not defined under functions"],
    ),
    (
        "kinesis",
        {"FunctionName": "arn:aws:lambda:us-east-1:123456789012:layer:x"},
        ["FunctionName", "not a Lambda function ARN", "function:NAME"],
    ),
    ("kinesis", {"FunctionArn": "orders"}, ["FunctionArn", "alias of FunctionName"]),
    # Enabled
    ("kinesis", {"Enabled": "yes"}, ["Enabled", "boolean", "'yes'"]),
    ("kinesis", {"Enabled": 1}, ["Enabled", "boolean", "got 1"]),
    # BatchSize
    ("kinesis", {"BatchSize": 0}, ["BatchSize: 0 is out of range", "between 1 and 10000"]),
    ("kinesis", {"BatchSize": 10001}, ["BatchSize: 10001 is out of range", "between 1 and 10000"]),
    ("dynamodb", {"BatchSize": 20000}, ["BatchSize: 20000", "between 1 and 10000"]),
    ("sqs", {"BatchSize": -5}, ["BatchSize: -5", "between 1 and 10000"]),
    ("fifo", {"BatchSize": 11}, ["BatchSize: 11", "between 1 and 10 for an SQS FIFO queue"]),
    ("kinesis", {"BatchSize": "100"}, ["BatchSize", "valid integer", "'100'"]),
    ("kinesis", {"BatchSize": 10.5}, ["BatchSize", "valid integer", "10.5"]),
    ("kinesis", {"BatchSize": True}, ["BatchSize", "valid integer", "true"]),
    # MaximumBatchingWindowInSeconds
    (
        "kinesis",
        {"MaximumBatchingWindowInSeconds": -1},
        ["MaximumBatchingWindowInSeconds: -1 is out of range", "between 0 and 300"],
    ),
    (
        "sqs",
        {"MaximumBatchingWindowInSeconds": 301},
        ["MaximumBatchingWindowInSeconds: 301", "between 0 and 300"],
    ),
    (
        "kinesis",
        {"MaximumBatchingWindowInSeconds": 0.5},
        ["MaximumBatchingWindowInSeconds", "valid integer", "0.5"],
    ),
    (
        "fifo",
        {"MaximumBatchingWindowInSeconds": 1},
        ["MaximumBatchingWindowInSeconds: 1", "not supported for FIFO queues"],
    ),
    (
        "sqs",
        {"BatchSize": 11},
        [
            "MaximumBatchingWindowInSeconds",
            "Maximum batch window in seconds must be greater than 0 if maximum batch size "
            "is greater than 10",
        ],
    ),
    (
        "sqs",
        {"BatchSize": 500, "MaximumBatchingWindowInSeconds": 0},
        ["Maximum batch window in seconds must be greater than 0", "BatchSize is 500"],
    ),
    # StartingPosition
    (
        "kinesis",
        {"StartingPosition": DROP},
        [
            "StartingPosition: is required for a Kinesis stream",
            "TRIM_HORIZON, LATEST, AT_TIMESTAMP",
        ],
    ),
    (
        "dynamodb",
        {"StartingPosition": DROP},
        ["StartingPosition: is required for a DynamoDB stream", "TRIM_HORIZON, LATEST"],
    ),
    (
        "kinesis",
        {"StartingPosition": "EARLIEST"},
        ["StartingPosition: 'EARLIEST'", "must be one of TRIM_HORIZON, LATEST, AT_TIMESTAMP"],
    ),
    ("kinesis", {"StartingPosition": "latest"}, ["StartingPosition: 'latest'", "must be one of"]),
    (
        "dynamodb",
        {"StartingPosition": "AT_TIMESTAMP"},
        [
            "StartingPosition: 'AT_TIMESTAMP'",
            "DynamoDB stream",
            "must be one of TRIM_HORIZON, LATEST",
        ],
    ),
    ("sqs", {"StartingPosition": "LATEST"}, ["StartingPosition: 'LATEST' not allowed", "SQS"]),
    # StartingPositionTimestamp
    (
        "kinesis",
        {"StartingPosition": "AT_TIMESTAMP"},
        ["StartingPositionTimestamp: is required when StartingPosition is AT_TIMESTAMP"],
    ),
    (
        "kinesis",
        {"StartingPositionTimestamp": PAST},
        ["StartingPositionTimestamp", "only when StartingPosition is AT_TIMESTAMP", "TRIM_HORIZON"],
    ),
    (
        "kinesis",
        {"StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": FUTURE},
        ["StartingPositionTimestamp", str(FUTURE), "in the future"],
    ),
    (
        "kinesis",
        {"StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": "yesterday"},
        ["StartingPositionTimestamp", "'yesterday'", "ISO-8601", "epoch seconds"],
    ),
    (
        "kinesis",
        {"StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": -5},
        ["StartingPositionTimestamp: -5 is out of range"],
    ),
    (
        "kinesis",
        {"StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": True},
        ["StartingPositionTimestamp", "valid number", "true"],
    ),
    (
        "sqs",
        {"StartingPositionTimestamp": PAST},
        ["StartingPositionTimestamp: applies only to Kinesis streams", "SQS"],
    ),
    (
        "dynamodb",
        {"StartingPositionTimestamp": PAST},
        ["StartingPositionTimestamp: applies only to Kinesis streams", "DynamoDB"],
    ),
    # ParallelizationFactor
    ("kinesis", {"ParallelizationFactor": 0}, ["ParallelizationFactor: 0", "between 1 and 10"]),
    ("dynamodb", {"ParallelizationFactor": 11}, ["ParallelizationFactor: 11", "between 1 and 10"]),
    (
        "sqs",
        {"ParallelizationFactor": 1},
        ["ParallelizationFactor", "applies only to Kinesis and DynamoDB"],
    ),
    # BisectBatchOnFunctionError
    ("kinesis", {"BisectBatchOnFunctionError": "true"}, ["BisectBatchOnFunctionError", "boolean"]),
    (
        "sqs",
        {"BisectBatchOnFunctionError": False},
        ["BisectBatchOnFunctionError", "applies only to"],
    ),
    # MaximumRetryAttempts
    ("kinesis", {"MaximumRetryAttempts": -2}, ["MaximumRetryAttempts: -2", "between -1 and 10000"]),
    (
        "dynamodb",
        {"MaximumRetryAttempts": 10001},
        ["MaximumRetryAttempts: 10001", "between -1 and 10000"],
    ),
    (
        "sqs",
        {"MaximumRetryAttempts": 3},
        ["MaximumRetryAttempts", "applies only to Kinesis and DynamoDB"],
    ),
    # MaximumRecordAgeInSeconds
    (
        "kinesis",
        {"MaximumRecordAgeInSeconds": 0},
        ["MaximumRecordAgeInSeconds: 0", "-1 (no limit) or between 60 and 604800"],
    ),
    (
        "kinesis",
        {"MaximumRecordAgeInSeconds": 59},
        ["MaximumRecordAgeInSeconds: 59", "between 60 and 604800"],
    ),
    (
        "dynamodb",
        {"MaximumRecordAgeInSeconds": 604801},
        ["MaximumRecordAgeInSeconds: 604801", "between 60 and 604800"],
    ),
    (
        "kinesis",
        {"MaximumRecordAgeInSeconds": -2},
        ["MaximumRecordAgeInSeconds: -2", "-1 (no limit)"],
    ),
    (
        "sqs",
        {"MaximumRecordAgeInSeconds": 60},
        ["MaximumRecordAgeInSeconds", "applies only to Kinesis and DynamoDB"],
    ),
    # DestinationConfig
    (
        "sqs",
        {"DestinationConfig": {"OnFailure": {"Destination": SQS_DESTINATION}}},
        ["DestinationConfig: applies only to Kinesis and DynamoDB", "RedrivePolicy"],
    ),
    (
        "kinesis",
        {"DestinationConfig": {"OnFailure": {"Destination": LAMBDA_ARN}}},
        ["DestinationConfig.OnFailure.Destination", "SQS queue", "SNS topic", "S3 bucket"],
    ),
    (
        "kinesis",
        {"DestinationConfig": {"OnFailure": {"Destination": "failures"}}},
        ["DestinationConfig.OnFailure.Destination: 'failures'", "must be the ARN of an SQS queue"],
    ),
    (
        "kinesis",
        {"DestinationConfig": {"OnFailure": {"Destination": SQS_DESTINATION + ".fifo"}}},
        ["DestinationConfig.OnFailure.Destination", "FIFO queue", "standard"],
    ),
    (
        "kinesis",
        {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:s3:us-east-1::bucket"}}},
        ["DestinationConfig.OnFailure.Destination", "arn:aws:s3:::BUCKET"],
    ),
    (
        "kinesis",
        {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:" + "x" * 400}}},
        ["DestinationConfig.OnFailure.Destination", "at most 350 characters"],
    ),
    (
        "kinesis",
        {"DestinationConfig": {"OnSuccess": {"Destination": SQS_DESTINATION}}},
        ["DestinationConfig: OnSuccess is not supported for event source mappings"],
    ),
    # FunctionResponseTypes
    (
        "kinesis",
        {"FunctionResponseTypes": ["ReportItemFailures"]},
        ["FunctionResponseTypes", "['ReportItemFailures']", '[] or ["ReportBatchItemFailures"]'],
    ),
    (
        "sqs",
        {"FunctionResponseTypes": ["ReportBatchItemFailures", "ReportBatchItemFailures"]},
        ["FunctionResponseTypes", '[] or ["ReportBatchItemFailures"]'],
    ),
    (
        "kinesis",
        {"FunctionResponseTypes": "ReportBatchItemFailures"},
        ["FunctionResponseTypes", "valid list"],
    ),
    # TumblingWindowInSeconds
    (
        "kinesis",
        {"TumblingWindowInSeconds": -1},
        ["TumblingWindowInSeconds: -1", "between 0 and 900"],
    ),
    (
        "dynamodb",
        {"TumblingWindowInSeconds": 901},
        ["TumblingWindowInSeconds: 901", "between 0 and 900"],
    ),
    (
        "sqs",
        {"TumblingWindowInSeconds": 60},
        ["TumblingWindowInSeconds", "applies only to Kinesis and DynamoDB"],
    ),
    # FilterCriteria
    (
        "kinesis",
        {"FilterCriteria": {"Filters": [{"Pattern": '{"data": {"a": [1]}}'}] * 6}},
        ["FilterCriteria: Filters: 6 filters given", "at most 5"],
    ),
    (
        "kinesis",
        {
            "FilterCriteria": {
                "Filters": [{"Pattern": '{"data": {"a": [1]}}'}, {"Pattern": '{"data": '}]
            }
        },
        ["FilterCriteria: Filters[1]", "is not valid JSON"],
    ),
    (
        "sqs",
        {"FilterCriteria": {"Filters": [{"Pattern": "[1, 2]"}]}},
        ["FilterCriteria: Filters[0]", "must be a JSON object"],
    ),
    (
        "kinesis",
        {"FilterCriteria": {"Filters": [{"Pattern": '{"a": "' + "x" * 4100 + '"}'}]}},
        ["FilterCriteria: Filters[0]", "4096"],
    ),
    (
        "kinesis",
        {"FilterCriteria": {"Filters": [{"Pattern": {"data": {"a": [1]}}}]}},
        ["FilterCriteria.Filters[0].Pattern", "valid string"],
    ),
    (
        "kinesis",
        {"FilterCriteria": {"Filters": [{}]}},
        ["FilterCriteria.Filters[0].Pattern: is required"],
    ),
    (
        "kinesis",
        {"FilterCriteria": {"Filters": [{"Pattern": "{}"}]}},
        ["FilterCriteria: Filters[0]", "empty object"],
    ),
    (
        "kinesis",
        {"FilterCriteria": {"Filters": [{"Pattern": '{"data": {"a": [{"regex": "x"}]}}'}]}},
        ["FilterCriteria: Filters[0]", "regex"],
    ),
    # ScalingConfig
    (
        "sqs",
        {"ScalingConfig": {"MaximumConcurrency": 1}},
        ["ScalingConfig.MaximumConcurrency: 1", "between 2 and 1000"],
    ),
    (
        "sqs",
        {"ScalingConfig": {"MaximumConcurrency": 1001}},
        ["ScalingConfig.MaximumConcurrency: 1001", "between 2 and 1000"],
    ),
    (
        "kinesis",
        {"ScalingConfig": {"MaximumConcurrency": 5}},
        ["ScalingConfig: applies only to SQS sources", "Kinesis"],
    ),
    # MetricsConfig, Tags
    (
        "kinesis",
        {"MetricsConfig": {"Metrics": ["ErrorCount"]}},
        ["MetricsConfig.Metrics", "'ErrorCount'", "EventCount"],
    ),
    (
        "kinesis",
        {"MetricsConfig": {"Metrics": ["EventCount"] * 4}},
        ["MetricsConfig.Metrics: 4 entries", "at most 3"],
    ),
    ("kinesis", {"Tags": {"team": 7}}, ["Tags.team", "valid string"]),
    # Parameters of other source types and AWS features that do not apply.
    ("kinesis", {"Topics": ["orders"]}, ["Topics applies only to Kafka/MQ/DocumentDB sources"]),
    ("sqs", {"Queues": ["orders"]}, ["Queues applies only to Kafka/MQ/DocumentDB sources"]),
    (
        "kinesis",
        {"SourceAccessConfigurations": []},
        ["SourceAccessConfigurations applies only to Kafka/MQ/DocumentDB"],
    ),
    (
        "kinesis",
        {"SelfManagedEventSource": {}},
        ["SelfManagedEventSource applies only to Kafka/MQ/DocumentDB"],
    ),
    (
        "kinesis",
        {"AmazonManagedKafkaEventSourceConfig": {}},
        ["AmazonManagedKafkaEventSourceConfig applies only to Kafka"],
    ),
    (
        "kinesis",
        {"SelfManagedKafkaEventSourceConfig": {}},
        ["SelfManagedKafkaEventSourceConfig applies only to Kafka"],
    ),
    (
        "kinesis",
        {"DocumentDBEventSourceConfig": {}},
        ["DocumentDBEventSourceConfig applies only to Kafka/MQ/DocumentDB"],
    ),
    (
        "sqs",
        {"ProvisionedPollerConfig": {"MinimumPollers": 2}},
        ["ProvisionedPollerConfig", "not supported yet"],
    ),
    (
        "kinesis",
        {"KMSKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k"},
        ["KMSKeyArn is not applicable"],
    ),
    ("kinesis", {"Batchsize": 10}, ["unknown key 'Batchsize'", "did you mean BatchSize?"]),
]


@pytest.mark.parametrize(
    ("base", "overrides", "fragments"),
    REJECTED,
    ids=[
        f"{base}-{'-'.join(map(str, overrides))}-{i}"
        for i, (base, overrides, _) in enumerate(REJECTED)
    ],
)
def test_rejected_values(base: str, overrides: dict[str, Any], fragments: list[str]) -> None:
    problems = mapping_problems(base, overrides)
    assert_reported(problems, fragments)
    # Every message names the mapping: its index, function and source.
    assert all(p.startswith("mappings[0] (") and " <- " in p for p in problems), problems


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("kinesis", {}),
    ("kinesis", {"FunctionName": LAMBDA_ARN}),
    ("kinesis", {"FunctionName": LAMBDA_ARN + ":prod"}),
    ("kinesis", {"FunctionName": DROP, "FunctionArn": LAMBDA_ARN}),
    ("kinesis", {"Enabled": False}),
    ("kinesis", {"BatchSize": 1}),
    ("kinesis", {"BatchSize": 10000}),
    ("dynamodb", {"BatchSize": 10000}),
    ("sqs", {"BatchSize": 10}),
    ("sqs", {"BatchSize": 10000, "MaximumBatchingWindowInSeconds": 1}),
    ("fifo", {"BatchSize": 10}),
    ("fifo", {"MaximumBatchingWindowInSeconds": 0}),
    ("kinesis", {"MaximumBatchingWindowInSeconds": 0}),
    ("kinesis", {"MaximumBatchingWindowInSeconds": 300}),
    ("kinesis", {"StartingPosition": "LATEST"}),
    ("kinesis", {"StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": PAST}),
    ("kinesis", {"StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": PAST + 0.5}),
    (
        "kinesis",
        {"StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": "2023-11-14T22:13:20Z"},
    ),
    (
        "kinesis",
        {
            "StartingPosition": "AT_TIMESTAMP",
            "StartingPositionTimestamp": "2023-11-14T23:13:20+01:00",
        },
    ),
    (
        "kinesis",
        {
            "StartingPosition": "AT_TIMESTAMP",
            "StartingPositionTimestamp": datetime(2023, 11, 14, tzinfo=UTC),
        },
    ),
    ("dynamodb", {"StartingPosition": "TRIM_HORIZON"}),
    ("kinesis", {"ParallelizationFactor": 1}),
    ("dynamodb", {"ParallelizationFactor": 10}),
    ("kinesis", {"BisectBatchOnFunctionError": False}),
    ("kinesis", {"BisectBatchOnFunctionError": True}),
    ("kinesis", {"MaximumRetryAttempts": -1}),
    ("kinesis", {"MaximumRetryAttempts": 0}),
    ("dynamodb", {"MaximumRetryAttempts": 10000}),
    ("kinesis", {"MaximumRecordAgeInSeconds": -1}),
    ("kinesis", {"MaximumRecordAgeInSeconds": 60}),
    ("dynamodb", {"MaximumRecordAgeInSeconds": 604800}),
    ("kinesis", {"DestinationConfig": {}}),
    ("kinesis", {"DestinationConfig": {"OnFailure": {"Destination": ""}}}),
    ("kinesis", {"DestinationConfig": {"OnFailure": {"Destination": SQS_DESTINATION}}}),
    ("dynamodb", {"DestinationConfig": {"OnFailure": {"Destination": SNS_DESTINATION}}}),
    ("kinesis", {"DestinationConfig": {"OnFailure": {"Destination": S3_DESTINATION}}}),
    ("kinesis", {"FunctionResponseTypes": []}),
    ("kinesis", {"FunctionResponseTypes": ["ReportBatchItemFailures"]}),
    ("sqs", {"FunctionResponseTypes": ["ReportBatchItemFailures"]}),
    ("kinesis", {"TumblingWindowInSeconds": 0}),
    ("dynamodb", {"TumblingWindowInSeconds": 900}),
    ("kinesis", {"FilterCriteria": {}}),
    ("kinesis", {"FilterCriteria": {"Filters": []}}),
    (
        "kinesis",
        {"FilterCriteria": {"Filters": [{"Pattern": '{"data": {"type": ["order"]}}'}] * 5}},
    ),
    (
        "sqs",
        {"FilterCriteria": {"Filters": [{"Pattern": '{"body": {"n": [{"numeric": [">", 0]}]}}'}]}},
    ),
    ("sqs", {"ScalingConfig": {"MaximumConcurrency": 2}}),
    ("sqs", {"ScalingConfig": {"MaximumConcurrency": 1000}}),
    ("kinesis", {"MetricsConfig": {"Metrics": ["EventCount"]}}),
    ("kinesis", {"MetricsConfig": {"Metrics": []}}),
    ("kinesis", {"Tags": {"team": "payments", "env": ""}}),
]


@pytest.mark.parametrize(
    ("base", "overrides"),
    ACCEPTED,
    ids=[
        f"{base}-{'-'.join(map(str, overrides))}-{i}"
        for i, (base, overrides) in enumerate(ACCEPTED)
    ],
)
def test_accepted_values(base: str, overrides: dict[str, Any]) -> None:
    # Values within AWS's ranges pass validation; this release may still refuse to run them.
    assert range_problems(mapping_problems(base, overrides)) == []


# ----------------------------------------------------------------- every source, every parameter


@pytest.mark.parametrize(
    "overrides",
    [
        {"ParallelizationFactor": 10},
        {"BisectBatchOnFunctionError": True},
        {"MaximumRetryAttempts": 0},
        {"MaximumRetryAttempts": 10000},
        {"MaximumRecordAgeInSeconds": 60},
        {"MaximumRecordAgeInSeconds": 604800},
        {"FunctionResponseTypes": ["ReportBatchItemFailures"]},
        {"TumblingWindowInSeconds": 900},
        {"DestinationConfig": {"OnFailure": {"Destination": SQS_DESTINATION}}},
    ],
    ids=lambda o: next(iter(o)),
)
def test_stream_error_handling_parameters_are_accepted(overrides: dict[str, Any]) -> None:
    assert mapping_problems("kinesis", overrides) == []
    assert mapping_problems("dynamodb", overrides) == []


def test_dynamodb_streams_are_accepted() -> None:
    assert mapping_problems("dynamodb", {}) == []


def test_kinesis_consumer_arns_are_accepted_for_enhanced_fan_out() -> None:
    overrides = {"EventSourceArn": KINESIS_ARN + "/consumer/app:1700000000"}
    assert mapping_problems("kinesis", overrides) == []


@pytest.mark.parametrize("base", ["dynamodb", "sqs", "fifo"])
def test_every_source_is_accepted_with_its_defaults(base: str) -> None:
    config = parse_config(build(mapping_of(base, {})), {})
    mapping = config.mappings[0]
    assert mapping.source_kind == ("dynamodb" if base == "dynamodb" else "sqs")
    assert mapping.batch_size == (100 if base == "dynamodb" else 10)
    assert mapping.starting_position == ("LATEST" if base == "dynamodb" else None)


@pytest.mark.parametrize(
    "overrides",
    [
        {"ScalingConfig": {"MaximumConcurrency": 2}},
        {"ScalingConfig": {"MaximumConcurrency": 1000}},
        {"FunctionResponseTypes": ["ReportBatchItemFailures"]},
        {"BatchSize": 10000, "MaximumBatchingWindowInSeconds": 1},
        {"FilterCriteria": {"Filters": [{"Pattern": '{"body": {"kind": ["order"]}}'}]}},
    ],
    ids=lambda o: "-".join(o),
)
def test_sqs_parameters_are_accepted(overrides: dict[str, Any]) -> None:
    assert mapping_problems("sqs", overrides) == []


# --------------------------------------------------------------------------- resolved values


def test_resolved_kinesis_mapping() -> None:
    config = parse_config(build(mapping_of("kinesis", {"Enabled": False})), {})
    mapping = config.mappings[0]
    assert mapping.source_kind == "kinesis"
    assert (mapping.region, mapping.account, mapping.stream_name) == (
        "us-east-1",
        "123456789012",
        "orders",
    )
    assert mapping.function_name == "orders"
    assert mapping.batch_size == 100
    assert mapping.batching_window_seconds == 0
    assert mapping.starting_position == "TRIM_HORIZON"
    assert mapping.starting_position_timestamp is None
    assert mapping.Enabled is False
    assert mapping.ParallelizationFactor == 1
    assert mapping.MaximumRetryAttempts == -1
    assert mapping.MaximumRecordAgeInSeconds == -1
    assert mapping.on_failure_destination is None
    assert mapping.filter_patterns == []


@pytest.mark.parametrize(
    "timestamp",
    [
        1_700_000_000,
        1_700_000_000.0,
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:13:20",
        "2023-11-14T23:13:20+01:00",
        datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
    ],
)
def test_starting_position_timestamp_forms(timestamp: Any) -> None:
    overrides = {"StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": timestamp}
    mapping = parse_config(build(mapping_of("kinesis", overrides)), {}).mappings[0]
    assert mapping.starting_position == "AT_TIMESTAMP"
    assert mapping.starting_position_timestamp == 1_700_000_000.0


def test_unquoted_yaml_timestamp_is_accepted() -> None:
    text = f"""
functions:
  orders: {{type: http, url: "http://127.0.0.1:8080/"}}
mappings:
  - FunctionName: orders
    EventSourceArn: {KINESIS_ARN}
    StartingPosition: AT_TIMESTAMP
    StartingPositionTimestamp: 2023-11-14T22:13:20Z
"""
    mapping = parse_config(text, {}).mappings[0]
    assert mapping.starting_position_timestamp == 1_700_000_000.0


@pytest.mark.parametrize(
    ("function_name", "expected"),
    [
        ("orders", "orders"),
        (LAMBDA_ARN, "orders"),
        (LAMBDA_ARN + ":live", "orders"),
        (LAMBDA_ARN + ":$LATEST", "orders"),
        ("arn:aws-cn:lambda:cn-north-1:123456789012:function:orders:7", "orders"),
    ],
)
def test_function_name_resolves_to_a_configured_function(function_name: str, expected: str) -> None:
    mapping = parse_config(build(mapping_of("kinesis", {"FunctionName": function_name})), {})
    assert mapping.mappings[0].function_name == expected
    assert mapping.mappings[0].FunctionName == function_name


def test_function_arn_is_an_alias_of_function_name() -> None:
    overrides = {"FunctionName": DROP, "FunctionArn": LAMBDA_ARN}
    mapping = parse_config(build(mapping_of("kinesis", overrides)), {}).mappings[0]
    assert mapping.FunctionName == LAMBDA_ARN
    assert mapping.function_name == "orders"


def test_mapping_id_is_stable() -> None:
    mapping = parse_config(build(), {}).mappings[0]
    # Checkpoints are stored under this id: it must never change between releases.
    assert mapping.mapping_id == str(
        uuid.uuid5(uuid.UUID("8b0f4d52-6f0e-4a43-9d8e-3c1f5a7e2b90"), f"orders\n{KINESIS_ARN}")
    )
    assert uuid.UUID(mapping.mapping_id).version == 5
    same = parse_config(
        build(mapping_of("kinesis", {"FunctionName": LAMBDA_ARN, "BatchSize": 7})), {}
    )
    assert same.mappings[0].mapping_id == mapping.mapping_id
    other_stream = KINESIS_ARN.replace("orders", "clicks")
    other = parse_config(build(mapping_of("kinesis", {"EventSourceArn": other_stream})), {})
    assert other.mappings[0].mapping_id != mapping.mapping_id


def test_two_mappings_of_one_function_and_source_conflict() -> None:
    text = yaml.safe_dump(
        {
            "functions": FUNCTIONS,
            "mappings": [
                BASES["kinesis"],
                mapping_of("kinesis", {"FunctionName": LAMBDA_ARN, "StartingPosition": "LATEST"}),
            ],
        }
    )
    problems = problems_of(text)
    assert len(problems) == 1
    assert_reported(problems, ["mappings[1]", "mappings[0]", "ResourceConflictException"])


def test_a_function_may_read_several_sources_and_be_unused() -> None:
    text = yaml.safe_dump(
        {
            "functions": {**FUNCTIONS, "spare": {"type": "python", "handler": "app.h:handle"}},
            "mappings": [
                BASES["kinesis"],
                mapping_of("kinesis", {"EventSourceArn": KINESIS_ARN.replace("orders", "clicks")}),
            ],
        }
    )
    config = parse_config(text, {})
    assert [m.stream_name for m in config.mappings] == ["orders", "clicks"]


def test_parse_source_arn() -> None:
    dynamodb = parse_source_arn(DYNAMODB_ARN)
    assert isinstance(dynamodb, DynamoDBSource)
    assert (dynamodb.kind, dynamodb.name, dynamodb.stream_label) == (
        "dynamodb",
        "orders",
        "2024-01-01T00:00:00.000",
    )
    fifo = parse_source_arn(FIFO_ARN)
    assert (fifo.kind, fifo.name, fifo.fifo) == ("sqs", "orders.fifo", True)
    assert parse_source_arn(SQS_ARN).fifo is False
    consumer = parse_source_arn(KINESIS_ARN + "/consumer/app:1700000000")
    assert isinstance(consumer, KinesisSource)
    assert (consumer.name, consumer.consumer, consumer.stream_arn) == ("orders", "app", KINESIS_ARN)
    with pytest.raises(ValueError, match="is not an ARN"):
        parse_source_arn("orders")


# --------------------------------------------------------------------------- sections


def test_defaults() -> None:
    config = parse_config(build(), {})
    assert config.aws.region == "us-east-1"
    assert config.aws.endpoint_url is None
    assert config.aws.endpoint_for("kinesis") is None
    assert isinstance(config.state, SqliteStateConfig)
    assert (config.state.backend, config.state.path) == ("sqlite", "esm-state.db")
    assert (config.admin.host, config.admin.port, config.admin.enabled) == ("127.0.0.1", 9464, True)
    assert (config.log.format, config.log.level) == ("auto", "info")
    assert config.delivery.backoff_initial_seconds == 1.0
    assert config.delivery.backoff_max_seconds == 300.0
    assert config.delivery.shutdown_grace_seconds == 30.0
    assert (config.polling.interval_seconds, config.polling.records_limit) == (1.0, 10000)
    function = config.functions["orders"]
    assert isinstance(function, HttpFunctionConfig)
    assert (function.timeout, function.memory_size, function.headers) == (3.0, 128, {})


def test_empty_sections_take_defaults() -> None:
    text = build() + "aws:\nstate:\nadmin:\nlog:\ndelivery:\npolling:\n"
    assert parse_config(text, {}).admin.port == 9464


def test_endpoints() -> None:
    aws = {
        "endpoint_url": "http://127.0.0.1:4566",
        "endpoints": {"kinesis": "http://127.0.0.1:4567"},
    }
    config = parse_config(build(aws=aws), {})
    assert config.aws.endpoint_for("kinesis") == "http://127.0.0.1:4567"
    assert config.aws.endpoint_for("sqs") == "http://127.0.0.1:4566"
    with pytest.raises(ValueError, match="unknown service"):
        config.aws.endpoint_for("kafka")


def test_empty_endpoint_url_means_aws() -> None:
    text = build().replace("functions:", "aws:\n  endpoint_url: ${AWS_ENDPOINT_URL:-}\nfunctions:")
    assert parse_config(text, {}).aws.endpoint_for("kinesis") is None


@pytest.mark.parametrize(
    ("environ", "aws", "region"),
    [
        ({"AWS_REGION": "eu-west-1"}, {}, "eu-west-1"),
        ({"AWS_DEFAULT_REGION": "eu-west-2"}, {}, "eu-west-2"),
        ({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-2"}, {}, "eu-west-1"),
        ({"AWS_REGION": "eu-west-1"}, {"region": "ap-south-1"}, "ap-south-1"),
        ({}, {}, "us-east-1"),
    ],
)
def test_region_from_environment(environ: dict[str, str], aws: dict[str, str], region: str) -> None:
    assert parse_config(build(aws=aws), environ).aws.region == region


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("0.0.0.0:9464", "0.0.0.0", 9464),
        ("localhost:0", "localhost", 0),
        ("[::1]:8080", "::1", 8080),
        ("127.0.0.1:65535", "127.0.0.1", 65535),
        ("esm-admin.default.svc.cluster.local:9464", "esm-admin.default.svc.cluster.local", 9464),
        ("my_service:9464", "my_service", 9464),
        ("::1:9464", "::1", 9464),
    ],
)
def test_admin_listen(listen: str, host: str, port: int) -> None:
    admin = parse_config(build(admin={"listen": listen}), {}).admin
    assert (admin.host, admin.port) == (host, port)


def test_log_level_is_case_insensitive() -> None:
    assert parse_config(build(log={"level": "DEBUG", "format": "console"}), {}).log.level == "debug"


SECTION_REJECTED: list[tuple[dict[str, Any], list[str]]] = [
    ({"aws": {"region": "moon"}}, ["aws.region: 'moon'", "like us-east-1"]),
    (
        {"aws": {"endpoint_url": "127.0.0.1:4566"}},
        ["aws.endpoint_url", "not an http:// or https:// URL"],
    ),
    (
        {"aws": {"endpoints": {"kafka": "http://x"}}},
        ["aws.endpoints", "unknown service 'kafka'", "kinesis, dynamodb"],
    ),
    ({"aws": {"endpoints": {"sqs": "x"}}}, ["aws.endpoints: sqs: 'x' is not an http"]),
    ({"state": {"backend": "redis"}}, ["state.backend", "'sqlite' or 'memory'", "'redis'"]),
    ({"state": {"path": ""}}, ["state.path", "must not be empty"]),
    ({"admin": {"listen": "9464"}}, ["admin.listen", "HOST:PORT"]),
    ({"admin": {"listen": "127.0.0.1:70000"}}, ["admin.listen", "70000", "between 0 and 65535"]),
    ({"admin": {"listen": ":9464"}}, ["admin.listen", "no host"]),
    ({"admin": {"listen": "999.1.1.1:9464"}}, ["admin.listen", "'999.1.1.1' is not an IPv4"]),
    ({"admin": {"listen": "[::g]:9464"}}, ["admin.listen", "'::g' is not an IPv6 address"]),
    ({"admin": {"listen": "bad host:9464"}}, ["admin.listen", "not a host name or IP address"]),
    ({"admin": {"listen": "-x:9464"}}, ["admin.listen", "not a host name or IP address"]),
    ({"admin": {"listen": "127.0.0.1:-1"}}, ["admin.listen", "HOST:PORT"]),
    ({"admin": {"enabled": "no"}}, ["admin.enabled", "boolean"]),
    ({"log": {"format": "xml"}}, ["log.format", "'json' or 'console'"]),
    ({"log": {"level": "loud"}}, ["log.level", "'debug', 'info', 'warning' or 'error'"]),
    (
        {"delivery": {"backoff_initial_seconds": 0}},
        ["delivery.backoff_initial_seconds: 0", "greater than 0 and at most 300"],
    ),
    (
        {"delivery": {"backoff_initial_seconds": 301}},
        ["delivery.backoff_initial_seconds: 301", "at most 300"],
    ),
    (
        {"delivery": {"backoff_initial_seconds": 10, "backoff_max_seconds": 5}},
        ["delivery.backoff_max_seconds: 5", "at least backoff_initial_seconds (10)"],
    ),
    (
        {"delivery": {"shutdown_grace_seconds": -1}},
        ["delivery.shutdown_grace_seconds: -1", "between 0 and 3600"],
    ),
    (
        {"delivery": {"shutdown_grace_seconds": 3601}},
        ["delivery.shutdown_grace_seconds: 3601", "between 0 and 3600"],
    ),
    (
        {"polling": {"interval_seconds": 0.1}},
        ["polling.interval_seconds: 0.1", "between 0.2 and 60"],
    ),
    ({"polling": {"interval_seconds": 61}}, ["polling.interval_seconds: 61", "between 0.2 and 60"]),
    ({"polling": {"records_limit": 0}}, ["polling.records_limit: 0", "between 1 and 10000"]),
    (
        {"polling": {"records_limit": 10001}},
        ["polling.records_limit: 10001", "between 1 and 10000"],
    ),
    ({"polling": {"records_limit": "10"}}, ["polling.records_limit", "valid integer"]),
]


@pytest.mark.parametrize(("sections", "fragments"), SECTION_REJECTED)
def test_rejected_section_values(sections: dict[str, Any], fragments: list[str]) -> None:
    problems = problems_of(build(**sections))
    assert len(problems) == 1, problems
    assert_reported(problems, fragments)


@pytest.mark.parametrize(
    "sections",
    [
        {"state": {"backend": "memory"}},
        {"admin": {"enabled": False, "listen": "0.0.0.0:0"}},
        {"delivery": {"backoff_initial_seconds": 300, "backoff_max_seconds": 300}},
        {"delivery": {"backoff_initial_seconds": 0.01, "shutdown_grace_seconds": 0}},
        {"delivery": {"shutdown_grace_seconds": 3600}},
        {"polling": {"interval_seconds": 0.2, "records_limit": 1}},
        {"polling": {"interval_seconds": 60, "records_limit": 10000}},
        {"aws": {"region": "us-gov-west-1"}},
        {"aws": {"endpoints": {s: "https://example.com" for s in config_module.AWS_SERVICES}}},
    ],
)
def test_accepted_section_values(sections: dict[str, Any]) -> None:
    parse_config(build(**sections), {})


# --------------------------------------------------------------------------- functions


def test_function_types() -> None:
    functions = {
        "orders": {
            "type": "http",
            "url": "https://app.internal/events",
            "timeout": 900,
            "memory_size": 10240,
            "headers": {"Authorization": "Bearer x"},
        },
        "local": {"type": "python", "handler": "app.handlers:handle", "timeout": 0.5},
    }
    text = yaml.safe_dump({"functions": functions, "mappings": [BASES["kinesis"]]})
    config = parse_config(text, {})
    http, python = config.functions["orders"], config.functions["local"]
    assert isinstance(http, HttpFunctionConfig)
    assert (http.timeout, http.memory_size) == (900, 10240)
    assert isinstance(python, PythonFunctionConfig)
    assert (python.handler, python.timeout, python.memory_size) == ("app.handlers:handle", 0.5, 128)


FUNCTION_REJECTED: list[tuple[Any, list[str]]] = [
    ({"type": "command", "command": []}, ["functions.f", "give the program to run"]),
    ({"type": "command", "command": "./run", "mode": "daemon"}, ["functions.f.mode", "per-batch"]),
    ({"type": "runtime", "listen": "9001"}, ["functions.f.listen", "host:port"]),
    ({"type": "runtime", "listen": "1.2.3.999:9001"}, ["functions.f.listen", "not an IPv4"]),
    ({"type": "weighted", "targets": [{"function": "g", "weight": 1}]}, ["at least two"]),
    (
        {"type": "grpc"},
        ["functions.f: unknown type 'grpc'", "http, python, command, lambda", "example-echo"],
    ),
    ({"url": "http://x"}, ["functions.f: type is required", "http, python"]),
    ({"type": "http"}, ["functions.f.url: is required"]),
    ({"type": "http", "url": "ftp://x"}, ["functions.f.url: 'ftp://x'", "http:// or https://"]),
    (
        {"type": "http", "url": "http://x", "timeout": 0},
        ["functions.f.timeout: 0", "greater than 0 and at most 900"],
    ),
    (
        {"type": "http", "url": "http://x", "timeout": 901},
        ["functions.f.timeout: 901", "at most 900"],
    ),
    (
        {"type": "http", "url": "http://x", "memory_size": 127},
        ["functions.f.memory_size: 127", "between 128 and 10240"],
    ),
    (
        {"type": "python", "handler": "h:f", "memory_size": 10241},
        ["functions.f.memory_size: 10241", "between 128 and 10240"],
    ),
    (
        {"type": "http", "url": "http://x", "headers": {"Bad Name": "v"}},
        ["functions.f.headers", "'Bad Name'", "header name"],
    ),
    (
        {"type": "http", "url": "http://x", "headers": {"X-Id": 5}},
        ["functions.f.headers: X-Id", "a header value is a string"],
    ),
    (
        # aiohttp refuses every request that has both (ValueError at the first invocation).
        {
            "type": "http",
            "url": "https://alice:s3cret-c0ffee@x/",
            "headers": {"authorization": {"env": "TOKEN", "prefix": "Bearer "}},
        },
        ["functions.f: url has credentials (user:password@)", "Authorization", "only one"],
    ),
    (
        {"type": "http", "url": "https://token@x/", "headers": {"AUTHORIZATION": "Bearer x"}},
        ["functions.f: url has credentials", "Authorization", "only one"],
    ),
    (
        {"type": "python", "handler": "app/handlers.py"},
        ["functions.f.handler", "package.module:function"],
    ),
    (
        {"type": "python", "handler": "lambda_function.lambda_handler"},
        ["functions.f.handler", "write lambda_function:lambda_handler"],
    ),
    ({"type": "python"}, ["functions.f.handler: is required"]),
    (
        {"type": "python", "handler": "a:b", "url": "http://x"},
        ["functions.f: unknown key 'url'", "known keys: type, handler"],
    ),
    ("http://x", ["functions.f: must be a mapping with a type"]),
]


@pytest.mark.parametrize(("function", "fragments"), FUNCTION_REJECTED)
def test_rejected_functions(function: Any, fragments: list[str]) -> None:
    text = yaml.safe_dump(
        {"functions": {**FUNCTIONS, "f": function}, "mappings": [BASES["kinesis"]]}
    )
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert_reported(problems, fragments)
    assert "s3cret" not in problems[0]


def test_url_credentials_alone_or_with_other_headers_are_accepted() -> None:
    functions = {
        "f": {
            "type": "http",
            "url": "https://alice:s3cret@x/",
            "headers": {"X-Api-Key": {"env": "KEY"}},
        }
    }
    text = yaml.safe_dump(
        {"functions": functions, "mappings": [BASES["kinesis"] | {"FunctionName": "f"}]}
    )
    assert problems_of(text) == []


def test_function_names_are_lambda_names() -> None:
    text = yaml.safe_dump(
        {"functions": {**FUNCTIONS, "my.func": FUNCTIONS["orders"]}, "mappings": [BASES["kinesis"]]}
    )
    assert_reported(
        problems_of(text), ["functions: function name 'my.func' is not valid", "1 to 64"]
    )


def test_a_mapping_needs_a_defined_function() -> None:
    text = yaml.safe_dump({"mappings": [BASES["kinesis"]]})
    assert_reported(problems_of(text), ["FunctionName: 'orders' is not defined", "defined: none"])


def test_mappings_are_required() -> None:
    assert problems_of(yaml.safe_dump({"functions": FUNCTIONS})) == ["mappings: is required"]
    empty = yaml.safe_dump({"functions": FUNCTIONS, "mappings": []})
    assert problems_of(empty) == ["mappings: at least one mapping is required"]


# --------------------------------------------------------------------------- unknown keys

UNKNOWN_KEYS: list[tuple[dict[str, Any], str]] = [
    ({"extra": 1}, "unknown key 'extra' (known keys: aws, state"),
    ({"aws": {"regoin": "us-east-1"}}, "aws: unknown key 'regoin' (did you mean region?)"),
    ({"state": {"file": "x"}}, "state: unknown key 'file'"),
    ({"admin": {"port": 1}}, "admin: unknown key 'port'"),
    ({"log": {"colour": True}}, "log: unknown key 'colour'"),
    (
        {"delivery": {"backoff_max": 5}},
        "delivery: unknown key 'backoff_max' (did you mean backoff_max_seconds?)",
    ),
    ({"polling": {"limit": 5}}, "polling: unknown key 'limit'"),
    (
        {"functions": {"orders": {**FUNCTIONS["orders"], "retries": 2}}},
        "functions.orders: unknown key 'retries'",
    ),
    (
        {
            "mappings": [
                mapping_of(
                    "kinesis",
                    {"DestinationConfig": {"OnFailure": {"Destination": "", "Type": "sqs"}}},
                )
            ]
        },
        "DestinationConfig.OnFailure: unknown key 'Type'",
    ),
    (
        {"mappings": [mapping_of("kinesis", {"FilterCriteria": {"Filter": []}})]},
        "FilterCriteria: unknown key 'Filter' (did you mean Filters?)",
    ),
    (
        {
            "mappings": [
                mapping_of(
                    "kinesis", {"FilterCriteria": {"Filters": [{"Pattern": "{}", "Name": "x"}]}}
                )
            ]
        },
        "FilterCriteria.Filters[0]: unknown key 'Name'",
    ),
    (
        {"mappings": [mapping_of("sqs", {"ScalingConfig": {"MinimumConcurrency": 2}})]},
        "ScalingConfig: unknown key 'MinimumConcurrency'",
    ),
    (
        {"mappings": [mapping_of("kinesis", {"MetricsConfig": {"Metric": []}})]},
        "MetricsConfig: unknown key 'Metric' (did you mean Metrics?)",
    ),
    (
        {"mappings": [mapping_of("kinesis", {"StartPosition": "LATEST"})]},
        "unknown key 'StartPosition'",
    ),
]


@pytest.mark.parametrize(("patch", "fragment"), UNKNOWN_KEYS)
def test_unknown_keys_are_errors(patch: dict[str, Any], fragment: str) -> None:
    data: dict[str, Any] = {"functions": FUNCTIONS, "mappings": [BASES["kinesis"]], **patch}
    assert_reported(problems_of(yaml.safe_dump(data)), [fragment])


# --------------------------------------------------------------------------- all at once


def test_every_problem_is_reported_at_once() -> None:
    text = yaml.safe_dump(
        {
            "log": {"level": "loud"},
            "functions": FUNCTIONS,
            "mappings": [
                mapping_of("kinesis", {"BatchSize": 0}),
                mapping_of(
                    "kinesis", {"EventSourceArn": KINESIS_ARN + "2", "StartingPosition": "NOW"}
                ),
            ],
        }
    )
    problems = problems_of(text)
    assert len(problems) == 3, problems
    assert_reported(problems, ["log.level"])
    assert_reported(problems, ["mappings[0]", "BatchSize: 0"])
    assert_reported(problems, ["mappings[1]", "StartingPosition: 'NOW'"])


def test_several_problems_in_one_mapping() -> None:
    overrides = {
        "BatchSize": 0,
        "MaximumBatchingWindowInSeconds": 900,
        "StartingPosition": DROP,
        "ParallelizationFactor": 20,
        "Colour": "blue",
    }
    problems = mapping_problems("kinesis", overrides)
    assert len(problems) == 5, problems


def test_config_error_message_is_one_line_per_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(build(mapping_of("kinesis", {"BatchSize": 0, "ParallelizationFactor": 0})), {})
    assert str(info.value).splitlines() == info.value.problems
    assert len(info.value.problems) == 2


# --------------------------------------------------------------------------- environment


TEMPLATE = """
functions:
  orders:
    type: http
    url: ${URL}
    timeout: ${TIMEOUT:-30}
mappings:
  - FunctionName: orders
    EventSourceArn: arn:aws:kinesis:${REGION:-us-east-1}:123456789012:stream/${STREAM}
    StartingPosition: TRIM_HORIZON
"""


def test_environment_expansion() -> None:
    environ = {"URL": "http://app:8080/", "STREAM": "orders", "REGION": "eu-west-1"}
    config = parse_config(TEMPLATE, environ)
    function = config.functions["orders"]
    assert isinstance(function, HttpFunctionConfig)
    assert function.url == "http://app:8080/"
    # Expanded before YAML parsing, so a number stays a number.
    assert function.timeout == 30
    assert (
        config.mappings[0].EventSourceArn == "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"
    )


def test_set_variable_wins_over_default_and_empty_takes_default() -> None:
    environ = {"URL": "http://app/", "STREAM": "s", "TIMEOUT": "7", "REGION": ""}
    config = parse_config(TEMPLATE, environ)
    assert config.functions["orders"].timeout == 7
    assert config.mappings[0].region == "us-east-1"


def test_missing_variables_are_all_named_with_their_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(TEMPLATE, {}, source="esm.yaml")
    assert info.value.problems == [
        "esm.yaml:5: environment variable URL is not set "
        "(set it, or give a default: ${URL:-default})",
        "esm.yaml:9: environment variable STREAM is not set "
        "(set it, or give a default: ${STREAM:-default})",
    ]


def test_dollar_dollar_is_a_literal_dollar() -> None:
    text = build().replace("http://127.0.0.1:8080/", "http://127.0.0.1:8080/$$path/$${NOT_A_VAR}")
    function = parse_config(text, {}).functions["orders"]
    assert isinstance(function, HttpFunctionConfig)
    assert function.url == "http://127.0.0.1:8080/$path/${NOT_A_VAR}"


def test_a_lone_dollar_is_kept() -> None:
    text = build().replace("http://127.0.0.1:8080/", "http://127.0.0.1:8080/$HOME")
    function = parse_config(text, {}).functions["orders"]
    assert isinstance(function, HttpFunctionConfig)
    assert function.url.endswith("/$HOME")


def test_full_line_comments_are_not_expanded() -> None:
    text = "# url: ${UNSET_IN_A_COMMENT}\n" + build()
    parse_config(text, {})


def test_malformed_reference() -> None:
    text = build().replace("http://127.0.0.1:8080/", "http://${HOST/")
    assert_reported(problems_of(text), ["malformed variable reference", "${NAME:-default}"])


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESM_TEST_URL", "http://from-env/")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    text = build().replace("http://127.0.0.1:8080/", "${ESM_TEST_URL}")
    config = parse_config(text)
    function = config.functions["orders"]
    assert isinstance(function, HttpFunctionConfig)
    assert function.url == "http://from-env/"
    assert config.aws.region == "eu-central-1"


# --------------------------------------------------------------------------- YAML and files


def test_invalid_yaml_names_the_line() -> None:
    problems = problems_of("mappings: [\n  {a: 1\n", None)
    assert len(problems) == 1
    assert problems[0].startswith("<config>:")
    assert "invalid YAML" in problems[0]


def test_empty_and_non_mapping_documents() -> None:
    assert_reported(problems_of(""), ["the configuration is empty"])
    assert_reported(problems_of("- a\n- b\n"), ["must be a mapping of sections", "list"])


def test_duplicate_keys_are_errors() -> None:
    text = build(mapping_of("kinesis", {"BatchSize": 10})).replace(
        "  BatchSize: 10\n", "  BatchSize: 10\n  BatchSize: 20\n"
    )
    problems = problems_of(text)
    assert len(problems) == 1
    assert_reported(problems, ["duplicate key 'BatchSize'", "first given on line"])


def test_yaml_merge_keys_are_not_duplicates() -> None:
    text = f"""
functions:
  orders: {{type: http, url: "http://127.0.0.1:8080/"}}
mappings:
  - &first
    FunctionName: orders
    EventSourceArn: {KINESIS_ARN}
    StartingPosition: LATEST
    BatchSize: 50
  - <<: *first
    EventSourceArn: {KINESIS_ARN.replace("orders", "clicks")}
"""
    config = parse_config(text, {})
    assert [(m.stream_name, m.batch_size) for m in config.mappings] == [
        ("orders", 50),
        ("clicks", 50),
    ]


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "esm.yaml"
    path.write_text(build(), encoding="utf-8")
    assert load_config(path, {}).mappings[0].stream_name == "orders"
    path.write_text("functions: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"esm\.yaml:\d+"):
        load_config(path, {})


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load_config(tmp_path / "absent.yaml", {})


# --------------------------------------------------------------------------- summary


def test_describe_config() -> None:
    text = yaml.safe_dump(
        {
            "aws": {"endpoint_url": "http://127.0.0.1:4566"},
            "functions": {
                **FUNCTIONS,
                "local": {"type": "python", "handler": "app.handlers:handle", "timeout": 30},
            },
            "mappings": [
                mapping_of("kinesis", {"BatchSize": 500, "MaximumBatchingWindowInSeconds": 2}),
                mapping_of(
                    "kinesis",
                    {
                        "FunctionName": "local",
                        "EventSourceArn": KINESIS_ARN.replace("orders", "clicks"),
                        "StartingPosition": "AT_TIMESTAMP",
                        "StartingPositionTimestamp": PAST,
                        "Enabled": False,
                    },
                ),
            ],
        },
        sort_keys=False,
    )
    config = parse_config(text, {})
    first, second = config.mappings
    assert describe_config(config).splitlines() == [
        "2 mappings, 2 functions",
        f"mapping orders-orders ({first.mapping_id}): kinesis stream orders (us-east-1) "
        "-> function orders, batch size 500, window 2s, start TRIM_HORIZON, enabled",
        f"mapping local-clicks ({second.mapping_id}): kinesis stream clicks (us-east-1) "
        "-> function local, batch size 100, window 0s, start AT_TIMESTAMP "
        "2023-11-14T22:13:20Z, disabled",
        "function orders: http http://127.0.0.1:8080/ (timeout 3s, memory 128 MB)",
        "function local: python app.handlers:handle (timeout 30s, memory 128 MB)",
        "state: sqlite at esm-state.db",
        "aws: region us-east-1, endpoints http://127.0.0.1:4566",
        "admin: listening on 127.0.0.1:9464",
        "tracing: off",
    ]


def test_models_are_frozen_and_direct_construction_checks_references() -> None:
    config = parse_config(build(), {})
    with pytest.raises(ValueError, match="frozen"):
        config.mappings[0].BatchSize = 5
    data = {"mappings": [BASES["kinesis"]]}
    with pytest.raises(ValueError, match="not defined under functions"):
        EsmConfig.model_validate(data)
    assert MappingConfig.model_validate(BASES["kinesis"]).function_name == "orders"
