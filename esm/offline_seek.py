"""`esm seek` on a stopped esm: the new positions written straight into the state store,
where the next `esm run` starts from them."""

from __future__ import annotations

import contextlib

from esm import registry
from esm.config import EsmConfig
from esm.engine.seek import SeekError, plan_seek
from esm.leases.store import LeasingStore
from esm.metrics import Metrics
from esm.model import StartPosition
from esm.standalone import client_pool, find_mapping, open_stream_source

__all__ = ["seek_stopped"]


async def seek_stopped(
    config: EsmConfig, name_or_id: str, target: StartPosition, shard: str | None
) -> list[str]:
    """Write the checkpoints that move mapping `name_or_id` to `target`; the shards moved.

    Nothing may be running on the same state: a running esm would write its own
    checkpoints over these (the command asks a running esm through its admin API).

    :raises SeekError: a queue mapping, or a position the stream refuses.
    :raises EsmError: the stream or the state store cannot be reached.
    """
    try:
        mapping = find_mapping(config, name_or_id)
    except LookupError as missing:
        raise SeekError(str(missing)) from None
    if mapping.source.engine != "stream":
        raise SeekError(
            f"mapping {mapping.mapping_name} reads a queue: a queue has no position to move"
        )
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as stack:
        clients = client_pool(config, stack)
        source = await open_stream_source(config, mapping, clients, stack, metrics)
        checkpoints = await plan_seek(source.api, target, shard)
        store = registry.build_checkpoint_store(
            config.state, registry.StoreContext(config.aws.region, clients.get, metrics)
        )
        try:
            if isinstance(store, LeasingStore):
                # The leases are set free at the new position: replicas still running stop
                # those shards' readers and the next taker starts there.
                await store.seek(
                    mapping.mapping_id, checkpoints, lease_table=mapping.kcl_lease_table
                )
            else:
                for partition, checkpoint in sorted(checkpoints.items()):
                    await store.save(mapping.mapping_id, partition, checkpoint)
        finally:
            await store.aclose()
    return sorted(checkpoints)
