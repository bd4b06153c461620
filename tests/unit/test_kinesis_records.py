"""The Kinesis read path's fast record: the same event entry as `kinesis_entry` builds, and a
size that is exactly what the entry adds to an encoded event."""

from __future__ import annotations

from typing import Any

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


wire_records = st.lists(
    st.fixed_dictionaries(
        {
            "SequenceNumber": st.integers(min_value=0, max_value=10**56).map(str),
            "PartitionKey": st.one_of(texts, st.sampled_from(['q"', "\\", "\x1f", "ключ"])),
            "Data": st.one_of(base64ish, texts, st.sampled_from(["a/b", "\n", "é€😀"])),
            "ApproximateArrivalTimestamp": st.one_of(
                st.sampled_from([1700000000.123, 1700000000.123, 1441215410.8675, 1700000000]),
                st.floats(min_value=0, max_value=4e9, allow_nan=False),
            ),
        }
    ),
    max_size=12,
)


def _encoders() -> st.SearchStrategy[Any]:
    import json

    # How services write JSON: orjson's way (UTF-8, only what must be escaped) and Python's
    # (non-ASCII as \u escapes), so pages both with and without backslashes come.
    return st.sampled_from([orjson.dumps, lambda value: json.dumps(value).encode()])


@given(raws=wire_records, encode=_encoders())
def test_a_wire_page_makes_the_records_that_create_makes(
    raws: list[dict[str, Any]], encode: Any
) -> None:
    """The page loop (`_wire_page`) against `create`, record by record: the same entry, the
    same exact size, whether or not the body had escapes."""
    body = encode({"Records": raws, "MillisBehindLatest": 0})
    parsed = orjson.loads(body)["Records"]
    shard = "shardId-000000000003"
    fast = KinesisRecordFactory(stream_arn=STREAM, region="eu-west-1", identity_arn=ROLE)
    reference = KinesisRecordFactory(stream_arn=STREAM, region="eu-west-1", identity_arn=ROLE)
    records = fast.page(shard, parsed, True, unescaped=b"\\" not in body)
    assert len(records) == len(raws)
    for record, raw in zip(records, parsed, strict=True):
        expected = reference.create(
            shard,
            raw["SequenceNumber"],
            raw["PartitionKey"],
            raw["Data"],
            float(raw["ApproximateArrivalTimestamp"]),
        )
        assert orjson.dumps(record.entry) == orjson.dumps(expected.entry)
        assert record.size == expected.size == len(orjson.dumps(expected.entry)) + 1
        assert (record.sequence, record.key, record.arrival, record.order) == (
            expected.sequence,
            expected.key,
            expected.arrival,
            expected.order,
        )


def test_a_page_said_to_be_unescaped_sizes_ascii_strings_by_their_length() -> None:
    """What `unescaped` buys, and why it is asked of the body: a string that needs escapes
    would be sized short, so only a body without a backslash may say so."""
    factory = KinesisRecordFactory(stream_arn=STREAM, region="eu-west-1", identity_arn=ROLE)
    raw = {
        "SequenceNumber": "1",
        "PartitionKey": 'k"',
        "Data": "\n",
        "ApproximateArrivalTimestamp": 1.5,
    }
    exact = factory.page("s", [raw], True)[0]
    assert exact.size == len(orjson.dumps(exact.entry)) + 1
    trusted = factory.page("s", [raw], True, unescaped=True)[0]
    assert trusted.size == exact.size - 2, "a quote and a newline, each one byte short"


def test_a_key_or_data_that_is_not_a_string_is_taken_as_create_takes_it() -> None:
    """An answer no Kinesis gives, but an emulator might: the page is still made, record by
    record, each as `create` makes it."""
    factory = KinesisRecordFactory(stream_arn=STREAM, region="eu-west-1", identity_arn=ROLE)
    reference = KinesisRecordFactory(stream_arn=STREAM, region="eu-west-1", identity_arn=ROLE)
    raws = [
        {
            "SequenceNumber": "1",
            "PartitionKey": "k",
            "Data": "QQ==",
            "ApproximateArrivalTimestamp": 2,
        },
        {"SequenceNumber": "2", "PartitionKey": 7, "Data": 12, "ApproximateArrivalTimestamp": 2},
    ]
    records = factory.page("s", raws, True, unescaped=True)
    expected = [reference.from_wire("s", raw) for raw in raws]
    assert [(r.entry, r.size, r.key) for r in records] == [
        (e.entry, e.size, e.key) for e in expected
    ]


def test_records_without_an_arrival_time_are_sized_as_create_sizes_them() -> None:
    factory = KinesisRecordFactory(stream_arn=STREAM, region="eu-west-1", identity_arn=ROLE)
    reference = KinesisRecordFactory(stream_arn=STREAM, region="eu-west-1", identity_arn=ROLE)
    raws = [{"SequenceNumber": str(n), "PartitionKey": "k", "Data": "QQ=="} for n in range(2)]
    records = factory.page("s", raws, True, unescaped=True)
    expected = [reference.from_wire("s", raw) for raw in raws]
    assert [(r.entry, r.size, r.arrival) for r in records] == [
        (e.entry, e.size, e.arrival) for e in expected
    ]
