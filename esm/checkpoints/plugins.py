"""The checkpoint stores as plugins: for each `state.backend`, its settings and its factory,
registered in esm.registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from esm.settings import StateSettings, config_problem

if TYPE_CHECKING:
    from esm.protocols import CheckpointStore

_DEFAULT_PATH = "esm-state.db"


class SqliteStateConfig(StateSettings):
    """Checkpoints in a SQLite file: they survive restarts."""

    backend: Literal["sqlite"] = Field("sqlite", description="Checkpoints in a SQLite file.")
    path: str = Field(
        _DEFAULT_PATH,
        description="The SQLite file; created, with its directories, on first use.",
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.strip():
            raise config_problem("must not be empty")
        return value

    def summary(self) -> str:
        return f"sqlite at {self.path}"


class MemoryStateConfig(StateSettings):
    """Checkpoints in memory, forgotten on exit: tests and demos only."""

    backend: Literal["memory"] = Field(description="Checkpoints in memory, lost on exit.")
    path: str = Field(
        _DEFAULT_PATH,
        description="Ignored; accepted so that switching from sqlite is a one-line change.",
    )

    def summary(self) -> str:
        return "memory"


def create_sqlite(settings: SqliteStateConfig) -> CheckpointStore:
    from esm.checkpoints.sqlite import SqliteCheckpointStore

    return SqliteCheckpointStore(settings.path)


def create_memory(settings: MemoryStateConfig) -> CheckpointStore:
    from esm.checkpoints.memory import MemoryCheckpointStore

    return MemoryCheckpointStore()
