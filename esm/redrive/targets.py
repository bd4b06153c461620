"""The mappings of a configuration as redrive targets: a failure record is matched to the
mapping that reads its stream, whose source and function are opened the first time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from esm.aws.clients import ClientPool
from esm.config import EsmConfig, MappingConfig
from esm.daemon import Daemon, function_arn, record_filter
from esm.engine.lanes import lane_of
from esm.metrics import Metrics
from esm.model import Record
from esm.protocols import FunctionBackend
from esm.redrive.failure_record import FailureRecord
from esm.redrive.redrive import RedriveTarget, Skip
from esm.redrive.report import Outcome
from esm.standalone import open_stream_source

__all__ = ["ConfigTargets", "stream_mappings"]


def stream_mappings(config: EsmConfig) -> list[MappingConfig]:
    """The mappings whose batches can be given up: those reading a stream."""
    return [m for m in config.mappings if m.source.engine == "stream"]


def _selector(
    mapping: MappingConfig, metrics: Metrics
) -> Callable[[Sequence[Record], bool], list[Record]]:
    matches = record_filter(mapping, metrics)
    # A tumbling window's shard has one lane, as the engine runs it.
    lanes = 1 if mapping.TumblingWindowInSeconds else mapping.ParallelizationFactor

    def select(records: Sequence[Record], first_found: bool) -> list[Record]:
        kept = [r for r in records if matches is None or matches(r)]
        if lanes == 1:
            return kept
        if not first_found or not records:
            # The batch's lane is its first record's: without it, no record can be placed.
            return []
        lane = lane_of(records[0].key, lanes)
        return [r for r in kept if lane_of(r.key, lanes) == lane]

    return select


@dataclass
class ConfigTargets:
    """Opens, for each mapping a failure record names, its stream source and its function's
    backend (closed with `stack`), and invokes through the daemon's own delivery code."""

    config: EsmConfig
    clients: ClientPool
    stack: contextlib.AsyncExitStack
    only: MappingConfig | None = None
    """--mapping: the one mapping whose failure records are redriven."""
    metrics: Metrics = field(default_factory=Metrics)
    _builder: Daemon | None = None
    _backends: dict[str, FunctionBackend] = field(default_factory=dict)
    _opened: dict[str, RedriveTarget] = field(default_factory=dict)

    def match(self, record: FailureRecord) -> MappingConfig | Skip:
        """The mapping that reads the record's stream: the one whose function the record
        names when several do."""
        on_stream = [
            m for m in stream_mappings(self.config) if m.source.stream_arn == record.stream_arn
        ]
        if self.only is not None:
            if self.only in on_stream:
                return self.only
            return Skip(Outcome.SKIPPED, None, f"not mapping {self.only.mapping_name}'s")
        by_function = [m for m in on_stream if function_arn(m) == record.function_arn]
        if len(by_function) == 1:
            return by_function[0]
        if len(on_stream) == 1:
            return on_stream[0]
        if not on_stream:
            return Skip(Outcome.UNMATCHED, None, f"no mapping reads {record.stream_arn}")
        names = ", ".join(m.mapping_name for m in on_stream)
        return Skip(
            Outcome.UNMATCHED,
            None,
            f"mappings {names} read {record.stream_arn} and none is for function "
            f"{record.function_arn}: choose one with --mapping",
        )

    async def for_record(self, record: FailureRecord) -> RedriveTarget | Skip:
        mapping = self.match(record)
        if isinstance(mapping, Skip):
            return mapping
        if mapping.mapping_id not in self._opened:
            self._opened[mapping.mapping_id] = await self._open(mapping)
        return self._opened[mapping.mapping_id]

    async def _open(self, mapping: MappingConfig) -> RedriveTarget:
        if self._builder is None:
            self._builder = Daemon(self.config, metrics=self.metrics)
            self.stack.push_async_callback(self._close_backends)
        builder = self._builder
        source = await open_stream_source(
            self.config, mapping, self.clients, self.stack, self.metrics
        )
        backend = await builder.open_backend(
            mapping.function_name, mapping.region, self._backends, self.clients
        )
        deliverer = builder.deliverer(mapping, builder.limited(mapping.function_name, backend))
        return RedriveTarget(
            mapping=mapping.mapping_name,
            api=source.api,
            invoke=deliverer.invoke_once,
            select=_selector(mapping, self.metrics),
            report_item_failures="ReportBatchItemFailures" in mapping.FunctionResponseTypes,
            records_limit=source.records_limit,
            retry_delay=builder.backoff().delay,
        )

    async def _close_backends(self) -> None:
        for backend in self._backends.values():
            with contextlib.suppress(Exception):
                await backend.aclose()
