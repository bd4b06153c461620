"""Moving a stream mapping's position (`esm seek`): the positions a saved checkpoint may hold
besides a sequence number, and the checkpoints a seek writes.

A checkpoint normally holds the last settled sequence number, and reading resumes after it.
A seek stores a *position* instead, kept in the same field so that every checkpoint store
(SQLite, memory, a plugin's) keeps it without a change of layout: `TRIM_HORIZON`, `LATEST`,
`AT_TIMESTAMP:<epoch seconds>` or `AT_SEQUENCE_NUMBER:<sequence>`. Sequence numbers of
Kinesis and DynamoDB Streams are all digits, so the two never look alike. The position is
used when the shard is next read, and the first checkpoint after it replaces it; until then
a restart reads from the position again.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from esm.errors import SourceError
from esm.model import Checkpoint, IteratorType, ShardInfo, StartPosition
from esm.positions import decode_position, encode_position
from esm.protocols import StreamAPI

__all__ = [
    "SEEK_TYPES",
    "SeekError",
    "decode_position",
    "describe_target",
    "encode_position",
    "parse_target",
    "plan_seek",
    "seek_checkpoints",
]

SEEK_TYPES = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AT_SEQUENCE_NUMBER")


class SeekError(ValueError):
    """A seek that cannot be done as asked; the message says why, in one line."""


def parse_target(text: str) -> StartPosition:
    """`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP=<ISO 8601 or epoch seconds>` or
    `AT_SEQUENCE_NUMBER=<sequence>`, as `esm seek --to` takes it.

    :raises SeekError: anything else.
    """
    kind, equals, value = text.strip().partition("=")
    kind = kind.strip().upper()
    value = value.strip()
    if kind in ("TRIM_HORIZON", "LATEST"):
        if equals:
            raise SeekError(f"--to {text}: {kind} takes no value")
        return StartPosition(IteratorType(kind))
    if kind == "AT_TIMESTAMP":
        return StartPosition(IteratorType.AT_TIMESTAMP, timestamp=_timestamp(value, text))
    if kind == "AT_SEQUENCE_NUMBER":
        if not value.isdigit():
            raise SeekError(f"--to {text}: a sequence number is digits only")
        return StartPosition(IteratorType.AT_SEQUENCE_NUMBER, sequence=value)
    raise SeekError(
        f"--to {text}: expected TRIM_HORIZON, LATEST, AT_TIMESTAMP=TIME or "
        "AT_SEQUENCE_NUMBER=SEQUENCE"
    )


def _timestamp(value: str, text: str) -> float:
    if not value:
        raise SeekError(f"--to {text}: AT_TIMESTAMP needs a time (ISO 8601 or epoch seconds)")
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SeekError(
            f"--to {text}: {value!r} is not a time (ISO 8601, e.g. 2026-12-01T08:00:00Z, "
            "or epoch seconds)"
        ) from None
    if moment.tzinfo is None:
        # A time without a zone is read as UTC, as AWS's CLI reads --timestamp.
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def describe_target(position: StartPosition) -> str:
    """The position as `--to` spells it."""
    if position.type is IteratorType.AT_TIMESTAMP and position.timestamp is not None:
        moment = datetime.datetime.fromtimestamp(position.timestamp, datetime.UTC)
        return f"AT_TIMESTAMP={moment.isoformat().replace('+00:00', 'Z')}"
    if position.sequence is not None:
        return f"{position.type.value}={position.sequence}"
    return position.type.value


def seek_checkpoints(
    target: StartPosition, shards: Iterable[ShardInfo], shard: str | None
) -> dict[str, Checkpoint]:
    """The checkpoints that move a mapping to `target`: of `shard` alone when given, else of
    every listed shard.

    A whole-mapping seek resets closed shards too, so that their children still wait for
    them and each key stays in order: to the trim horizon or a time they are read again;
    at LATEST nothing more will come from them, and they count as read to their end.

    :raises SeekError: the shard is not listed, or AT_SEQUENCE_NUMBER without a shard (a
        sequence number belongs to one shard).
    """
    listed = {info.shard_id: info for info in shards}
    if shard is not None:
        if shard not in listed:
            known = ", ".join(sorted(listed)) or "none"
            raise SeekError(f"--shard {shard}: the stream has no such shard (shards: {known})")
        return {shard: Checkpoint(encode_position(target))}
    if target.type is IteratorType.AT_SEQUENCE_NUMBER:
        raise SeekError("--to AT_SEQUENCE_NUMBER needs --shard: a sequence number is a shard's")
    checkpoints: dict[str, Checkpoint] = {}
    for shard_id, info in sorted(listed.items()):
        if target.type is IteratorType.LATEST and info.closed:
            checkpoints[shard_id] = Checkpoint(None, finished=True)
        else:
            checkpoints[shard_id] = Checkpoint(encode_position(target))
    return checkpoints


async def plan_seek(
    api: StreamAPI, target: StartPosition, shard: str | None
) -> dict[str, Checkpoint]:
    """The checkpoints of a seek of `api`'s stream to `target`, checked against the stream:
    the shards it lists now, and for AT_SEQUENCE_NUMBER that the shard has that number.

    :raises SeekError: the seek cannot be done as asked.
    :raises SourceError: the stream could not be listed.
    """
    checkpoints = seek_checkpoints(target, await api.list_shards(), shard)
    if target.type is IteratorType.AT_SEQUENCE_NUMBER and shard is not None:
        try:
            await api.get_shard_iterator(shard, target)
        except SourceError as exc:
            raise SeekError(
                f"--to {describe_target(target)}: shard {shard} refuses it: {exc}"
            ) from None
    return checkpoints
