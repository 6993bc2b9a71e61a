"""Encode an event once, fan out the bytes.

Protobuf lets a message be built by concatenation: repeated fields append and
a scalar field seen twice keeps the last value. So the node serializes each
event once, adds the node-set fields (id, publish time, origin) as raw bytes,
and builds every outgoing `EventBatch` by joining pre-framed events; per
delivery fields (delivery count, tag, queue, discards) are appended the same
way. No event is decoded or re-encoded per subscriber.

Field numbers are those of plexus.v1.Event; a test checks these bytes against
the protobuf runtime.
"""

from __future__ import annotations

_TAG_ID = b"\x50"  # field 10, varint
_TAG_PUBLISH_TIME = b"\x58"  # field 11, varint
_TAG_ORIGIN = b"\x62"  # field 12, length-delimited
_TAG_DELIVERY_COUNT = b"\xa0\x01"  # field 20, varint
_REDELIVERED = b"\xa8\x01\x01"  # field 21 = true
_NOT_REDELIVERED = b"\xa8\x01\x00"  # field 21 = false, overriding a client's true
_TAG_DISCARDED = b"\xb0\x01"  # field 22, varint
_TAG_DELIVERY_TAG = b"\xb8\x01"  # field 23, varint
_TAG_QUEUE = b"\xc2\x01"  # field 24, length-delimited
_TAG_BATCH_EVENT = b"\x0a"  # EventBatch.events, field 1
_TAG_CONSUME_EVENTS = b"\x12"  # ConsumeResponse.events, field 2


def varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def origin_fields(publish_time_ms: int, origin_region: str) -> bytes:
    """The fields a node sets on every event of one publish batch."""
    region = origin_region.encode()
    return _TAG_PUBLISH_TIME + varint(publish_time_ms) + _TAG_ORIGIN + varint(len(region)) + region


def id_field(event_id: int) -> bytes:
    return _TAG_ID + varint(event_id)


def frame(body: bytes) -> bytes:
    """An encoded event framed as one element of `EventBatch.events`."""
    return _TAG_BATCH_EVENT + varint(len(body)) + body


def with_discards(body: bytes, discarded: int) -> bytes:
    return body + _TAG_DISCARDED + varint(discarded)


def queue_delivery(
    body: bytes, queue_field: bytes, delivery_tag: int, delivery_count: int, redelivered: bool
) -> bytes:
    """A stored event framed for one delivery from a queue."""
    extra = (
        queue_field
        + _TAG_DELIVERY_TAG
        + varint(delivery_tag)
        + _TAG_DELIVERY_COUNT
        + varint(delivery_count)
    )
    extra += _REDELIVERED if redelivered else _NOT_REDELIVERED
    return frame(body + extra)


def queue_field(name: str) -> bytes:
    raw = name.encode()
    return _TAG_QUEUE + varint(len(raw)) + raw


def consume_events(frames: list[bytes]) -> bytes:
    """A `ConsumeResponse` carrying framed events."""
    batch = b"".join(frames)
    return _TAG_CONSUME_EVENTS + varint(len(batch)) + batch
