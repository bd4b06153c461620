"""`esm seek` on a stopped esm: the new positions written straight into the state store,
where the next `esm run` starts from them."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from esm import registry
from esm.aws.clients import ClientPool, open_client
from esm.checkpoints.plugins import DynamoDBStateConfig
from esm.config import EsmConfig, MappingConfig
from esm.daemon import identity_arn
from esm.engine.retry import Backoff
from esm.engine.seek import SeekError, plan_seek
from esm.metrics import Metrics
from esm.model import StartPosition

__all__ = ["find_mapping", "seek_stopped"]


def _closing(
    stack: contextlib.AsyncExitStack,
) -> Callable[[Callable[[], Awaitable[None]]], None]:
    def on_close(close: Callable[[], Awaitable[None]]) -> None:
        stack.push_async_callback(close)

    return on_close


def find_mapping(config: EsmConfig, name_or_id: str) -> MappingConfig:
    """The mapping named `name_or_id` (or with that UUID). :raises SeekError: none."""
    for mapping in config.mappings:
        if name_or_id in (mapping.mapping_id, mapping.mapping_name):
            return mapping
    names = ", ".join(sorted(m.mapping_name for m in config.mappings)) or "none"
    raise SeekError(f"no mapping {name_or_id} in the configuration (mappings: {names})")


async def seek_stopped(
    config: EsmConfig, name_or_id: str, target: StartPosition, shard: str | None
) -> list[str]:
    """Write the checkpoints that move mapping `name_or_id` to `target`; the shards moved.

    Nothing may be running on the same state: a running esm would write its own
    checkpoints over these (the command asks a running esm through its admin API).

    :raises SeekError: a queue mapping, a leased state, or a position the stream refuses.
    :raises EsmError: the stream or the state store cannot be reached.
    """
    mapping = find_mapping(config, name_or_id)
    if mapping.source.engine != "stream":
        raise SeekError(
            f"mapping {mapping.mapping_name} reads a queue: a queue has no position to move"
        )
    if isinstance(config.state, DynamoDBStateConfig):
        raise SeekError(
            f"mapping {mapping.mapping_name}: seek needs state.backend sqlite or memory; with "
            "leases (state.backend dynamodb) positions are the lease table's"
        )
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as stack:
        clients = ClientPool(
            lambda service, region: open_client(service, region, config.aws.endpoint_for(service)),
            stack,
        )
        source = await registry.build_source(
            registry.SourceContext(
                mapping=mapping.mapping_name,
                aws_client=clients.get,
                metrics=metrics,
                identity_arn=identity_arn(mapping),
                poll_interval=config.polling.interval_seconds,
                records_limit=config.polling.records_limit,
                extend_visibility=config.sqs.extend_visibility,
                retry_delay=Backoff(initial=0.5, maximum=5.0).delay,
                on_close=_closing(stack),
            ),
            mapping.source,
        )
        assert isinstance(source, registry.StreamSource)
        checkpoints = await plan_seek(source.api, target, shard)
        store = registry.build_checkpoint_store(
            config.state, registry.StoreContext(config.aws.region, clients.get, metrics)
        )
        try:
            for partition, checkpoint in sorted(checkpoints.items()):
                await store.save(mapping.mapping_id, partition, checkpoint)
        finally:
            await store.aclose()
    return sorted(checkpoints)
