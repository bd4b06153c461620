"""The redrive loop: each failure record of an inbox read, its batch fetched again (or taken
from the S3 object), the mapping's function invoked, and the record deleted on success.

INVARIANT: a failure record is deleted only after its function succeeded with its batch
(or, with `delete_expired`, once nothing of the batch is left to redrive): a redrive that
fails or is cut short leaves every other failure record where it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from esm.engine.partial import stream_item_failures
from esm.errors import SourceError, describe
from esm.events import encode_event
from esm.model import InvokeResult, Record
from esm.protocols import StreamAPI
from esm.redrive.failure_record import FailureRecord, NotAFailureRecord, parse_failure_record
from esm.redrive.fetch import fetch_range
from esm.redrive.inbox import Inbox, InboxItem
from esm.redrive.report import ItemReport, Outcome, RedriveReport

__all__ = ["RedriveTarget", "Redriver", "Skip", "Targets"]

Invoke = Callable[[bytes, dict[str, str], int], Awaitable[InvokeResult]]
"""One invocation of the encoded event of N records, never raising (`Deliverer.invoke_once`)."""


@dataclass(frozen=True)
class RedriveTarget:
    """The mapping a failure record belongs to, opened: its stream and its function."""

    mapping: str
    api: StreamAPI
    invoke: Invoke
    select: Callable[[Sequence[Record], bool], list[Record]]
    """The records of a fetched range that were in the batch (its filter, its lane), given
    whether the range's first record was found."""
    report_item_failures: bool
    records_limit: int
    retry_delay: Callable[[int], float]


@dataclass(frozen=True)
class Skip:
    """A failure record that is not redriven here, and why."""

    outcome: Outcome
    mapping: str | None
    reason: str


class Targets(Protocol):
    async def for_record(self, record: FailureRecord) -> RedriveTarget | Skip:
        """The mapping that gave up the batch, opened; or why it is not redriven."""
        ...


def _payload_records(payload: bytes, record: FailureRecord) -> list[Record]:
    """The records of a kept event, as far as checking the function's item failures needs."""
    event = orjson.loads(payload)
    entries = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(entries, list) or not entries:
        raise NotAFailureRecord("its payload holds no Records")
    records = []
    for entry in entries:
        part = entry.get("kinesis" if record.source == "kinesis" else "dynamodb")
        sequence = part.get("sequenceNumber" if record.source == "kinesis" else "SequenceNumber")
        if not isinstance(sequence, str) or not sequence.isdigit():
            raise NotAFailureRecord("a record of its payload has no sequence number")
        records.append(Record(sequence, int(sequence), "", 0.0, 0, entry))
    return records


@dataclass
class Redriver:
    targets: Targets
    dry_run: bool = False
    delete_expired: bool = False
    on_item: Callable[[ItemReport], None] | None = None
    """Told of each failure record as it is done with (the command prints a line)."""

    async def run(self, inbox: Inbox, source: str) -> RedriveReport:
        """Every failure record of `inbox`, each removed or kept; the inbox's kept ones are
        given back at the end, however the run ends."""
        report = RedriveReport(source, self.dry_run)
        try:
            async for item in inbox.items():
                entry = await self._settle(inbox, item, await self._one(item))
                report.items.append(entry)
                if self.on_item is not None:
                    self.on_item(entry)
        finally:
            await inbox.finish()
        return report

    async def _settle(self, inbox: Inbox, item: InboxItem, entry: ItemReport) -> ItemReport:
        remove = entry.outcome is Outcome.REDRIVEN or (
            entry.outcome is Outcome.EXPIRED and self.delete_expired and not self.dry_run
        )
        if not remove:
            await inbox.keep(item)
            return entry
        try:
            await inbox.remove(item)
        except SourceError as exc:
            # The batch was delivered; a later run would deliver it once more.
            return replace(entry, error=f"its failure record was not deleted: {exc}")
        return entry

    async def _one(self, item: InboxItem) -> ItemReport:
        try:
            record = parse_failure_record(item.body)
        except NotAFailureRecord as why:
            return ItemReport(item.name, Outcome.UNREADABLE, error=f"not a failure record: {why}")
        found = await self.targets.for_record(record)
        base: dict[str, Any] = {
            "shard": record.shard_id,
            "start": record.start_sequence,
            "end": record.end_sequence,
        }
        if isinstance(found, Skip):
            return ItemReport(
                item.name, found.outcome, mapping=found.mapping, error=found.reason, **base
            )
        base["mapping"] = found.mapping
        try:
            return await self._redrive(item, record, found, base)
        except NotAFailureRecord as why:
            return ItemReport(item.name, Outcome.UNREADABLE, error=str(why), **base)
        except SourceError as exc:
            return ItemReport(item.name, Outcome.ERROR, error=str(exc), **base)
        except Exception as exc:  # noqa: BLE001 - plugin boundary: one record never ends the run
            return ItemReport(item.name, Outcome.ERROR, error=describe(exc), **base)

    async def _redrive(
        self, item: InboxItem, record: FailureRecord, target: RedriveTarget, base: dict[str, Any]
    ) -> ItemReport:
        expired = 0
        if record.payload is not None:
            # S3 kept the event itself: it is sent as it was, whatever the stream still holds.
            payload = record.payload
            records = _payload_records(payload, record)
        else:
            fetched = await fetch_range(
                target.api,
                record.shard_id,
                record.start_sequence,
                record.end_sequence,
                limit=target.records_limit,
                retry_delay=target.retry_delay,
            )
            records = target.select(fetched.records, fetched.expired is None)
            expired = max(0, record.batch_size - len(records))
            if not records:
                return ItemReport(
                    item.name,
                    Outcome.EXPIRED,
                    expired_records=record.batch_size,
                    error=fetched.expired or "none of its records is left in the stream",
                    **base,
                )
            payload = encode_event(records)
        if self.dry_run:
            return ItemReport(
                item.name,
                Outcome.WOULD_REDRIVE,
                records=len(records),
                expired_records=expired,
                **base,
            )
        labels = {"mapping": target.mapping, "shard": record.shard_id}
        result = await target.invoke(payload, labels, len(records))
        failure = _failure(result, records, target.report_item_failures)
        return ItemReport(
            item.name,
            Outcome.FAILED_AGAIN if failure else Outcome.REDRIVEN,
            records=len(records),
            expired_records=expired,
            error=failure,
            **base,
        )


def _failure(result: InvokeResult, records: Sequence[Record], item_failures: bool) -> str | None:
    """Why the invocation did not process the batch, or None when it did."""
    if not result.ok:
        return f"{result.kind.value}: {result.error or result.function_error}"
    if item_failures:
        answer = stream_item_failures(result.response, records)
        if answer.first_failed is not None:
            return answer.reason or (
                f"batch item failure from {records[answer.first_failed].sequence}"
            )
    return None
