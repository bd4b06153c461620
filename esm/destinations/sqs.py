"""The SQS on-failure destination: one message per given-up batch, the record as its body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import anyio
import orjson

from esm.destinations import destination_error, parse_arn
from esm.errors import ConfigError, ResourceNotFound


class SqsClient(Protocol):
    """The SQS calls the destination makes; an aiobotocore client satisfies it."""

    async def get_queue_url(self, **kwargs: Any) -> Mapping[str, Any]: ...

    async def send_message(self, **kwargs: Any) -> Mapping[str, Any]: ...


class SqsDestination:
    """Sends each failure record to a standard queue as a JSON message (needs sqs:SendMessage)."""

    def __init__(self, client: SqsClient, queue_arn: str) -> None:
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
                kwargs: dict[str, Any] = {"QueueName": self.queue_name}
                if self.account:
                    # The queue may belong to another account that granted us SendMessage.
                    kwargs["QueueOwnerAWSAccountId"] = self.account
                try:
                    answer = await self.client.get_queue_url(**kwargs)
                except Exception as exc:
                    raise destination_error(
                        exc, f"on-failure destination {self.queue_arn}: GetQueueUrl"
                    ) from exc
                self._queue_url = str(answer["QueueUrl"])
            return self._queue_url

    async def send(self, record: Mapping[str, Any], payload: bytes, partition: str) -> None:
        # Queues get the metadata only, as Lambda sends it; the event stays in the stream.
        url = await self.queue_url()
        try:
            await self.client.send_message(
                QueueUrl=url, MessageBody=orjson.dumps(record).decode("utf-8")
            )
        except Exception as exc:
            error = destination_error(exc, f"on-failure destination {self.queue_arn}: SendMessage")
            if isinstance(error, ResourceNotFound):
                # The queue may be recreated under a new URL; ask again next time.
                self._queue_url = None
            raise error from exc
