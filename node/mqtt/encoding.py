"""Packets to bytes, MQTT 3.1.1 or 5.0; `node.mqtt.codec.encode` is the public name.

The encoder trusts its caller (the node's session, or a test) as far as
meaning goes, but refuses with ValueError what would put invalid bytes on the
wire: a packet id 0 at QoS > 0, a reason the packet may not carry, a property
not allowed in the packet, a string with U+0000.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from node.mqtt.packets import (
    EMPTY_PROPERTIES,
    REASONS_ALLOWED,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Properties,
    ProtocolVersion,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    connect_return_code,
    suback_return_code,
)
from node.mqtt.primitives import encode_binary, encode_string, encode_varint
from node.mqtt.properties import WILL, encode_properties

__all__ = ["encode"]

_U16 = struct.Struct(">H")
_T = PacketType
_PINGREQ = b"\xc0\x00"
_PINGRESP = b"\xd0\x00"


def encode(packet: Packet, version: ProtocolVersion | int) -> bytes:
    """The bytes of `packet` for a connection speaking `version` (4: 3.1.1, 5: 5.0)."""
    if version not in (4, 5):
        raise ValueError(f"MQTT protocol level {version} is not 4 (3.1.1) or 5 (5.0)")
    try:
        encoder = _ENCODERS[type(packet)]
    except KeyError:
        raise TypeError(f"not an MQTT packet: {packet!r}") from None
    return encoder(packet, version == 5)


def _frame(first: int, parts: list[bytes]) -> bytes:
    size = sum(map(len, parts))
    return b"".join((bytes((first,)), encode_varint(size), *parts))


def _packet_id(packet_id: int | None, packet_type: PacketType) -> bytes:
    if packet_id is None or not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"{packet_type.name} packet identifier {packet_id} is not in 1..65535")
    return _U16.pack(packet_id)


def _reason(reason: ReasonCode, packet_type: PacketType) -> bytes:
    if reason not in REASONS_ALLOWED[packet_type]:
        raise ValueError(f"{packet_type.name} may not carry reason {reason!r}")
    return bytes((reason,))


def _qos(qos: int, what: str) -> int:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS {qos} in {what} is not 0, 1 or 2")
    return qos


def _publish(packet: Publish, v5: bool) -> bytes:
    qos = _qos(packet.qos, "PUBLISH")
    if packet.dup and not qos:
        raise ValueError("DUP set on a QoS 0 PUBLISH")
    parts = [encode_string(packet.topic)]
    if qos:
        parts.append(_packet_id(packet.packet_id, _T.PUBLISH))
    if v5:
        parts.append(encode_properties(packet.properties, _T.PUBLISH))
    parts.append(packet.payload)
    return _frame(0x30 | packet.dup << 3 | qos << 1 | packet.retain, parts)


def _connect(packet: Connect, v5: bool) -> bytes:
    if packet.protocol_level != (5 if v5 else 4):
        raise ValueError(f"CONNECT of protocol level {packet.protocol_level} encoded for another")
    will = packet.will
    flags = packet.clean_start << 1
    if will is not None:
        flags |= 0x04 | _qos(will.qos, "the will") << 3 | will.retain << 5
    if packet.password is not None:
        if packet.username is None and not v5:
            raise ValueError("an MQTT 3.1.1 CONNECT with a password needs a user name")
        flags |= 0x40
    if packet.username is not None:
        flags |= 0x80
    parts = [encode_string("MQTT"), bytes((packet.protocol_level, flags))]
    parts.append(_U16.pack(packet.keepalive))
    if v5:
        parts.append(encode_properties(packet.properties, _T.CONNECT))
    parts.append(encode_string(packet.client_id))
    if will is not None:
        if v5:
            parts.append(encode_properties(will.properties, WILL))
        parts += (encode_string(will.topic), encode_binary(will.payload))
    if packet.username is not None:
        parts.append(encode_string(packet.username))
    if packet.password is not None:
        parts.append(encode_binary(packet.password))
    return _frame(0x10, parts)


def _connack(packet: Connack, v5: bool) -> bytes:
    if packet.session_present and packet.reason != ReasonCode.SUCCESS:
        raise ValueError("session present on a refused CONNACK")
    if not v5:
        return bytes((0x20, 2, packet.session_present, connect_return_code(packet.reason)))
    parts = [bytes((packet.session_present,)), _reason(packet.reason, _T.CONNACK)]
    parts.append(encode_properties(packet.properties, _T.CONNACK))
    return _frame(0x20, parts)


def _tail(reason: ReasonCode, properties: Properties, packet_type: PacketType) -> list[bytes]:
    """A v5 reason and properties that may be left out when they are the defaults."""
    if properties is not EMPTY_PROPERTIES:
        return [_reason(reason, packet_type), encode_properties(properties, packet_type)]
    if reason != ReasonCode.SUCCESS:
        return [_reason(reason, packet_type)]
    return []


def _ack(packet: Puback | Pubrec | Pubrel | Pubcomp, v5: bool) -> bytes:
    packet_type, first = _ACK_TYPES[type(packet)]
    parts = [_packet_id(packet.packet_id, packet_type)]
    if v5:
        parts += _tail(packet.reason, packet.properties, packet_type)
    return _frame(first, parts)


_ACK_TYPES: dict[type, tuple[PacketType, int]] = {
    Puback: (_T.PUBACK, 0x40),
    Pubrec: (_T.PUBREC, 0x50),
    Pubrel: (_T.PUBREL, 0x62),
    Pubcomp: (_T.PUBCOMP, 0x70),
}


def _subscribe(packet: Subscribe, v5: bool) -> bytes:
    if not packet.subscriptions:
        raise ValueError("SUBSCRIBE with no topic filter")
    parts = [_packet_id(packet.packet_id, _T.SUBSCRIBE)]
    if v5:
        parts.append(encode_properties(packet.properties, _T.SUBSCRIBE))
    for sub in packet.subscriptions:
        options = _qos(sub.qos, f"the subscription to {sub.topic_filter!r}")
        if v5:
            if sub.retain_handling not in (0, 1, 2):
                raise ValueError(f"retain handling {sub.retain_handling} is not 0, 1 or 2")
            options |= sub.no_local << 2 | sub.retain_as_published << 3 | sub.retain_handling << 4
        parts += (encode_string(sub.topic_filter), bytes((options,)))
    return _frame(0x82, parts)


def _suback(packet: Suback, v5: bool) -> bytes:
    parts = [_packet_id(packet.packet_id, _T.SUBACK)]
    if v5:
        parts.append(encode_properties(packet.properties, _T.SUBACK))
        parts += (_reason(reason, _T.SUBACK) for reason in packet.reasons)
    else:
        parts.append(bytes(suback_return_code(reason) for reason in packet.reasons))
    return _frame(0x90, parts)


def _unsubscribe(packet: Unsubscribe, v5: bool) -> bytes:
    if not packet.topic_filters:
        raise ValueError("UNSUBSCRIBE with no topic filter")
    parts = [_packet_id(packet.packet_id, _T.UNSUBSCRIBE)]
    if v5:
        parts.append(encode_properties(packet.properties, _T.UNSUBSCRIBE))
    parts += (encode_string(topic_filter) for topic_filter in packet.topic_filters)
    return _frame(0xA2, parts)


def _unsuback(packet: Unsuback, v5: bool) -> bytes:
    parts = [_packet_id(packet.packet_id, _T.UNSUBACK)]
    if v5:
        if not packet.reasons:
            raise ValueError("an MQTT 5 UNSUBACK needs one reason per topic filter")
        parts.append(encode_properties(packet.properties, _T.UNSUBACK))
        parts += (_reason(reason, _T.UNSUBACK) for reason in packet.reasons)
    return _frame(0xB0, parts)


def _pingreq(packet: Pingreq, v5: bool) -> bytes:
    return _PINGREQ


def _pingresp(packet: Pingresp, v5: bool) -> bytes:
    return _PINGRESP


def _disconnect(packet: Disconnect, v5: bool) -> bytes:
    if not v5:
        return b"\xe0\x00"
    return _frame(0xE0, _tail(packet.reason, packet.properties, _T.DISCONNECT))


def _auth(packet: Auth, v5: bool) -> bytes:
    if not v5:
        raise ValueError("AUTH exists in MQTT 5 only")
    return _frame(0xF0, _tail(packet.reason, packet.properties, _T.AUTH))


_ENCODERS: dict[type, Callable[[Any, bool], bytes]] = {
    Publish: _publish,
    Connect: _connect,
    Connack: _connack,
    Puback: _ack,
    Pubrec: _ack,
    Pubrel: _ack,
    Pubcomp: _ack,
    Subscribe: _subscribe,
    Suback: _suback,
    Unsubscribe: _unsubscribe,
    Unsuback: _unsuback,
    Pingreq: _pingreq,
    Pingresp: _pingresp,
    Disconnect: _disconnect,
    Auth: _auth,
}
