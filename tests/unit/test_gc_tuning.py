"""The collector as `esm run` sets it: a larger young generation, and the start-up heap
frozen out of later collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from esm.gc_tuning import freeze_startup_heap, tune_collector


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector")
def test_esm_run_tunes_the_collector_and_freezes_what_start_up_made() -> None:
    tune_collector()
    assert gc.get_threshold() == (50_000, 20, 10)
    made_at_start_up = [{"n": n} for n in range(1000)]
    freeze_startup_heap()
    assert gc.get_freeze_count() >= len(made_at_start_up)
    # Still freed by reference counting, still collected when cyclic after the freeze.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
