"""The durable side of the de-duplication window: which keys were stored, as what.

One LMDB database, `dedup`, holds a record per guaranteed event published with
a de-duplication key:

    dedup    seq (u64 BE)  -> event id (u64) + the key's bytes

keyed by the node's event sequence, so records append and the oldest are
trimmed as one range from the front. The records are written in the same
transaction as the events they describe: after a crash, a key is known exactly
when its event is stored. Bytes in, bytes out.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import lmdb

from storage.environment import Environment

_U64 = struct.Struct(">Q")


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
        pack = _U64.pack
        txn.cursor(db=self.db).putmulti(
            [(pack(seq), pack(event_id) + key) for seq, event_id, key in records], append=True
        )
        # A keyed event that no queue or link took is not stored, but its seq must
        # never be handed out again (it keys this record).
        last_seq = records[-1][0]
        last = txn.get(b"seq", db=self._meta)
        if last is None or _U64.unpack(last)[0] < last_seq:
            txn.put(b"seq", pack(last_seq), db=self._meta)

    def trim(self, txn: lmdb.Transaction, upto_seq: int) -> int:
        """Delete every record with seq <= upto_seq; returns how many."""
        cursor = txn.cursor(db=self.db)
        deleted = 0
        if not cursor.first():
            return 0
        key = cursor.key()
        while key and _U64.unpack(key)[0] <= upto_seq:
            cursor.delete()  # and moves to the next record (no key when none is left)
            deleted += 1
            key = cursor.key()
        return deleted

    def read_all(self) -> list[DedupRecord]:
        """Every record, oldest first."""
        unpack = _U64.unpack
        with self._env.reading() as txn:
            return [
                DedupRecord(unpack(key)[0], unpack(value[:8])[0], value[8:])
                for key, value in txn.cursor(db=self.db)
            ]
