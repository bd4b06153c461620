"""The SQS on-failure destination: one message per given-up batch, the record as its body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import orjson

from esm.aws.errors import aws_call
from esm.aws.sqs import GetQueueUrlInput, SqsSendClient
from esm.destinations import parse_arn
from esm.errors import ConfigError, ResourceNotFound


class SqsDestination:
    """Sends each failure record to a standard queue as a JSON message (needs sqs:SendMessage)."""

    def __init__(self, client: SqsSendClient, queue_arn: str) -> None:
        service, _, account, name = parse_arn(queue_arn)
        if service != "sqs":
            raise ConfigError([f"{queue_arn!r} is not an SQS queue ARN"])
        self.client = client
        self.queue_arn = queue_arn
        self.queue_name = name
        self.account = account
        self._queue_url: str | None = None
        self._resolving = anyio.Lock()

    async def queue_url(self) -> str:
        """The queue's URL, asked for once (GetQueueUrl) and then remembered."""
        async with self._resolving:
            if self._queue_url is None:
                request: GetQueueUrlInput = {"QueueName": self.queue_name}
                if self.account:
                    # The queue may belong to another account that granted us SendMessage.
                    request["QueueOwnerAWSAccountId"] = self.account
                with aws_call(f"on-failure destination {self.queue_arn}: GetQueueUrl"):
                    answer = await self.client.get_queue_url(**request)
                self._queue_url = answer["QueueUrl"]
            return self._queue_url

    async def send(self, record: Mapping[str, Any], payload: bytes, partition: str) -> None:
        # Queues get the metadata only, as Lambda sends it; the event stays in the stream.
        url = await self.queue_url()
        try:
            with aws_call(f"on-failure destination {self.queue_arn}: SendMessage"):
                await self.client.send_message(
                    QueueUrl=url, MessageBody=orjson.dumps(record).decode("utf-8")
                )
        except ResourceNotFound:
            # The queue may be recreated under a new URL; ask again next time.
            self._queue_url = None
            raise
