"""The S3 calls esm makes, typed: PutObject (the on-failure destination), and the listing,
reading and deleting of failure records that `esm redrive` does."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, NotRequired, Protocol, TypedDict, cast

__all__ = [
    "ListObjectsOutput",
    "PutObjectOutput",
    "S3Client",
    "S3InboxClient",
    "s3_client",
    "s3_inbox_client",
]


class PutObjectOutput(TypedDict):
    ETag: NotRequired[str]
    VersionId: NotRequired[str]


class S3Client(Protocol):
    """The S3 call the on-failure destination makes; an aiobotocore "s3" client has it."""

    async def put_object(
        self, *, Bucket: str, Key: str, Body: bytes, ContentType: str
    ) -> PutObjectOutput: ...


def s3_client(client: Any) -> S3Client:
    """An aiobotocore "s3" client as the typed client esm uses (aiobotocore's clients carry
    no types: this is the one place that says it fits; the integration tests run it)."""
    return cast(S3Client, client)


# -- esm redrive's calls: failure records read back from a destination bucket ----------------


class ListedObject(TypedDict):
    Key: str
    Size: NotRequired[int]


class ListObjectsOutput(TypedDict):
    Contents: NotRequired[list[ListedObject]]
    IsTruncated: NotRequired[bool]
    NextContinuationToken: NotRequired[str]


class ObjectBody(Protocol):
    """GetObject's streaming Body: aiobotocore's reads asynchronously."""

    def read(self) -> Awaitable[bytes]: ...


class GetObjectOutput(TypedDict):
    Body: ObjectBody


class S3InboxClient(Protocol):
    """The S3 calls `esm redrive` makes (needs s3:ListBucket, s3:GetObject, s3:DeleteObject)."""

    async def list_objects_v2(
        self, *, Bucket: str, Prefix: str, ContinuationToken: str = ...
    ) -> ListObjectsOutput: ...

    async def get_object(self, *, Bucket: str, Key: str) -> GetObjectOutput: ...

    async def delete_object(self, *, Bucket: str, Key: str) -> object: ...


def s3_inbox_client(client: Any) -> S3InboxClient:
    """An aiobotocore "s3" client as the typed client `esm redrive` uses."""
    return cast(S3InboxClient, client)
