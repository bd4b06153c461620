"""Mapping names (the `mapping` label of metrics and logs) and the metrics dashboards rely on:
esm_mapping_info, esm_build_info, esm_concurrent_invocations, process metrics, no `_created`."""

from __future__ import annotations

import platform
import sys
from typing import Any

import anyio
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import esm
from esm.config import describe_config, parse_config
from esm.engine.driver import Deliverer, DeliveryOutcome, FunctionTarget, InFlight
from esm.engine.lifecycle import Interruptible
from esm.engine.retry import Backoff
from esm.errors import ConfigError
from esm.events import create_record
from esm.metrics import MappingInfo, Metrics
from esm.model import Batch, Invocation, InvokeResult, ResultKind

KINESIS_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
DYNAMODB_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
SQS_ARN = "arn:aws:sqs:us-east-1:123456789012:payments"
FUNCTIONS = {
    "orders": {"type": "http", "url": "http://127.0.0.1:8080/"},
    "audit": {"type": "http", "url": "http://127.0.0.1:8081/"},
}


def _config(*mappings: dict[str, Any]) -> Any:
    text = yaml.safe_dump({"functions": FUNCTIONS, "mappings": list(mappings)}, sort_keys=False)
    return parse_config(text, {})


def _problems(*mappings: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _config(*mappings)
    return caught.value.problems


def test_a_mapping_without_a_name_is_named_after_its_function_and_source() -> None:
    config = _config(
        {"FunctionName": "orders", "EventSourceArn": KINESIS_ARN, "StartingPosition": "LATEST"},
        {"FunctionName": "audit", "EventSourceArn": DYNAMODB_ARN, "StartingPosition": "LATEST"},
        {"FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:orders", "name": None,
         "EventSourceArn": SQS_ARN},
    )  # fmt: skip
    assert [m.mapping_name for m in config.mappings] == [
        "orders-orders",
        "audit-orders",
        "orders-payments",
    ]
    assert [m.name for m in config.mappings] == [None, None, None]


def test_a_given_name_is_used_and_renaming_keeps_the_checkpoint_key() -> None:
    plain = _config({"FunctionName": "orders", "EventSourceArn": SQS_ARN}).mappings[0]
    named = _config(
        {"FunctionName": "orders", "EventSourceArn": SQS_ARN, "name": "payments.v2_eu-1"}
    ).mappings[0]
    assert named.mapping_name == "payments.v2_eu-1"
    # Checkpoints are keyed by the id: a name is a label only.
    assert named.mapping_id == plain.mapping_id


@pytest.mark.parametrize("bad", ["", "-starts-with-dash", "has space", "a/b", "x" * 129, "é"])
def test_a_name_that_cannot_be_a_label_is_refused(bad: str) -> None:
    problems = _problems({"FunctionName": "orders", "EventSourceArn": SQS_ARN, "name": bad})
    assert len(problems) == 1
    assert "mappings[0]" in problems[0]
    assert "name:" in problems[0]
    assert "is not a mapping name" in problems[0]


def test_a_name_must_be_a_string() -> None:
    problems = _problems({"FunctionName": "orders", "EventSourceArn": SQS_ARN, "name": 7})
    assert len(problems) == 1
    assert "name:" in problems[0]


def test_two_mappings_may_not_share_a_name() -> None:
    problems = _problems(
        {"FunctionName": "orders", "EventSourceArn": SQS_ARN, "name": "same"},
        {"FunctionName": "audit", "EventSourceArn": SQS_ARN, "name": "same"},
    )
    assert len(problems) == 1
    assert "mappings[1]" in problems[0]
    assert "'same'" in problems[0]
    assert "mappings[0]" in problems[0]


def test_derived_names_that_collide_ask_for_a_name() -> None:
    # A stream and a table of the same name, read by one function.
    mappings = [
        {"FunctionName": "orders", "EventSourceArn": KINESIS_ARN, "StartingPosition": "LATEST"},
        {"FunctionName": "orders", "EventSourceArn": DYNAMODB_ARN, "StartingPosition": "LATEST"},
    ]
    problems = _problems(*mappings)
    assert len(problems) == 1
    assert "'orders-orders' (derived from function and source)" in problems[0]
    assert "give each mapping its own `name`" in problems[0]
    mappings[1]["name"] = "orders-table"
    assert [m.mapping_name for m in _config(*mappings).mappings] == [
        "orders-orders",
        "orders-table",
    ]


def test_validate_summary_names_each_mapping() -> None:
    config = _config({"FunctionName": "orders", "EventSourceArn": SQS_ARN, "name": "pay"})
    [line] = [x for x in describe_config(config).splitlines() if x.startswith("mapping ")]
    assert line.startswith(f"mapping pay ({config.mappings[0].mapping_id}): sqs queue payments")


def _samples(metrics: Metrics) -> dict[str, list[Any]]:
    text = generate_latest(metrics.registry).decode()
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_counters_and_histograms_have_no_created_series() -> None:
    metrics = Metrics()
    metrics.polled_events.labels("orders-orders").inc()
    metrics.invoke_duration.labels("orders-orders").observe(0.1)
    text = generate_latest(metrics.registry).decode()
    assert "esm_polled_events_total" in text
    assert "_created" not in text


def test_build_info_and_process_metrics() -> None:
    samples = _samples(Metrics())
    [build] = samples["esm_build_info"]
    assert build.labels == {"version": esm.__version__, "python_version": platform.python_version()}
    assert build.value == 1
    assert "python_info" in samples
    assert any(name.startswith("python_gc_") for name in samples)
    if sys.platform == "linux":
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
            assert name in samples, name


def test_mapping_info_maps_the_name_to_uuid_function_and_source() -> None:
    metrics = Metrics()
    metrics.describe_mappings(
        [MappingInfo("orders-orders", "3a83a897-uuid", "orders", KINESIS_ARN, "kinesis")]
    )
    [info] = _samples(metrics)["esm_mapping_info"]
    assert info.value == 1
    assert info.labels == {
        "mapping": "orders-orders",
        "uuid": "3a83a897-uuid",
        "function": "orders",
        "event_source_arn": KINESIS_ARN,
        "source": "kinesis",
    }


class _Gate:
    """A backend whose invocations wait until released."""

    def __init__(self) -> None:
        self.started = 0
        self.release = anyio.Event()

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        self.started += 1
        await self.release.wait()
        return InvokeResult(kind=ResultKind.SUCCESS)

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_concurrent_invocations_counts_invocations_in_flight() -> None:
    metrics = Metrics()
    gate = _Gate()
    target = FunctionTarget(
        name="fn", arn="arn:aws:lambda:us-east-1:000000000000:function:fn", timeout=30
    )
    deliverer = Deliverer(gate, target, "orders-orders", metrics, backoff=Backoff(0.001, 0.01))
    gauge = metrics.concurrent_invocations.labels("orders-orders")
    outcomes: list[DeliveryOutcome] = []

    async def deliver(lane: int) -> None:
        record = create_record(sequence=str(lane), order=lane, key="k", arrival=1.0, entry={})
        batch = Batch(f"shardId-00000000000{lane}", [record])
        in_flight = InFlight(str(lane), str(lane), 1, 0.0)
        outcomes.append(
            await deliverer.deliver(batch, interrupt=Interruptible(), in_flight=in_flight)
        )

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(deliver, 0)
            tg.start_soon(deliver, 1)
            while gate.started < 2:
                await anyio.sleep(0.001)
            assert gauge._value.get() == 2
            gate.release.set()
    assert outcomes == [DeliveryOutcome.DELIVERED, DeliveryOutcome.DELIVERED]
    assert gauge._value.get() == 0
