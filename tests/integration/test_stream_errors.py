"""Stream error handling end to end against moto's server: batch item failures, answer
forms, record age, tumbling windows."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from esm.metrics import Metrics
from esm.testing import RecordingBackend

from .helpers import age_records, create_stream, daemon_config, put_records, run_daemon_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def _sequences(event: dict[str, Any]) -> list[str]:
    return [r["kinesis"]["sequenceNumber"] for r in event["Records"]]


async def test_a_partial_failure_resumes_at_the_lowest_failed_record(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 10)

    def fail_two(event: dict[str, Any], call: int) -> Any:
        if call == 1:
            sequences = _sequences(event)
            return {
                "batchItemFailures": [
                    {"itemIdentifier": sequences[7]},
                    {"itemIdentifier": sequences[4]},
                ]
            }
        return {"batchItemFailures": []}

    backend = RecordingBackend(fail_two)
    config = daemon_config(
        moto_endpoint,
        arn,
        extra_mapping="    FunctionResponseTypes: [ReportBatchItemFailures]",
    )
    daemon = await run_daemon_until(config, backend, lambda: len(backend.events) >= 2)
    first, second = (_sequences(e) for e in backend.events[:2])
    assert len(first) == 10
    assert second == first[4:]
    shard = daemon.status()["mappings"][0]["shards"]
    assert [s["checkpoint"] for s in shard.values()] == [first[-1]]


# Recorded from AWS: `[]` too is a complete success for a stream batch.
SUCCESS_FORMS: list[Any] = [None, {}, [], {"batchItemFailures": []}, {"batchItemFailures": None}]
FAILURE_FORMS = [
    {"batchItemFailures": [{"itemIdentifier": ""}]},
    {"batchItemFailures": [{"itemIdentifier": None}]},
    {"batchItemFailures": [{"id": "1"}]},
    {"batchItemFailures": [{"itemIdentifier": "999999999"}]},
]


@pytest.mark.parametrize("answer", SUCCESS_FORMS, ids=repr)
async def test_complete_success_forms_settle_the_batch(
    kinesis: Any, moto_endpoint: str, stream_name: str, answer: Any
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 5)
    backend = RecordingBackend(lambda event, call: answer)
    config = daemon_config(
        moto_endpoint, arn, extra_mapping="    FunctionResponseTypes: [ReportBatchItemFailures]"
    )
    daemon = await run_daemon_until(config, backend, lambda: len(backend.events) >= 1)
    assert len(backend.events) == 1
    [shard] = daemon.status()["mappings"][0]["shards"].values()
    assert shard["checkpoint"] == _sequences(backend.events[0])[-1]


@pytest.mark.parametrize("answer", FAILURE_FORMS, ids=repr)
async def test_complete_failure_forms_retry_the_whole_batch(
    kinesis: Any, moto_endpoint: str, stream_name: str, answer: Any
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 5)
    backend = RecordingBackend(lambda event, call: answer if call == 1 else None)
    config = daemon_config(
        moto_endpoint, arn, extra_mapping="    FunctionResponseTypes: [ReportBatchItemFailures]"
    )
    await run_daemon_until(config, backend, lambda: len(backend.events) >= 2)
    assert backend.events[0] == backend.events[1]
    assert len(backend.events[0]["Records"]) == 5


async def test_records_older_than_the_maximum_age_are_dropped_without_invoking(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 8)
    age_records(stream_name, 120)
    backend = RecordingBackend()
    metrics = Metrics()
    config = daemon_config(moto_endpoint, arn, extra_mapping="    MaximumRecordAgeInSeconds: 60")
    mapping = config.mappings[0].mapping_name
    dropped = metrics.dropped_events.labels(mapping)
    daemon = await run_daemon_until(
        config, backend, lambda: dropped._value.get() >= 8, metrics=metrics
    )
    assert backend.events == []
    [shard] = daemon.status()["mappings"][0]["shards"].values()
    assert shard["checkpoint"] is not None, "the shard moved past the dropped records"


async def test_a_tumbling_window_carries_state_and_ends_with_a_final_invocation(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    await put_records(kinesis, stream_name, 6)
    # Closing the shard ends its window (a window never spans a resharding).
    parent = (await kinesis.list_shards(StreamName=stream_name))["Shards"][0]["ShardId"]
    await kinesis.split_shard(
        StreamName=stream_name, ShardToSplit=parent, NewStartingHashKey=str(2**127)
    )

    def count(event: dict[str, Any], call: int) -> Any:
        state = dict(event["state"])
        state["records"] = state.get("records", 0) + len(event["Records"])
        state["invocations"] = state.get("invocations", 0) + 1
        return {"state": state}

    backend = RecordingBackend(count)
    config = daemon_config(
        moto_endpoint, arn, batch_size=2, extra_mapping="    TumblingWindowInSeconds: 900"
    )
    await run_daemon_until(
        config, backend, lambda: any(e["isFinalInvokeForWindow"] for e in backend.events)
    )
    # Six records written within a second or so: one window, unless it straddles a
    # quarter-hour boundary, in which case each window has its own final invocation.
    windows: dict[str, list[dict[str, Any]]] = {}
    for event in backend.events:
        windows.setdefault(event["window"]["start"], []).append(event)
    records = 0
    for events in windows.values():
        *batches, final = events
        assert final["isFinalInvokeForWindow"] is True
        assert final["Records"] == []
        assert [e["isFinalInvokeForWindow"] for e in batches] == [False] * len(batches)
        assert batches[0]["state"] == {}
        for n, event in enumerate(batches[1:], start=1):
            assert event["state"]["invocations"] == n
        assert final["state"]["records"] == sum(len(e["Records"]) for e in batches)
        records += final["state"]["records"]
        assert all(e["shardId"] == parent for e in events)
        assert all(e["eventSourceARN"] == arn for e in events)
        assert all(e["isWindowTerminatedEarly"] is False for e in events)
    assert records == 6
    if len(windows) == 1:
        assert len(backend.events) == 4, "three invocations carrying state, then the final one"


async def test_filters_on_kinesis_json_data_skip_records_and_move_the_checkpoint(
    kinesis: Any, moto_endpoint: str, stream_name: str
) -> None:
    arn = await create_stream(kinesis, stream_name, 1)
    entries = [
        {"Data": orjson.dumps({"type": kind, "amount": amount}), "PartitionKey": "k"}
        for kind, amount in [
            ("order", 10),
            ("refund", 5),
            ("order", 500),
            ("order", 7),
            ("ping", 0),
        ]
    ]
    entries.append({"Data": b"not json at all", "PartitionKey": "k"})
    await kinesis.put_records(StreamName=stream_name, Records=entries)
    pattern = '{"data": {"type": ["order"], "amount": [{"numeric": ["<", 100]}]}}'
    backend = RecordingBackend()
    metrics = Metrics()
    config = daemon_config(
        moto_endpoint,
        arn,
        extra_mapping=f"    FilterCriteria: {{Filters: [{{Pattern: '{pattern}'}}]}}",
    )
    mapping = config.mappings[0].mapping_name
    filtered = metrics.filtered_out_events.labels(mapping)
    daemon = await run_daemon_until(
        config,
        backend,
        lambda: filtered._value.get() >= 4 and len(backend.delivered_records()) >= 2,
        metrics=metrics,
    )
    delivered = [
        orjson.loads(base64.b64decode(r["kinesis"]["data"])) for r in backend.delivered_records()
    ]
    assert delivered == [{"type": "order", "amount": 10}, {"type": "order", "amount": 7}]
    [shard] = daemon.status()["mappings"][0]["shards"].values()
    last = (
        await kinesis.get_records(
            ShardIterator=(
                await kinesis.get_shard_iterator(
                    StreamName=stream_name,
                    ShardId="shardId-000000000000",
                    ShardIteratorType="TRIM_HORIZON",
                )
            )["ShardIterator"]
        )
    )["Records"][-1]["SequenceNumber"]
    assert shard["checkpoint"] == last, "the checkpoint moved past the filtered-out records"
