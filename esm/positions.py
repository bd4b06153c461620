"""The text of a seek position, as a checkpoint (or a lease's `esmStartingPosition`) keeps it:
`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP:<epoch seconds>` or `AT_SEQUENCE_NUMBER:<sequence>`.
Sequence numbers of Kinesis and DynamoDB Streams are all digits, so the two never look alike.
The engine reads it from a checkpoint, the leases from a lease."""

from __future__ import annotations

from esm.model import IteratorType, StartPosition

__all__ = ["decode_position", "encode_position"]


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
