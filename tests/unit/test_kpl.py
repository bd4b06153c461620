"""KPL de-aggregation: containers built with the aws-kinesis-agg package read back as their
user records, event field by field, with sub-sequence positions that checkpoints, leases,
item failures and failure records understand."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import AggRecord

from esm.engine.partial import stream_item_failures
from esm.events import stream_failure_record
from esm.leases.model import Lease, start_of
from esm.model import IteratorType, StartPosition
from esm.sources.kinesis import KinesisRecordFactory, resume_position, skip_delivered
from esm.sources.kpl import NotAContainer, deaggregate

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
SHARD = "shardId-000000000000"
SEQ = "49590338271490256608559692538361571095921575989136588898"


def container(*users: tuple[str, bytes, str | None]) -> tuple[str, bytes]:
    """A KPL container of `users` (partition key, data, explicit hash key): its partition
    key and data, as a producer puts them."""
    aggregate = AggRecord()
    for key, data, hash_key in users:
        assert aggregate.add_user_record(key, data, hash_key)
    key, _, data = aggregate.get_contents()
    return key, data


def factory(deaggregate: bool = True, broken: list[Any] | None = None) -> KinesisRecordFactory:
    return KinesisRecordFactory(
        stream_arn=STREAM,
        region="us-east-1",
        identity_arn="arn:aws:iam::123456789012:role/esm",
        deaggregate=deaggregate,
        on_broken=(lambda *why: broken.append(why)) if broken is not None else None,
    )


def wire(sequence: str, key: str, data: bytes) -> dict[str, Any]:
    return {
        "SequenceNumber": sequence,
        "PartitionKey": key,
        "Data": base64.b64encode(data).decode(),
        "ApproximateArrivalTimestamp": 1700000000.123,
    }


USERS = [("order-1", b"one", None), ("order-2", b"two", "123456"), ("order-1", b"three", None)]


def test_a_container_holds_its_user_records_in_order() -> None:
    _, data = container(*USERS)
    users = deaggregate(data)
    assert users is not None
    assert [(u.partition_key, u.data, u.explicit_hash_key, u.sub_sequence) for u in users] == [
        ("order-1", b"one", None, 0),
        ("order-2", b"two", "123456", 1),
        ("order-1", b"three", None, 2),
    ]


def test_data_that_is_not_a_container_is_none() -> None:
    _, data = container(*USERS)
    assert deaggregate(b"plain json") is None
    assert deaggregate(data[:-1] + bytes([data[-1] ^ 1])) is None, "a digest that does not match"
    assert deaggregate(data[:8]) is None


def test_a_container_whose_records_name_missing_keys_is_refused() -> None:
    from aws_kinesis_agg import messages_pb2

    message = messages_pb2.AggregatedRecord()
    message.partition_key_table.append("k")
    record = message.records.add()
    record.partition_key_index = 3
    record.data = b"x"
    body = message.SerializeToString()
    data = b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest()
    with pytest.raises(NotAContainer, match="names partition key 3 of 1"):
        deaggregate(data)


def test_each_user_record_is_an_event_record_of_its_own_field_by_field() -> None:
    key, data = container(*USERS)
    records = factory().page(SHARD, [wire(SEQ, key, data)], wire=True)
    assert [r.sequence for r in records] == [f"{SEQ}:0", f"{SEQ}:1", f"{SEQ}:2"]
    assert [r.key for r in records] == ["order-1", "order-2", "order-1"]
    assert [r.order for r in records] == sorted(r.order for r in records)
    assert records[1].entry == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "order-2",
            "sequenceNumber": SEQ,
            "data": base64.b64encode(b"two").decode(),
            "approximateArrivalTimestamp": 1700000000.123,
            "subSequenceNumber": 1,
            "aggregated": True,
            "explicitHashKey": "123456",
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{SHARD}:{SEQ}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/esm",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM,
    }
    assert "explicitHashKey" not in records[0].entry["kinesis"]
    # As botocore parses it (enhanced fan-out): Data is bytes; the same records.
    api = dict(wire(SEQ, key, data), Data=data)
    assert factory().page(SHARD, [api], wire=False) == records


def test_plain_records_pass_unchanged_and_without_the_option_containers_do_too() -> None:
    key, data = container(*USERS)
    plain = wire("5", "k", b'{"id": 1}')
    [kept] = factory().page(SHARD, [plain], wire=True)
    [before] = factory(deaggregate=False).page(SHARD, [plain], wire=True)
    assert (kept.sequence, kept.entry) == (before.sequence, before.entry)
    [whole] = factory(deaggregate=False).page(SHARD, [wire(SEQ, key, data)], wire=True)
    assert whole.sequence == SEQ
    assert "subSequenceNumber" not in whole.entry["kinesis"]


def test_a_broken_container_is_delivered_whole_and_said() -> None:
    from aws_kinesis_agg import messages_pb2

    message = messages_pb2.AggregatedRecord()
    record = message.records.add()
    record.partition_key_index = 0
    record.data = b"x"
    body = message.SerializeToString()
    data = b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest()
    broken: list[Any] = []
    [whole] = factory(broken=broken).page(SHARD, [wire(SEQ, "a", data)], wire=True)
    assert whole.sequence == SEQ
    assert broken == [(SEQ, "user record 0 names partition key 0 of 0")]


def test_a_checkpoint_inside_a_container_reads_it_again_and_skips_what_was_settled() -> None:
    key, data = container(*USERS)
    after = StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, f"{SEQ}:1")
    position, skip = resume_position(after)
    assert position == StartPosition(IteratorType.AT_SEQUENCE_NUMBER, SEQ)
    records = factory().page(SHARD, [wire(SEQ, key, data), wire("9" + SEQ, "k", b"x")], True)
    assert [r.sequence for r in skip_delivered(records, skip)] == [f"{SEQ}:2", "9" + SEQ]
    plain = StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, SEQ)
    assert resume_position(plain) == (plain, None)


def test_a_lease_keeps_kcl_s_sub_sequence_and_esm_s_exact_checkpoint() -> None:
    lease = Lease("s", owner="w", counter=3).checkpointed(f"{SEQ}:1")
    assert (lease.checkpoint, lease.sub_sequence, lease.start) == (SEQ, 1, f"{SEQ}:1")
    assert start_of(lease, None) == StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, f"{SEQ}:1")
    whole = lease.checkpointed(SEQ)
    assert (whole.checkpoint, whole.sub_sequence, whole.start) == (SEQ, 0, None)
    assert start_of(whole, None) == StartPosition(IteratorType.AFTER_SEQUENCE_NUMBER, SEQ)


def test_item_failures_may_name_the_container_and_failure_records_name_containers() -> None:
    key, data = container(*USERS)
    records = factory().page(SHARD, [wire("7", "k", b"x"), wire(SEQ, key, data)], wire=True)
    answer = {"batchItemFailures": [{"itemIdentifier": SEQ}]}
    assert stream_item_failures(answer, records).first_failed == 1
    answer = {"batchItemFailures": [{"itemIdentifier": f"{SEQ}:2"}]}
    assert stream_item_failures(answer, records).first_failed == 3
    record = stream_failure_record(
        source="kinesis",
        records=records[2:],
        shard_id=SHARD,
        stream_arn=STREAM,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:fn",
        condition="RetryAttemptsExhausted",
        invoke_count=1,
        last_result=None,
        request_id="r",
        now=1700000001.0,
    )
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        SEQ,
        SEQ,
        2,
    )


def test_the_option_is_a_kinesis_mapping_s_and_off_by_default() -> None:
    from esm.config import parse_config
    from esm.errors import ConfigError

    def config(source: str, extra: str = "") -> Any:
        return parse_config(
            "functions:\n  f: {type: http, url: 'http://127.0.0.1:9000/'}\n"
            f"mappings:\n  - {{FunctionName: f, EventSourceArn: '{source}'{extra}}}\n",
            environ={},
        )

    assert config(STREAM, ", StartingPosition: LATEST").mappings[0].kpl_deaggregate is False
    on = config(STREAM, ", StartingPosition: LATEST, kpl_deaggregate: true")
    assert on.mappings[0].kpl_deaggregate is True
    with pytest.raises(ConfigError) as refused:
        config("arn:aws:sqs:us-east-1:123456789012:jobs", ", kpl_deaggregate: true")
    [problem] = refused.value.problems
    assert "kpl_deaggregate" in problem
    assert "applies only to Kinesis streams (KPL writes to Kinesis)" in problem
