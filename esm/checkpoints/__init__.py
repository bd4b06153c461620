"""Checkpoint stores: where each mapping's partition positions are kept between runs."""

from __future__ import annotations

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.checkpoints.sqlite import SqliteCheckpointStore
from esm.errors import ConfigError
from esm.protocols import CheckpointStore

__all__ = [
    "MemoryCheckpointStore",
    "SqliteCheckpointStore",
    "open_checkpoint_store",
]

BACKENDS = ("sqlite", "memory")
"""The values `state.backend` accepts."""


def open_checkpoint_store(backend: str, path: str) -> CheckpointStore:
    """A ready store for `backend` ("sqlite" or "memory").

    Nothing is opened yet: the SQLite file is created (with its parent directories) on the
    store's first use, so a bad path surfaces as `CheckpointError` from the first `load`.
    `path` is ignored by the memory store.

    :raises ConfigError: `backend` is not one of `BACKENDS`.
    """
    if backend == "sqlite":
        return SqliteCheckpointStore(path)
    if backend == "memory":
        return MemoryCheckpointStore()
    raise ConfigError([f"state.backend: unknown backend {backend!r}; expected one of {BACKENDS}"])
