"""The S3 call esm makes, typed: PutObject (the on-failure destination)."""

from __future__ import annotations

from typing import Any, NotRequired, Protocol, TypedDict, cast

__all__ = ["PutObjectOutput", "S3Client", "s3_client"]


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
