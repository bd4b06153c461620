"""An example event source in one module: a queue held in esm's own memory, which a program
fills with `MemoryQueue.named(...).send(...)`. docs/adding-a-source.md walks through it; a
test registers it the way another package would, under the entry-point group esm.sources.

A source is three things: its settings (a model on `SourceSettings` that reads its ARNs and
states which mapping parameters apply), a reader the engine drives (here a `QueueReader`),
and an async factory building the second from the first. `plugin` ties them to the ARN's
service, `memq`: arn:aws:memq:REGION:ACCOUNT:NAME.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Self

import anyio

from esm.events import create_record
from esm.model import Record
from esm.registry import Plugin, QueueSource, SourceContext, SourceFactory
from esm.settings import SourceSettings, show

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,80}")


class MemoryQueueSource(SourceSettings):
    """arn:aws:memq:REGION:ACCOUNT:NAME, a queue in esm's memory."""

    kind: ClassVar[str] = "memq"
    title: ClassVar[str] = "in-memory"
    description: ClassVar[str] = "an in-memory queue"
    arn_form: ClassVar[str] = "arn:aws:memq:REGION:ACCOUNT:NAME"
    engine: ClassVar[Literal["stream", "queue"]] = "queue"
    default_batch_size: ClassVar[int] = 10
    record_form: ClassVar[Literal["kinesis", "dynamodb", "sqs"]] = "sqs"
    failures_note: ClassVar[str] = "a failed message goes back to the queue"

    @classmethod
    def from_resource(
        cls, arn: str, partition: str, region: str, account: str, resource: str
    ) -> Self:
        if not _NAME.fullmatch(resource):
            raise ValueError(f"{show(arn)} is not an in-memory queue ARN: expected {cls.arn_form}")
        return cls(arn=arn, partition=partition, region=region, account=account, name=resource)


class MemoryQueue:
    """A queue of message bodies; received messages are invisible until acked or nacked."""

    _queues: ClassVar[dict[str, MemoryQueue]] = {}
    _ids = itertools.count(1)

    def __init__(self, name: str) -> None:
        self.name = name
        self.visible: deque[Record] = deque()
        self.in_flight: dict[str, Record] = {}
        self._arrived = anyio.Event()

    @classmethod
    def named(cls, name: str) -> MemoryQueue:
        """The queue of that name, created on first use."""
        return cls._queues.setdefault(name, MemoryQueue(name))

    def send(self, *bodies: str) -> None:
        for body in bodies:
            number = next(self._ids)
            entry = {"messageId": f"m-{number}", "body": body, "eventSource": "esm:memq"}
            record = create_record(
                sequence=f"m-{number}", order=number, key="", arrival=time.time(), entry=entry
            )
            self.visible.append(record)
        self._arrived.set()
        self._arrived = anyio.Event()

    # -- QueueReader: what the queue engine calls ----------------------------------------------

    @property
    def queue_name(self) -> str:
        return self.name

    @property
    def fifo(self) -> bool:
        return False

    @property
    def visibility_timeout(self) -> int:
        return 30

    async def open(self) -> Mapping[str, int]:
        return await self.backlog()

    async def receive(self, count: int, wait_seconds: int) -> list[Record]:
        if not self.visible and wait_seconds > 0:
            with anyio.move_on_after(wait_seconds):
                await self._arrived.wait()
        taken = [self.visible.popleft() for _ in range(min(count, len(self.visible)))]
        self.in_flight.update((record.sequence, record) for record in taken)
        await anyio.lowlevel.checkpoint()
        return taken

    async def ack(self, records: Sequence[Record]) -> int:
        removed = [self.in_flight.pop(record.sequence, None) for record in records]
        return sum(record is not None for record in removed)

    async def nack(self, records: Sequence[Record], delay: int | None) -> None:
        # Back at the head of the queue; this queue has no delays, so `delay` is not kept.
        await self.release(records)

    async def keep_invisible(self, records: Sequence[Record], held_for: float) -> None:
        await anyio.sleep_forever()  # nothing times out here: held until acked or nacked

    async def release(self, records: Sequence[Record]) -> None:
        for record in reversed(records):
            if self.in_flight.pop(record.sequence, None) is not None:
                self.visible.appendleft(record)

    async def backlog(self) -> Mapping[str, int]:
        return {"visible": len(self.visible), "in_flight": len(self.in_flight)}

    def status(self) -> dict[str, Any]:
        return {"queue": self.name, "fifo": False}


async def open_memory_queue(context: SourceContext, source: MemoryQueueSource) -> QueueSource:
    queue = MemoryQueue.named(source.name)
    return QueueSource(lambda: queue)


plugin: Plugin[SourceFactory] = Plugin(
    "memq", MemoryQueueSource, open_memory_queue, "a queue in esm's memory (an example)"
)
