"""ReportBatchItemFailures: which records of a stream or queue batch the function says failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from esm.model import Record
from esm.positions import container_sequence


@dataclass(frozen=True, slots=True)
class ItemFailures:
    """What a function's answer says about a stream batch.

    `first_failed` is None when every record succeeded, else the index of the LOWEST failed
    record: everything before it is done, everything from it on is retried (Lambda resumes a
    shard from the lowest failed sequence number). A complete failure has `first_failed` 0.
    """

    first_failed: int | None
    reason: str | None = None
    """Why the answer counts as a complete failure, for logs (None otherwise)."""

    @property
    def all_succeeded(self) -> bool:
        return self.first_failed is None


ALL_SUCCEEDED = ItemFailures(None)


def _complete_failure(reason: str) -> ItemFailures:
    return ItemFailures(0, reason)


def stream_item_failures(answer: Any, records: Sequence[Record]) -> ItemFailures:
    """Read `{"batchItemFailures": [{"itemIdentifier": "<sequence number>"}, ...]}`.

    Complete success, as recorded from AWS: a null or empty answer, `[]`, `{}`, or a null or
    empty list. Complete failure: an identifier that is empty, null, missing, or not a
    sequence number of the batch, or any other answer that is not an object.
    """
    if answer == []:
        return ALL_SUCCEEDED
    failed = _failed_indices(answer, records)
    if isinstance(failed, ItemFailures):
        return failed
    return ItemFailures(min(failed))


def queue_item_failures(answer: Any, records: Sequence[Record]) -> ItemFailures | frozenset[int]:
    """Read an SQS batch's `{"batchItemFailures": [{"itemIdentifier": "<messageId>"}]}`.

    Returns ALL_SUCCEEDED, the indices of the failed messages, or a complete failure
    (`ItemFailures(0, reason)`): an identifier that is empty, null, missing or not a message
    of the batch, or an answer that is not an object, fails every message, as on AWS.
    """
    failed = _failed_indices(answer, records)
    return failed if isinstance(failed, ItemFailures) else frozenset(failed)


def _failed_indices(answer: Any, records: Sequence[Record]) -> ItemFailures | set[int]:
    """The batch's indices an answer names in batchItemFailures: ALL_SUCCEEDED for none,
    or a complete failure for an answer that is not what AWS accepts."""
    if answer is None or answer == {}:
        return ALL_SUCCEEDED
    if not isinstance(answer, dict):
        return _complete_failure(f"the answer is a {type(answer).__name__}, not an object")
    failures = answer.get("batchItemFailures")
    if failures is None or failures == []:
        return ALL_SUCCEEDED
    if not isinstance(failures, list):
        return _complete_failure("batchItemFailures is not a list")
    index_of: dict[str, int] = {}
    for i, r in enumerate(records):
        index_of[r.sequence] = i
        # A de-aggregated KPL user record (SEQUENCE:SUB) is named by its container's sequence
        # number too, the one its event carries: the container's first user record here.
        index_of.setdefault(container_sequence(r.sequence), i)
    failed: set[int] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or not identifier:
            return _complete_failure(f"invalid batch item failure {item!r}")
        index = index_of.get(identifier)
        if index is None:
            return _complete_failure(f"itemIdentifier {identifier!r} is not in the batch")
        failed.add(index)
    return failed


def fail_rest_of_groups(failed: frozenset[int], records: Sequence[Record]) -> frozenset[int]:
    """A FIFO batch's failed messages, with every message after a failed one in its group.

    A group's messages must be processed in order: deleting one that comes after a message
    to be retried would let it overtake that message. `Record.key` is the message group.
    """
    if not failed:
        return failed
    result = set(failed)
    failed_groups: set[str] = set()
    for index, record in enumerate(records):
        if record.key in failed_groups:
            result.add(index)
        elif index in failed:
            failed_groups.add(record.key)
    return frozenset(result)
