"""A PublishRequest the protobuf runtime refused, taken apart event by event.

proto3 strings must be valid UTF-8, so one event with a bad topic or header
makes the whole request fail to parse. The node then splits the request's
bytes into its top-level fields (events, flush, producer, sequences, keys) and
parses each event alone: the events that parse are published, each one that
does not is refused alone with a message naming its index and field.

Sans-IO: bytes in, parts out. Only the slow path after a failed parse comes
here; a request that parses never does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from plexus.v1 import plexus_pb2 as pb

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# PublishRequest's fields.
_EVENTS, _FLUSH, _PRODUCER, _SEQUENCES, _KEYS = 1, 2, 3, 4, 5
# The Event fields that hold text, by number (headers are a map<string, string>).
_HEADERS = pb.Event.DESCRIPTOR.fields_by_name["headers"].number
_TEXT_FIELDS = {
    f.number: f.name
    for f in pb.Event.DESCRIPTOR.fields
    if f.type == FieldDescriptor.TYPE_STRING  # type: ignore[attr-defined]
}


class Malformed(Exception):
    """Bytes that are not a protobuf message at all (truncated, bad wire type)."""


@dataclass(slots=True)
class PublishParts:
    """A request's parts: each event parsed, or the reason it was not (one per event)."""

    events: list[pb.Event | str] = field(default_factory=list)
    flush: bool = False
    producer: bytes = b""
    sequences: list[int] = field(default_factory=list)
    # None where the key was not valid UTF-8.
    keys: list[str | None] = field(default_factory=list)
    # Set when the bytes are not a message at all: the whole request is refused.
    malformed: str = ""

    def problem(self, offset: int) -> str | None:
        """Why the event at `offset` cannot be published (None: it can)."""
        event = self.events[offset]
        if isinstance(event, str):
            return event
        if self.keys and offset < len(self.keys) and self.keys[offset] is None:
            return "key is not valid UTF-8"
        return None

    def request(self, start: int, stop: int) -> pb.PublishRequest:
        """The request of the events in [start, stop), all of which parsed."""
        events = self.events[start:stop]
        request = pb.PublishRequest(events=events, producer=self.producer)  # type: ignore[arg-type]
        if self.sequences:
            request.sequences.extend(self.sequences[start:stop])
        if self.keys:
            request.keys.extend(k or "" for k in self.keys[start:stop])
        return request


def split_request(raw: bytes) -> PublishParts:
    """`raw`, a PublishRequest the runtime refused, as parts; Malformed if not a message."""
    parts = PublishParts()
    for number, wire_type, value in _fields(raw):
        if number == _EVENTS and wire_type == _LEN:
            assert isinstance(value, bytes)
            parts.events.append(_event(value))
        elif number == _FLUSH and wire_type == _VARINT:
            parts.flush = bool(value)
        elif number == _PRODUCER and wire_type == _LEN:
            assert isinstance(value, bytes)
            parts.producer = value
        elif number == _SEQUENCES and wire_type == _VARINT:
            assert isinstance(value, int)
            parts.sequences.append(value & 0xFFFF_FFFF_FFFF_FFFF)
        elif number == _SEQUENCES and wire_type == _LEN:
            assert isinstance(value, bytes)
            parts.sequences.extend(_packed_varints(value))
        elif number == _KEYS and wire_type == _LEN:
            assert isinstance(value, bytes)
            parts.keys.append(_text(value))
    return parts


def _event(raw: bytes) -> pb.Event | str:
    try:
        return pb.Event.FromString(raw)
    except DecodeError as exc:
        return event_problem(raw) or f"malformed event: {exc}"


def event_problem(raw: bytes) -> str | None:
    """The first text field of an encoded Event that is not valid UTF-8, said as such."""
    try:
        for number, wire_type, value in _fields(raw):
            if wire_type != _LEN:
                continue
            assert isinstance(value, bytes)
            if number == _HEADERS:
                problem = _header_problem(value)
                if problem:
                    return problem
            elif number in _TEXT_FIELDS and _text(value) is None:
                return f"{_TEXT_FIELDS[number]} is not valid UTF-8"
    except Malformed as exc:
        return f"malformed event: {exc}"
    return None


def _header_problem(entry: bytes) -> str | None:
    key: str | None = ""
    for number, wire_type, value in _fields(entry):
        if wire_type != _LEN:
            continue
        assert isinstance(value, bytes)
        if number == 1:
            key = _text(value)
            if key is None:
                return "a header name is not valid UTF-8"
        elif number == 2 and _text(value) is None:
            return f"header {key!r} has a value that is not valid UTF-8"
    return None


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def _varint(raw: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(raw):
            raise Malformed("truncated varint")
        byte = raw[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift >= 70:
            raise Malformed("varint longer than 10 bytes")


def _packed_varints(raw: bytes) -> list[int]:
    values, at = [], 0
    while at < len(raw):
        value, at = _varint(raw, at)
        values.append(value & 0xFFFF_FFFF_FFFF_FFFF)
    return values


def _fields(raw: bytes) -> list[tuple[int, int, int | bytes]]:
    """The top-level fields of an encoded message: (number, wire type, int or bytes)."""
    found: list[tuple[int, int, int | bytes]] = []
    at = 0
    while at < len(raw):
        tag, at = _varint(raw, at)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise Malformed("field number 0")
        if wire_type == _VARINT:
            value, at = _varint(raw, at)
            found.append((number, wire_type, value))
        elif wire_type == _LEN:
            length, at = _varint(raw, at)
            if at + length > len(raw):
                raise Malformed(f"field {number} runs past the end")
            found.append((number, wire_type, raw[at : at + length]))
            at += length
        elif wire_type in (_I64, _I32):
            size = 8 if wire_type == _I64 else 4
            if at + size > len(raw):
                raise Malformed(f"field {number} runs past the end")
            found.append((number, wire_type, raw[at : at + size]))
            at += size
        else:
            raise Malformed(f"field {number} has wire type {wire_type}")
    return found
