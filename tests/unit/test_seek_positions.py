"""The positions `esm seek` takes, how a checkpoint keeps them, and which checkpoints a seek
writes."""

from __future__ import annotations

import pytest

from esm.engine.seek import (
    SeekError,
    decode_position,
    describe_target,
    encode_position,
    parse_target,
    seek_checkpoints,
)
from esm.model import Checkpoint, IteratorType, ShardInfo, StartPosition


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("TRIM_HORIZON", StartPosition(IteratorType.TRIM_HORIZON)),
        ("latest", StartPosition(IteratorType.LATEST)),
        ("AT_TIMESTAMP=1764576000", StartPosition(IteratorType.AT_TIMESTAMP, timestamp=1764576000)),
        (
            "AT_TIMESTAMP=2025-12-01T08:00:00Z",
            StartPosition(IteratorType.AT_TIMESTAMP, timestamp=1764576000),
        ),
        # No zone: UTC, as the AWS CLI reads a time.
        (
            "AT_TIMESTAMP=2025-12-01T08:00:00",
            StartPosition(IteratorType.AT_TIMESTAMP, timestamp=1764576000),
        ),
        (
            "AT_SEQUENCE_NUMBER=49590338271490256608559692538361571095921575989136588898",
            StartPosition(
                IteratorType.AT_SEQUENCE_NUMBER,
                sequence="49590338271490256608559692538361571095921575989136588898",
            ),
        ),
    ],
)
def test_positions_are_read_as_the_aws_cli_spells_them(text: str, position: StartPosition) -> None:
    assert parse_target(text) == position
    # What is stored reads back as the same position, and never as a sequence number.
    assert decode_position(encode_position(position)) == position


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("TRIM_HORIZON=5", "--to TRIM_HORIZON=5: TRIM_HORIZON takes no value"),
        ("AT_TIMESTAMP", "--to AT_TIMESTAMP: AT_TIMESTAMP needs a time"),
        ("AT_TIMESTAMP=noon", "--to AT_TIMESTAMP=noon: 'noon' is not a time"),
        ("AT_SEQUENCE_NUMBER=abc", "--to AT_SEQUENCE_NUMBER=abc: a sequence number is digits"),
        ("AFTER_SEQUENCE_NUMBER=5", "--to AFTER_SEQUENCE_NUMBER=5: expected TRIM_HORIZON"),
    ],
)
def test_other_positions_are_refused_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(SeekError) as caught:
        parse_target(text)
    assert str(caught.value).startswith(problem)


def test_a_sequence_number_is_not_a_position() -> None:
    assert decode_position("49590338271490256608559692538361571095921575989136588898") is None
    assert decode_position(None) is None
    assert decode_position("AT_TIMESTAMP:soon") is None


def test_describe_target_spells_a_time_in_utc() -> None:
    assert describe_target(parse_target("AT_TIMESTAMP=1764576000")) == (
        "AT_TIMESTAMP=2025-12-01T08:00:00Z"
    )


SHARDS = [
    ShardInfo("shardId-000000000000", ending_sequence="100"),
    ShardInfo("shardId-000000000001", parent_ids=("shardId-000000000000",)),
    ShardInfo("shardId-000000000002", parent_ids=("shardId-000000000000",)),
]


def test_a_whole_mapping_seek_moves_closed_shards_too() -> None:
    moved = seek_checkpoints(parse_target("TRIM_HORIZON"), SHARDS, None)
    assert moved == {s.shard_id: Checkpoint("TRIM_HORIZON") for s in SHARDS}
    at_time = seek_checkpoints(parse_target("AT_TIMESTAMP=1764576000"), SHARDS, None)
    assert set(at_time.values()) == {Checkpoint("AT_TIMESTAMP:1764576000.0")}


def test_at_latest_a_closed_shard_counts_as_read_to_its_end() -> None:
    moved = seek_checkpoints(parse_target("LATEST"), SHARDS, None)
    assert moved == {
        "shardId-000000000000": Checkpoint(None, finished=True),
        "shardId-000000000001": Checkpoint("LATEST"),
        "shardId-000000000002": Checkpoint("LATEST"),
    }


def test_a_shard_seek_moves_that_shard_alone() -> None:
    target = parse_target("AT_SEQUENCE_NUMBER=42")
    assert seek_checkpoints(target, SHARDS, "shardId-000000000001") == {
        "shardId-000000000001": Checkpoint("AT_SEQUENCE_NUMBER:42")
    }
    with pytest.raises(SeekError, match="needs --shard"):
        seek_checkpoints(target, SHARDS, None)
    with pytest.raises(SeekError, match="--shard shardId-7: the stream has no such shard"):
        seek_checkpoints(target, SHARDS, "shardId-7")
