"""The garbage collector tuned for `esm run`: records are many small objects that live for
a batch, and the objects made at start-up (modules, clients, the configuration) live for the
whole run.

- `gc.freeze()` once the mappings run moves everything made at start-up out of the
  collector's view, so that no full collection walks it again.
- A larger first-generation threshold: with CPython's default of 700 allocations, a page of
  10,000 records starts a young collection every few dozen records, and each one promotes
  the records still waiting in a batch, which later full collections walk again. Memory is
  not what it costs: garbage without cycles is freed at once either way, by reference
  counting; only cyclic garbage waits a little longer.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap", "tune_collector"]

# Young collections every 50,000 net allocations, the older generations as in CPython.
_THRESHOLDS = (50_000, 20, 10)


def tune_collector() -> None:
    gc.set_threshold(*_THRESHOLDS)


def freeze_startup_heap() -> None:
    """Collect once, then keep what is left (the start-up heap) out of later collections."""
    gc.collect()
    gc.freeze()
