"""The batcher: BatchSize, the 6 MB payload limit, order, and nothing lost or duplicated."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from esm.engine.batcher import Batcher, BatchLimits, cut_batches
from esm.model import EVENT_ENVELOPE_BYTES, MAX_INVOKE_PAYLOAD_BYTES, Record


def _record(n: int, size: int) -> Record:
    return Record(sequence=str(n), order=n, key="k", arrival=0.0, size=size, entry={})


records_strategy = st.lists(st.integers(min_value=1, max_value=5000), max_size=300).map(
    lambda sizes: [_record(i, s) for i, s in enumerate(sizes)]
)


@given(
    records=records_strategy,
    batch_size=st.integers(min_value=1, max_value=50),
    max_bytes=st.integers(min_value=EVENT_ENVELOPE_BYTES + 1, max_value=40_000),
)
def test_batches_concatenate_to_the_input_and_respect_every_limit(
    records: list[Record], batch_size: int, max_bytes: int
) -> None:
    limits = BatchLimits(batch_size=batch_size, max_payload_bytes=max_bytes)
    batches = cut_batches(records, limits)
    assert [r for b in batches for r in b] == records
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        payload = EVENT_ENVELOPE_BYTES + sum(r.size for r in batch)
        # Only a record too large on its own may exceed the limit, and then it travels alone.
        assert payload <= max_bytes or len(batch) == 1


@given(records=records_strategy, batch_size=st.integers(min_value=1, max_value=50))
def test_every_batch_but_the_last_is_full_when_only_batch_size_limits(
    records: list[Record], batch_size: int
) -> None:
    batches = cut_batches(records, BatchLimits(batch_size=batch_size))
    assert all(len(b) == batch_size for b in batches[:-1])


def test_payload_limit_defaults_to_six_megabytes() -> None:
    assert (
        BatchLimits(batch_size=10).max_payload_bytes == 6 * 1024 * 1024 == MAX_INVOKE_PAYLOAD_BYTES
    )
    one_mb = 1024 * 1024
    batches = cut_batches([_record(i, one_mb) for i in range(13)], BatchLimits(batch_size=100))
    assert [len(b) for b in batches] == [5, 5, 3]


def test_full_reports_count_and_bytes() -> None:
    batcher = Batcher(BatchLimits(batch_size=3, max_payload_bytes=1000))
    batcher.add([_record(0, 10), _record(1, 10)])
    assert not batcher.full()
    batcher.add([_record(2, 10)])
    assert batcher.full()
    assert len(batcher.take()) == 3
    batcher.add([_record(3, 990)])
    assert batcher.full()
    assert batcher.pending_bytes == 990


def test_oversized_record_travels_alone() -> None:
    limits = BatchLimits(batch_size=10, max_payload_bytes=100)
    batches = cut_batches([_record(0, 10), _record(1, 500), _record(2, 10)], limits)
    assert [[r.order for r in b] for b in batches] == [[0], [1], [2]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_window_opens_with_the_first_waiting_record_and_closes_on_the_clock() -> None:
    clock = FakeClock()
    batcher = Batcher(BatchLimits(batch_size=10, window_seconds=2.0), clock)
    clock.now = 105.0
    batcher.add([_record(1, 10)])
    assert batcher.window_remaining() == 2.0
    clock.now = 106.5
    batcher.add([_record(2, 10)])  # a later record does not move the window
    assert batcher.window_remaining() == 0.5
    clock.now = 107.0
    assert batcher.window_remaining() <= 0


def test_a_new_window_opens_with_the_first_record_after_the_batch_was_taken() -> None:
    clock = FakeClock()
    batcher = Batcher(BatchLimits(batch_size=1, window_seconds=5.0), clock)
    batcher.add([_record(1, 10), _record(2, 10)])
    assert len(batcher.take()) == 1
    # The record left over keeps the window that opened with it.
    clock.now = 101.0
    assert batcher.window_remaining() == 4.0
    assert len(batcher.take()) == 1
    clock.now = 110.0
    batcher.invoked()
    clock.now = 111.0
    batcher.add([_record(3, 10)])
    assert batcher.window_remaining() == 5.0


def test_without_a_window_a_batch_is_always_due() -> None:
    batcher = Batcher(BatchLimits(batch_size=10), FakeClock())
    batcher.add([_record(1, 10)])
    assert batcher.window_remaining() == 0.0


@given(
    st.lists(st.integers(min_value=1, max_value=400), max_size=60),
    st.integers(min_value=1, max_value=25),
    st.integers(min_value=EVENT_ENVELOPE_BYTES + 1, max_value=3000),
)
def test_cuts_by_size_are_the_longest_runs_that_fit(
    sizes: list[int], batch_size: int, limit: int
) -> None:
    records = [Record(str(n), n, "k", 0.0, size, {}) for n, size in enumerate(sizes)]
    batcher = Batcher(BatchLimits(batch_size=batch_size, max_payload_bytes=limit))
    batcher.add(records)
    start = 0
    while len(batcher):
        batch = batcher.take()
        assert batch == records[start : start + len(batch)]
        fits = EVENT_ENVELOPE_BYTES + sum(r.size for r in batch) <= limit
        assert fits or len(batch) == 1, "only a record too large alone exceeds the limit"
        after = start + len(batch)
        if after < len(records) and len(batch) < batch_size:
            grown = EVENT_ENVELOPE_BYTES + sum(r.size for r in batch) + records[after].size
            assert grown > limit, "the next record would not have fit"
        start = after
    assert start == len(records)
    assert batcher.take() == []
