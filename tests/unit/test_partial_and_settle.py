"""ReportBatchItemFailures answers for streams, and the settle tracker behind checkpoints."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esm.engine.partial import stream_item_failures
from esm.engine.settle import SettleTracker
from esm.events import create_record
from esm.model import Record

RECORDS = [
    create_record(sequence=str(100 + n), order=100 + n, key="k", arrival=0.0, entry={"n": n})
    for n in range(5)
]


def _failures(*ids: Any) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}


@pytest.mark.parametrize(
    ("answer", "first_failed"),
    [
        pytest.param(None, None, id="null answer: success"),
        pytest.param({}, None, id="empty answer: success"),
        pytest.param({"batchItemFailures": []}, None, id="empty list: success"),
        pytest.param({"batchItemFailures": None}, None, id="null list: success"),
        pytest.param({"other": 1}, None, id="no list: success"),
        pytest.param(_failures("102"), 2, id="one failure: resume there"),
        pytest.param(_failures("104", "101", "103"), 1, id="several: the lowest"),
        pytest.param(_failures("100"), 0, id="first record failed"),
        pytest.param(_failures(""), 0, id="empty identifier: complete failure"),
        pytest.param(_failures(None), 0, id="null identifier: complete failure"),
        pytest.param({"batchItemFailures": [{"itemId": "101"}]}, 0, id="wrong key: complete"),
        pytest.param(_failures("999"), 0, id="unknown identifier: complete failure"),
        pytest.param(_failures(101), 0, id="number identifier: complete failure"),
        pytest.param({"batchItemFailures": "101"}, 0, id="list is a string: complete"),
        pytest.param({"batchItemFailures": ["101"]}, 0, id="item not an object: complete"),
        pytest.param("ok", 0, id="answer not an object: complete"),
        pytest.param([], None, id="empty list as the answer: success (recorded from AWS)"),
        pytest.param(["102"], 0, id="answer a non-empty list: complete"),
    ],
)
def test_stream_item_failures(answer: Any, first_failed: int | None) -> None:
    result = stream_item_failures(answer, RECORDS)
    assert result.first_failed == first_failed
    assert result.all_succeeded is (first_failed is None)
    if first_failed == 0 and answer != _failures("100"):
        assert result.reason


@given(st.permutations(list(range(30))), st.integers(min_value=1, max_value=30))
def test_checkpoint_is_the_end_of_the_longest_settled_prefix(order: list[int], upto: int) -> None:
    tracker = SettleTracker("start")
    records = [Record(f"s{n}", n, "k", 0.0, 1, {}) for n in range(30)]
    tracker.add(records)
    settled: set[int] = set()
    for n in order[:upto]:
        tracker.settle([records[n]])
        settled.add(n)
        prefix = 0
        while prefix in settled:
            prefix += 1
        # INVARIANT: never past an unsettled record, never behind a settled prefix.
        assert tracker.checkpoint == (f"s{prefix - 1}" if prefix else "start")
        assert len(tracker) == 30 - prefix


@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=12))
def test_batches_settled_in_order_move_the_checkpoint_batch_by_batch(sizes: list[int]) -> None:
    records = [Record(f"s{n}", n, "k", 0.0, 1, {}) for n in range(sum(sizes))]
    tracker = SettleTracker()
    tracker.add(records)
    start = 0
    for size in sizes:
        assert tracker.settle(records[start : start + size])
        start += size
        assert tracker.checkpoint == f"s{start - 1}"
        assert len(tracker) == len(records) - start
    assert not tracker.settle([])


def test_a_later_batch_settled_first_waits_for_the_earlier_one() -> None:
    records = [Record(f"s{n}", n, "k", 0.0, 1, {}) for n in range(6)]
    tracker = SettleTracker()
    tracker.add(records)
    # Two lanes: the second lane's batch (1, 3, 5) settles before the first's (0, 2, 4).
    assert not tracker.settle(records[1::2])
    assert len(tracker) == 6
    assert tracker.settle(records[0::2])
    assert (tracker.checkpoint, len(tracker)) == ("s5", 0)
