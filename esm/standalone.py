"""A mapping's parts opened by a command on its own, outside `esm run`: the AWS clients and
the stream source that `esm seek` (on a stopped esm) and `esm redrive` need."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from esm import registry
from esm.aws.clients import ClientPool, open_client
from esm.config import EsmConfig, MappingConfig
from esm.daemon import identity_arn
from esm.engine.retry import Backoff
from esm.metrics import Metrics

__all__ = ["client_pool", "find_mapping", "open_stream_source"]


def find_mapping(config: EsmConfig, name_or_id: str) -> MappingConfig:
    """The mapping named `name_or_id` (or with that UUID). :raises LookupError: none is."""
    for mapping in config.mappings:
        if name_or_id in (mapping.mapping_id, mapping.mapping_name):
            return mapping
    names = ", ".join(sorted(m.mapping_name for m in config.mappings)) or "none"
    raise LookupError(f"no mapping {name_or_id} in the configuration (mappings: {names})")


def client_pool(config: EsmConfig, stack: contextlib.AsyncExitStack) -> ClientPool:
    """AWS clients at the configured endpoints, closed with `stack`."""
    return ClientPool(
        lambda service, region: open_client(service, region, config.aws.endpoint_for(service)),
        stack,
    )


def _closing(
    stack: contextlib.AsyncExitStack,
) -> Callable[[Callable[[], Awaitable[None]]], None]:
    def on_close(close: Callable[[], Awaitable[None]]) -> None:
        stack.push_async_callback(close)

    return on_close


async def open_stream_source(
    config: EsmConfig,
    mapping: MappingConfig,
    clients: ClientPool,
    stack: contextlib.AsyncExitStack,
    metrics: Metrics,
) -> registry.StreamSource:
    """The source of stream mapping `mapping`, as `esm run` would open it.

    :raises ValueError: the mapping reads a queue.
    """
    backoff = Backoff(
        initial=config.delivery.backoff_initial_seconds,
        maximum=config.delivery.backoff_max_seconds,
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
            retry_delay=backoff.delay,
            on_close=_closing(stack),
            kpl_deaggregate=mapping.kpl_deaggregate,
        ),
        mapping.source,
    )
    if not isinstance(source, registry.StreamSource):
        raise ValueError(f"mapping {mapping.mapping_name} reads a queue, not a stream")
    return source
