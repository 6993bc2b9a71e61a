"""How each control packet's body reads, apart from CONNECT and PUBLISH (in `node.mqtt.codec`).

Each `decode_*` takes a `Reader` over the body (after the fixed header, whose
flags the caller checked) and the connection's version.
"""

from __future__ import annotations

from collections.abc import Callable

from node.mqtt.packets import (
    EMPTY_PROPERTIES,
    REASONS_ALLOWED,
    Auth,
    Connack,
    ConnectReturnCode,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Properties,
    ProtocolError,
    ProtocolVersion,
    Puback,
    Pubcomp,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    reason_from_connect_return_code,
)
from node.mqtt.primitives import Reader
from node.mqtt.properties import decode_properties

__all__ = ["DECODERS", "check_topic_name", "finish", "malformed", "protocol_error"]

_T = PacketType
_ACKS: dict[PacketType, type[Puback | Pubrec | Pubrel | Pubcomp]] = {
    _T.PUBACK: Puback,
    _T.PUBREC: Pubrec,
    _T.PUBREL: Pubrel,
    _T.PUBCOMP: Pubcomp,
}
_V311_SUBACK = {0: ReasonCode.GRANTED_QOS_0, 1: ReasonCode.GRANTED_QOS_1}
_V311_SUBACK |= {2: ReasonCode.GRANTED_QOS_2, 0x80: ReasonCode.UNSPECIFIED_ERROR}


def malformed(detail: str, packet_type: PacketType | None) -> ProtocolError:
    return ProtocolError(ReasonCode.MALFORMED_PACKET, detail, packet_type)


def protocol_error(detail: str, packet_type: PacketType | None) -> ProtocolError:
    return ProtocolError(ReasonCode.PROTOCOL_ERROR, detail, packet_type)


def check_topic_name(topic: str, what: str, packet_type: PacketType) -> None:
    if "+" in topic or "#" in topic:
        raise ProtocolError(
            ReasonCode.TOPIC_NAME_INVALID,
            f"{what} {topic!r} contains a wildcard ('+' and '#' belong in topic filters)",
            packet_type,
        )


def finish(reader: Reader) -> None:
    if reader.left:
        raise reader.error(
            f"{reader.left} unexpected bytes at the end of {reader.packet_type.name}"
        )


def _packet_id(reader: Reader) -> int:
    packet_id = reader.u16("packet identifier")
    if packet_id == 0:
        name = reader.packet_type.name
        raise protocol_error(f"packet identifier 0 in {name}", reader.packet_type)
    return packet_id


def _reason(reader: Reader) -> ReasonCode:
    code = reader.u8("reason code")
    packet_type = reader.packet_type
    if code not in REASONS_ALLOWED[packet_type]:
        raise reader.error(f"reason code 0x{code:02X} is not one {packet_type.name} may carry")
    return ReasonCode(code)


def _properties(reader: Reader, version: ProtocolVersion) -> Properties:
    if version == ProtocolVersion.V5:
        return decode_properties(reader, reader.packet_type)
    return EMPTY_PROPERTIES


def decode_connack(reader: Reader, version: ProtocolVersion) -> Connack:
    flags = reader.u8("acknowledge flags")
    if flags & 0xFE:
        raise reader.error(f"reserved acknowledge flag bits 0x{flags & 0xFE:02X} in CONNACK")
    if version == ProtocolVersion.V5:
        reason = _reason(reader)
        properties = decode_properties(reader, _T.CONNACK)
    else:
        code = reader.u8("return code")
        if code > ConnectReturnCode.NOT_AUTHORIZED:
            raise reader.error(f"CONNACK return code {code} is not one of MQTT 3.1.1's 0..5")
        reason = reason_from_connect_return_code(ConnectReturnCode(code))
        properties = EMPTY_PROPERTIES
    finish(reader)
    return Connack(bool(flags), reason, properties)


def decode_ack(reader: Reader, version: ProtocolVersion) -> Puback | Pubrec | Pubrel | Pubcomp:
    packet_type = reader.packet_type
    packet_id = _packet_id(reader)
    reason = ReasonCode.SUCCESS
    properties = EMPTY_PROPERTIES
    if version == ProtocolVersion.V5 and reader.left:
        reason = _reason(reader)
        if reader.left:
            properties = decode_properties(reader, packet_type)
    finish(reader)
    return _ACKS[packet_type](packet_id, reason, properties)


def decode_subscribe(reader: Reader, version: ProtocolVersion) -> Subscribe:
    packet_id = _packet_id(reader)
    properties = _properties(reader, version)
    subscriptions = []
    while reader.left:
        topic_filter = reader.string("topic filter")
        options = reader.u8("subscription options")
        reserved = 0xFC if version == ProtocolVersion.V3_1_1 else 0xC0
        if options & reserved:
            raise reader.error(
                f"reserved bits 0x{options & reserved:02X} set in the subscription options "
                f"of {topic_filter!r}"
            )
        if options & 3 == 3:
            raise reader.error(f"QoS 3 in SUBSCRIBE for {topic_filter!r}")
        if options & 0x30 == 0x30:
            raise protocol_error(
                f"retain handling 3 in SUBSCRIBE for {topic_filter!r}", _T.SUBSCRIBE
            )
        subscriptions.append(
            Subscription(
                topic_filter, options & 3, bool(options & 4), bool(options & 8), options >> 4
            )
        )
    if not subscriptions:
        raise protocol_error("SUBSCRIBE with no topic filter", _T.SUBSCRIBE)
    return Subscribe(packet_id, tuple(subscriptions), properties)


def decode_suback(reader: Reader, version: ProtocolVersion) -> Suback:
    packet_id = _packet_id(reader)
    properties = _properties(reader, version)
    reasons = []
    while reader.left:
        if version == ProtocolVersion.V5:
            reasons.append(_reason(reader))
            continue
        code = reader.u8("return code")
        if code not in _V311_SUBACK:
            raise reader.error(f"SUBACK return code 0x{code:02X} is not 0, 1, 2 or 0x80")
        reasons.append(_V311_SUBACK[code])
    if not reasons:
        raise reader.error("SUBACK with no return code")
    return Suback(packet_id, tuple(reasons), properties)


def decode_unsubscribe(reader: Reader, version: ProtocolVersion) -> Unsubscribe:
    packet_id = _packet_id(reader)
    properties = _properties(reader, version)
    topic_filters = []
    while reader.left:
        topic_filters.append(reader.string("topic filter"))
    if not topic_filters:
        raise protocol_error("UNSUBSCRIBE with no topic filter", _T.UNSUBSCRIBE)
    return Unsubscribe(packet_id, tuple(topic_filters), properties)


def decode_unsuback(reader: Reader, version: ProtocolVersion) -> Unsuback:
    packet_id = _packet_id(reader)
    if version == ProtocolVersion.V3_1_1:
        finish(reader)
        return Unsuback(packet_id)
    properties = decode_properties(reader, _T.UNSUBACK)
    reasons = []
    while reader.left:
        reasons.append(_reason(reader))
    if not reasons:
        raise reader.error("UNSUBACK with no reason code")
    return Unsuback(packet_id, tuple(reasons), properties)


def decode_ping(reader: Reader, version: ProtocolVersion) -> Pingreq | Pingresp:
    finish(reader)
    return Pingreq() if reader.packet_type is _T.PINGREQ else Pingresp()


def decode_disconnect_or_auth(reader: Reader, version: ProtocolVersion) -> Disconnect | Auth:
    packet_type = reader.packet_type
    reason = ReasonCode.SUCCESS
    properties = EMPTY_PROPERTIES
    if version == ProtocolVersion.V5 and reader.left:
        reason = _reason(reader)
        if reader.left:
            properties = decode_properties(reader, packet_type)
    finish(reader)
    if packet_type is _T.DISCONNECT:
        return Disconnect(reason, properties)
    return Auth(reason, properties)


DECODERS: dict[PacketType, Callable[[Reader, ProtocolVersion], Packet]] = {
    _T.CONNACK: decode_connack,
    _T.PUBACK: decode_ack,
    _T.PUBREC: decode_ack,
    _T.PUBREL: decode_ack,
    _T.PUBCOMP: decode_ack,
    _T.SUBSCRIBE: decode_subscribe,
    _T.SUBACK: decode_suback,
    _T.UNSUBSCRIBE: decode_unsubscribe,
    _T.UNSUBACK: decode_unsuback,
    _T.PINGREQ: decode_ping,
    _T.PINGRESP: decode_ping,
    _T.DISCONNECT: decode_disconnect_or_auth,
    _T.AUTH: decode_disconnect_or_auth,
}
