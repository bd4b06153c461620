"""`esm redrive --from DESTINATION`: the inbox opened, the configuration's mappings as
targets, and the run's report."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from esm.aws.s3 import s3_inbox_client
from esm.aws.sqs import sqs_inbox_client
from esm.config import EsmConfig
from esm.redrive.inbox import Inbox, S3Inbox, SqsInbox, parse_inbox_address
from esm.redrive.redrive import Redriver
from esm.redrive.report import ItemReport, RedriveReport
from esm.redrive.targets import ConfigTargets, stream_mappings
from esm.standalone import client_pool, find_mapping

__all__ = ["redrive"]


async def redrive(
    config: EsmConfig,
    source: str,
    *,
    mapping: str | None = None,
    dry_run: bool = False,
    delete_expired: bool = False,
    on_item: Callable[[ItemReport], None] | None = None,
) -> RedriveReport:
    """Redrive every failure record at `source` (an SQS queue or an S3 bucket and prefix).

    :raises ValueError: `source` is neither, or `mapping` is not a stream mapping of `config`.
    :raises SourceError: the destination cannot be read.
    """
    address = parse_inbox_address(source)
    only = None
    if mapping is not None:
        only = find_mapping(config, mapping)
        if only not in stream_mappings(config):
            raise ValueError(
                f"mapping {only.mapping_name} reads a queue: its failed messages go to the "
                "queue's own dead-letter queue, which SQS redrives (StartMessageMoveTask)"
            )
        if address.kind == "s3" and not address.prefix:
            # Objects are keyed aws/lambda/<mapping UUID>/...: list only this mapping's.
            address = address.with_prefix(f"aws/lambda/{only.mapping_id}/")
    async with contextlib.AsyncExitStack() as stack:
        clients = client_pool(config, stack)
        inbox: Inbox
        if address.kind == "sqs":
            client = await clients.get("sqs", address.region or config.aws.region)
            inbox = SqsInbox(sqs_inbox_client(client), address)
        else:
            client = await clients.get("s3", config.aws.region)
            inbox = S3Inbox(s3_inbox_client(client), address)
        targets = ConfigTargets(config, clients, stack, only=only)
        redriver = Redriver(
            targets, dry_run=dry_run, delete_expired=delete_expired, on_item=on_item
        )
        return await redriver.run(inbox, address.describe())
