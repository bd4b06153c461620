"""The DynamoDB lease table against moto's server: the table is made and checked, items are in
KCL's format, every write after the first is fenced, attributes esm does not know survive,
and the heartbeats of all workers live in one item."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from esm.aws.call_metrics import instrument_client
from esm.aws.dynamodb import dynamodb_client
from esm.errors import SettingError
from esm.leases.dynamodb import HEARTBEATS_KEY, DynamoDBLeaseTable, ensure_table
from esm.leases.model import SHARD_END, Lease
from esm.leases.table import LeaseConflict

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def table_name(dynamodb: Any) -> str:
    name = f"leases-{uuid.uuid4().hex[:8]}"
    await ensure_table(dynamodb_client(dynamodb), name)
    return name


async def raw_item(dynamodb: Any, table: str, key: str) -> dict[str, Any]:
    answer = await dynamodb.get_item(
        TableName=table, Key={"leaseKey": {"S": key}}, ConsistentRead=True
    )
    item: dict[str, Any] = answer.get("Item", {})
    return item


async def test_the_table_is_created_on_demand_keyed_by_lease_key(dynamodb: Any) -> None:
    name = f"leases-{uuid.uuid4().hex[:8]}"
    client = dynamodb_client(dynamodb)
    await ensure_table(client, name)
    await ensure_table(client, name)  # a second replica finds it made
    table = (await dynamodb.describe_table(TableName=name))["Table"]
    assert table["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "leaseKey", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TableStatus"] == "ACTIVE"


async def test_a_missing_table_that_may_not_be_created_is_a_setting_error(dynamodb: Any) -> None:
    with pytest.raises(SettingError, match=r"lease table nowhere-[0-9a-f]+ does not exist"):
        await ensure_table(
            dynamodb_client(dynamodb), f"nowhere-{uuid.uuid4().hex[:8]}", create=False
        )


async def test_a_table_keyed_otherwise_is_refused(dynamodb: Any) -> None:
    name = f"orders-{uuid.uuid4().hex[:8]}"
    await dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(SettingError, match="not keyed like a lease table"):
        await ensure_table(dynamodb_client(dynamodb), name)


async def test_a_lease_is_written_in_kcl_format_and_created_once(
    dynamodb: Any, table_name: str
) -> None:
    table = DynamoDBLeaseTable(dynamodb_client(dynamodb), table_name, prefix="m1:")
    lease = Lease(
        "shardId-000000000002",
        owner="w1",
        counter=1,
        checkpoint="TRIM_HORIZON",
        parents=frozenset({"shardId-000000000000", "shardId-000000000001"}),
        owner_switches=1,
    )
    assert await table.create(lease) is True
    assert await table.create(Lease("shardId-000000000002", owner="w2")) is False
    item = await raw_item(dynamodb, table_name, "m1:shardId-000000000002")
    assert item == {
        "leaseKey": {"S": "m1:shardId-000000000002"},
        "leaseOwner": {"S": "w1"},
        "leaseCounter": {"N": "1"},
        "checkpoint": {"S": "TRIM_HORIZON"},
        "checkpointSubSequenceNumber": {"N": "0"},
        "ownerSwitchesSinceCheckpoint": {"N": "1"},
        "parentShardId": {"SS": ["shardId-000000000000", "shardId-000000000001"]},
    }
    assert await table.get("shardId-000000000002") == lease


async def test_writes_are_fenced_by_owner_checkpoint_owner_and_counter(
    dynamodb: Any, table_name: str
) -> None:
    table = DynamoDBLeaseTable(dynamodb_client(dynamodb), table_name, prefix="m1:")
    free = Lease("shardId-0")
    await table.create(free)
    mine = free.taken_by("w1")
    await table.replace(free, mine)
    # A worker that still believes the lease free, or that counts wrong, writes nothing.
    with pytest.raises(LeaseConflict):
        await table.replace(free, free.taken_by("w2"))
    with pytest.raises(LeaseConflict):
        await table.replace(Lease("shardId-0", owner="w1", counter=7), mine.checkpointed("9"))
    with pytest.raises(LeaseConflict):
        await table.replace(Lease("shardId-0", owner="w2", counter=1), mine.checkpointed("9"))
    assert await table.get("shardId-0") == mine
    # A handoff: the new owner asks, the old one writes its final checkpoint and lets go.
    asked = mine.handed_to("w2")
    await table.replace(mine, asked)
    item = await raw_item(dynamodb, table_name, "m1:shardId-0")
    assert (item["leaseOwner"], item["checkpointOwner"], item["leaseCounter"]) == (
        {"S": "w2"},
        {"S": "w1"},
        {"N": "2"},
    )
    with pytest.raises(LeaseConflict):  # the old owner's view without the handoff is stale
        await table.replace(mine, mine.checkpointed("10"))
    final = asked.checkpointed("10")
    await table.replace(asked, final)
    let_go = final.released()
    await table.replace(final, let_go)
    item = await raw_item(dynamodb, table_name, "m1:shardId-0")
    assert "checkpointOwner" not in item
    assert item["leaseOwner"] == {"S": "w2"}
    assert item["checkpoint"] == {"S": "10"}
    # A shutdown: the owner lets go, and the lease has no owner at all.
    await table.replace(let_go, let_go.released())
    item = await raw_item(dynamodb, table_name, "m1:shardId-0")
    assert "leaseOwner" not in item
    assert item["leaseCounter"] == {"N": "5"}


async def test_the_end_of_a_shard_records_its_children(dynamodb: Any, table_name: str) -> None:
    table = DynamoDBLeaseTable(dynamodb_client(dynamodb), table_name)
    lease = Lease("shardId-0", owner="w1", counter=3)
    await table.create(lease)
    children = frozenset({"shardId-1", "shardId-2"})
    await table.replace(lease, lease.checkpointed(SHARD_END, children))
    item = await raw_item(dynamodb, table_name, "shardId-0")
    assert item["checkpoint"] == {"S": "SHARD_END"}
    assert item["childShardIds"] == {"SS": ["shardId-1", "shardId-2"]}


async def test_a_kcl_item_is_read_and_its_unknown_attributes_survive_esm_writes(
    dynamodb: Any, table_name: str
) -> None:
    kcl_item = {
        "leaseKey": {"S": "shardId-000000000007"},
        "leaseOwner": {"S": "kcl-worker-1"},
        "leaseCounter": {"N": "1042"},
        "checkpoint": {"S": "49590338271490256608559692538361571095921575989136588898"},
        "checkpointSubSequenceNumber": {"N": "3"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
        "parentShardId": {"SS": ["shardId-000000000001"]},
        "pendingCheckpoint": {"S": "49590338271490256608559692538361571095921575989136588999"},
        "throughputKBps": {"N": "12.5"},
        "startingHashKey": {"S": "0"},
        "endingHashKey": {"S": "170141183460469231731687303715884105727"},
    }
    await dynamodb.put_item(TableName=table_name, Item=kcl_item)
    # KCL 3's worker metrics in the same table are not leases.
    await dynamodb.put_item(
        TableName=table_name,
        Item={"leaseKey": {"S": "worker-metrics-1"}, "entityType": {"S": "WORKER_METRICS"}},
    )
    table = DynamoDBLeaseTable(dynamodb_client(dynamodb), table_name)
    (lease,) = await table.scan()
    assert lease == Lease(
        "shardId-000000000007",
        counter=1042,
        owner="kcl-worker-1",
        checkpoint="49590338271490256608559692538361571095921575989136588898",
        sub_sequence=3,
        parents=frozenset({"shardId-000000000001"}),
    )
    taken = lease.taken_by("esm-1")
    await table.replace(lease, taken)
    item = await raw_item(dynamodb, table_name, "shardId-000000000007")
    for kept in ("pendingCheckpoint", "throughputKBps", "startingHashKey", "endingHashKey"):
        assert item[kept] == kcl_item[kept]
    assert item["leaseOwner"] == {"S": "esm-1"}
    assert item["leaseCounter"] == {"N": "1043"}
    assert item["ownerSwitchesSinceCheckpoint"] == {"N": "1"}


async def test_a_scan_sees_only_its_own_mapping_s_leases(dynamodb: Any, table_name: str) -> None:
    client = dynamodb_client(dynamodb)
    first = DynamoDBLeaseTable(client, table_name, prefix="m1:")
    second = DynamoDBLeaseTable(client, table_name, prefix="m2:")
    for n in range(30):
        await first.create(Lease(f"shardId-{n:012d}"))
    await second.create(Lease("shardId-000000000000", checkpoint="5"))
    await first.beat("w1", 1)
    assert sorted(lease.shard_id for lease in await first.scan()) == [
        f"shardId-{n:012d}" for n in range(30)
    ]
    assert await second.scan() == [Lease("shardId-000000000000", checkpoint="5")]
    assert first.name == f"{table_name}/m1:"


async def test_every_worker_s_heartbeat_lives_in_one_item(dynamodb: Any, table_name: str) -> None:
    calls: list[tuple[str, str]] = []
    instrument_client(
        dynamodb, lambda service, operation, outcome, seconds: calls.append((operation, outcome))
    )
    beats = DynamoDBLeaseTable(dynamodb_client(dynamodb), table_name)
    assert await beats.beats() == {}
    await beats.beat("w1", 1)
    await beats.beat("w2", 1)
    await beats.beat("w1", 2)
    assert await beats.beats() == {"w1": 2, "w2": 1}
    item = await raw_item(dynamodb, table_name, HEARTBEATS_KEY)
    assert item["heartbeats"] == {"M": {"w1": {"N": "2"}, "w2": {"N": "1"}}}
    await beats.forget("w1")
    assert await beats.beats() == {"w2": 1}
    # The first beat on a new table finds no map (a conflict) and makes it.
    assert calls[:3] == [("GetItem", "ok"), ("UpdateItem", "conflict"), ("UpdateItem", "ok")]
    assert calls[3:5] == [("UpdateItem", "ok"), ("UpdateItem", "ok")]


async def test_forgetting_on_a_table_without_heartbeats_is_harmless(
    dynamodb: Any, table_name: str
) -> None:
    await DynamoDBLeaseTable(dynamodb_client(dynamodb), table_name).forget("w1")
    assert await raw_item(dynamodb, table_name, HEARTBEATS_KEY) == {}
