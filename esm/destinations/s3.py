"""The S3 on-failure destination: one object per given-up batch, with the invocation event."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from esm.aws.errors import aws_call
from esm.aws.s3 import S3Client
from esm.destinations import parse_arn
from esm.errors import ConfigError
from esm.events import s3_failure_key, s3_failure_object


class S3Destination:
    """Writes each failure record and its event to a bucket (needs s3:PutObject, s3:ListBucket).

    Objects are keyed `aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<UUID>`,
    as Lambda keys them, so tools written for Lambda's objects find esm's.
    """

    def __init__(
        self,
        client: S3Client,
        bucket_arn: str,
        mapping_uuid: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        service, _, _, resource = parse_arn(bucket_arn)
        if service != "s3" or "/" in resource:
            raise ConfigError([f"{bucket_arn!r} is not an S3 bucket ARN (arn:aws:s3:::BUCKET)"])
        self.client = client
        self.bucket_arn = bucket_arn
        self.bucket = resource
        self.mapping_uuid = mapping_uuid
        self.clock = clock

    async def send(self, record: Mapping[str, Any], payload: bytes, partition: str) -> None:
        key = s3_failure_key(self.mapping_uuid, partition, self.clock())
        with aws_call(f"on-failure destination {self.bucket_arn}: PutObject {key}"):
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=s3_failure_object(record, payload),
                ContentType="application/json",
            )
