"""The on-failure destinations as plugins: for each ARN service (sqs, sns, s3), the ARN's
rules as a settings model and a factory, registered in esm.registry.

A destination's only setting is its ARN (`DestinationConfig.OnFailure.Destination`); the
models say which ARNs of their service can be one. The factories import the implementations
when called, so that reading a configuration imports none of them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from pydantic import field_validator

from esm.settings import ACCOUNT, REGION, DestinationSettings, config_problem, show

if TYPE_CHECKING:
    from esm.protocols import Destination
    from esm.registry import DestinationContext

_SQS_NAME = re.compile(r"[a-zA-Z0-9_-]{1,75}(?:\.fifo)?|[a-zA-Z0-9_-]{76,80}")
_SNS_NAME = re.compile(r"[a-zA-Z0-9_-]{1,256}(?:\.fifo)?")
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class _ArnChecked(DestinationSettings):
    @field_validator("arn")
    @classmethod
    def _check_arn(cls, value: str) -> str:
        parts = value.split(":", 5)
        if len(parts) != 6:
            raise config_problem(f"{show(value)} is not an ARN")
        if problem := cls.arn_problem(value, parts[3], parts[4], parts[5]):
            raise config_problem(problem)
        return value


def _queue_or_topic_problem(
    arn: str, region: str, account: str, name: str, service: str, pattern: re.Pattern[str]
) -> str | None:
    if not REGION.fullmatch(region) or not ACCOUNT.fullmatch(account):
        return f"{show(arn)} needs a region and a 12-digit account id"
    if not pattern.fullmatch(name):
        return f"{show(arn)} has an invalid {service.upper()} name {name!r}"
    if name.endswith(".fifo"):
        # AWS accepts these at creation, then every delivery fails; say so up front.
        kind = "queue" if service == "sqs" else "topic"
        return (
            f"{show(arn)} is a FIFO {kind}: on-failure destinations must be standard "
            "queues or topics"
        )
    return None


class SqsDestinationConfig(_ArnChecked):
    arn_form: ClassVar[str] = "an SQS queue (arn:aws:sqs:REGION:ACCOUNT:QUEUE)"

    @classmethod
    def arn_problem(cls, arn: str, region: str, account: str, resource: str) -> str | None:
        return _queue_or_topic_problem(arn, region, account, resource, "sqs", _SQS_NAME)


class SnsDestinationConfig(_ArnChecked):
    arn_form: ClassVar[str] = "an SNS topic (arn:aws:sns:REGION:ACCOUNT:TOPIC)"

    @classmethod
    def arn_problem(cls, arn: str, region: str, account: str, resource: str) -> str | None:
        return _queue_or_topic_problem(arn, region, account, resource, "sns", _SNS_NAME)


class S3DestinationConfig(_ArnChecked):
    arn_form: ClassVar[str] = "an S3 bucket (arn:aws:s3:::BUCKET)"

    @classmethod
    def arn_problem(cls, arn: str, region: str, account: str, resource: str) -> str | None:
        if region or account or not _S3_BUCKET.fullmatch(resource):
            return f"{show(arn)} is not an S3 bucket ARN: expected arn:aws:s3:::BUCKET"
        return None


async def create_sqs(context: DestinationContext, settings: SqsDestinationConfig) -> Destination:
    from esm.aws.sqs import sqs_send_client
    from esm.destinations.sqs import SqsDestination

    region = settings.arn.split(":")[3]
    return SqsDestination(sqs_send_client(await context.aws_client("sqs", region)), settings.arn)


async def create_sns(context: DestinationContext, settings: SnsDestinationConfig) -> Destination:
    from esm.aws.sns import sns_client
    from esm.destinations.sns import SnsDestination

    region = settings.arn.split(":")[3]
    return SnsDestination(sns_client(await context.aws_client("sns", region)), settings.arn)


async def create_s3(context: DestinationContext, settings: S3DestinationConfig) -> Destination:
    from esm.aws.s3 import s3_client
    from esm.destinations.s3 import S3Destination

    # S3 bucket ARNs name no region: the bucket is reached through the mapping's.
    client = s3_client(await context.aws_client("s3", context.region))
    return S3Destination(client, settings.arn, context.mapping_id)
