"""Value types that flow through the pipeline: records, batches, invoke results (frozen,
but for Record, which is immutable by convention)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# A synchronous Lambda invocation carries at most 6 MB of request payload.
MAX_INVOKE_PAYLOAD_BYTES = 6 * 1024 * 1024
# Bytes of `{"Records":[` + `]}` around the records of a batch.
EVENT_ENVELOPE_BYTES = len(b'{"Records":[]}')
NO_TRACE_HEADERS: Mapping[str, str] = MappingProxyType({})


def _no_trace_headers() -> Mapping[str, str]:
    # One shared empty mapping: an untraced invocation allocates none.
    return NO_TRACE_HEADERS


@dataclass(slots=True)
class Record:
    """One record of a source, already in the shape the function will see.

    Immutable by convention, not frozen: a frozen dataclass's constructor costs about a
    microsecond more per record (every field set through object.__setattr__), which on the
    read path of a busy shard is a tenth of esm's whole cost per record. Nothing changes a
    Record after it is made.

    `entry` is the element of the event's "Records" list exactly as Lambda builds it, so the
    record is converted once when read and never again; `size` is the number of bytes it adds
    to the JSON event (its encoding plus the separating comma).
    """

    sequence: str
    """The record's position in its partition (Kinesis/DynamoDB sequence number)."""
    order: int
    """Orders the records of a partition as they were read, one number each: the settle
    tracker's key. Sources give the sequence as a number, or a counter (Kinesis, SQS)."""
    key: str
    """The ordering key: Kinesis partition key, DynamoDB item keys, SQS message group."""
    arrival: float
    """When the source received the record, epoch seconds."""
    size: int
    entry: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of one partition, in order, delivered to the function in one invocation."""

    partition: str
    records: Sequence[Record]
    waited: float = 0.0
    """Seconds from when its first record was read until the batch was cut (its trace span
    starts at the read)."""

    @property
    def first(self) -> Record:
        return self.records[0]

    @property
    def last(self) -> Record:
        return self.records[-1]

    @property
    def payload_size(self) -> int:
        return EVENT_ENVELOPE_BYTES + sum(r.size for r in self.records)


class ResultKind(enum.Enum):
    """How an invocation ended, as Lambda's event source mapping tells them apart."""

    SUCCESS = "success"
    """The function ran and answered (its answer may still report item failures)."""
    FUNCTION_ERROR = "function_error"
    """The function raised, crashed, answered with an error or outlived its timeout."""
    THROTTLE = "throttle"
    """The function had no capacity (429 / TooManyRequests); not the function's fault."""
    SYSTEM_ERROR = "system_error"
    """The invocation itself failed (connection refused, platform 5xx); not the function's fault."""


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """The outcome of one invocation."""

    kind: ResultKind
    response: Any = None
    """The function's answer parsed from JSON (success), or its error payload (function error)."""
    error: str | None = None
    """A one-line description of what went wrong, for logs and failure records."""
    status_code: int = 200
    function_error: str | None = None
    """Lambda's X-Amz-Function-Error value ("Unhandled", "Handled") for function errors."""
    executed_version: str = "$LATEST"
    retry_after: float | None = None
    """Seconds the function asked us to wait before the next attempt (throttles)."""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.kind is ResultKind.SUCCESS


@dataclass(frozen=True, slots=True)
class Invocation:
    """What a backend is asked to run: the encoded event and its Lambda context values."""

    payload: bytes
    """The event, JSON-encoded exactly as Lambda would send it."""
    request_id: str
    function_name: str
    function_arn: str
    timeout: float
    """Seconds the function may run; `deadline` is when this invocation must end (epoch s)."""
    deadline: float
    memory_limit_mb: int = 128
    extra: Mapping[str, str] = field(default_factory=dict)
    """Labels for logs (mapping, shard)."""
    trace_headers: Mapping[str, str] = field(default_factory=_no_trace_headers)
    """W3C trace context of this invocation (`traceparent`, `tracestate`) for the function to
    continue; empty when tracing is off."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a partition's processing stands: everything up to `sequence` is settled."""

    sequence: str | None
    """The last settled sequence number; None when nothing has been settled yet."""
    finished: bool = False
    """The partition is closed and every record in it is settled (children may start)."""


class IteratorType(enum.Enum):
    """Where a shard iterator starts (GetShardIterator's ShardIteratorType)."""

    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"
    AFTER_SEQUENCE_NUMBER = "AFTER_SEQUENCE_NUMBER"
    AT_SEQUENCE_NUMBER = "AT_SEQUENCE_NUMBER"


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Arguments of GetShardIterator besides the stream and shard."""

    type: IteratorType
    sequence: str | None = None
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """A shard as ListShards / DescribeStream describe it."""

    shard_id: str
    parent_ids: tuple[str, ...] = ()
    """ParentShardId and AdjacentParentShardId (a merge has two parents)."""
    starting_sequence: str | None = None
    ending_sequence: str | None = None
    """Set once the shard is closed (split, merged or rolled over): no record comes after it."""

    @property
    def closed(self) -> bool:
        return self.ending_sequence is not None


@dataclass(frozen=True, slots=True)
class RecordsPage:
    """One GetRecords answer, its records already converted."""

    records: Sequence[Record]
    next_iterator: str | None
    """None when the shard is closed and read to its end."""
    millis_behind: int | None = None
    """MillisBehindLatest (Kinesis): how far the iterator is behind the tip of the shard."""
    answered: bool = True
    """False for an empty page the source did not answer: enhanced fan-out's wait for a
    pushed event ran out. Such a page is no sign that the source is reachable."""
