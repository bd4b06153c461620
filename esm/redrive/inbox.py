"""Where failure records are read from: an SQS queue or an S3 bucket (and prefix).

A queue's messages are received with a long visibility timeout, so that each is taken once
in a run; the ones that stay (failed again, expired, another mapping's) are made visible
again at the end. An S3 object is listed, read, and deleted once redriven.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from esm.aws.errors import aws_call
from esm.aws.s3 import S3InboxClient
from esm.aws.sqs import SqsInboxClient

__all__ = [
    "Inbox",
    "InboxAddress",
    "InboxItem",
    "S3Inbox",
    "SqsInbox",
    "parse_inbox_address",
]

# Long enough for every message of a run to be taken once; the kept ones are released at
# the end, and a run cut short gives them back when it runs out.
RECEIVE_VISIBILITY_SECONDS = 900
_SQS_ARN = re.compile(r"arn:[a-z-]+:sqs:([a-z0-9-]+):(\d{12}):([A-Za-z0-9_-]{1,80}(?:\.fifo)?)")
_S3_ARN = re.compile(r"arn:[a-z-]+:s3:::([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?")
_S3_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?")
_QUEUE_URL = re.compile(r"https?://[^/]+/(\d{12})/([A-Za-z0-9_-]{1,80})")


@dataclass(frozen=True, slots=True)
class InboxAddress:
    """A parsed `--from`: an SQS queue (by ARN or URL) or an S3 bucket and key prefix."""

    kind: Literal["sqs", "s3"]
    name: str
    """The queue name, or the bucket."""
    region: str | None = None
    account: str | None = None
    queue_url: str | None = None
    prefix: str = ""
    arn: str | None = None
    """The queue's ARN, as given."""

    def with_prefix(self, prefix: str) -> InboxAddress:
        return replace(self, prefix=prefix)

    def describe(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.name}/{self.prefix}"
        return self.arn or self.queue_url or f"queue {self.name}"


def parse_inbox_address(text: str) -> InboxAddress:
    """`--from`'s value. :raises ValueError: neither a queue nor a bucket."""
    text = text.strip()
    if match := _SQS_ARN.fullmatch(text):
        region, account, name = match.groups()
        if name.endswith(".fifo"):
            raise ValueError(f"{text}: on-failure destinations are standard queues, not FIFO")
        return InboxAddress("sqs", name, region=region, account=account, arn=text)
    if match := _QUEUE_URL.fullmatch(text):
        account, name = match.groups()
        return InboxAddress("sqs", name, account=account, queue_url=text)
    if match := _S3_ARN.fullmatch(text) or _S3_URL.fullmatch(text):
        bucket, prefix = match.groups()
        return InboxAddress("s3", bucket, prefix=prefix or "")
    raise ValueError(
        f"{text!r} is neither an SQS queue (arn:aws:sqs:REGION:ACCOUNT:QUEUE, or its URL) nor "
        "an S3 bucket (arn:aws:s3:::BUCKET[/PREFIX] or s3://BUCKET[/PREFIX])"
    )


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One message or object that may hold a failure record."""

    name: str
    """The message id, or the object key."""
    body: bytes
    handle: str
    """The receipt handle, or the object key."""


class Inbox(Protocol):
    """Failure records to redrive, one at a time; each is removed or kept."""

    def items(self) -> AsyncIterator[InboxItem]: ...

    async def remove(self, item: InboxItem) -> None:
        """The batch was redriven: delete its failure record."""
        ...

    async def keep(self, item: InboxItem) -> None:
        """Leave the failure record where it is, for a later run."""
        ...

    async def finish(self) -> None:
        """The run is over: give back what was kept."""
        ...


@dataclass
class SqsInbox:
    """The failure records in a queue (needs sqs:ReceiveMessage, sqs:DeleteMessage,
    sqs:ChangeMessageVisibility)."""

    client: SqsInboxClient
    address: InboxAddress
    _url: str | None = None
    _kept: dict[str, InboxItem] = field(default_factory=dict)

    async def _queue_url(self) -> str:
        if self._url is None:
            self._url = self.address.queue_url
        if self._url is None:
            with aws_call(f"{self.address.describe()}: GetQueueUrl"):
                answer = await self.client.get_queue_url(
                    QueueName=self.address.name, QueueOwnerAWSAccountId=self.address.account or ""
                )
            self._url = answer["QueueUrl"]
        return self._url

    async def items(self) -> AsyncIterator[InboxItem]:
        url = await self._queue_url()
        seen: set[str] = set()
        while True:
            with aws_call(f"{self.address.describe()}: ReceiveMessage"):
                answer = await self.client.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    # Long polling asks every SQS server: an empty answer means none is left.
                    WaitTimeSeconds=1,
                    VisibilityTimeout=RECEIVE_VISIBILITY_SECONDS,
                )
            messages = answer.get("Messages") or []
            if not messages:
                return
            came_back = False
            for message in messages:
                item = InboxItem(
                    message["MessageId"], message["Body"].encode(), message["ReceiptHandle"]
                )
                if item.name in seen:
                    # Its visibility ran out during a long run: this run has taken every
                    # message once. It is kept, under its new receipt handle.
                    came_back = True
                    self._kept[item.name] = item
                    continue
                seen.add(item.name)
                yield item
            if came_back:
                return

    async def remove(self, item: InboxItem) -> None:
        url = await self._queue_url()
        with aws_call(f"{self.address.describe()}: DeleteMessage {item.name}"):
            await self.client.delete_message(QueueUrl=url, ReceiptHandle=item.handle)

    async def keep(self, item: InboxItem) -> None:
        self._kept[item.name] = item

    async def finish(self) -> None:
        url = await self._queue_url()
        kept, self._kept = self._kept, {}
        for item in kept.values():
            with aws_call(f"{self.address.describe()}: ChangeMessageVisibility {item.name}"):
                await self.client.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=item.handle, VisibilityTimeout=0
                )


@dataclass
class S3Inbox:
    """The failure records under a bucket's prefix (needs s3:ListBucket, s3:GetObject,
    s3:DeleteObject)."""

    client: S3InboxClient
    address: InboxAddress

    async def items(self) -> AsyncIterator[InboxItem]:
        bucket, where = self.address.name, self.address.describe()
        token: str | None = None
        while True:
            with aws_call(f"{where}: ListObjectsV2"):
                if token is None:
                    page = await self.client.list_objects_v2(
                        Bucket=bucket, Prefix=self.address.prefix
                    )
                else:
                    page = await self.client.list_objects_v2(
                        Bucket=bucket, Prefix=self.address.prefix, ContinuationToken=token
                    )
            for listed in page.get("Contents") or []:
                key = listed["Key"]
                with aws_call(f"{where}: GetObject {key}"):
                    answer = await self.client.get_object(Bucket=bucket, Key=key)
                    body = await answer["Body"].read()
                yield InboxItem(key, body, key)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or token is None:
                return

    async def remove(self, item: InboxItem) -> None:
        with aws_call(f"{self.address.describe()}: DeleteObject {item.name}"):
            await self.client.delete_object(Bucket=self.address.name, Key=item.handle)

    async def keep(self, item: InboxItem) -> None:
        """An object stays in its bucket by itself."""

    async def finish(self) -> None:
        """Nothing was taken from the bucket."""
