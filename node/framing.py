"""Encode an event once, fan out the bytes.

Protobuf lets a message be built by concatenation: repeated fields append and
a scalar field seen twice keeps the last value. So the node serializes each
event once (or a whole stamped publish request, which is already an
`EventBatch` on the wire), builds every outgoing batch by joining framed
events, and appends per-delivery fields (delivery count, tag, queue, discards)
as raw bytes. No event is decoded or re-encoded per subscriber.

Field numbers are those of plexus.v1.Event; a test checks these bytes against
the protobuf runtime.
"""

from __future__ import annotations

from typing import Protocol

from google.protobuf.message import DecodeError

from plexus.v1 import plexus_pb2 as pb
from plexus.wire import varint

_TAG_DELIVERY_COUNT = b"\xa0\x01"  # field 20, varint
_REDELIVERED = b"\xa8\x01\x01"  # field 21 = true
_NOT_REDELIVERED = b"\xa8\x01\x00"  # field 21 = false, overriding a client's true
_TAG_DISCARDED = b"\xb0\x01"  # field 22, varint
_TAG_DELIVERY_TAG = b"\xb8\x01"  # field 23, varint
_TAG_QUEUE = b"\xc2\x01"  # field 24, length-delimited
_FIRST_DELIVERY = _TAG_DELIVERY_COUNT + b"\x01" + _NOT_REDELIVERED
# The fields only a node sets on delivery. Their wire tags are two bytes each,
# the second always 0x01: these are the first bytes.
DELIVERY_FIELDS = ("delivery_count", "redelivered", "discarded_before", "delivery_tag", "queue")
_DELIVERY_TAG_FIRST = frozenset((0xA0, 0xA8, 0xB0, 0xB8, 0xC2))
_MODE_TAG = 0x20  # Event.mode; 0x20 0x01 is mode = GUARANTEED
_TAG_BATCH_EVENT = b"\x0a"  # EventBatch.events, field 1
_TAG_CONSUME_EVENTS = b"\x12"  # ConsumeResponse.events, field 2


def scan_request(raw: bytes) -> tuple[bool, bool]:
    """(may hold guaranteed events, may hold delivery fields) of an encoded PublishRequest.

    Exact where it matters: True whenever the protobuf runtime parses `raw`
    into an event with mode GUARANTEED, or with a delivery field set, however
    those fields are encoded. False positives are allowed (a payload can look
    like a tell-tale): the caller then checks event by event.

    Canonical encodings (what every SDK writes) are scanned directly. An
    encoding that could hide a field from that scan (a non-minimal tag, a mode
    varint longer than one byte) leaves a byte pattern of its own; such a
    request is first re-encoded canonically by the runtime, then scanned.
    """
    if _may_hide_fields(raw):
        try:
            # As the runtime re-encodes what it parses: canonical, while
            # unknown fields keep their bytes (which can only add false positives).
            raw = pb.PublishRequest.FromString(raw).SerializeToString()
        except DecodeError:  # not a request the node would accept
            return True, True
    return _scan_canonical(raw)


def _scan_canonical(raw: bytes) -> tuple[bool, bool]:
    """`scan_request` of a canonical encoding, where each tell-tale ends in byte 0x01.

    In canonical form, mode = GUARANTEED is exactly 0x20 0x01 and every
    delivery field starts with a two-byte tag whose second byte is 0x01:
    memchr finds those bytes fast and only those places are looked at.
    """
    guaranteed = forged = False
    at = raw.find(b"\x01", 1)
    while at != -1:
        before = raw[at - 1]
        if before == _MODE_TAG:
            guaranteed = True
        elif before in _DELIVERY_TAG_FIRST:
            forged = True
            if guaranteed:
                break
        at = raw.find(b"\x01", at + 1)
    return guaranteed, forged


# What a field hidden from `_scan_canonical` must show, whatever its encoding:
# - mode = GUARANTEED in a longer varint (non-minimal, or over 32 bits, which
#   the runtime truncates): bits 1-31 are zero, so 0x20 0x81 then 0x80 or 0x00;
# - a non-minimal mode tag (32): 0xA0 then 0x80 or 0x00;
# - a non-minimal delivery-field tag (160-194): its first byte, 0x81, then 0x80
#   or 0x00.
# Other wire types for these fields parse as unknown fields and tags over 32
# bits are rejected. Everything else about an encoding (repeated, reordered or
# unknown fields, non-minimal lengths or other values) leaves these bytes as
# they are in canonical form.
_BEFORE_0X81 = _DELIVERY_TAG_FIRST | {_MODE_TAG}
_ZERO_GROUP = (b"\x80", b"\x00")  # a varint's next 7 bits are zero
# Past this many bytes that merely look like the start of a pattern above
# (binary or non-Latin payloads), re-encoding is cheaper than looking further.
_SUSPECT_BYTES_MAX = 16


def _may_hide_fields(raw: bytes) -> bool:
    find = raw.find
    seen = 0
    at = find(b"\x81", 1)
    while at != -1:
        if raw[at - 1] in _BEFORE_0X81 and raw[at + 1 : at + 2] in _ZERO_GROUP:
            return True
        seen += 1
        if seen > _SUSPECT_BYTES_MAX:
            return True
        at = find(b"\x81", at + 1)
    at = find(b"\xa0")
    while at != -1:
        if raw[at + 1 : at + 2] in _ZERO_GROUP:
            return True
        seen += 1
        if seen > _SUSPECT_BYTES_MAX:
            return True
        at = find(b"\xa0", at + 1)
    return False


def unframe(framed: bytes) -> bytes:
    """The event inside a frame made by `frame`."""
    start = 2
    while framed[start - 1] & 0x80:
        start += 1
    return framed[start:]


def frame(body: bytes) -> bytes:
    """An encoded event framed as one element of `EventBatch.events`."""
    return _TAG_BATCH_EVENT + varint(len(body)) + body


def with_discards(body: bytes, discarded: int) -> bytes:
    return body + _TAG_DISCARDED + varint(discarded)


class Delivered(Protocol):
    """What framing reads of a queue entry being delivered (node.delivery.Entry)."""

    seq: int
    delivery_count: int
    redelivered: bool
    data: bytes


def queue_deliveries(entries: list[Delivered], queue_field: bytes) -> list[bytes]:
    """Stored events framed for one delivery each from a queue (an entry's seq is its
    delivery tag); a first delivery's fields end in one constant."""
    head = queue_field + _TAG_DELIVERY_TAG
    frames = []
    for entry in entries:
        if entry.delivery_count == 1 and not entry.redelivered:
            extra = head + varint(entry.seq) + _FIRST_DELIVERY
        else:
            extra = head + varint(entry.seq) + _TAG_DELIVERY_COUNT + varint(entry.delivery_count)
            extra += _REDELIVERED if entry.redelivered else _NOT_REDELIVERED
        body = entry.data
        frames.append(_TAG_BATCH_EVENT + varint(len(body) + len(extra)) + body + extra)
    return frames


def queue_field(name: str) -> bytes:
    raw = name.encode()
    return _TAG_QUEUE + varint(len(raw)) + raw


def consume_events(frames: list[bytes]) -> bytes:
    """A `ConsumeResponse` carrying framed events."""
    batch = b"".join(frames)
    return _TAG_CONSUME_EVENTS + varint(len(batch)) + batch
