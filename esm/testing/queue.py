"""A fake of the engine's `QueueReader`: a queue in memory that records what was done with
each message, for tests of the queue engine without any SQS."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from esm.errors import TransientSourceError
from esm.events import create_record
from esm.model import Record
from esm.protocols import QueueReader


class FakeQueueReader:
    """Messages put in are received in order, at most `page_size` per receive.

    An empty receive waits up to its `wait_seconds` (real time) for a `put`. `on_receive`
    runs at the start of every receive, e.g. to move a test's clock forward. Nothing is ever
    redelivered: a test reads `acked`, `nacked` and `released` to see what the engine did.
    """

    def __init__(
        self,
        *,
        name: str = "work",
        fifo: bool = False,
        visibility_timeout: int = 30,
        page_size: int = 10,
        on_receive: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._fifo = fifo
        self._visibility_timeout = visibility_timeout
        self.page_size = page_size
        self.on_receive = on_receive
        self.waiting: deque[Record] = deque()
        self.receives: list[tuple[int, int]] = []
        """(count, wait_seconds) of every receive."""
        self.acked: list[Record] = []
        self.nacked: list[tuple[Record, int | None]] = []
        self.released: list[Record] = []
        self.kept_invisible: list[list[Record]] = []
        self.open_failures = 0
        """Opens still to fail, as an unreachable queue's do."""
        self.release_hangs = False
        """`release` never returns, as with a queue that stopped answering."""
        self._sent = 0
        self._put = anyio.Event()

    def put(self, *bodies: str, group: str = "") -> list[Record]:
        """Add messages (of message group `group`) to the queue."""
        records = []
        for body in bodies:
            self._sent += 1
            message_id = f"id-{self._sent}"
            entry = {"messageId": message_id, "receiptHandle": f"rh-{self._sent}", "body": body}
            records.append(
                create_record(
                    sequence=message_id, order=self._sent, key=group, arrival=0.0, entry=entry
                )
            )
        self.waiting.extend(records)
        self._put.set()
        self._put = anyio.Event()
        return records

    @staticmethod
    def bodies(records: Sequence[Record]) -> list[str]:
        return [str(r.entry["body"]) for r in records]

    # -- QueueReader ---------------------------------------------------------------------------

    @property
    def queue_name(self) -> str:
        return self.name

    @property
    def fifo(self) -> bool:
        return self._fifo

    @property
    def visibility_timeout(self) -> int:
        return self._visibility_timeout

    async def open(self) -> Mapping[str, int]:
        await anyio.lowlevel.checkpoint()
        if self.open_failures > 0:
            self.open_failures -= 1
            raise TransientSourceError("GetQueueUrl: the queue does not answer")
        return await self.backlog()

    async def receive(self, count: int, wait_seconds: int) -> list[Record]:
        self.receives.append((count, wait_seconds))
        if self.on_receive is not None:
            self.on_receive()
        if not self.waiting and wait_seconds > 0:
            with anyio.move_on_after(wait_seconds):
                await self._put.wait()
        else:
            await anyio.lowlevel.checkpoint()
        taken = min(count, self.page_size, len(self.waiting))
        return [self.waiting.popleft() for _ in range(taken)]

    async def ack(self, records: Sequence[Record]) -> int:
        await anyio.lowlevel.checkpoint()
        self.acked.extend(records)
        return len(records)

    async def nack(self, records: Sequence[Record], delay: int | None) -> None:
        await anyio.lowlevel.checkpoint()
        self.nacked.extend((record, delay) for record in records)

    async def keep_invisible(self, records: Sequence[Record], held_for: float) -> None:
        self.kept_invisible.append(list(records))
        await anyio.sleep_forever()

    async def release(self, records: Sequence[Record]) -> None:
        if self.release_hangs:
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()
        self.released.extend(records)

    async def backlog(self) -> Mapping[str, int]:
        await anyio.lowlevel.checkpoint()
        return {"visible": len(self.waiting)}

    def status(self) -> dict[str, Any]:
        return {"queue": self.name, "fifo": self._fifo}


def _is_a_queue_reader(fake: FakeQueueReader) -> QueueReader:
    """mypy checks here that the fake keeps to the engine's interface."""
    return fake
