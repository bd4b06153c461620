"""The checkpoint stores as plugins: for each `state.backend`, its settings and its factory,
registered in esm.registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from esm.settings import StateSettings, config_problem

if TYPE_CHECKING:
    from esm.protocols import CheckpointStore
    from esm.registry import StoreContext

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


def create_sqlite(settings: SqliteStateConfig, context: StoreContext | None) -> CheckpointStore:
    from esm.checkpoints.sqlite import SqliteCheckpointStore

    return SqliteCheckpointStore(settings.path)


def create_memory(settings: MemoryStateConfig, context: StoreContext | None) -> CheckpointStore:
    from esm.checkpoints.memory import MemoryCheckpointStore

    return MemoryCheckpointStore()


class DynamoDBStateConfig(StateSettings):
    """Checkpoints and leases in a DynamoDB table, in the Kinesis Client Library's format:
    several esm processes share each stream's shards."""

    backend: Literal["dynamodb"] = Field(
        description="Checkpoints and leases in DynamoDB, shared by replicas."
    )
    table: str = Field(
        "esm-leases",
        min_length=3,
        max_length=255,
        pattern=r"^[a-zA-Z0-9_.-]+$",
        description="The lease table; created (on-demand billing) when missing. Every stream "
        "mapping keeps its leases in it, keyed by the mapping's id and the shard.",
    )
    region: str | None = Field(
        None, description="The table's region; the `aws` section's region by default."
    )
    create_table: bool = Field(
        True, description="Create the table when it does not exist (needs dynamodb:CreateTable)."
    )
    lease_duration_seconds: float = Field(
        5.0,
        ge=2.0,
        le=300.0,
        description="A worker whose heartbeat has not changed for this long counts as dead "
        "and its shards are taken over; a worker that cannot write its own heartbeat for "
        "this long stops its readers first.",
    )
    worker_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="This process's name in the table (`leaseOwner`); by default the host "
        "name (a pod's name) with the process id and a random suffix.",
    )

    def summary(self) -> str:
        return f"dynamodb table {self.table} (leases shared by replicas)"


def create_dynamodb(settings: DynamoDBStateConfig, context: StoreContext | None) -> CheckpointStore:
    from esm.checkpoints.dynamodb import DynamoDBLeaseStore
    from esm.errors import ConfigError

    if context is None:
        raise ConfigError(["state.backend dynamodb: this command cannot reach DynamoDB"])
    return DynamoDBLeaseStore(settings, context)
