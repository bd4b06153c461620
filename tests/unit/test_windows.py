"""Tumbling windows: aligned windows, state carried between invocations, final invocations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.engine.window import WindowState, answer_problem, iso, window_start
from esm.testing import FakeKinesisClient, RecordingBackend, function_error

from .test_stream_runner import STREAM, make_runner, run_until

pytestmark = pytest.mark.anyio

BASE = 1_700_000_040  # a multiple of 60: the start of a one-minute window


def counting(event: dict[str, Any], call: int) -> Any:
    """A windowed aggregation: counts records per window in its state."""
    state = dict(event["state"])
    state["count"] = state.get("count", 0) + len(event["Records"])
    return {"state": state, "batchItemFailures": []}


async def test_state_is_carried_within_a_window_and_each_window_ends_with_a_final_call() -> None:
    client = FakeKinesisClient()
    client.create_stream(STREAM, 1)
    for n in range(5):
        client.put_record(STREAM, f"a{n}".encode(), "k", arrival=BASE + 1 + n)
    for n in range(3):
        client.put_record(STREAM, f"b{n}".encode(), "k", arrival=BASE + 61 + n)
    backend = RecordingBackend(counting)
    runner = make_runner(client, backend, MemoryCheckpointStore(), batch_size=2)
    runner.settings = replace(runner.settings, tumbling_window_seconds=60)
    await run_until(runner, lambda: sum(e["isFinalInvokeForWindow"] for e in backend.events) >= 2)

    events = backend.events
    shape = [(len(e["Records"]), e["isFinalInvokeForWindow"], e["state"]) for e in events]
    assert shape == [
        (2, False, {}),
        (2, False, {"count": 2}),
        (1, False, {"count": 4}),
        (0, True, {"count": 5}),
        (2, False, {}),
        (1, False, {"count": 2}),
        (0, True, {"count": 3}),
    ]
    first, second = events[0], events[4]
    assert first["window"] == {"start": iso(BASE), "end": iso(BASE + 60)}
    assert second["window"] == {"start": iso(BASE + 60), "end": iso(BASE + 120)}
    assert first["window"]["start"].endswith("Z")
    for event in events:
        assert event["shardId"] == client.shard_ids(STREAM)[0]
        assert event["eventSourceARN"].endswith(f":stream/{STREAM}")
        assert event["isWindowTerminatedEarly"] is False
        assert list(event)[:1] == ["Records"]


async def test_an_answer_without_state_is_a_failed_invocation() -> None:
    client = FakeKinesisClient()
    client.create_stream(STREAM, 1)
    client.put_record(STREAM, b"x", "k", arrival=BASE + 1)

    def forgetful(event: dict[str, Any], call: int) -> Any:
        if call == 1:
            return {"batchItemFailures": []}
        return counting(event, call)

    backend = RecordingBackend(forgetful)
    runner = make_runner(client, backend, MemoryCheckpointStore())
    runner.settings = replace(runner.settings, tumbling_window_seconds=60)
    await run_until(runner, lambda: any(e["isFinalInvokeForWindow"] for e in backend.events))
    # The first answer had no state: the same records were sent again.
    assert [len(e["Records"]) for e in backend.events] == [1, 1, 0]
    assert backend.events[0]["Records"] == backend.events[1]["Records"]
    assert backend.events[2]["state"] == {"count": 1}


async def test_a_failing_final_invocation_is_retried_until_it_succeeds() -> None:
    client = FakeKinesisClient()
    client.create_stream(STREAM, 1)
    client.put_record(STREAM, b"x", "k", arrival=BASE + 1)

    def final_fails_once(event: dict[str, Any], call: int) -> Any:
        if event["isFinalInvokeForWindow"] and call == 2:
            return function_error("not now")
        return counting(event, call)

    backend = RecordingBackend(final_fails_once)
    runner = make_runner(client, backend, MemoryCheckpointStore())
    runner.settings = replace(runner.settings, tumbling_window_seconds=60)
    await run_until(runner, lambda: len(backend.events) >= 3)
    assert [e["isFinalInvokeForWindow"] for e in backend.events] == [False, True, True]
    assert backend.events[1] == backend.events[2]


def test_windows_are_aligned_to_their_length() -> None:
    assert window_start(BASE + 59.9, 60) == BASE
    assert window_start(BASE + 60, 60) == BASE + 60
    assert window_start(7, 900) == 0


def test_answer_rules_and_state_limit() -> None:
    assert answer_problem({"state": {}}) is None
    assert answer_problem({"state": {"a": 1}, "batchItemFailures": []}) is None
    assert answer_problem(None)
    assert answer_problem({"batchItemFailures": []})
    assert answer_problem({"state": [1]})
    window = WindowState(60, "shardId-000000000000", "arn")
    window.open(BASE)
    window.accept({"state": {"big": "x" * (1024 * 1024)}})
    assert window.terminated_early
    assert window.state == {}
    fields = window.event_fields(final=True)
    assert fields["isWindowTerminatedEarly"] is True
    assert fields["isFinalInvokeForWindow"] is True
