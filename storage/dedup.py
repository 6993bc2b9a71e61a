"""The durable side of the de-duplication window: which keys were stored, as what.

One LMDB database, `dedup`, holds the keys of guaranteed events published with
a de-duplication key, one LMDB record per commit (format 2):

    dedup    first seq (u64 BE) + last seq (u64 BE)
                           -> per key: seq (u64), event id (u64), key length (u16), key

Nodes before format 2 wrote one LMDB record per key, still read and trimmed:

    dedup    seq (u64 BE)  -> event id (u64) + the key's bytes

keyed by the node's event sequence, so records append and the oldest are
trimmed from the front; a commit's record goes once all its keys are trimmed.
The records are written in the same transaction as the events they describe:
after a crash, a key is known exactly when its event is stored. Bytes in, bytes out.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import lmdb

from storage.environment import Environment

_U64 = struct.Struct(">Q")
_RANGE = struct.Struct(">QQ")
_KEY_HEAD = struct.Struct(">QQH")


class DedupRecord(NamedTuple):
    seq: int
    event_id: int
    key: bytes


class DedupLog:
    """Append, trim and read back the de-duplication records."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self.db = env.db(b"dedup")
        self._meta = env.db(b"meta")

    def append(self, txn: lmdb.Transaction, records: list[tuple[int, int, bytes]]) -> None:
        """Add (seq, event id, key) records in increasing seq order; keeps the node's
        last seq at least the last record's."""
        if not records:
            return
        head = _KEY_HEAD.pack
        value = b"".join([head(seq, event_id, len(key)) + key for seq, event_id, key in records])
        last_seq = records[-1][0]
        txn.put(_RANGE.pack(records[0][0], last_seq), value, db=self.db, append=True)
        # A keyed event that no queue or link took is not stored, but its seq must
        # never be handed out again (it keys this record).
        last = txn.get(b"seq", db=self._meta)
        if last is None or _U64.unpack(last)[0] < last_seq:
            txn.put(b"seq", _U64.pack(last_seq), db=self._meta)

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
        unpack, head = _U64.unpack, _KEY_HEAD.unpack_from
        with self._env.reading() as txn:
            for key, value in txn.cursor(db=self.db):
                if len(key) == _U64.size:  # format 1: one key
                    found.append(DedupRecord(unpack(key)[0], unpack(value[:8])[0], value[8:]))
                    continue
                at = 0
                while at < len(value):
                    seq, event_id, size = head(value, at)
                    at += _KEY_HEAD.size
                    found.append(DedupRecord(seq, event_id, value[at : at + size]))
                    at += size
        return found
