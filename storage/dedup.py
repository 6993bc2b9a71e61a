"""The durable side of the de-duplication window: which keys were stored, as what.

One LMDB database, `dedup`, holds the keys of guaranteed events published with
a de-duplication key, one LMDB record per commit (format 3):

    dedup    first seq (u64 BE) + last seq (u64 BE)
                           -> 0x03, then per run: seq (u64), event id (u64), count (u32),
                              first key length (u16), first key

A run is `count` keys stored as consecutive events: key i (its sequence counting
up from the first key's) is event seq + i with id event id + i.

Older nodes wrote, and this one still reads and trims:

    format 2 (a record per commit, a key each)
    dedup    first seq + last seq -> per key: seq (u64), event id (u64), key length (u16), key
    format 1 (a record per key)
    dedup    seq (u64 BE)  -> event id (u64) + the key's bytes

(a format 2 value starts with a seq below 2**56: a zero byte, never 0x03).

Records are keyed by the node's event sequence, so they append and the oldest
are trimmed from the front; a commit's record goes once all its keys are trimmed.
The records are written in the same transaction as the events they describe:
after a crash, a key is known exactly when its event is stored. Bytes in, bytes out.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import lmdb

from storage.environment import Environment
from storage.spool import mark_format

_U64 = struct.Struct(">Q")
_RANGE = struct.Struct(">QQ")
_KEY_HEAD = struct.Struct(">QQH")
_RUN_HEAD = struct.Struct(">QQIH")
_FORMAT_3 = b"\x03"


class DedupRecord(NamedTuple):
    """`count` keys from `key` on, stored as events `seq`... with ids `event_id`..."""

    seq: int
    event_id: int
    key: bytes
    count: int = 1


class DedupLog:
    """Append, trim and read back the de-duplication records."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self.db = env.db(b"dedup")
        self._meta = env.db(b"meta")

    def append(self, txn: lmdb.Transaction, records: list[DedupRecord]) -> None:
        """Add one commit's records in increasing seq order; keeps the node's last seq at
        least the last record's."""
        if not records:
            return
        head = _RUN_HEAD.pack
        value = _FORMAT_3 + b"".join(
            [head(seq, event_id, count, len(key)) + key for seq, event_id, key, count in records]
        )
        last = records[-1]
        last_seq = last.seq + last.count - 1
        txn.put(_RANGE.pack(records[0].seq, last_seq), value, db=self.db, append=True)
        # A keyed event that no queue or link took is not stored, but its seq must
        # never be handed out again (it keys this record).
        mark = txn.get(b"seq", db=self._meta)
        if mark is None or _U64.unpack(mark)[0] < last_seq:
            txn.put(b"seq", _U64.pack(last_seq), db=self._meta)
        mark_format(txn, self._meta)  # (a commit may hold keys and no event)

    def trim(self, txn: lmdb.Transaction, upto_seq: int) -> int:
        """Delete the LMDB records whose keys all have seq <= upto_seq; returns how many."""
        cursor = txn.cursor(db=self.db)
        deleted = 0
        if not cursor.first():
            return 0
        key = cursor.key()
        # The last seq a record holds: a format 2 range's second half, else its one seq.
        while key and int.from_bytes(key[-8:], "big") <= upto_seq:
            cursor.delete()  # and moves to the next record (no key when none is left)
            deleted += 1
            key = cursor.key()
        return deleted

    def read_all(self) -> list[DedupRecord]:
        """Every record, oldest first."""
        found: list[DedupRecord] = []
        unpack = _U64.unpack
        with self._env.reading() as txn:
            for key, value in txn.cursor(db=self.db):
                if len(key) == _U64.size:  # format 1: one key
                    found.append(DedupRecord(unpack(key)[0], unpack(value[:8])[0], value[8:]))
                elif value[:1] == _FORMAT_3:
                    found.extend(_runs(value))
                else:
                    found.extend(_keys(value))
        return found


def _runs(value: bytes) -> list[DedupRecord]:
    """A format 3 record's runs."""
    found: list[DedupRecord] = []
    head, at = _RUN_HEAD.unpack_from, 1
    while at < len(value):
        seq, event_id, count, size = head(value, at)
        at += _RUN_HEAD.size
        found.append(DedupRecord(seq, event_id, value[at : at + size], count))
        at += size
    return found


def _keys(value: bytes) -> list[DedupRecord]:
    """A format 2 record's keys."""
    found: list[DedupRecord] = []
    head, at = _KEY_HEAD.unpack_from, 0
    while at < len(value):
        seq, event_id, size = head(value, at)
        at += _KEY_HEAD.size
        found.append(DedupRecord(seq, event_id, value[at : at + size]))
        at += size
    return found
