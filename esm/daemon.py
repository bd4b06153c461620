"""The composition root: turns a configuration into running mappings, and shuts them down well."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from esm import registry
from esm.admin import AdminServer
from esm.aws.clients import ClientOpener, ClientPool
from esm.aws.clients import open_client as open_aws_client
from esm.engine.batcher import BatchLimits
from esm.engine.breaker import BreakerSettings, CircuitBreaker, breaker_log
from esm.engine.concurrency import ConcurrencyLimitedBackend
from esm.engine.discard import OnFailureDestination
from esm.engine.driver import Deliverer, Discard, FunctionTarget
from esm.engine.lifecycle import Interruptible
from esm.engine.pause import PauseGate
from esm.engine.queue import QueueEngine, QueueSettings
from esm.engine.retry import Backoff, RetryPolicy
from esm.engine.scaling import DEFAULT_MAX_CONCURRENCY, ScalingLimits
from esm.engine.seek import SeekError, describe_target, parse_target, plan_seek
from esm.engine.stream_model import MIN_POLL_INTERVAL_SECONDS, StreamSettings
from esm.engine.streams import StreamEngine
from esm.errors import ConfigError, SettingError, describe
from esm.filter import compile_filters
from esm.leases.store import LeasingStore
from esm.metrics import MappingInfo, Metrics
from esm.model import IteratorType, Record, StartPosition
from esm.protocols import CheckpointStore, FunctionBackend
from esm.supervisor import MappingSupervisor, Runner, Stopping
from esm.tracing import NO_TRACING, MappingTrace, Tracing
from esm.tracing_setup import open_tracing

if TYPE_CHECKING:
    from esm.config import EsmConfig, MappingConfig
    from esm.reload_plan import ReloadPlan

log = structlog.get_logger("esm.daemon")

# Bounds on closing what the daemon opened, so a stuck plugin cannot hold up the exit.
_CLOSE_STORE_SECONDS = 10.0
_CLOSE_BACKEND_SECONDS = 5.0
_CLOSE_TRACING_SECONDS = 5.0
# Past the grace period, how long the mappings get for what no unit bounds yet.
_BACKSTOP_SECONDS = 1.0


def _os_reason(exc: OSError) -> str:
    """An OSError's reason alone ("Address already in use"), without errno or address."""
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    # getaddrinfo's errors have negative numbers and their own texts.
    return exc.strerror or str(exc) or type(exc).__name__


def function_arn(mapping: MappingConfig) -> str:
    return f"arn:aws:lambda:{mapping.region}:{mapping.account}:function:{mapping.function_name}"


def identity_arn(mapping: MappingConfig) -> str:
    """The invokeIdentityArn of Kinesis events: the role esm acts as, named after it."""
    return f"arn:aws:iam::{mapping.account}:role/esm"


def record_filter(mapping: MappingConfig, metrics: Metrics) -> Callable[[Record], bool] | None:
    """The mapping's FilterCriteria, compiled once; None when it has no filters.

    A record the filter fails on (an exception, not a mismatch) is delivered: the function
    sees one record too many rather than esm losing one. The first such failure is logged,
    every one is counted.
    """
    patterns = mapping.filter_patterns
    if not patterns:
        return None
    compiled = compile_filters(patterns, source=mapping.source.record_form)
    logged = False

    def matches(record: Record) -> bool:
        nonlocal logged
        try:
            return compiled.matches(record.entry)
        except Exception as exc:  # noqa: BLE001 - plugin boundary: a filter never ends the daemon
            metrics.contained_errors.labels(mapping.mapping_name, "filter").inc()
            if not logged:
                logged = True
                log.error(
                    "FilterCriteria failed on a record; delivering it unfiltered "
                    "(later failures are only counted)",
                    mapping=mapping.mapping_name,
                    sequence=record.sequence,
                    error=describe(exc),
                )
            return True

    return matches


def starting_position(mapping: MappingConfig) -> StartPosition:
    return StartPosition(
        IteratorType(mapping.starting_position or "TRIM_HORIZON"),
        timestamp=mapping.starting_position_timestamp,
    )


def _sync(
    operation: Callable[[str], dict[str, Any]],
) -> Callable[[str, Mapping[str, Any]], Awaitable[dict[str, Any]]]:
    """An admin operation that takes no arguments and does not wait."""

    async def call(name_or_id: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return operation(name_or_id)

    return call


@dataclass
class _Opened:
    """What the daemon opened for its mappings, kept for the mappings a reload adds."""

    stack: contextlib.AsyncExitStack
    clients: ClientPool
    backends: dict[str, FunctionBackend]
    """The backends by function name (unlimited), as `_open_backends` closes them."""
    store: CheckpointStore
    limited: dict[str, FunctionBackend] = field(default_factory=dict)
    """Each function's backend behind its concurrency limit, shared by its mappings."""


class Daemon:
    """Every enabled mapping of a configuration, running under one task group."""

    def __init__(
        self,
        config: EsmConfig,
        *,
        metrics: Metrics | None = None,
        backends: Mapping[str, FunctionBackend] | None = None,
        store: CheckpointStore | None = None,
        clients: ClientOpener | None = None,
        config_path: str | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        """The file `reload()` reads; None: esm runs a configuration it was given."""
        self.metrics = metrics or Metrics()
        self._given_backends = dict(backends or {})
        self._store = store
        self.supervisors: dict[str, MappingSupervisor] = {}
        self._given_tracing = tracing
        self.tracing: Tracing = NO_TRACING
        """Chosen in `run`: the given one, the configured one, or none (tracing off)."""
        self.admin_port: int | None = None
        self.started_at = time.time()
        self._stopping = Interruptible()
        """Interrupted by `request_stop()`: the daemon winds down."""
        self._serving = False
        self._client_opener: ClientOpener = clients or self.open_client
        # Each mapping's name (its metrics and logs label), by id.
        self._names = {m.mapping_id: m.mapping_name for m in config.mappings}
        self._opened: _Opened | None = None
        self._mapping_group: anyio.abc.TaskGroup | None = None
        self._reloading = anyio.Lock()

    # -- public ------------------------------------------------------------------------

    @property
    def runners(self) -> dict[str, Runner]:
        """Each running mapping's engine, by mapping id."""
        return {
            mapping_id: supervisor.runner for mapping_id, supervisor in self.supervisors.items()
        }

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM and SIGINT do)."""
        self._stopping.interrupt()

    def ready(self) -> bool:
        """esm itself is up: every enabled mapping has been set up and is running, and no
        stop was requested. Whether AWS answers is not part of it (see docs/operations.md):
        as a sidecar, a pod taken out of its Service over an AWS outage would take the app's
        own traffic down too. Each mapping's `ready` in /status says whether it polls."""
        enabled = [m for m in self.config.mappings if m.Enabled]
        return (
            self._serving and not self._stopping.interrupted and len(self.runners) == len(enabled)
        )

    def status(self) -> dict[str, Any]:
        mappings = []
        for mapping in self.config.mappings:
            runner = self.runners.get(mapping.mapping_id)
            entry: dict[str, Any] = {
                "id": mapping.mapping_id,
                "name": mapping.mapping_name,
                "function": mapping.function_name,
                "event_source_arn": mapping.EventSourceArn,
                "enabled": mapping.Enabled,
                "batch_size": mapping.batch_size,
                "maximum_batching_window_seconds": mapping.batching_window_seconds,
                "starting_position": mapping.starting_position,
            }
            if runner is not None:
                entry.update(runner.status())
            mappings.append(entry)
        return {
            "ready": self.ready(),
            "stopping": self._stopping.interrupted,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "mappings": mappings,
        }

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until a stop is requested, then drain in-flight batches and return.

        Everything the daemon opens is entered on one exit stack, so it is closed in the
        reverse order, whatever happens: mappings stop before the backends they call, and
        the backends before the checkpoint store and the AWS clients.
        """
        self._describe_mappings()
        try:
            async with contextlib.AsyncExitStack() as stack:
                # First opened, last closed: every span has ended when it is flushed.
                self.tracing = await stack.enter_async_context(self._open_tracing())
                clients = ClientPool(self._client_opener, stack, self.metrics.aws_call)
                store = await stack.enter_async_context(self._open_store(clients))
                if isinstance(store, LeasingStore):
                    # Beats from before the first lease is taken until the last is let go.
                    await stack.enter_async_context(store.leasing())
                backends = await stack.enter_async_context(self._open_backends())
                # Everything that can fail on bad settings (a handler that does not import)
                # fails here, before any task starts.
                self._opened = _Opened(stack, clients, backends, store)
                await self._open_mappings()
                await self._serve(task_status, handle_signals)
        finally:
            log.info("stopped")

    # -- what the daemon opens -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _open_tracing(self) -> AsyncIterator[Tracing]:
        """The tracing the caller passed in (theirs to close), else the configuration's,
        flushed at the end within a bound; with tracing off, one that does nothing."""
        if self._given_tracing is not None:
            yield self._given_tracing
            return
        if not self.config.tracing.enabled:
            yield NO_TRACING
            return
        tracing = open_tracing(self.config.tracing.settings())
        log.info("tracing on", tracing=self.config.tracing.summary())
        try:
            yield tracing
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(tracing.shutdown, _CLOSE_TRACING_SECONDS)

    @contextlib.asynccontextmanager
    async def _open_store(self, clients: ClientPool) -> AsyncIterator[CheckpointStore]:
        """The checkpoint store; one the caller passed in is the caller's to close."""
        if self._store is not None:
            yield self._store
            return
        context = registry.StoreContext(self.config.aws.region, clients.get, self.metrics)
        store = registry.build_checkpoint_store(self.config.state, context)
        try:
            yield store
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_STORE_SECONDS):
                await store.aclose()

    @contextlib.asynccontextmanager
    async def _open_backends(self) -> AsyncIterator[dict[str, FunctionBackend]]:
        """The function backends by name, filled as mappings need them; those the daemon
        created are closed at the end, those the caller passed in are the caller's."""
        backends: dict[str, FunctionBackend] = dict(self._given_backends)
        try:
            yield backends
        finally:
            with anyio.CancelScope(shield=True):
                for name, backend in backends.items():
                    if name not in self._given_backends:
                        with anyio.move_on_after(_CLOSE_BACKEND_SECONDS):
                            await backend.aclose()

    def _describe_mappings(self) -> None:
        self.metrics.describe_mappings(
            MappingInfo(
                name=m.mapping_name,
                uuid=m.mapping_id,
                function=m.function_name,
                event_source_arn=m.EventSourceArn,
                source=m.source_kind,
            )
            for m in self.config.mappings
        )

    async def _open_mappings(self) -> None:
        """Set up every enabled mapping: its function (behind its concurrency limit), its
        source and destination, and how to make its runner."""
        for mapping in self.config.mappings:
            if not mapping.Enabled:
                log.info("mapping disabled", mapping=mapping.mapping_name)
                continue
            factory = await self._open_mapping(mapping)
            self.supervisors[mapping.mapping_id] = self._supervisor(mapping, factory)
            self.metrics.mapping_paused.labels(mapping.mapping_name).set(0)

    async def _open_mapping(self, mapping: MappingConfig) -> Callable[[], Runner]:
        """What `mapping` needs opened (its function's backend, its source and destination),
        and how to make its runner."""
        opened = self._opened
        assert opened is not None, "run() opens the clients, backends and store first"
        name = mapping.function_name
        if name not in opened.limited:
            backend = await self.open_backend(name, mapping.region, opened.backends, opened.clients)
            opened.limited[name] = self.limited(name, backend)
        return await self._runner_factory(
            mapping, opened.stack, opened.clients, opened.limited[name], opened.store
        )

    def _supervisor(
        self, mapping: MappingConfig, factory: Callable[[], Runner]
    ) -> MappingSupervisor:
        return MappingSupervisor(
            mapping.mapping_name,
            factory,
            metrics=self.metrics,
            backoff=self.backoff(),
            stopping=self._stopping,
            grace=self.config.delivery.shutdown_grace_seconds,
            log=log,
        )

    # -- running -------------------------------------------------------------------------

    async def _serve(self, task_status: anyio.abc.TaskStatus[None], handle_signals: bool) -> None:
        async with anyio.create_task_group() as tg:
            if self.config.admin.enabled:
                await self._start_admin(tg)
            if handle_signals:
                tg.start_soon(self._watch_signals)
            if self.config.log.summary_interval_seconds > 0:
                tg.start_soon(self._log_activity)
            await self._run_mappings(task_status)
            tg.cancel_scope.cancel()

    # -- operations ----------------------------------------------------------------------

    def _mapping_id(self, name_or_id: str) -> str:
        for mapping in self.config.mappings:
            if name_or_id in (mapping.mapping_id, mapping.mapping_name):
                if mapping.mapping_id not in self.supervisors:
                    raise LookupError(f"mapping {name_or_id} is disabled")
                return mapping.mapping_id
        raise LookupError(f"no mapping {name_or_id}")

    def pause(self, name_or_id: str) -> dict[str, Any]:
        """Stop the mapping's reading before its next read; what was read is delivered and
        settled, checkpoints and leases are kept. A mapping restarted after a failure stays
        paused. :raises LookupError: no such enabled mapping."""
        return self._set_paused(name_or_id, paused=True)

    def resume(self, name_or_id: str) -> dict[str, Any]:
        """Read again from where the mapping was. :raises LookupError: no such mapping."""
        return self._set_paused(name_or_id, paused=False)

    def _set_paused(self, name_or_id: str, *, paused: bool) -> dict[str, Any]:
        mapping_id = self._mapping_id(name_or_id)
        label = self._names[mapping_id]
        changed = self.supervisors[mapping_id].set_paused(paused)
        self.metrics.mapping_paused.labels(label).set(1 if paused else 0)
        if changed:
            log.info("mapping paused" if paused else "mapping resumed", mapping=label)
        return {"mapping": label, "paused": paused, "changed": changed}

    async def seek(self, name_or_id: str, to: str, shard: str | None = None) -> dict[str, Any]:
        """Move a running stream mapping to `to` (as `esm seek --to` spells it), of `shard`
        alone or of every shard: its readers stop as at a shutdown (in-flight batches
        finish and are checkpointed), the new positions are written after their last
        checkpoint, and fresh readers start from them.

        :raises LookupError: no such enabled mapping.
        :raises SeekError: a queue mapping, or a position the stream refuses.
        """
        target = parse_target(to)
        mapping_id = self._mapping_id(name_or_id)
        label, supervisor = self._names[mapping_id], self.supervisors[mapping_id]
        runner = supervisor.runner
        if not isinstance(runner, StreamEngine):
            raise SeekError(f"mapping {label} reads a queue: a queue has no position to move")
        store = runner.store
        checkpoints = await plan_seek(runner.api, target, shard)
        if isinstance(store, LeasingStore):
            # Every replica's lease manager, this one's too, stops the moved shards' readers
            # on its next pass; whoever takes a lease next reads from the new position.
            mapping = next(m for m in self.config.mappings if m.mapping_id == mapping_id)
            await store.seek(mapping_id, checkpoints, lease_table=mapping.kcl_lease_table)
            log.info(
                "mapping moved in its leases",
                mapping=label,
                to=describe_target(target),
                shards=len(checkpoints),
            )
            return {
                "mapping": label,
                "to": describe_target(target),
                "shards": sorted(checkpoints),
                "leases": True,
            }

        async def write() -> None:
            for partition, checkpoint in sorted(checkpoints.items()):
                await store.save(mapping_id, partition, checkpoint)

        await supervisor.restart(write)
        log.info(
            "mapping moved", mapping=label, to=describe_target(target), shards=len(checkpoints)
        )
        return {"mapping": label, "to": describe_target(target), "shards": sorted(checkpoints)}

    async def reload(self) -> dict[str, Any]:
        """Read the configuration file again and apply it: mappings added, removed or
        changed start, stop or restart (each as a shutdown would stop it), the others go on
        without a pause. A configuration that does not validate, or that changes a section
        a running esm cannot change, is refused and the running one stays.

        :raises ReloadRefused: why nothing was changed, or what could not be opened.
        """
        from esm.config import load_config
        from esm.preflight import check_functions
        from esm.reload_plan import ReloadRefused, plan_reload

        if self.config_path is None:
            raise ReloadRefused("esm runs a configuration it was given, not a file: no reload")
        async with self._reloading:
            if not self._serving or self._stopping.interrupted or self._mapping_group is None:
                raise ReloadRefused("esm is not running its mappings (starting or stopping)")
            try:
                new = load_config(self.config_path)
                problems = await check_functions(new)
            except ConfigError as error:
                problems = [
                    *error.problems,
                    *([f"... and {error.omitted} more"] * bool(error.omitted)),
                ]
            if problems:
                raise ReloadRefused(
                    f"{self.config_path} is not valid, the running configuration stays: "
                    + "; ".join(problems)
                )
            plan = plan_reload(self.config, new)
            names = {**self._names, **{m.mapping_id: m.mapping_name for m in new.mappings}}
            if not plan.empty:
                await self._apply(new, plan)
            self.config = new
            self._names = {m.mapping_id: m.mapping_name for m in new.mappings}
            self._describe_mappings()
        answer = {
            what: sorted(names.get(i, i) for i in ids)
            for what, ids in (
                ("added", plan.added),
                ("removed", plan.removed),
                ("restarted", plan.changed),
                ("unchanged", plan.unchanged),
            )
        }
        log.info("configuration reloaded", **{k: v for k, v in answer.items() if v})
        return answer

    async def _apply(self, new: EsmConfig, plan: ReloadPlan) -> None:
        """Open what the new and changed mappings need first, so that a failure leaves every
        mapping as it was; then stop, restart and start them."""
        from esm.reload_plan import ReloadRefused

        opened, old = self._opened, self.config
        assert opened is not None
        assert self._mapping_group is not None
        retired = {n: opened.backends.pop(n) for n in plan.functions if n in opened.backends}
        retired_limited = {n: opened.limited.pop(n) for n in plan.functions if n in opened.limited}
        for name in plan.functions:
            # A backend the caller gave stays: it is not built from the settings.
            if name in self._given_backends:
                opened.backends[name] = self._given_backends[name]
        by_id = {m.mapping_id: m for m in new.mappings}
        factories: dict[str, Callable[[], Runner]] = {}
        self.config = new  # what the new factories read their settings from
        try:
            for mapping_id in [*plan.changed, *plan.added]:
                factories[mapping_id] = await self._open_mapping(by_id[mapping_id])
        except Exception as exc:  # noqa: BLE001 - a plugin refusing: reported, nothing changed
            self.config = old
            opened.backends.update(retired)
            opened.limited.update(retired_limited)
            raise ReloadRefused(
                f"reload not applied, the running configuration stays: {describe(exc)}"
            ) from None
        async with anyio.create_task_group() as tg:
            for mapping_id in plan.removed:
                tg.start_soon(self._remove, mapping_id)
            for mapping_id in plan.changed:
                supervisor = self.supervisors[mapping_id]
                supervisor.label = by_id[mapping_id].mapping_name
                tg.start_soon(self._restart, supervisor, factories[mapping_id])
        for mapping_id in plan.added:
            mapping = by_id[mapping_id]
            supervisor = self._supervisor(mapping, factories[mapping_id])
            self.supervisors[mapping_id] = supervisor
            self.metrics.mapping_paused.labels(mapping.mapping_name).set(0)
            self._mapping_group.start_soon(supervisor.run, name=mapping_id)
        for name, backend in retired.items():
            if name not in self._given_backends:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_BACKEND_SECONDS):
                    await backend.aclose()

    async def _restart(self, supervisor: MappingSupervisor, factory: Callable[[], Runner]) -> None:
        with contextlib.suppress(Stopping):  # esm stops meanwhile: nothing left to restart
            await supervisor.restart(factory=factory)

    async def _remove(self, mapping_id: str) -> None:
        await self.supervisors[mapping_id].remove()
        del self.supervisors[mapping_id]

    async def _log_activity(self) -> None:
        from esm.activity import ActivitySummary, log_activity

        def running() -> list[tuple[str, dict[str, Any]]]:
            return [
                (self._names[mapping_id], runner.status())
                for mapping_id, runner in self.runners.items()
            ]

        interval = self.config.log.summary_interval_seconds
        await log_activity(ActivitySummary(self.metrics), running, interval, log, anyio.sleep)

    async def _start_admin(self, tg: anyio.abc.TaskGroup) -> None:
        admin_config = self.config.admin
        token = admin_config.token or os.environ.get("ESM_ADMIN_TOKEN") or None
        admin = AdminServer(
            self.metrics.registry,
            ready=self.ready,
            status=self.status,
            operations={
                "pause": _sync(self.pause),
                "resume": _sync(self.resume),
                "seek": self._seek_operation,
            },
            actions={"reload": self._reload_action},
            token=token,
        )
        try:
            self.admin_port = await tg.start(admin.serve, admin_config.host, admin_config.port)
        except OSError as exc:
            # A bare gaierror or "address in use" would not say which setting it is.
            raise SettingError(
                f"admin.listen: cannot bind {admin_config.listen}: {_os_reason(exc)}"
            ) from None
        log.info("admin server listening", host=admin_config.host, port=self.admin_port)

    async def _reload_action(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return await self.reload()

    async def _seek_operation(
        self, name_or_id: str, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        to, shard = arguments.get("to"), arguments.get("shard")
        if not isinstance(to, str) or not (shard is None or isinstance(shard, str)):
            raise SeekError('seek takes {"to": POSITION, "shard": SHARD (optional)}')
        return await self.seek(name_or_id, to, shard)

    async def _run_mappings(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run every mapping until a stop is requested, then wind them down: reading stops
        at once, in-flight batches get the grace period, their checkpoints are written."""
        grace = self.config.delivery.shutdown_grace_seconds
        async with anyio.create_task_group() as mappings:
            self._mapping_group = mappings
            for mapping_id, supervisor in self.supervisors.items():
                mappings.start_soon(supervisor.run, name=mapping_id)
            self._serving = True
            task_status.started()
            await self._stopping.wait()
            log.info("stopping: no new batches; waiting for in-flight ones", grace_seconds=grace)
            started = anyio.current_time()
            # A reload waits for what it began (its restarts end at once now).
            async with self._reloading:
                for supervisor in self.supervisors.values():
                    supervisor.stop(grace)
            # Each unit bounds its own delivery by the grace period and its last checkpoint
            # by the same deadline; this only catches what is not yet a unit (a mapping
            # still loading its checkpoints).
            mappings.cancel_scope.deadline = started + grace + _BACKSTOP_SECONDS
        if anyio.current_time() - started >= grace:
            # Each runner has logged the batches it abandoned.
            log.warning(
                "shutdown grace period ran out, batches still in flight were abandoned",
                grace_seconds=grace,
            )

    async def _watch_signals(self) -> None:
        """SIGTERM and SIGINT shut down; SIGHUP reloads the configuration file (in its own
        task, so that a shutdown signal is heard while a reload waits for batches)."""
        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGHUP
            ) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("signal received, reloading the configuration", signal="SIGHUP")
                        tg.start_soon(self._reload_logged)
                        continue
                    log.info("signal received, shutting down", signal=signal.Signals(signum).name)
                    self.request_stop()

    async def _reload_logged(self) -> None:
        from esm.reload_plan import ReloadRefused

        try:
            await self.reload()
        except ReloadRefused as refused:
            log.error("reload refused", reason=str(refused))
        except Exception as exc:  # noqa: BLE001 - containment: a reload never ends the daemon
            log.error("reload failed", error=describe(exc))

    def open_client(self, service: str, region: str) -> AbstractAsyncContextManager[Any]:
        """An aiobotocore client for `service`, at the configured endpoint."""
        return open_aws_client(service, region, self.config.aws.endpoint_for(service))

    async def _runner_factory(
        self,
        mapping: MappingConfig,
        stack: contextlib.AsyncExitStack,
        clients: ClientPool,
        backend: FunctionBackend,
        store: CheckpointStore,
    ) -> Callable[[], StreamEngine | QueueEngine]:
        """Opens what a mapping needs (its source's clients, its destination) and returns how
        to make its engine, so that a failed engine can be replaced by a fresh one."""
        polling = self.config.polling

        def on_close(close: Callable[[], Awaitable[None]]) -> None:
            stack.push_async_callback(close)

        context = registry.SourceContext(
            mapping=mapping.mapping_name,
            aws_client=clients.get,
            metrics=self.metrics,
            identity_arn=identity_arn(mapping),
            poll_interval=polling.interval_seconds,
            records_limit=polling.records_limit,
            extend_visibility=self.config.sqs.extend_visibility,
            retry_delay=self.backoff().delay,
            on_close=on_close,
            kpl_deaggregate=mapping.kpl_deaggregate,
        )
        source = await registry.build_source(context, mapping.source)
        if mapping.kcl_lease_table is not None and isinstance(store, LeasingStore):
            await store.check_lease_table(mapping.kcl_lease_table)
        if isinstance(source, registry.QueueSource):
            return lambda: self._queue_engine(mapping, source, backend)
        discard = await self._on_failure(mapping, clients)
        return lambda: self._stream_engine(mapping, source, backend, store, discard)

    async def _on_failure(self, mapping: MappingConfig, clients: ClientPool) -> Discard | None:
        """The on-failure destination of a stream mapping, with the client it needs open."""
        arn = mapping.on_failure_destination
        form = mapping.source.record_form
        if arn is None or form == "sqs":  # a queue's failures go to its dead-letter queue
            return None
        destination = await registry.build_destination(
            registry.DestinationContext(mapping.mapping_id, mapping.region, clients.get), arn
        )
        return OnFailureDestination(
            destination,
            source=form,
            stream_arn=mapping.source.stream_arn,
            function_arn=function_arn(mapping),
            mapping_id=mapping.mapping_name,
            metrics=self.metrics,
            backoff=self.backoff(),
            log=structlog.get_logger("esm.destination").bind(mapping=mapping.mapping_name),
        )

    def backoff(self) -> Backoff:
        delivery = self.config.delivery
        return Backoff(
            initial=delivery.backoff_initial_seconds, maximum=delivery.backoff_max_seconds
        )

    async def open_backend(
        self,
        name: str,
        region: str,
        backends: dict[str, FunctionBackend],
        clients: ClientPool,
    ) -> FunctionBackend:
        """The backend of function `name`, created once and kept in `backends`."""
        if name in backends:
            return backends[name]
        context = registry.BackendContext(
            name=name,
            region=region,
            aws_client=clients.get,
            metrics=self.metrics,
            backend=lambda other: self.open_backend(other, region, backends, clients),
        )
        backend = await registry.build_backend(context, self.config.functions[name])
        if isinstance(backend, registry.StartableBackend):
            # It listens for clients that connect as soon as they start: before any invocation.
            await backend.start()
        backends[name] = backend
        return backend

    def limited(self, name: str, backend: FunctionBackend) -> FunctionBackend:
        limit = self.config.functions[name].max_concurrency
        if limit is None:
            return backend
        return ConcurrencyLimitedBackend(backend, limit, function=name, metrics=self.metrics)

    def deliverer(self, mapping: MappingConfig, backend: FunctionBackend) -> Deliverer:
        function = self.config.functions[mapping.function_name]
        return Deliverer(
            backend,
            FunctionTarget(
                name=mapping.function_name,
                arn=function_arn(mapping),
                timeout=function.timeout,
                memory_size=function.memory_size,
            ),
            mapping.mapping_name,
            self.metrics,
            backoff=self.backoff(),
            log=structlog.get_logger("esm.delivery").bind(mapping=mapping.mapping_name),
            policy=RetryPolicy(
                maximum_retry_attempts=mapping.MaximumRetryAttempts,
                maximum_record_age_seconds=mapping.MaximumRecordAgeInSeconds,
            ),
            bisect=mapping.BisectBatchOnFunctionError,
            report_item_failures="ReportBatchItemFailures" in mapping.FunctionResponseTypes,
            tracer=self.tracing.for_mapping(
                MappingTrace(
                    mapping=mapping.mapping_name,
                    function=mapping.function_name,
                    source=mapping.source_kind,
                    event_source_arn=mapping.EventSourceArn,
                )
            ),
        )

    def _queue_engine(
        self, mapping: MappingConfig, source: registry.QueueSource, backend: FunctionBackend
    ) -> QueueEngine:
        sqs = self.config.sqs
        backoff = self.backoff()
        reader = source.open_reader()
        scaling = mapping.ScalingConfig
        settings = QueueSettings(
            mapping=mapping.mapping_name,
            limits=BatchLimits(
                batch_size=mapping.batch_size,
                window_seconds=float(mapping.batching_window_seconds),
            ),
            scaling=ScalingLimits(
                maximum=min(
                    scaling.MaximumConcurrency
                    if scaling is not None and scaling.MaximumConcurrency is not None
                    else DEFAULT_MAX_CONCURRENCY,
                    # Pollers beyond what the function may run at once would only wait.
                    self.config.functions[mapping.function_name].max_concurrency
                    or DEFAULT_MAX_CONCURRENCY,
                )
            ),
            report_item_failures="ReportBatchItemFailures" in mapping.FunctionResponseTypes,
            record_filter=record_filter(mapping, self.metrics),
            wait_time_seconds=sqs.wait_time_seconds,
            failure_visibility_seconds=sqs.failure_visibility_timeout_seconds,
            release_on_shutdown=sqs.release_on_shutdown,
            shutdown_grace_seconds=self.config.delivery.shutdown_grace_seconds,
            backlog_interval=sqs.backlog_sample_seconds,
            backoff=backoff,
        )
        deliverer = self.deliverer(mapping, backend)
        engine = QueueEngine(reader, settings, deliverer, self.metrics)
        deliverer.breaker = self._breaker(mapping, engine.gate)
        return engine

    def _stream_engine(
        self,
        mapping: MappingConfig,
        source: registry.StreamSource,
        backend: FunctionBackend,
        store: CheckpointStore,
        discard: Discard | None,
    ) -> StreamEngine:
        config = self.config
        settings = StreamSettings(
            mapping_id=mapping.mapping_id,
            mapping_name=mapping.mapping_name,
            starting_position=starting_position(mapping),
            limits=BatchLimits(
                batch_size=mapping.batch_size,
                window_seconds=float(mapping.batching_window_seconds),
            ),
            poll_interval=source.poll_interval,
            busy_poll_interval=(
                MIN_POLL_INTERVAL_SECONDS
                if source.busy_poll_interval is None
                else source.busy_poll_interval
            ),
            records_limit=source.records_limit,
            discovery_interval=config.polling.shard_discovery_interval_seconds,
            parallelization=mapping.ParallelizationFactor,
            tumbling_window_seconds=mapping.TumblingWindowInSeconds,
            record_filter=record_filter(mapping, self.metrics),
        )
        deliverer = replace(self.deliverer(mapping, backend), discard=discard)
        ownership = None
        if isinstance(store, LeasingStore):
            # Several esm processes share the stream: leases decide which shards are read here.
            ownership = store.lease_manager(
                mapping.mapping_id,
                label=mapping.mapping_name,
                initial=mapping.starting_position or "TRIM_HORIZON",
                at_timestamp=mapping.starting_position_timestamp,
                grace=config.delivery.shutdown_grace_seconds,
                lease_table=mapping.kcl_lease_table,
            )
        engine = StreamEngine(
            source.api, settings, deliverer, store, self.metrics, ownership=ownership
        )
        deliverer.breaker = self._breaker(mapping, engine.gate)
        return engine

    def _breaker(self, mapping: MappingConfig, gate: PauseGate) -> CircuitBreaker | None:
        """The mapping's circuit breaker over its engine's pause gate; None when off."""
        settings = mapping.circuit_breaker or self.config.delivery.circuit_breaker
        if settings.failures <= 0:
            return None
        label = mapping.mapping_name
        self.metrics.circuit_open.labels(label).set(0)
        return CircuitBreaker(
            BreakerSettings(settings.failures, settings.cool_down_seconds),
            gate,
            on_change=breaker_log(label, self.metrics, settings.cool_down_seconds),
        )
