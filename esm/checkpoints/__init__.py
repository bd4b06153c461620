"""Checkpoint stores: where each mapping's partition positions are kept between runs."""

from __future__ import annotations

from typing import cast

from esm import registry
from esm.checkpoints.memory import MemoryCheckpointStore
from esm.checkpoints.sqlite import SqliteCheckpointStore
from esm.protocols import CheckpointStore
from esm.settings import StateSettings

__all__ = [
    "MemoryCheckpointStore",
    "SqliteCheckpointStore",
    "open_checkpoint_store",
]


def open_checkpoint_store(backend: str, path: str) -> CheckpointStore:
    """A ready store for `backend` (a name registered in esm.registry.CHECKPOINT_STORES).

    Nothing is opened yet: the SQLite file is created (with its parent directories) on the
    store's first use, so a bad path surfaces as `CheckpointError` from the first `load`.
    `path` is ignored by the memory store.

    :raises ConfigError: `backend` is not a registered store.
    """
    plugin = registry.CHECKPOINT_STORES.get(backend)
    settings = plugin.settings_model().model_validate({"backend": backend, "path": path})
    return registry.build_checkpoint_store(cast(StateSettings, settings))
