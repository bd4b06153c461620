"""On-failure destinations for given-up stream batches: SQS queues, SNS topics, S3 buckets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from esm.aws.s3 import s3_client
from esm.aws.sns import sns_client
from esm.aws.sqs import sqs_send_client
from esm.errors import ConfigError
from esm.protocols import Destination

__all__ = ["create_destination", "parse_arn"]


def parse_arn(arn: str) -> tuple[str, str, str, str]:
    """`(service, region, account, resource)` of `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[2] or not parts[5]:
        raise ConfigError([f"{arn!r} is not an ARN"])
    return parts[2], parts[3], parts[4], parts[5]


def create_destination(
    arn: str, *, clients: Callable[[str], Any], mapping_uuid: str
) -> Destination:
    """The destination for `arn`, chosen by its service (sqs, sns or s3).

    `clients(service_name)` returns an aiobotocore client for that service; the caller owns
    the clients and closes them.
    """
    # Imported here: each module imports `parse_arn` from this package.
    from esm.destinations.s3 import S3Destination
    from esm.destinations.sns import SnsDestination
    from esm.destinations.sqs import SqsDestination

    # aiobotocore's clients are untyped: each is declared the narrow typed client it is here.
    service = parse_arn(arn)[0]
    if service == "sqs":
        return SqsDestination(sqs_send_client(clients("sqs")), arn)
    if service == "sns":
        return SnsDestination(sns_client(clients("sns")), arn)
    if service == "s3":
        return S3Destination(s3_client(clients("s3")), arn, mapping_uuid)
    raise ConfigError(
        [f"{arn!r}: an on-failure destination must be an SQS queue, SNS topic or S3 bucket"]
    )
