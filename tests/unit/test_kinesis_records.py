"""The Kinesis read path's fast record: the same event entry as `kinesis_entry` builds, and a
size that is exactly what the entry adds to an encoded event."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from esm.events import kinesis_entry
from esm.sources.kinesis import KinesisRecordFactory

STREAM = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"
ROLE = "arn:aws:iam::123456789012:role/esm"

texts = st.text(min_size=0, max_size=40)
base64ish = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


@given(
    shard=st.sampled_from(["shardId-000000000000", "shardId-000000000017", 'odd"shard\\']),
    sequence=st.integers(min_value=0, max_value=10**56).map(str),
    key=st.one_of(texts, st.sampled_from(["\x00", '"', "\\", "ключ"])),
    data=st.one_of(base64ish, texts, st.sampled_from(["\x01\x1f", 'q"u\\o', "é€😀"])),
    arrival=st.one_of(
        st.floats(min_value=0, max_value=4e9, allow_nan=False),
        st.sampled_from([0.0, 1700000000.0, 1700000000.123, 1441215410.8675]),
    ),
)
def test_the_fast_record_is_the_reference_entry_and_its_exact_size(
    shard: str, sequence: str, key: str, data: str, arrival: float
) -> None:
    factory = KinesisRecordFactory(stream_arn=STREAM, region="eu-west-1", identity_arn=ROLE)
    record = factory.create(shard, sequence, key, data, arrival)
    expected = kinesis_entry(
        shard_id=shard,
        sequence_number=sequence,
        partition_key=key,
        data_b64=data,
        arrival=arrival,
        stream_arn=STREAM,
        region="eu-west-1",
        identity_arn=ROLE,
    )
    assert record.entry == expected
    assert orjson.dumps(record.entry) == orjson.dumps(expected), "the same keys in order"
    assert record.size == len(orjson.dumps(expected)) + 1
    assert (record.sequence, record.key, record.arrival) == (sequence, key, arrival)
    later = factory.create(shard, sequence, key, data, arrival)
    assert later.order > record.order, "orders increase as records are read"


@given(
    millis=st.integers(min_value=0, max_value=4_000_000_000_000),
    micros=st.integers(min_value=0, max_value=999),
)
def test_arrival_times_are_rounded_to_milliseconds_as_round_does(millis: int, micros: int) -> None:
    from esm.sources.kinesis import to_millis

    whole = float(f"{millis // 1000}.{millis % 1000:03d}")
    assert to_millis(whole) == round(whole, 3) == whole
    finer = float(f"{millis // 1000}.{millis % 1000:03d}{micros:03d}")
    assert to_millis(finer) == round(finer, 3)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_any_arrival_time_is_rounded_as_round_does(epoch: float) -> None:
    from esm.sources.kinesis import to_millis

    assert to_millis(epoch) == round(epoch, 3)
