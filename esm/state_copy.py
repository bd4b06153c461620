"""`esm copy-checkpoints`: a sqlite state file's checkpoints into the configuration's lease
table (state.backend dynamodb), before the first replicas start on it."""

from __future__ import annotations

import anyio

from esm.aws.clients import open_client
from esm.aws.dynamodb import dynamodb_client
from esm.checkpoints.plugins import DynamoDBStateConfig
from esm.checkpoints.sqlite import SqliteCheckpointStore
from esm.config import EsmConfig
from esm.errors import ConfigError
from esm.leases.copy import CopyReport, copy_checkpoints
from esm.leases.dynamodb import DynamoDBLeaseTable, ensure_table

__all__ = ["copy_state_file"]


async def copy_state_file(config: EsmConfig, path: str) -> CopyReport:
    """Copy the checkpoints of the configuration's stream mappings found in the SQLite file
    at `path` into its lease table.

    :raises ConfigError: the file does not exist, or the configuration has no lease table.
    """
    state = config.state
    if not isinstance(state, DynamoDBStateConfig):
        raise ConfigError(
            [
                f"state.backend is {state.backend!r}: copying checkpoints needs the lease "
                "table of state.backend dynamodb"
            ]
        )
    if not await anyio.Path(path).is_file():
        raise ConfigError([f"{path}: no such state file"])
    mappings = {
        m.mapping_id: m.mapping_name for m in config.mappings if m.source.engine == "stream"
    }
    region = state.region or config.aws.region
    async with (
        open_client("dynamodb", region, config.aws.endpoint_for("dynamodb")) as raw_client,
        SqliteCheckpointStore(path) as source,
    ):
        client = dynamodb_client(raw_client)
        await ensure_table(client, state.table, create=state.create_table)
        return await copy_checkpoints(
            source,
            mappings,
            lambda mapping_id: DynamoDBLeaseTable(client, state.table, prefix=f"{mapping_id}:"),
        )
