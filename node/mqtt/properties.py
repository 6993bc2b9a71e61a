"""MQTT 5 properties on the wire (section 2.2.2): which exist, where each may go, their bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Any, NamedTuple

from node.mqtt.packets import EMPTY_PROPERTIES, PacketType, Properties, ProtocolError, ReasonCode
from node.mqtt.primitives import (
    Reader,
    encode_binary,
    encode_string,
    encode_varint,
)

__all__ = ["WILL", "decode_properties", "encode_properties"]

# Properties of the will message in CONNECT: a place of their own, not a packet type.
WILL = 0

_P = PacketType
_PUBLISH_LIKE = frozenset({_P.PUBLISH, WILL})
_ACKS = frozenset(
    {_P.CONNACK, _P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP, _P.SUBACK, _P.UNSUBACK}
    | {_P.DISCONNECT, _P.AUTH}
)
_EVERYWHERE = frozenset(PacketType) | {WILL}


class _Kind(IntEnum):
    BYTE = 1
    TWO = 2
    FOUR = 4
    VARINT = 5
    STRING = 6
    BINARY = 7
    PAIR = 8


class _Spec(NamedTuple):
    name: str
    kind: _Kind
    places: frozenset[int]
    # Allowed values of a BYTE or number property when restricted, else None.
    check: Callable[[int], bool] | None = None


def _flag(value: int) -> bool:
    return value in (0, 1)


def _positive(value: int) -> bool:
    return value > 0


_SPECS: dict[int, _Spec] = {
    0x01: _Spec("payload_format_indicator", _Kind.BYTE, _PUBLISH_LIKE, _flag),
    0x02: _Spec("message_expiry_interval", _Kind.FOUR, _PUBLISH_LIKE),
    0x03: _Spec("content_type", _Kind.STRING, _PUBLISH_LIKE),
    0x08: _Spec("response_topic", _Kind.STRING, _PUBLISH_LIKE),
    0x09: _Spec("correlation_data", _Kind.BINARY, _PUBLISH_LIKE),
    0x0B: _Spec(
        "subscription_identifiers",
        _Kind.VARINT,
        frozenset({_P.PUBLISH, _P.SUBSCRIBE}),
        _positive,
    ),
    0x11: _Spec(
        "session_expiry_interval",
        _Kind.FOUR,
        frozenset({_P.CONNECT, _P.CONNACK, _P.DISCONNECT}),
    ),
    0x12: _Spec("assigned_client_identifier", _Kind.STRING, frozenset({_P.CONNACK})),
    0x13: _Spec("server_keep_alive", _Kind.TWO, frozenset({_P.CONNACK})),
    0x15: _Spec(
        "authentication_method",
        _Kind.STRING,
        frozenset({_P.CONNECT, _P.CONNACK, _P.AUTH}),
    ),
    0x16: _Spec(
        "authentication_data",
        _Kind.BINARY,
        frozenset({_P.CONNECT, _P.CONNACK, _P.AUTH}),
    ),
    0x17: _Spec("request_problem_information", _Kind.BYTE, frozenset({_P.CONNECT}), _flag),
    0x18: _Spec("will_delay_interval", _Kind.FOUR, frozenset({WILL})),
    0x19: _Spec("request_response_information", _Kind.BYTE, frozenset({_P.CONNECT}), _flag),
    0x1A: _Spec("response_information", _Kind.STRING, frozenset({_P.CONNACK})),
    0x1C: _Spec("server_reference", _Kind.STRING, frozenset({_P.CONNACK, _P.DISCONNECT})),
    0x1F: _Spec("reason_string", _Kind.STRING, _ACKS),
    0x21: _Spec("receive_maximum", _Kind.TWO, frozenset({_P.CONNECT, _P.CONNACK}), _positive),
    0x22: _Spec("topic_alias_maximum", _Kind.TWO, frozenset({_P.CONNECT, _P.CONNACK})),
    0x23: _Spec("topic_alias", _Kind.TWO, frozenset({_P.PUBLISH}), _positive),
    0x24: _Spec("maximum_qos", _Kind.BYTE, frozenset({_P.CONNACK}), _flag),
    0x25: _Spec("retain_available", _Kind.BYTE, frozenset({_P.CONNACK}), _flag),
    0x26: _Spec("user_properties", _Kind.PAIR, _EVERYWHERE),
    0x27: _Spec("maximum_packet_size", _Kind.FOUR, frozenset({_P.CONNECT, _P.CONNACK}), _positive),
    0x28: _Spec("wildcard_subscription_available", _Kind.BYTE, frozenset({_P.CONNACK}), _flag),
    0x29: _Spec("subscription_identifier_available", _Kind.BYTE, frozenset({_P.CONNACK}), _flag),
    0x2A: _Spec("shared_subscription_available", _Kind.BYTE, frozenset({_P.CONNACK}), _flag),
}
_ID_OF_NAME = {spec.name: ident for ident, spec in _SPECS.items()}
# Written in identifier order, so that equal properties encode to equal bytes.
_WRITE_ORDER = sorted(_ID_OF_NAME.items(), key=lambda item: item[1])
_MAX_SUBSCRIPTION_IDENTIFIER = 268_435_455
_LIMITS = {_Kind.BYTE: 0xFF, _Kind.TWO: 0xFFFF, _Kind.FOUR: 0xFFFF_FFFF}


def _place_name(place: int) -> str:
    return "the will" if place == WILL else PacketType(place).name


def decode_properties(reader: Reader, place: int) -> Properties:
    """Read the property length and the properties of a packet (or of the will) at `place`."""
    length = reader.varint("property length")
    if length == 0:
        return EMPTY_PROPERTIES
    end = reader.pos + length
    if end > reader.end:
        raise reader.error(f"property length {length} runs past the end of the packet")
    where = _place_name(place)
    values: dict[str, Any] = {}
    identifiers: list[int] = []
    pairs: list[tuple[str, str]] = []
    while reader.pos < end:
        ident = reader.varint("property identifier")
        spec = _SPECS.get(ident)
        if spec is None:
            raise reader.error(f"unknown property identifier 0x{ident:02X}")
        if place not in spec.places:
            raise reader.error(f"property {spec.name} is not allowed in {where}")
        value = _read_value(reader, spec)
        if spec.check is not None and not spec.check(value):
            raise ProtocolError(
                ReasonCode.PROTOCOL_ERROR,
                f"property {spec.name} = {value} is not allowed in {where}",
                reader.packet_type,
            )
        if spec.kind is _Kind.PAIR:
            pairs.append(value)
        elif ident == 0x0B:
            identifiers.append(value)
        elif spec.name in values:
            raise ProtocolError(
                ReasonCode.PROTOCOL_ERROR,
                f"property {spec.name} twice in {where}",
                reader.packet_type,
            )
        else:
            values[spec.name] = value
    if reader.pos != end:
        raise reader.error("the last property runs past the property length")
    if identifiers:
        if place != PacketType.PUBLISH and len(identifiers) > 1:
            raise ProtocolError(
                ReasonCode.PROTOCOL_ERROR,
                f"property subscription_identifiers twice in {where}",
                reader.packet_type,
            )
        values["subscription_identifiers"] = tuple(identifiers)
    if pairs:
        values["user_properties"] = tuple(pairs)
    return Properties(**values)


def _read_value(reader: Reader, spec: _Spec) -> Any:
    kind = spec.kind
    what = f"property {spec.name}"
    if kind is _Kind.BYTE:
        return reader.u8(what)
    if kind is _Kind.TWO:
        return reader.u16(what)
    if kind is _Kind.FOUR:
        return reader.u32(what)
    if kind is _Kind.VARINT:
        return reader.varint(what)
    if kind is _Kind.STRING:
        return reader.string(what)
    if kind is _Kind.BINARY:
        return reader.binary(what)
    return (reader.string(f"{what} name"), reader.string(f"{what} value"))


def encode_properties(properties: Properties, place: int) -> bytes:
    """The property length and properties; ValueError for one not allowed at `place`."""
    if properties is EMPTY_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for name, ident in _WRITE_ORDER:
        value = getattr(properties, name)
        if value is None or value == ():
            continue
        spec = _SPECS[ident]
        if place not in spec.places:
            raise ValueError(f"property {name} is not allowed in {_place_name(place)}")
        if spec.kind is _Kind.PAIR:
            for key, text in value:
                parts.append(b"\x26" + encode_string(key) + encode_string(text))
        elif ident == 0x0B:
            for number in value:
                if not 0 < number <= _MAX_SUBSCRIPTION_IDENTIFIER:
                    raise ValueError(f"subscription identifier {number} out of 1..268435455")
                parts.append(b"\x0b" + encode_varint(number))
        else:
            parts.append(bytes((ident,)) + _write_value(spec, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def _write_value(spec: _Spec, value: Any) -> bytes:
    kind = spec.kind
    if kind is _Kind.STRING:
        return encode_string(value)
    if kind is _Kind.BINARY:
        return encode_binary(value)
    if not 0 <= value <= _LIMITS[kind]:
        raise ValueError(f"property {spec.name} = {value} does not fit {kind.value} byte(s)")
    if kind is _Kind.BYTE:
        return bytes((value,))
    return struct.pack(">H" if kind is _Kind.TWO else ">I", value)
