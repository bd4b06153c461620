"""The lease table in DynamoDB, in the Kinesis Client Library's item format.

One table item per shard lease (`leaseKey` is its hash key), with KCL's attribute names, so
that a KCL application's table can be read and continued. Every write but the first of a
lease is an UpdateItem conditional on the owner, the checkpoint owner and the counter the
writer last saw; attributes esm does not use (`pendingCheckpoint`, `throughputKBps`, ...)
are left as they are. One more item, `esm-workers`, holds every worker's heartbeat in a map,
so that liveness costs one small write per worker a second, whatever the number of shards.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Final

import anyio

from esm.aws.dynamodb import AttributeValue, DynamoDBClient, Item, ScanInput, UpdateItemInput
from esm.aws.errors import aws_call, error_code
from esm.errors import CheckpointError, SettingError, SourceError
from esm.leases.model import Lease
from esm.leases.table import LeaseConflict

__all__ = [
    "HEARTBEATS_KEY",
    "DynamoDBLeaseTable",
    "LeaseTableRefused",
    "ensure_table",
    "item_of",
    "lease_of",
]

HEARTBEATS_KEY: Final = "esm-workers"
"""The item that holds the heartbeats (no lease key has this form: they hold a colon or
start with `shardId-`)."""

_KEY: Final = "leaseKey"
_CONFLICT: Final = "ConditionalCheckFailedException"
# How long a table may take to become ACTIVE after CreateTable.
_CREATE_WAIT_SECONDS: Final = 120.0


class LeaseTableRefused(CheckpointError):
    """DynamoDB refused the call for a reason waiting does not cure (access denied, no such
    table): an operator has to act."""

    retriable = False


def _s(value: str) -> AttributeValue:
    return {"S": value}


def _n(value: int) -> AttributeValue:
    return {"N": str(value)}


def _number(item: Item, name: str) -> int:
    value = item.get(name, {}).get("N")
    return int(value) if value is not None else 0


def _text(item: Item, name: str) -> str | None:
    return item.get(name, {}).get("S")


def _strings(item: Item, name: str) -> frozenset[str]:
    return frozenset(item.get(name, {}).get("SS", ()))


# esm's own attribute: a seek's position that KCL's checkpoint cannot say (Lease.start).
_START = "esmStartingPosition"


def item_of(lease: Lease, key: str) -> Item:
    """The whole item of a new lease under `key` (absent attributes stay absent: DynamoDB
    has no empty sets, and KCL writes no owner for a free lease)."""
    item: Item = {
        _KEY: _s(key),
        "leaseCounter": _n(lease.counter),
        "checkpoint": _s(lease.checkpoint),
        "checkpointSubSequenceNumber": _n(lease.sub_sequence),
        "ownerSwitchesSinceCheckpoint": _n(lease.owner_switches),
    }
    if lease.owner is not None:
        item["leaseOwner"] = _s(lease.owner)
    if lease.checkpoint_owner is not None:
        item["checkpointOwner"] = _s(lease.checkpoint_owner)
    if lease.parents:
        item["parentShardId"] = {"SS": sorted(lease.parents)}
    if lease.children:
        item["childShardIds"] = {"SS": sorted(lease.children)}
    if lease.start is not None:
        item[_START] = _s(lease.start)
    return item


def lease_of(item: Item, prefix: str = "") -> Lease | None:
    """The lease of a table item; None for an item that is not a lease of this prefix (the
    heartbeats, another mapping's lease, KCL 3's worker metrics or coordinator state)."""
    key = _text(item, _KEY)
    if key is None or not key.startswith(prefix) or "leaseCounter" not in item:
        return None
    return Lease(
        shard_id=key[len(prefix) :],
        counter=_number(item, "leaseCounter"),
        owner=_text(item, "leaseOwner"),
        checkpoint=_text(item, "checkpoint") or "TRIM_HORIZON",
        sub_sequence=_number(item, "checkpointSubSequenceNumber"),
        parents=_strings(item, "parentShardId"),
        children=_strings(item, "childShardIds"),
        owner_switches=_number(item, "ownerSwitchesSinceCheckpoint"),
        checkpoint_owner=_text(item, "checkpointOwner"),
        start=_text(item, _START),
    )


def _update_of(expected: Lease, new: Lease) -> tuple[str, str, dict[str, AttributeValue]]:
    """UpdateExpression, ConditionExpression and values that write `new` over `expected`."""
    values: dict[str, AttributeValue] = {
        ":counter": _n(new.counter),
        ":checkpoint": _s(new.checkpoint),
        ":sub": _n(new.sub_sequence),
        ":switches": _n(new.owner_switches),
        ":expected_counter": _n(expected.counter),
    }
    sets = [
        "leaseCounter = :counter",
        "checkpoint = :checkpoint",
        "checkpointSubSequenceNumber = :sub",
        "ownerSwitchesSinceCheckpoint = :switches",
    ]
    removes: list[str] = []
    if new.owner is None:
        removes.append("leaseOwner")
    else:
        sets.append("leaseOwner = :owner")
        values[":owner"] = _s(new.owner)
    if new.checkpoint_owner is None:
        removes += ["checkpointOwner", "checkpointOwnerTimeoutTimestampMillis"]
    else:
        sets.append("checkpointOwner = :checkpoint_owner")
        values[":checkpoint_owner"] = _s(new.checkpoint_owner)
    if new.start is None:
        removes.append(_START)
    else:
        sets.append(f"{_START} = :start")
        values[":start"] = _s(new.start)
    if new.children and new.children != expected.children:
        sets.append("childShardIds = :children")
        values[":children"] = {"SS": sorted(new.children)}
    conditions = [f"attribute_exists({_KEY})", "leaseCounter = :expected_counter"]
    for attribute, value, name in (
        ("leaseOwner", expected.owner, ":expected_owner"),
        ("checkpointOwner", expected.checkpoint_owner, ":expected_checkpoint_owner"),
    ):
        if value is None:
            conditions.append(f"attribute_not_exists({attribute})")
        else:
            conditions.append(f"{attribute} = {name}")
            values[name] = _s(value)
    update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    return update, " AND ".join(conditions), values


class DynamoDBLeaseTable:
    """`LeaseTable` and `WorkerBeats` over a DynamoDB table.

    `prefix` keeps one mapping's leases apart from the others' in a shared table (esm's own
    table: `MAPPING_ID:`); a KCL application's table has none. Each call gives up after
    `timeout` seconds, so that a stalled table shows as a failure within a lease duration.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        prefix: str = "",
        timeout: float = 5.0,
    ) -> None:
        self.client = client
        self.table = table
        self.prefix = prefix
        self.timeout = timeout

    @property
    def name(self) -> str:
        return f"{self.table}/{self.prefix}" if self.prefix else self.table

    @contextlib.asynccontextmanager
    async def _call(self, operation: str) -> AsyncIterator[None]:
        """One DynamoDB call: translated into `CheckpointError`s (a failed condition into
        `LeaseConflict`) and bounded by the timeout (the client counts it, as every call)."""
        try:
            with aws_call(f"lease table {self.table}: {operation}"), anyio.fail_after(self.timeout):
                yield
        except SourceError as error:
            if error_code(error.__cause__) == _CONFLICT:
                raise LeaseConflict(f"lease table {self.table}: the item changed") from error
            kind = CheckpointError if error.retriable else LeaseTableRefused
            raise kind(str(error)) from error

    def _key(self, shard_id: str) -> Item:
        return {_KEY: _s(self.prefix + shard_id)}

    # -- LeaseTable ----------------------------------------------------------------------

    async def scan(self) -> list[Lease]:
        request: ScanInput = {"TableName": self.table}
        if self.prefix:
            request["FilterExpression"] = f"begins_with({_KEY}, :prefix)"
            request["ExpressionAttributeValues"] = {":prefix": _s(self.prefix)}
        leases: list[Lease] = []
        while True:
            async with self._call("Scan"):
                page = await self.client.scan(**request)
            leases += [
                lease
                for item in page["Items"]
                if (lease := lease_of(item, self.prefix)) is not None
            ]
            last = page.get("LastEvaluatedKey")
            if not last:
                return leases
            request["ExclusiveStartKey"] = last

    async def get(self, shard_id: str) -> Lease | None:
        async with self._call("GetItem"):
            answer = await self.client.get_item(
                TableName=self.table, Key=self._key(shard_id), ConsistentRead=True
            )
        item = answer.get("Item")
        return None if item is None else lease_of(item, self.prefix)

    async def create(self, lease: Lease) -> bool:
        try:
            async with self._call("PutItem"):
                await self.client.put_item(
                    TableName=self.table,
                    Item=item_of(lease, self.prefix + lease.shard_id),
                    ConditionExpression=f"attribute_not_exists({_KEY})",
                )
        except LeaseConflict:
            return False
        return True

    async def replace(self, expected: Lease, new: Lease) -> None:
        update, condition, values = _update_of(expected, new)
        async with self._call("UpdateItem"):
            await self.client.update_item(
                TableName=self.table,
                Key=self._key(new.shard_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )

    # -- WorkerBeats -------------------------------------------------------------------------

    def _beats_update(self, expression: str, worker: str) -> UpdateItemInput:
        return {
            "TableName": self.table,
            "Key": {_KEY: _s(HEARTBEATS_KEY)},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": {"#worker": worker},
        }

    async def beat(self, worker: str, value: int) -> None:
        request = self._beats_update("SET heartbeats.#worker = :value", worker)
        request["ConditionExpression"] = "attribute_exists(heartbeats)"
        request["ExpressionAttributeValues"] = {":value": _n(value)}
        try:
            async with self._call("UpdateItem"):
                await self.client.update_item(**request)
        except LeaseConflict:
            # The first worker on a new table: make the map, unless another did meanwhile.
            first = self._beats_update("SET heartbeats = :beats", worker)
            del first["ExpressionAttributeNames"]
            first["ConditionExpression"] = "attribute_not_exists(heartbeats)"
            first["ExpressionAttributeValues"] = {":beats": {"M": {worker: _n(value)}}}
            with contextlib.suppress(LeaseConflict):
                async with self._call("UpdateItem"):
                    await self.client.update_item(**first)
                return
            async with self._call("UpdateItem"):
                await self.client.update_item(**request)

    async def beats(self) -> Mapping[str, int]:
        async with self._call("GetItem"):
            answer = await self.client.get_item(
                TableName=self.table, Key={_KEY: _s(HEARTBEATS_KEY)}, ConsistentRead=True
            )
        beats = answer.get("Item", {}).get("heartbeats", {}).get("M", {})
        return {worker: int(value.get("N", "0")) for worker, value in beats.items()}

    async def forget(self, worker: str) -> None:
        request = self._beats_update("REMOVE heartbeats.#worker", worker)
        request["ConditionExpression"] = "attribute_exists(heartbeats)"
        with contextlib.suppress(LeaseConflict):  # no heartbeats at all: nothing to forget
            async with self._call("UpdateItem"):
                await self.client.update_item(**request)


async def ensure_table(client: DynamoDBClient, table: str, *, create: bool = True) -> None:
    """Make sure `table` exists and is a lease table (hash key `leaseKey`, a string): create
    it with on-demand billing when missing and `create`, and wait until it is ACTIVE.

    :raises SettingError: it is missing and may not be created, it has another key, or it
        cannot be read or created (the message says why).
    """
    try:
        status = await _describe(client, table)
        if status is None:
            if not create:
                raise SettingError(f"lease table {table} does not exist")
            await _create(client, table)
        with anyio.fail_after(_CREATE_WAIT_SECONDS):
            while status != "ACTIVE":
                await anyio.sleep(0.5 if status is None else 1.0)
                status = await _describe(client, table)
    except TimeoutError:
        raise SettingError(f"lease table {table} did not become ACTIVE") from None
    except SourceError as error:
        raise SettingError(f"lease table {table}: {error}") from error


async def _describe(client: DynamoDBClient, table: str) -> str | None:
    """The table's status; None when it does not exist.

    :raises SettingError: it is not keyed like a lease table.
    """
    try:
        with aws_call("DescribeTable"):
            answer = await client.describe_table(TableName=table)
    except SourceError as error:
        if error_code(error.__cause__) == "ResourceNotFoundException":
            return None
        raise
    description = answer["Table"]
    keys = [(k["AttributeName"], k["KeyType"]) for k in description.get("KeySchema", [])]
    if keys != [(_KEY, "HASH")]:
        raise SettingError(
            f"lease table {table} is not keyed like a lease table: its key is {keys}, "
            f"a lease table's is the hash key {_KEY} alone"
        )
    return description.get("TableStatus", "ACTIVE")


async def _create(client: DynamoDBClient, table: str) -> None:
    try:
        with aws_call("CreateTable"):
            await client.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": _KEY, "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": _KEY, "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
    except SourceError as error:
        # Another replica created it at the same moment: that is as good.
        if error_code(error.__cause__) != "ResourceInUseException":
            raise
