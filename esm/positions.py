"""The text of a seek position, as a checkpoint (or a lease's `esmStartingPosition`) keeps it:
`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP:<epoch seconds>` or `AT_SEQUENCE_NUMBER:<sequence>`.
Sequence numbers of Kinesis and DynamoDB Streams are all digits, so the two never look alike.
The engine reads it from a checkpoint, the leases from a lease.

A de-aggregated KPL user record's sequence, and a checkpoint inside a KPL container, is
`SEQUENCE:SUB` (`esm.sources.kpl`): the container's sequence number and the user record's
index in it."""

from __future__ import annotations

from esm.model import IteratorType, StartPosition

__all__ = ["container_sequence", "decode_position", "encode_position", "split_sub_sequence"]


def encode_position(position: StartPosition) -> str:
    """The checkpoint text of a seek position."""
    if position.type is IteratorType.AT_TIMESTAMP:
        return f"AT_TIMESTAMP:{position.timestamp!r}"
    if position.type is IteratorType.AT_SEQUENCE_NUMBER:
        return f"AT_SEQUENCE_NUMBER:{position.sequence}"
    return str(position.type.value)


def decode_position(stored: str | None) -> StartPosition | None:
    """The seek position a checkpoint holds; None for a sequence number (or nothing)."""
    if stored is None or stored.isdigit():
        return None
    kind, _, value = stored.partition(":")
    if kind in ("TRIM_HORIZON", "LATEST") and not value:
        return StartPosition(IteratorType(kind))
    if kind == "AT_TIMESTAMP":
        try:
            return StartPosition(IteratorType.AT_TIMESTAMP, timestamp=float(value))
        except ValueError:
            return None
    if kind == "AT_SEQUENCE_NUMBER" and value.isdigit():
        return StartPosition(IteratorType.AT_SEQUENCE_NUMBER, sequence=value)
    return None


def split_sub_sequence(sequence: str) -> tuple[str, int | None]:
    """(Kinesis sequence number, sub-sequence) of `SEQUENCE:SUB`; (sequence, None) for a
    plain sequence number."""
    container, colon, sub = sequence.partition(":")
    if colon and container.isdigit() and sub.isdigit():
        return container, int(sub)
    return sequence, None


def container_sequence(sequence: str) -> str:
    """The Kinesis sequence number of a record's sequence (a user record's container's)."""
    return split_sub_sequence(sequence)[0]
