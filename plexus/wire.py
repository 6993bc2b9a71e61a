"""Protobuf wire pieces for hot paths that concatenate encoded fields instead of building
messages (a message per event costs several times what joining its bytes does)."""

from __future__ import annotations

__all__ = ["varint"]


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths and counts are small: their encodings are looked up, not computed.
_SMALL_VARINTS = tuple(_encode_varint(n) for n in range(1 << 14))


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    if value < 16384:
        return _SMALL_VARINTS[value]
    return _encode_varint(value)
