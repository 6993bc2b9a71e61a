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
# The low 14 bits of a larger value, both bytes marked "more follows" (node sequences
# and delivery tags pass 16,384 early in a node's life).
_LOW_14_BITS = tuple(bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(1 << 14))


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    if value < 16384:
        return _SMALL_VARINTS[value]
    if value < 268435456:  # 2**28: three or four bytes, two lookups
        return _LOW_14_BITS[value & 0x3FFF] + _SMALL_VARINTS[value >> 14]
    return _encode_varint(value)
