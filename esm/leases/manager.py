"""One mapping's leases: which of its shards this worker reads, decided pass by pass.

Every pass (about a second) the manager reads the mapping's leases and:

1. creates the leases of shards the stream lists and the table lacks;
2. checks its own: a lease that changed owner is lost (its reader is stopped at once); a
   lease whose new owner asked for it (`checkpoint_owner` is this worker) is handed over:
   reading stops, the in-flight batch finishes within the grace period, the final
   checkpoint is written, then the lease is let go;
3. takes free and expired leases, up to an even share of the live workers, children only
   once their parents reached SHARD_END;
4. when nothing was free, asks the worker holding the most for one lease (a handoff).

Every write is conditional on the owner and counter last seen (`LeaseTable.replace`), and
every write bumps the counter, so at most one worker at a time believes it holds a lease at
a given counter, and a worker that lost one writes nothing more for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio
import structlog

from esm.errors import CheckpointError, describe
from esm.leases.liveness import Liveness
from esm.leases.model import TRIM_HORIZON, Lease, sentinel_of, start_of
from esm.leases.table import LeaseConflict, LeaseTable
from esm.model import Checkpoint, ShardInfo, StartPosition

__all__ = ["LeaseEvents", "LeaseLost", "LeaseManager", "LeaseSettings", "LeasedShards"]


class LeaseLost(CheckpointError):
    """The checkpoint was not written: the lease belongs to another worker now."""

    retriable = False


class LeasedShards(Protocol):
    """A stream mapping's shards as the lease manager drives them (the stream engine)."""

    def listing(self) -> Mapping[str, ShardInfo] | None:
        """The shards the stream listed last; None before the first listing."""
        ...

    def running(self) -> frozenset[str]:
        """The shards whose reader runs (a reader winding down counts until it ends)."""
        ...

    def acquire(self, shard_id: str, start: StartPosition) -> bool:
        """Start reading `shard_id` at `start`."""
        ...

    def release(self, shard_id: str, grace: float | None) -> None:
        """Stop reading `shard_id`: its in-flight batch gets `grace`, then the final
        checkpoint is written."""
        ...

    def lose(self, shard_id: str) -> None:
        """Stop reading `shard_id` at once, writing no checkpoint."""
        ...


class LeaseEvents(Protocol):
    """What the manager reports (metrics)."""

    def taken(self, shard_id: str, stolen: bool) -> None: ...

    def lost(self, shard_id: str) -> None: ...

    def held(self, count: int) -> None: ...


@dataclass(frozen=True)
class LeaseSettings:
    worker: str
    """This worker's id: unique per process (a pod name and a random suffix)."""
    duration: float = 5.0
    """Seconds without a heartbeat change after which a worker counts as dead."""
    pass_interval: float = 1.0
    """Seconds between passes over the leases."""
    grace: float | None = 30.0
    """The in-flight batch's time when a lease is handed over."""
    handoff_timeout: float = 35.0
    """How long a worker waits for a live owner to let go of a lease it asked for."""
    initial: str = TRIM_HORIZON
    """The checkpoint of the leases created when the mapping has none: its StartingPosition."""
    at_timestamp: float | None = None
    """StartingPositionTimestamp, for leases created at AT_TIMESTAMP."""


@dataclass
class _Held:
    lease: Lease
    """The lease as this worker last wrote or read it."""
    running: bool = False
    """Its reader was started (and has not been seen to end)."""
    handing_over: bool = False
    """Another worker asked for it: reading is winding down for the final checkpoint."""
    asked_at: float = 0.0
    """For a lease this worker asked for: when it asked."""


class LeaseManager:
    """The leases of one mapping held by one worker."""

    def __init__(
        self,
        table: LeaseTable,
        settings: LeaseSettings,
        liveness: Liveness,
        *,
        healthy: Callable[[float], bool] = lambda now: True,
        events: LeaseEvents | None = None,
        log: Any = None,
    ) -> None:
        self.table = table
        self.settings = settings
        self.liveness = liveness
        self.healthy = healthy
        """Whether this worker's own heartbeat is current: when it is not, others may soon
        take its leases, so it stops its readers first."""
        self.events = events
        self.log = log or structlog.get_logger("esm.leases").bind(
            table=table.name, worker=settings.worker
        )
        self.leases: dict[str, Lease] = {}
        """Every lease of the mapping as last read, for status."""
        self._held: dict[str, _Held] = {}
        self.shards: LeasedShards | None = None
        """The engine whose readers the manager drives (set by `run`)."""

    @property
    def me(self) -> str:
        return self.settings.worker

    def held(self) -> dict[str, Lease]:
        """The leases this worker holds (or asked for), as it last saw them."""
        return {shard: held.lease for shard, held in self._held.items()}

    # -- one pass --------------------------------------------------------------------------

    async def step(self, shards: LeasedShards, now: float, *, stopping: bool = False) -> None:
        """One pass over the mapping's leases (see the module's docstring)."""
        leases = {lease.shard_id: lease for lease in await self.table.scan()}
        for lease in leases.values():
            self.liveness.observe_lease(self.table.name, lease, now)
        listing = shards.listing()
        if listing is not None and not stopping:
            await self._create_missing(listing, leases)
        self.leases = leases
        running = shards.running()
        if not self.healthy(now):
            self._stop_all(shards, "this worker's heartbeat is not current")
        await self._check_mine(shards, leases, running, now, stopping)
        if not stopping and self.healthy(now):
            taken = await self._take_free(shards, leases, listing, now)
            if not taken:
                await self._ask_for_one(leases, listing, now)
        if self.events is not None:
            self.events.held(sum(1 for h in self._held.values() if h.running))

    def next_change(self) -> float | None:
        """When some lease seen last pass will expire if nothing changes (to look then)."""
        times = [
            at
            for lease in self.leases.values()
            if lease.owner not in (None, self.me)
            and (at := self.liveness.expires_at(self.table.name, lease)) is not None
        ]
        return min(times, default=None)

    async def _create_missing(
        self, listing: Mapping[str, ShardInfo], leases: dict[str, Lease]
    ) -> None:
        # The mapping's first leases start at its StartingPosition; shards that appear
        # later (children of a split) are read from their start.
        initial = self.settings.initial if not leases else TRIM_HORIZON
        for shard_id, info in sorted(listing.items()):
            if shard_id in leases:
                continue
            lease = Lease(shard_id, checkpoint=initial, parents=frozenset(info.parent_ids))
            if await self.table.create(lease):
                leases[shard_id] = lease
            else:
                found = await self.table.get(shard_id)
                if found is not None:
                    leases[shard_id] = found

    def _stop_all(self, shards: LeasedShards, why: str) -> None:
        if self._held:
            self.log.warning("stopping every shard's reader", reason=why, shards=len(self._held))
        for shard_id in list(self._held):
            self._lose(shards, shard_id)

    def _lose(self, shards: LeasedShards, shard_id: str, *, lost: bool = True) -> None:
        held = self._held.pop(shard_id, None)
        if held is not None and held.running:
            shards.lose(shard_id)
        if lost and self.events is not None:
            self.events.lost(shard_id)

    async def _check_mine(
        self,
        shards: LeasedShards,
        leases: Mapping[str, Lease],
        running: frozenset[str],
        now: float,
        stopping: bool,
    ) -> None:
        for shard_id, held in list(self._held.items()):
            lease = leases.get(shard_id)
            if lease is None:
                self.log.warning("lease deleted from the table", shard=shard_id)
                self._lose(shards, shard_id)
                continue
            if lease.counter < held.lease.counter:
                continue  # the scan is older than this worker's last write: nothing to learn
            if held.running and shard_id not in running:
                held.running = False
                await self._after_reader(shard_id, held, stopping)
                continue
            if held.handing_over or (held.running and lease.owner == self.me):
                continue
            if lease.owner == self.me:
                if lease.finished:
                    held.lease = lease
                    await self._let_go(shard_id, held)
                elif lease.checkpoint_owner is None:
                    if not stopping:
                        self._start(shards, shard_id, held, lease)
                else:
                    await self._await_handoff(shards, shard_id, held, lease, now)
                continue
            if lease.checkpoint_owner == self.me:
                # Another worker asked for it: finish the batch, checkpoint, let go.
                self.log.info("handing lease over", shard=shard_id, to=lease.owner)
                held.lease = lease
                held.handing_over = True
                if held.running:
                    shards.release(shard_id, self.settings.grace)
                else:
                    await self._let_go(shard_id, held)
                continue
            self._no_longer_mine(shards, shard_id, lease)

    def _no_longer_mine(self, shards: LeasedShards, shard_id: str, lease: Lease) -> None:
        if lease.owner is None:
            # Set free under this worker by a seek (esm.leases.seek): stop reading; the next
            # taker, maybe this worker, starts at the new position.
            self.log.info("lease moved by a seek: reading again from it", shard=shard_id)
            self._lose(shards, shard_id, lost=False)
            return
        self.log.warning("lease lost", shard=shard_id, owner=lease.owner)
        self._lose(shards, shard_id)

    async def _after_reader(self, shard_id: str, held: _Held, stopping: bool) -> None:
        """The reader of a held lease ended: finished, handed over, or stopping."""
        if held.lease.finished or held.handing_over or stopping:
            await self._let_go(shard_id, held)
        # Otherwise the reader ended on its own (a failure): the next pass starts it again.

    async def _let_go(self, shard_id: str, held: _Held) -> None:
        try:
            await self.table.replace(held.lease, held.lease.released())
        except LeaseConflict:
            self.log.info("lease changed before it was let go", shard=shard_id)
        except CheckpointError as error:
            self.log.warning("letting go of a lease failed", shard=shard_id, error=describe(error))
            return  # kept: tried again next pass
        del self._held[shard_id]

    def _start(self, shards: LeasedShards, shard_id: str, held: _Held, lease: Lease) -> None:
        held.lease = lease
        start = start_of(lease, self.settings.at_timestamp)
        if start is None:
            return  # finished: nothing to read; let go on the next pass
        held.running = shards.acquire(shard_id, start) or shard_id in shards.running()

    async def _await_handoff(
        self, shards: LeasedShards, shard_id: str, held: _Held, lease: Lease, now: float
    ) -> None:
        """A lease this worker asked for: start once the old owner let go, or when it is
        dead or took too long."""
        old = lease.checkpoint_owner
        assert old is not None
        late = now - held.asked_at >= self.settings.handoff_timeout
        if self.liveness.alive(old, now) and not late:
            held.lease = lease
            return
        self.log.info("taking over a lease its owner did not let go", shard=shard_id, old=old)
        forced = replace(lease, checkpoint_owner=None, counter=lease.counter + 1)
        try:
            await self.table.replace(lease, forced)
        except LeaseConflict:
            return  # seen again next pass
        self._start(shards, shard_id, held, forced)

    async def _take_free(
        self,
        shards: LeasedShards,
        leases: Mapping[str, Lease],
        listing: Mapping[str, ShardInfo] | None,
        now: float,
    ) -> bool:
        active = self._active(leases, listing)
        target = math.ceil(len(active) / max(1, len(self._live(now))))
        free = [lease for lease in active if self._takeable(lease, now)]
        taken = False
        for lease in sorted(free, key=lambda lease: (lease.owner is not None, lease.shard_id)):
            if len(self._held) >= target:
                break
            new = lease.taken_by(self.me)
            try:
                await self.table.replace(lease, new)
            except LeaseConflict:
                continue
            held = _Held(new)
            self._held[lease.shard_id] = held
            taken = True
            self.log.info(
                "lease taken", shard=lease.shard_id, previous=lease.owner, counter=new.counter
            )
            if self.events is not None:
                self.events.taken(lease.shard_id, stolen=False)
            self._start(shards, lease.shard_id, held, new)
        return taken

    async def _ask_for_one(
        self, leases: Mapping[str, Lease], listing: Mapping[str, ShardInfo] | None, now: float
    ) -> None:
        """Balance: ask the worker holding the most for one lease, when it holds at least
        two more than this worker would after."""
        active = self._active(leases, listing)
        live = self._live(now)
        if any(held.lease.in_handoff for held in self._held.values()):
            return  # one move at a time
        counts: dict[str, list[Lease]] = {}
        for lease in active:
            if lease.owner in live and lease.owner != self.me:
                counts.setdefault(lease.owner, []).append(lease)
        if not counts or len(self._held) >= len(active) // len(live):
            return
        victim, theirs = max(counts.items(), key=lambda item: (len(item[1]), item[0]))
        if len(theirs) - len(self._held) < 2:
            return
        candidates = [lease for lease in theirs if not lease.in_handoff]
        if not candidates:
            return
        lease = max(candidates, key=lambda lease: lease.shard_id)
        new = lease.handed_to(self.me)
        try:
            await self.table.replace(lease, new)
        except LeaseConflict:
            return
        self._held[lease.shard_id] = _Held(new, asked_at=now)
        self.log.info("asked for a lease", shard=lease.shard_id, owner=victim)
        if self.events is not None:
            self.events.taken(lease.shard_id, stolen=True)

    def _live(self, now: float) -> set[str]:
        return self.liveness.live_workers(now) | {self.me}

    def _active(
        self, leases: Mapping[str, Lease], listing: Mapping[str, ShardInfo] | None
    ) -> list[Lease]:
        """Leases with something left to read whose parents are finished."""
        return [
            lease
            for lease in leases.values()
            if not lease.finished and self._parents_finished(lease, leases, listing)
        ]

    @staticmethod
    def _parents_finished(
        lease: Lease, leases: Mapping[str, Lease], listing: Mapping[str, ShardInfo] | None
    ) -> bool:
        for parent in lease.parents:
            found = leases.get(parent)
            if found is not None:
                if not found.finished:
                    return False
            elif listing is None or parent in listing:
                return False  # its lease is about to be created: wait for it
            # Neither leased nor listed: aged out of the stream, nothing of it to read.
        return True

    def _takeable(self, lease: Lease, now: float) -> bool:
        if lease.shard_id in self._held:
            return False
        if lease.owner is None:
            return not lease.in_handoff
        if lease.owner == self.me:
            return True  # ours in the table, but not running here (after a stop)
        return self.liveness.expired(self.table.name, lease, now)

    # -- checkpoints -----------------------------------------------------------------------

    async def checkpoint(self, shards: LeasedShards, shard_id: str, checkpoint: Checkpoint) -> None:
        """Write `checkpoint` into the lease, fenced by its owner and counter.

        :raises LeaseLost: the lease is another worker's now (its reader is stopped).
        """
        held = self._held.get(shard_id)
        if held is None:
            raise LeaseLost(f"shard {shard_id}: this worker holds no lease for it")
        value = sentinel_of(checkpoint)
        for _ in range(2):
            new = held.lease.checkpointed(value)
            try:
                await self.table.replace(held.lease, new)
            except LeaseConflict:
                fresh = await self.table.get(shard_id)
                if fresh is not None and fresh.owner == self.me and not fresh.in_handoff:
                    # Only this worker writes a lease it owns outside a handoff: a write of
                    # its own whose answer it did not see. Go on from there.
                    held.lease = fresh
                    continue
                if fresh is not None and fresh.checkpoint_owner == self.me:
                    # Asked for in the meantime: this worker may still write its final
                    # checkpoint; wind the reader down.
                    held.lease = fresh
                    if not held.handing_over:
                        held.handing_over = True
                        shards.release(shard_id, self.settings.grace)
                    continue
                if fresh is not None and fresh.owner is None:
                    # A seek set it free: the batch must not checkpoint over the new position.
                    self.log.info("lease moved by a seek before its checkpoint", shard=shard_id)
                    self._lose(shards, shard_id, lost=False)
                else:
                    self.log.warning("lease lost at checkpoint", shard=shard_id)
                    self._lose(shards, shard_id)
                raise LeaseLost(f"shard {shard_id}: the lease belongs to another worker") from None
            held.lease = new
            return
        raise LeaseLost(f"shard {shard_id}: the lease keeps changing")

    async def release_all(self) -> None:
        """Let go of every lease whose reader has ended (shutdown, after the final
        checkpoints): the next owner takes them on its next pass. A lease this worker asked
        for and never started goes back to the worker still finishing it."""
        for shard_id, held in list(self._held.items()):
            lease = held.lease
            if held.running:
                continue
            if lease.owner == self.me and lease.checkpoint_owner is not None:
                back = replace(
                    lease,
                    owner=lease.checkpoint_owner,
                    checkpoint_owner=None,
                    counter=lease.counter + 1,
                )
                try:
                    await self.table.replace(lease, back)
                except CheckpointError as error:
                    self.log.info("could not give a lease back", shard=shard_id, error=str(error))
                del self._held[shard_id]
            elif lease.owner == self.me or held.handing_over:
                await self._let_go(shard_id, held)

    async def tick(self, shards: LeasedShards, now: float, *, stopping: bool = False) -> None:
        """One pass; a table that does not answer is tried again on the next, and meanwhile
        the readers go on only as long as this worker's heartbeat is current."""
        try:
            await self.step(shards, now, stopping=stopping)
        except CheckpointError as error:
            self.log.warning("lease pass failed", error=describe(error))
            if not self.healthy(now):
                self._stop_all(shards, "this worker's heartbeat is not current")

    async def run(
        self,
        shards: LeasedShards,
        stopping: Callable[[], bool],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Pass after pass until `stopping()` and every reader has ended; then let go of
        every lease. A table that does not answer is retried on the next pass; meanwhile
        the heartbeat decides whether the readers may go on."""
        self.shards = shards
        interval = self.settings.pass_interval
        while True:
            now = clock()
            winding_down = stopping()
            await self.tick(shards, now, stopping=winding_down)
            if winding_down and not any(held.running for held in self._held.values()):
                with anyio.CancelScope(shield=True), anyio.move_on_after(interval * 5):
                    await self.release_all()
                return
            wake = min(now + interval, self.next_change() or math.inf)
            # A little after the expiry, so that the pass finds the lease expired.
            await anyio.sleep(max(0.05, wake + 0.01 - clock()))

    async def save(self, shard_id: str, checkpoint: Checkpoint) -> None:
        """`checkpoint` for the engine's own checkpoint writes (through the store)."""
        if self.shards is None:
            raise LeaseLost(f"shard {shard_id}: the lease manager is not running")
        await self.checkpoint(self.shards, shard_id, checkpoint)

    def status(self) -> dict[str, dict[str, Any]]:
        """Every lease of the mapping as of the last pass, this worker's own as it holds
        them now (a lease taken during the pass shows its new owner at once)."""
        leases = {**self.leases, **self.held()}
        return {
            shard_id: {
                "owner": lease.owner,
                "counter": lease.counter,
                "checkpoint": lease.checkpoint,
                **({"checkpoint_owner": lease.checkpoint_owner} if lease.in_handoff else {}),
            }
            for shard_id, lease in sorted(leases.items())
        }
