"""The configuration of shared streams: `state.backend: dynamodb` and a mapping's
`kcl_lease_table`."""

from __future__ import annotations

import pytest

from esm.checkpoints.plugins import DynamoDBStateConfig
from esm.config import EsmConfig, parse_config
from esm.errors import ConfigError

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:orders"


def _config(state: str, mapping: str) -> EsmConfig:
    return parse_config(
        f"""
state: {state}
functions:
  f: {{type: http, url: "http://127.0.0.1:9000/"}}
mappings:
  - {{FunctionName: f, {mapping}}}
""",
        environ={},
    )


def _problems(state: str, mapping: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _config(state, mapping)
    return "\n".join(caught.value.problems)


def test_the_dynamodb_state_backend_and_its_defaults() -> None:
    config = _config("{backend: dynamodb}", f"EventSourceArn: {STREAM}, StartingPosition: LATEST")
    state = config.state
    assert isinstance(state, DynamoDBStateConfig)
    assert (state.table, state.lease_duration_seconds, state.create_table) == (
        "esm-leases",
        5.0,
        True,
    )
    assert state.summary() == "dynamodb table esm-leases (leases shared by replicas)"


def test_a_lease_duration_out_of_range_is_refused() -> None:
    problems = _problems(
        "{backend: dynamodb, lease_duration_seconds: 1}",
        f"EventSourceArn: {STREAM}, StartingPosition: LATEST",
    )
    assert "state.lease_duration_seconds" in problems
    assert "2" in problems


def test_a_kcl_lease_table_is_taken_with_the_dynamodb_backend() -> None:
    config = _config(
        "{backend: dynamodb}",
        f"EventSourceArn: {STREAM}, StartingPosition: LATEST, kcl_lease_table: orders-app",
    )
    assert config.mappings[0].kcl_lease_table == "orders-app"


def test_a_kcl_lease_table_needs_the_dynamodb_backend() -> None:
    problems = _problems(
        "{backend: sqlite}",
        f"EventSourceArn: {STREAM}, StartingPosition: LATEST, kcl_lease_table: orders-app",
    )
    assert "kcl_lease_table: 'orders-app' needs state.backend dynamodb (it is sqlite)" in problems


def test_a_kcl_lease_table_is_for_streams_and_must_be_a_table_name() -> None:
    problems = _problems("{backend: dynamodb}", f"EventSourceArn: {QUEUE}, kcl_lease_table: app")
    assert "applies only to Kinesis and DynamoDB stream sources, not to an SQS queue" in problems
    problems = _problems(
        "{backend: dynamodb}",
        f"EventSourceArn: {STREAM}, StartingPosition: LATEST, kcl_lease_table: 'a b'",
    )
    assert "is not a DynamoDB table name" in problems
