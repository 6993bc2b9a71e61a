"""What each other region last advertised, kept so that a restarted node routes by it.

One LMDB database, `interest`, holds a record per region:

    interest   region (UTF-8)  -> format (u8, 1) + version (u64 BE) + count (u32 BE)
                                  + count x (length (u16 BE) + pattern (UTF-8))

Each record is a region's whole advertised set, rewritten when it changes.
Bytes in, bytes out: nothing here knows protobuf or asyncio. Writes take the
writer's transaction; `read_all` opens its own.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from typing import NamedTuple

import lmdb

from storage.environment import Environment

log = logging.getLogger(__name__)

_FORMAT = 1
_HEADER = struct.Struct(">BQI")
_LENGTH = struct.Struct(">H")
MAX_PATTERN_BYTES = 2**16 - 1


class KnownInterest(NamedTuple):
    """A region's advertised interest as this node last learned it."""

    region: str
    version: int
    patterns: tuple[str, ...]


def encode(version: int, patterns: Iterable[str]) -> bytes:
    """A record's value: the version and the patterns, length-prefixed."""
    parts = []
    for pattern in patterns:
        data = pattern.encode("utf-8")
        if len(data) > MAX_PATTERN_BYTES:
            raise ValueError(f"pattern of {len(data)} bytes is over {MAX_PATTERN_BYTES}")
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return _HEADER.pack(_FORMAT, version, len(parts) // 2) + b"".join(parts)


def decode(region: str, value: bytes) -> KnownInterest:
    """A record back; ValueError when it is not one this code wrote."""
    if len(value) < _HEADER.size:
        raise ValueError(f"interest record of {len(value)} bytes is too short")
    form, version, count = _HEADER.unpack_from(value)
    if form != _FORMAT:
        raise ValueError(f"interest record format {form} is unknown")
    offset = _HEADER.size
    patterns = []
    for _ in range(count):
        (length,) = _LENGTH.unpack_from(value, offset)
        offset += _LENGTH.size
        end = offset + length
        if end > len(value):
            raise ValueError("interest record is truncated")
        patterns.append(bytes(value[offset:end]).decode("utf-8"))
        offset = end
    if offset != len(value):
        raise ValueError("interest record has trailing bytes")
    return KnownInterest(region, version, tuple(patterns))


class InterestStore:
    """Write, delete and read back the interest records of other regions."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self.db = env.db(b"interest")

    def put(
        self, txn: lmdb.Transaction, region: str, version: int, patterns: Iterable[str]
    ) -> None:
        """Replace `region`'s record."""
        txn.put(region.encode("utf-8"), encode(version, patterns), db=self.db)

    def delete(self, txn: lmdb.Transaction, region: str) -> None:
        """Drop `region`'s record (a region that left the cluster); no-op when absent."""
        txn.delete(region.encode("utf-8"), db=self.db)

    def read_all(self) -> list[KnownInterest]:
        """Every record, by region name. A record that cannot be read is skipped and
        logged: the region's next full sync (on link connect) brings its interest back."""
        found = []
        with self._env.reading() as txn:
            for key, value in txn.cursor(db=self.db):
                region = bytes(key).decode("utf-8", errors="replace")
                try:
                    found.append(decode(region, bytes(value)))
                except (ValueError, struct.error, UnicodeDecodeError) as exc:
                    log.error("interest record of region %s unreadable, skipped: %s", region, exc)
        return found
