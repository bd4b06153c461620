"""The typed clients of esm.aws against botocore's service models: every call, parameter and
answer member they name is one botocore knows, so an aiobotocore client fits them. And the
fakes tests use are those typed clients (mypy checks the assignments below)."""

from __future__ import annotations

import inspect
from typing import Any, get_args, get_type_hints, is_typeddict

import botocore.session
import pytest

from esm.aws.dynamodb_streams import DescribeStreamInput, DynamoDBStreamsClient
from esm.aws.dynamodb_streams import GetShardIteratorInput as StreamsIteratorInput
from esm.aws.kinesis import (
    GetShardIteratorInput,
    KinesisClient,
    KinesisFanOutClient,
    SubscribeToShardEvent,
)
from esm.aws.lambda_ import InvokeInput, LambdaClient
from esm.aws.s3 import S3Client
from esm.aws.sns import SnsClient
from esm.aws.sqs import GetQueueUrlInput, SqsSendClient
from esm.testing import FakeDynamoDBStreamsClient, FakeKinesisClient, FakeKinesisFanOutClient

# Members botocore adds to every answer, or esm adds itself (the wire-form marker).
_NOT_MODELED = {"ResponseMetadata", "EsmWireForm"}

_kinesis = FakeKinesisClient()
_FAKES: tuple[KinesisClient, KinesisFanOutClient, DynamoDBStreamsClient] = (
    _kinesis,
    FakeKinesisFanOutClient(_kinesis),
    FakeDynamoDBStreamsClient(),
)


def _operation_name(method: str) -> str:
    return "".join(part.capitalize() for part in method.split("_"))


def _typeddicts(hint: Any) -> list[Any]:
    """The TypedDicts a member's type holds: itself, a list's items, a union's members."""
    if is_typeddict(hint):
        return [hint]
    found: list[Any] = []
    for arg in get_args(hint):
        found.extend(_typeddicts(arg))
    return found


def _missing(typed: Any, shape: Any, where: str) -> list[str]:
    """Members of TypedDict `typed` (and the TypedDicts within) that `shape` does not have."""
    if shape.type_name == "list":
        shape = shape.member
    if shape.type_name != "structure":
        return []
    missing = []
    for name, hint in get_type_hints(typed).items():
        if name in _NOT_MODELED:
            continue
        if name not in shape.members:
            missing.append(f"{where}.{name}")
            continue
        for inner in _typeddicts(hint):
            missing.extend(_missing(inner, shape.members[name], f"{where}.{name}"))
    return missing


def _calls(protocol: type) -> list[str]:
    return [
        name
        for name, member in inspect.getmembers(protocol, inspect.iscoroutinefunction)
        if not name.startswith("_")
    ]


@pytest.mark.parametrize(
    ("service", "protocol"),
    [
        ("kinesis", KinesisFanOutClient),
        ("dynamodbstreams", DynamoDBStreamsClient),
        ("lambda", LambdaClient),
        ("sns", SnsClient),
        ("s3", S3Client),
        ("sqs", SqsSendClient),
    ],
)
def test_every_call_parameter_and_answer_member_is_botocores(service: str, protocol: type) -> None:
    model = botocore.session.get_session().get_service_model(service)
    calls = _calls(protocol)
    assert calls
    missing: list[str] = []
    for method in calls:
        operation = model.operation_model(_operation_name(method))
        hints = get_type_hints(getattr(protocol, method))
        for name, parameter in inspect.signature(getattr(protocol, method)).parameters.items():
            if name == "self":
                continue
            assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, f"{method}({name})"
            if name not in operation.input_shape.members:
                missing.append(f"{operation.name}({name})")
                continue
            for inner in _typeddicts(hints[name]):
                missing.extend(
                    _missing(inner, operation.input_shape.members[name], f"{operation.name}.{name}")
                )
        missing.extend(
            _missing(hints["return"], operation.output_shape, f"{operation.name} answer")
        )
    assert missing == []


@pytest.mark.parametrize(
    ("service", "operation", "request_shape"),
    [
        ("kinesis", "GetShardIterator", GetShardIteratorInput),
        ("dynamodbstreams", "GetShardIterator", StreamsIteratorInput),
        ("dynamodbstreams", "DescribeStream", DescribeStreamInput),
        ("lambda", "Invoke", InvokeInput),
        ("sqs", "GetQueueUrl", GetQueueUrlInput),
    ],
)
def test_request_shapes_name_botocores_members(
    service: str, operation: str, request_shape: type
) -> None:
    model = botocore.session.get_session().get_service_model(service)
    input_shape = model.operation_model(operation).input_shape
    assert _missing(request_shape, input_shape, operation) == []
    # What botocore requires, the TypedDict requires too.
    assert set(input_shape.required_members) <= set(getattr(request_shape, "__required_keys__", ()))


def test_the_fakes_are_the_typed_clients() -> None:
    # mypy checks the assignment of _FAKES; this only keeps them in use.
    assert len(_FAKES) == 3


def test_the_pushed_fan_out_event_names_botocores_members() -> None:
    # The event stream is not a structure member: its events are checked by shape name.
    model = botocore.session.get_session().get_service_model("kinesis")
    shape = model.shape_for("SubscribeToShardEvent")
    assert _missing(SubscribeToShardEvent, shape, "SubscribeToShardEvent") == []
