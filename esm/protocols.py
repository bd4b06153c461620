"""The contracts between the pipeline and everything pluggable: sources, backends, stores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from esm.model import (
    Checkpoint,
    Invocation,
    InvokeResult,
    Record,
    RecordsPage,
    ShardInfo,
    StartPosition,
)


class StreamAPI(Protocol):
    """The slice of a shard-based stream service (Kinesis, DynamoDB Streams) that esm uses.

    One instance serves one stream. Every method raises `esm.errors.TransientSourceError`
    (or its subclass `ThroughputExceeded`) when waiting and retrying can help, and
    `esm.errors.ResourceNotFound` when the stream or shard is gone.
    """

    @property
    def stream_arn(self) -> str: ...

    async def list_shards(self) -> list[ShardInfo]:
        """Every shard the service still lists for the stream, open and closed, all pages."""
        ...

    async def get_shard_iterator(self, shard_id: str, position: StartPosition) -> str:
        """An iterator for `shard_id` starting at `position`."""
        ...

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> RecordsPage:
        """Up to `limit` records from `iterator`, converted to `Record`s of `shard_id`.

        :raises ExpiredIterator: the iterator is too old; ask for a new one.
        """
        ...


class QueueReader(Protocol):
    """One queue as the engine reads it (SQS): messages are taken, not positioned.

    A received message stays invisible to other consumers until it is acknowledged (deleted),
    made visible again, or its visibility timeout runs out. Methods that call the service
    raise `esm.errors.SourceError` (with `retriable`) when the call itself fails; failures of
    single entries of a batch call are the reader's to retry, count and log.
    """

    @property
    def queue_name(self) -> str: ...

    @property
    def fifo(self) -> bool:
        """Messages of one group come in order, one batch of a group at a time."""
        ...

    @property
    def visibility_timeout(self) -> int:
        """The queue's visibility timeout in seconds, as last read."""
        ...

    async def open(self) -> Mapping[str, int]:
        """Find the queue and read its attributes; called until it succeeds. Returns the
        backlog, as `backlog()` does."""
        ...

    async def receive(self, count: int, wait_seconds: int) -> list[Record]:
        """Up to `count` messages, waiting up to `wait_seconds` for the first (long polling)."""
        ...

    async def ack(self, records: Sequence[Record]) -> int:
        """The records were processed (or filtered out): remove them; how many were removed."""
        ...

    async def nack(self, records: Sequence[Record], delay: int | None) -> None:
        """The records failed: they come back after `delay` seconds (None: when their
        visibility runs out)."""
        ...

    async def keep_invisible(self, records: Sequence[Record], held_for: float) -> None:
        """Keep the records from other consumers while their batch is processed, until
        cancelled; they were received `held_for` seconds ago."""
        ...

    async def release(self, records: Sequence[Record]) -> None:
        """Hand records received but not delivered back to the queue at once."""
        ...

    async def backlog(self) -> Mapping[str, int]:
        """Approximate message counts by state: visible, in_flight, delayed."""
        ...

    def status(self) -> dict[str, Any]:
        """What /status shows of the queue."""
        ...


@runtime_checkable
class FunctionBackend(Protocol):
    """Runs the function for one batch. Implementations never raise for a failed invocation:
    every outcome, including timeouts and refused connections, is an `InvokeResult`."""

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        """Run the function on `invocation.payload`, ending by `invocation.deadline`."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and processes. Called once, at shutdown."""
        ...


class CheckpointStore(Protocol):
    """Durable positions of each mapping's partitions.

    INVARIANT: a saved checkpoint is never ahead of what was delivered, so a restart can
    deliver a batch twice but never skip one. Methods raise `esm.errors.CheckpointError`.
    """

    async def load(self, mapping_id: str) -> dict[str, Checkpoint]:
        """Every partition's checkpoint saved for `mapping_id` (empty when none)."""
        ...

    async def save(self, mapping_id: str, partition: str, checkpoint: Checkpoint) -> None:
        """Durably record `checkpoint` for `partition`; returns once it is stored."""
        ...

    async def aclose(self) -> None:
        """Flush and close."""
        ...


class Destination(Protocol):
    """Where a given-up batch's failure record goes (DestinationConfig.OnFailure)."""

    async def send(self, record: Mapping[str, Any], payload: bytes, partition: str) -> None:
        """Store `record` (and, where the destination keeps it, the event `payload`).

        :raises SourceError: not stored; the caller retries with backoff either way, and
            `.retriable` says whether waiting alone can help.
        """
        ...


class Clock(Protocol):
    """Wall-clock time, a parameter so that time-dependent logic is testable."""

    def __call__(self) -> float: ...


ShardList = Sequence[ShardInfo]


class BackendFactory(Protocol):
    """What a backend plugin registers under the entry-point group `esm.backends`.

    esm calls it once per configured function whose `type` is the entry point's name, with
    the function's name, its `options` mapping from the configuration, and the timeout and
    memory size every function has. It returns the backend, or raises
    `esm.errors.BackendError` with a clear message when the options are wrong.
    """

    def __call__(
        self, name: str, options: Mapping[str, Any], *, timeout: float, memory_size: int
    ) -> FunctionBackend: ...
