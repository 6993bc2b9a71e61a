"""A sans-IO MQTT 3.1.1 and 5.0 codec: bytes in, packets out, and back (`encode`).

`Decoder` reads one connection's byte stream, split anywhere, and returns
whole packets. On the server side (the default) it takes the protocol
version from the CONNECT that must come first; a client-side decoder is told
the version. Everything a broker must refuse raises `ProtocolError` with the
v5 reason to give and a message naming what was wrong. What depends on the
session rather than on the bytes (client id rules, topic filter syntax, topic
alias ranges, receive maximum) is the session's to check.
"""

from __future__ import annotations

import struct

from node.mqtt.decoding import DECODERS, check_topic_name, finish, malformed, protocol_error
from node.mqtt.encoding import encode
from node.mqtt.packets import (
    EMPTY_PROPERTIES,
    Connect,
    Packet,
    PacketType,
    ProtocolError,
    ProtocolVersion,
    Publish,
    ReasonCode,
    Will,
)
from node.mqtt.primitives import Reader
from node.mqtt.properties import WILL, decode_properties

__all__ = ["DEFAULT_MAX_PACKET_BYTES", "Decoder", "encode"]

# A peer announcing a bigger packet is refused before its body is read.
DEFAULT_MAX_PACKET_BYTES = 1 << 20

_T = PacketType
_FROM_CLIENT = frozenset(
    {_T.CONNECT, _T.PUBLISH, _T.PUBACK, _T.PUBREC, _T.PUBREL, _T.PUBCOMP, _T.SUBSCRIBE}
    | {_T.UNSUBSCRIBE, _T.PINGREQ, _T.DISCONNECT, _T.AUTH}
)
_FROM_SERVER = frozenset(
    {_T.CONNACK, _T.PUBLISH, _T.PUBACK, _T.PUBREC, _T.PUBREL, _T.PUBCOMP, _T.SUBACK}
    | {_T.UNSUBACK, _T.PINGRESP, _T.DISCONNECT, _T.AUTH}
)
# The fixed header's low nibble, where the spec fixes it (all but PUBLISH).
_FLAGS = {_T.PUBREL: 0x2, _T.SUBSCRIBE: 0x2, _T.UNSUBSCRIBE: 0x2}
_U16 = struct.Struct(">H")
_PUBLISH = PacketType.PUBLISH


class Decoder:
    """Splits one connection's bytes into packets; see the module docstring.

    After a `ProtocolError` the connection must close: the decoder keeps no
    usable state. `max_packet_size` (bytes, the whole packet) may be changed
    between feeds.
    """

    __slots__ = ("_buffer", "_from_peer", "_server", "_version", "max_packet_size")

    def __init__(
        self,
        *,
        server: bool = True,
        version: ProtocolVersion | None = None,
        max_packet_size: int = DEFAULT_MAX_PACKET_BYTES,
    ) -> None:
        if not server and version is None:
            raise ValueError("a client-side Decoder needs the version it sent in CONNECT")
        self._server = server
        self._version = version
        self._from_peer = _FROM_CLIENT if server else _FROM_SERVER
        self._buffer = bytearray()
        self.max_packet_size = max_packet_size

    @property
    def version(self) -> ProtocolVersion | None:
        """The connection's protocol version; None until a server has read CONNECT."""
        return self._version

    @property
    def buffered(self) -> int:
        """Bytes held of a packet not yet whole."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        """The packets `data` completes, in order; raises `ProtocolError` (with `.packets`)."""
        buffer = self._buffer
        if buffer:
            buffer += data
            source: bytes | bytearray = buffer
        else:
            source = data
        packets: list[Packet] = []
        try:
            with memoryview(source) as view:
                used = self._split(view, packets)
        except ProtocolError as exc:
            exc.packets = packets
            self._buffer = bytearray()
            raise
        if source is buffer:
            del buffer[:used]
        elif used < len(data):
            buffer += data[used:]
        return packets

    def _split(self, view: memoryview, packets: list[Packet]) -> int:
        """Decode the whole packets at the start of `view`; the number of bytes they took."""
        pos = 0
        size = len(view)
        while size - pos >= 2:
            length = view[pos + 1]
            header = 2
            if length >= 0x80:
                # The remaining length's further bytes (2 to 4), each 7 bits.
                length &= 0x7F
                for index in (2, 3, 4):
                    if pos + index >= size:
                        return pos
                    byte = view[pos + index]
                    length |= (byte & 0x7F) << (7 * (index - 1))
                    if byte < 0x80:
                        header = index + 1
                        break
                else:
                    raise malformed("remaining length varint longer than 4 bytes", None)
            total = header + length
            if total > self.max_packet_size:
                first = view[pos] >> 4
                name = PacketType(first).name if first else f"packet type {first}"
                raise ProtocolError(
                    ReasonCode.PACKET_TOO_LARGE,
                    f"{name} of {total} bytes is larger than the maximum packet size "
                    f"{self.max_packet_size}",
                )
            if pos + total > size:
                return pos
            packets.append(self._decode(view[pos], view[pos + header : pos + total]))
            pos += total
        return pos

    def _decode(self, first: int, body: memoryview) -> Packet:
        kind = first >> 4
        version = self._version
        if kind == 3 and version is not None:
            return self._publish(first & 0x0F, body, version)
        if kind == 0 or (kind == 15 and version == ProtocolVersion.V3_1_1):
            raise malformed(f"reserved packet type {kind}", None)
        packet_type = PacketType(kind)
        if version is None and packet_type is not _T.CONNECT:
            raise protocol_error(
                f"the first packet must be CONNECT, got {packet_type.name}", packet_type
            )
        if packet_type not in self._from_peer:
            sender = "client" if self._server else "server"
            raise protocol_error(f"{packet_type.name} may not come from a {sender}", packet_type)
        flags = first & 0x0F
        expected = _FLAGS.get(packet_type, 0)
        if flags != expected:
            raise malformed(
                f"reserved flag bits 0x{flags:X} in {packet_type.name} must be 0x{expected:X}",
                packet_type,
            )
        if packet_type is _T.CONNECT:
            if version is not None:
                raise protocol_error("a second CONNECT on the same connection", packet_type)
            return self._connect(body)
        assert version is not None
        return DECODERS[packet_type](Reader(body, packet_type), version)

    # -- one method per packet type ----------------------------------------

    def _publish(self, flags: int, body: memoryview, version: ProtocolVersion) -> Publish:
        # The hot path: struct and slices, no Reader, no per-byte loop.
        qos = (flags >> 1) & 3
        if qos == 3:
            raise malformed("QoS 3 in PUBLISH", _PUBLISH)
        if qos == 0 and flags & 0x8:
            raise malformed("DUP flag set on a QoS 0 PUBLISH", _PUBLISH)
        end = len(body)
        if end < 2:
            raise malformed("PUBLISH ends before its topic name length", _PUBLISH)
        pos = 2 + _U16.unpack_from(body, 0)[0]
        if pos > end:
            raise malformed("PUBLISH ends before its topic name", _PUBLISH)
        try:
            topic = str(body[2:pos], "utf-8")
        except UnicodeDecodeError as exc:
            raise malformed("invalid UTF-8 in topic name", _PUBLISH) from exc
        if "\x00" in topic:
            raise malformed("U+0000 in topic name", _PUBLISH)
        check_topic_name(topic, "topic name", _PUBLISH)
        packet_id = None
        if qos:
            if pos + 2 > end:
                raise malformed("PUBLISH ends before its packet identifier", _PUBLISH)
            packet_id = _U16.unpack_from(body, pos)[0]
            pos += 2
            if packet_id == 0:
                raise protocol_error(f"packet identifier 0 in a QoS {qos} PUBLISH", _PUBLISH)
        properties = EMPTY_PROPERTIES
        if version == ProtocolVersion.V5:
            if pos < end and body[pos] == 0:
                pos += 1
            else:
                reader = Reader(body, _PUBLISH, pos)
                properties = decode_properties(reader, _PUBLISH)
                pos = reader.pos
                if self._server and properties.subscription_identifiers:
                    raise protocol_error(
                        "subscription identifier in a PUBLISH from a client", _PUBLISH
                    )
            if not topic and properties.topic_alias is None:
                raise protocol_error(
                    "PUBLISH with an empty topic name and no topic alias", _PUBLISH
                )
        elif not topic:
            raise protocol_error("PUBLISH with an empty topic name", _PUBLISH)
        return Publish(
            topic, bytes(body[pos:]), qos, bool(flags & 1), bool(flags & 8), packet_id, properties
        )

    def _connect(self, body: memoryview) -> Connect:
        reader = Reader(body, _T.CONNECT)
        name = reader.string("protocol name")
        level = reader.u8("protocol level")
        if name == "MQIsdp":
            raise ProtocolError(
                ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                f"MQTT 3.1 (MQIsdp, level {level}) is not supported: use 3.1.1 or 5.0",
                _T.CONNECT,
            )
        if name != "MQTT":
            raise ProtocolError(
                ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                f"protocol name {name!r} in CONNECT is not 'MQTT'",
                _T.CONNECT,
            )
        if level not in (4, 5):
            raise ProtocolError(
                ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                f"protocol level {level} is not supported: 4 (MQTT 3.1.1) or 5 (MQTT 5.0)",
                _T.CONNECT,
            )
        version = ProtocolVersion(level)
        flags = reader.u8("connect flags")
        will_qos = (flags >> 3) & 3
        if flags & 0x01:
            raise reader.error("reserved connect flag (bit 0) set in CONNECT")
        if will_qos == 3:
            raise reader.error("will QoS 3 in CONNECT")
        if not flags & 0x04 and flags & 0x38:
            raise reader.error("will QoS or will retain set in CONNECT without a will")
        if version == ProtocolVersion.V3_1_1 and flags & 0xC0 == 0x40:
            raise reader.error("password without a user name in an MQTT 3.1.1 CONNECT")
        keepalive = reader.u16("keep alive")
        v5 = version == ProtocolVersion.V5
        properties = decode_properties(reader, _T.CONNECT) if v5 else EMPTY_PROPERTIES
        if properties.authentication_data is not None and properties.authentication_method is None:
            raise protocol_error("authentication data without an authentication method", _T.CONNECT)
        client_id = reader.string("client identifier")
        will = None
        if flags & 0x04:
            will_properties = decode_properties(reader, WILL) if v5 else EMPTY_PROPERTIES
            will_topic = reader.string("will topic")
            if not will_topic:
                raise protocol_error("CONNECT with an empty will topic", _T.CONNECT)
            check_topic_name(will_topic, "will topic", _T.CONNECT)
            will_payload = reader.binary("will payload")
            will = Will(will_topic, will_payload, will_qos, bool(flags & 0x20), will_properties)
        username = reader.string("user name") if flags & 0x80 else None
        password = reader.binary("password") if flags & 0x40 else None
        finish(reader)
        self._version = version
        return Connect(
            client_id,
            version,
            bool(flags & 0x02),
            keepalive,
            username,
            password,
            will,
            properties,
        )
