"""The SNS on-failure destination: one notification per given-up batch, the record as message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from esm.aws.errors import aws_call
from esm.aws.sns import SnsClient
from esm.destinations import parse_arn
from esm.errors import ConfigError, SourceError

# SNS refuses messages over 256 KB (262,144 bytes of UTF-8).
MAX_SNS_MESSAGE_BYTES = 256 * 1024


class SnsDestination:
    """Publishes each failure record to a standard topic as JSON (needs sns:Publish)."""

    def __init__(self, client: SnsClient, topic_arn: str) -> None:
        if parse_arn(topic_arn)[0] != "sns":
            raise ConfigError([f"{topic_arn!r} is not an SNS topic ARN"])
        self.client = client
        self.topic_arn = topic_arn

    async def send(self, record: Mapping[str, Any], payload: bytes, partition: str) -> None:
        # Topics get the metadata only, as Lambda sends it; the event stays in the stream.
        message = orjson.dumps(record)
        if len(message) > MAX_SNS_MESSAGE_BYTES:
            # Publishing would fail the same way on every retry; say why instead.
            raise SourceError(
                f"on-failure destination {self.topic_arn}: the failure record of partition "
                f"{partition} is {len(message)} bytes, over SNS's limit of "
                f"{MAX_SNS_MESSAGE_BYTES} bytes"
            )
        with aws_call(f"on-failure destination {self.topic_arn}: Publish"):
            await self.client.publish(TopicArn=self.topic_arn, Message=message.decode("utf-8"))
