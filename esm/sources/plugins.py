"""The event sources as plugins: for each ARN service (kinesis, dynamodb, sqs), how its ARNs
read and which mapping parameters apply (a settings model), and a factory that opens what
reads it, registered in esm.registry.

The models are what `esm.config` checks a mapping against, so the configuration names no
source kind. The factories import the readers when called, so that reading a configuration
imports none of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from esm.settings import SourceSettings, show

if TYPE_CHECKING:
    from esm.aws.lean import LeanJsonCalls
    from esm.registry import QueueSource, SourceContext, StreamSource

__all__ = [
    "DynamoDBSource",
    "KinesisSource",
    "SqsSource",
    "open_dynamodb",
    "open_kinesis",
    "open_sqs",
]

_KINESIS_RESOURCE = re.compile(
    r"stream/(?P<name>[a-zA-Z0-9_.-]{1,128})"
    r"(?:/consumer/(?P<consumer>[a-zA-Z0-9_.-]{1,128}):(?P<epoch>\d+))?"
)
_DYNAMODB_RESOURCE = re.compile(r"table/(?P<name>[a-zA-Z0-9_.-]{3,255})/stream/(?P<label>[^/]+)")
_SQS_RESOURCE = re.compile(r"[a-zA-Z0-9_-]{1,75}(?:\.fifo)?|[a-zA-Z0-9_-]{76,80}")


class KinesisSource(SourceSettings):
    kind: ClassVar[str] = "kinesis"
    title: ClassVar[str] = "Kinesis"
    description: ClassVar[str] = "a Kinesis stream"
    arn_form: ClassVar[str] = "arn:aws:kinesis:REGION:ACCOUNT:stream/NAME"
    starting_positions: ClassVar[tuple[str, ...]] = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
    record_form: ClassVar[Literal["kinesis", "dynamodb", "sqs"]] = "kinesis"

    consumer: str | None = None
    """The stream consumer's name when the ARN is a consumer's (enhanced fan-out)."""

    @classmethod
    def from_resource(
        cls, arn: str, partition: str, region: str, account: str, resource: str
    ) -> Self:
        found = _KINESIS_RESOURCE.fullmatch(resource)
        if found is None:
            raise ValueError(
                f"{show(arn)} is not a Kinesis stream ARN: expected "
                "arn:aws:kinesis:REGION:ACCOUNT:stream/NAME"
            )
        return cls(
            arn=arn,
            partition=partition,
            region=region,
            account=account,
            name=found["name"],
            consumer=found["consumer"],
        )

    @property
    def stream_arn(self) -> str:
        if self.consumer is None:
            return self.arn
        return f"arn:{self.partition}:kinesis:{self.region}:{self.account}:stream/{self.name}"


class DynamoDBSource(SourceSettings):
    kind: ClassVar[str] = "dynamodb"
    title: ClassVar[str] = "DynamoDB"
    description: ClassVar[str] = "a DynamoDB stream"
    arn_form: ClassVar[str] = "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL"
    starting_positions: ClassVar[tuple[str, ...]] = ("TRIM_HORIZON", "LATEST")
    record_form: ClassVar[Literal["kinesis", "dynamodb", "sqs"]] = "dynamodb"

    stream_label: str
    """The stream's label (a timestamp): a table's successive streams differ by it."""

    @classmethod
    def from_resource(
        cls, arn: str, partition: str, region: str, account: str, resource: str
    ) -> Self:
        found = _DYNAMODB_RESOURCE.fullmatch(resource)
        if found is None:
            raise ValueError(
                f"{show(arn)} is not a DynamoDB stream ARN: expected "
                "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL "
                "(the table's LatestStreamArn, not the table ARN)"
            )
        return cls(
            arn=arn,
            partition=partition,
            region=region,
            account=account,
            name=found["name"],
            stream_label=found["label"],
        )


class SqsSource(SourceSettings):
    kind: ClassVar[str] = "sqs"
    title: ClassVar[str] = "SQS"
    description: ClassVar[str] = "an SQS queue"
    arn_form: ClassVar[str] = "arn:aws:sqs:REGION:ACCOUNT:QUEUE"
    engine: ClassVar[Literal["stream", "queue"]] = "queue"
    default_batch_size: ClassVar[int] = 10
    record_form: ClassVar[Literal["kinesis", "dynamodb", "sqs"]] = "sqs"
    failures_note: ClassVar[str] = (
        "an SQS mapping's failures go to the queue's own dead-letter queue (its RedrivePolicy)"
    )

    @classmethod
    def from_resource(
        cls, arn: str, partition: str, region: str, account: str, resource: str
    ) -> Self:
        if _SQS_RESOURCE.fullmatch(resource) is None:
            raise ValueError(
                f"{show(arn)} is not an SQS queue ARN: expected arn:aws:sqs:REGION:ACCOUNT:QUEUE "
                "(up to 80 letters, digits, - and _, FIFO queues ending in .fifo)"
            )
        return cls(arn=arn, partition=partition, region=region, account=account, name=resource)

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")

    def describe(self) -> str:
        return "an SQS FIFO queue" if self.fifo else "an SQS standard queue"

    def batch_size_problem(self, batch_size: int) -> str | None:
        if self.fifo and not 1 <= batch_size <= 10:
            return (
                f"{show(batch_size)} is out of range: must be between 1 and 10 "
                "for an SQS FIFO queue"
            )
        return None

    def window_problem(self, window: int, batch_size: int | None) -> str | None:
        if self.fifo:
            if window > 0:
                return f"{window} not allowed: batching window is not supported for FIFO queues"
            return None
        if batch_size is not None and batch_size > 10 and window < 1:
            # AWS's own text for this rule, which it enforces for SQS only.
            return (
                "Maximum batch window in seconds must be greater than 0 if maximum batch size "
                f"is greater than 10 (BatchSize is {batch_size}: set "
                "MaximumBatchingWindowInSeconds between 1 and 300)"
            )
        return None


# --------------------------------------------------------------------------- factories


def _lean_calls(client: Any, context: SourceContext) -> LeanJsonCalls | None:
    """GetRecords on the lean path for a real client; None for tests' fakes."""
    if not hasattr(getattr(client, "meta", None), "service_model"):
        return None
    from esm.aws.lean import LeanJsonCalls

    return LeanJsonCalls(client, observe=context.metrics.aws_call)


def _broken_container_log(context: SourceContext) -> Callable[[str, str], None]:
    """Logs the first KPL container that does not parse; every one is delivered whole."""
    import structlog

    log = structlog.get_logger("esm.kpl").bind(mapping=context.mapping)
    seen = False

    def broken(sequence: str, why: str) -> None:
        nonlocal seen
        context.metrics.contained_errors.labels(context.mapping, "kpl").inc()
        if not seen:
            seen = True
            log.error(
                "a KPL container does not parse: delivered as one record (later ones are "
                "only counted in esm_contained_errors_total)",
                sequence=sequence,
                error=why,
            )

    return broken


async def open_kinesis(context: SourceContext, source: KinesisSource) -> StreamSource:
    """A Kinesis stream read with GetRecords, or with SubscribeToShard through a consumer."""
    from esm.aws.kinesis import enable_wire_records
    from esm.registry import StreamSource
    from esm.sources.kinesis import KinesisRecordFactory, KinesisStreamAPI

    client = await context.aws_client("kinesis", source.region)
    enable_wire_records(client)
    records = KinesisRecordFactory(
        stream_arn=source.stream_arn,
        region=source.region,
        identity_arn=context.identity_arn,
        deaggregate=context.kpl_deaggregate,
        on_broken=_broken_container_log(context),
    )
    if source.consumer is not None:
        from esm.sources.kinesis_efo import FAN_OUT_POLL_INTERVAL_SECONDS, KinesisFanOutAPI

        # Enhanced fan-out: records are pushed over SubscribeToShard, so the engine does
        # not pause between reads.
        fan_out = KinesisFanOutAPI(
            client,
            consumer_arn=source.arn,
            stream_name=source.name,
            stream_arn=source.stream_arn,
            records=records,
        )
        context.on_close(fan_out.aclose)
        return StreamSource(
            fan_out,
            poll_interval=FAN_OUT_POLL_INTERVAL_SECONDS,
            busy_poll_interval=FAN_OUT_POLL_INTERVAL_SECONDS,
            records_limit=context.records_limit,
        )
    api = KinesisStreamAPI(
        client,
        stream_name=source.name,
        stream_arn=source.arn,
        records=records,
        lean=_lean_calls(client, context),
    )
    return StreamSource(
        api, poll_interval=context.poll_interval, records_limit=context.records_limit
    )


async def open_dynamodb(context: SourceContext, source: DynamoDBSource) -> StreamSource:
    """A DynamoDB table's stream, read with the DynamoDB Streams API."""
    from esm.aws.dynamodb_streams import enable_wire_records
    from esm.registry import StreamSource
    from esm.sources.dynamodb_streams import (
        MAX_RECORDS_PER_CALL,
        POLL_INTERVAL_SECONDS,
        DynamoDBRecordFactory,
        DynamoDBStreamAPI,
    )

    client = await context.aws_client("dynamodbstreams", source.region)
    enable_wire_records(client)
    api = DynamoDBStreamAPI(
        client,
        stream_arn=source.arn,
        records=DynamoDBRecordFactory(source.arn, source.region),
        lean=_lean_calls(client, context),
    )
    # Lambda's own pace, whatever `polling` says: 4 reads a second, at most 1,000 records.
    return StreamSource(
        api,
        poll_interval=POLL_INTERVAL_SECONDS,
        busy_poll_interval=POLL_INTERVAL_SECONDS,
        records_limit=MAX_RECORDS_PER_CALL,
    )


async def open_sqs(context: SourceContext, source: SqsSource) -> QueueSource:
    """An SQS queue: received, deleted once processed, its visibility changed on failure."""
    from esm.registry import QueueSource
    from esm.sources.sqs import SqsReader, SqsSettings

    client = await context.aws_client("sqs", source.region)
    settings = SqsSettings(
        queue_arn=source.arn,
        region=source.region,
        mapping=context.mapping,
        extend_visibility=context.extend_visibility,
        retry_delay=context.retry_delay,
    )
    lean = _lean_calls(client, context)
    return QueueSource(lambda: SqsReader(client, settings, context.metrics, lean))
