"""MQTT's data representations (section 1.5): integers, varints, UTF-8 strings, binary data."""

from __future__ import annotations

import struct

from node.mqtt.packets import PacketType, ProtocolError, ReasonCode

__all__ = [
    "MAX_VARINT",
    "Reader",
    "check_string",
    "encode_binary",
    "encode_string",
    "encode_varint",
]

MAX_VARINT = 268_435_455  # four 7-bit groups
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def check_string(text: str, what: str, packet_type: PacketType | None) -> None:
    """Raise MALFORMED_PACKET if `text` holds U+0000, which MQTT strings must not."""
    if "\x00" in text:
        raise ProtocolError(ReasonCode.MALFORMED_PACKET, f"U+0000 in {what}", packet_type)


class Reader:
    """Reads the body of one packet front to back; every shortfall names the field it cut."""

    __slots__ = ("data", "end", "packet_type", "pos")

    def __init__(self, data: memoryview, packet_type: PacketType, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)
        self.packet_type = packet_type

    @property
    def left(self) -> int:
        return self.end - self.pos

    def error(self, detail: str) -> ProtocolError:
        return ProtocolError(ReasonCode.MALFORMED_PACKET, detail, self.packet_type)

    def _short(self, what: str) -> ProtocolError:
        return self.error(f"{self.packet_type.name} ends before its {what}")

    def u8(self, what: str) -> int:
        if self.pos >= self.end:
            raise self._short(what)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self, what: str) -> int:
        if self.pos + 2 > self.end:
            raise self._short(what)
        (value,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return value

    def u32(self, what: str) -> int:
        if self.pos + 4 > self.end:
            raise self._short(what)
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def varint(self, what: str) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise self.error(f"{what} varint longer than 4 bytes")

    def binary(self, what: str) -> bytes:
        size = self.u16(f"{what} length")
        if self.pos + size > self.end:
            raise self._short(what)
        value = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return value

    def string(self, what: str) -> str:
        size = self.u16(f"{what} length")
        if self.pos + size > self.end:
            raise self._short(what)
        try:
            text = str(self.data[self.pos : self.pos + size], "utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"invalid UTF-8 in {what}") from exc
        self.pos += size
        check_string(text, what, self.packet_type)
        return text

    def rest(self) -> bytes:
        value = bytes(self.data[self.pos : self.end])
        self.pos = self.end
        return value


def encode_varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    if value > MAX_VARINT:
        raise ValueError(f"{value} does not fit MQTT's variable byte integer (max {MAX_VARINT})")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"binary data of {len(data)} bytes does not fit MQTT's 65535")
    return _U16.pack(len(data)) + data


def encode_string(text: str) -> bytes:
    """UTF-8 with its length; ValueError for U+0000 or more than 65535 bytes."""
    if "\x00" in text:
        raise ValueError(f"U+0000 in MQTT string {text!r}")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"MQTT string {text!r} is not valid UTF-8 (lone surrogate)") from exc
    return encode_binary(data)
