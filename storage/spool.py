"""The on-disk layout of queues: events stored once, entries per queue referencing them.

Databases in the node's LMDB environment:

    meta     b"seq"            -> u64   highest event sequence ever stored
             b"queue:" + name  -> u32 queue id + config bytes (owned by the caller)
             b"next-queue-id"  -> u32
    events   seq (u64 BE)      -> the encoded event, stored once
    refs     seq (u64 BE)      -> u32 number of queue and spool entries still pointing
                                  at it, absent when that number is 1 (the common case)
    entries  queue id (u32 BE) + seq (u64 BE)
                               -> delivery count (u16), expiry ms (u64), size (u32),
                                  then the encoded event itself when this entry is its
                                  only holder (one queue, no link): one record to write,
                                  read and delete instead of three. A 14-byte value
                                  (written so by every node before format 2, and still
                                  for shared events) finds its event in `events`.
    spools   link id (u32 BE) + link seq (u64 BE)
                               -> seq (u64) + what the link sends with it (caller's bytes)
             meta b"link:" + peer -> u32 link id; b"link-sent:" + peer -> u64 last link seq
             spooled; b"link-received:" + peer -> u64 last link seq stored from the peer

meta b"format" -> u32 is the layout's version (absent: 1); a node refuses a
data file of a newer format than it reads.

Sequences are node-local, strictly increasing, and double as delivery tags.
Write methods take the writer's transaction; read methods open their own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import lmdb

from plexus.errors import FailedPrecondition
from storage.environment import Environment

# 2: entries may hold their event (see above), and the de-duplication log
# (storage/dedup.py) holds a record per commit. 3: those records hold runs of keys.
# Files of formats 1 and 2 read as they are.
FORMAT = 3
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ENTRY_KEY = struct.Struct(">IQ")
_ENTRY_VALUE = struct.Struct(">HQI")
_HEADER_BYTES = _ENTRY_VALUE.size
_FORMAT_MARK = _U32.pack(FORMAT)
_QUEUE_PREFIX = b"queue:"
_LAST_SEQ = 2**64 - 1


class Forward(NamedTuple):
    """An event's place in the outbound spool of a link."""

    link_id: int
    link_seq: int
    # What the link sends along with the event (destinations, visited, topic).
    envelope: bytes


class StoredEvent(NamedTuple):
    """A guaranteed event to store and the queues and link spools it goes into."""

    seq: int
    data: bytes
    queue_ids: tuple[int, ...]
    expires_at_ms: int
    size: int
    forwards: tuple[Forward, ...] = ()


def mark_format(txn: lmdb.Transaction, meta: lmdb._Database) -> None:
    """Record FORMAT in the commit that writes data of this format. Beside `seq`, on a
    page the commit writes anyway; no rolled-back first commit can leave new data
    under an older mark, which would let an older node misread it."""
    txn.put(b"format", _FORMAT_MARK, db=meta)


class PurgedPage(NamedTuple):
    """What one page of a purge deleted from a queue."""

    seqs: list[int]
    size: int
    # The last seq looked at: the next page starts after it.
    last_seq: int
    # The queue may hold more entries after `last_seq`.
    more: bool


class SpooledEvent(NamedTuple):
    link_seq: int
    seq: int
    envelope: bytes
    data: bytes | None


# Made per event read back for a link: tuple.__new__ fills the named tuple in C.
_new_spooled: Callable[[tuple[int, int, bytes, bytes | None]], SpooledEvent] = partial(
    tuple.__new__, SpooledEvent
)


@dataclass(slots=True)
class EntryRecord:
    """One queue entry as read back from disk."""

    seq: int
    delivery_count: int
    expires_at_ms: int
    size: int


@dataclass(slots=True, frozen=True)
class QueueRecord:
    name: str
    queue_id: int
    config: bytes


class DataFormatTooNew(FailedPrecondition):
    """The data file was written in a newer layout than this node reads."""

    def __init__(self, data_dir: str, found: int) -> None:
        self.data_dir, self.found = data_dir, found
        super().__init__(
            f"the data in {data_dir} is in storage format {found}; this version of Plexus "
            f"reads formats 1 to {FORMAT}: run a Plexus release that reads format {found}"
        )


class _RefsWalk:
    """The one way a holder lets go of an event: against `refs` (empty or sparse: only
    events held more than once are in it). In ascending seq order a range search per
    held event met, instead of a lookup per event; any order is right."""

    __slots__ = ("_cursor", "_from", "_next")

    def __init__(self, txn: lmdb.Transaction, refs: lmdb._Database) -> None:
        self._cursor = txn.cursor(db=refs)
        # No key of `refs` lies in [_from, _next), b"" standing for the end; None: unknown.
        self._from = b""
        self._next: bytes | None = None

    def release(self, seq_key: bytes) -> bool:
        """Let go of one reference to the event `seq_key`: True when something else still
        holds it (it stays), False when that was the last one (the caller deletes it)."""
        cursor, found = self._cursor, self._next
        if found is None or seq_key < self._from or (found and seq_key > found):
            self._from = seq_key
            found = self._next = cursor.key() if cursor.set_range(seq_key) else b""
        if seq_key != found:
            return False
        left = _U32.unpack(cursor.value())[0] - 1
        if left <= 1:  # one holder left: absent from `refs`
            cursor.delete()  # leaves the cursor on the next key
            self._next = cursor.key()
        else:
            cursor.put(seq_key, _U32.pack(left))
        return True


class Spool:
    """Reads and transactional writes over the queue layout."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self.meta = env.db(b"meta")
        self.events = env.db(b"events")
        self.refs = env.db(b"refs")
        self.entries = env.db(b"entries")
        self.spools = env.db(b"spools")
        self._check_format()

    def _check_format(self) -> None:
        with self._env.reading() as txn:
            raw = txn.get(b"format", db=self.meta)
        found = _U32.unpack(raw)[0] if raw else 1
        if found > FORMAT:
            raise DataFormatTooNew(str(self._env.data_dir), found)

    # ------------------------------------------------------------ writes

    def put_events(self, txn: lmdb.Transaction, batch: list[StoredEvent]) -> None:
        """Store events, each in every queue they go to: in its entry when one queue
        alone holds it, else once in `events` with an entry per queue."""
        if not batch:
            return
        pack_seq, pack_key, pack_value = _U64.pack, _ENTRY_KEY.pack, _ENTRY_VALUE.pack
        entries = []
        shared = []
        for ev in batch:
            queue_ids = ev.queue_ids
            value = pack_value(0, ev.expires_at_ms, ev.size)
            if len(queue_ids) == 1 and not ev.forwards:
                entries.append((pack_key(queue_ids[0], ev.seq), value + ev.data))
                continue
            shared.append(ev)
            entries.extend((pack_key(queue_id, ev.seq), value) for queue_id in queue_ids)
        if shared:
            self._put_shared(txn, shared)
        if entries:
            txn.cursor(db=self.entries).putmulti(entries)
        txn.put(b"seq", pack_seq(batch[-1].seq), db=self.meta)
        mark_format(txn, self.meta)

    def _put_shared(self, txn: lmdb.Transaction, shared: list[StoredEvent]) -> None:
        pack_seq = _U64.pack
        txn.cursor(db=self.events).putmulti(
            [(pack_seq(ev.seq), ev.data) for ev in shared], append=True
        )
        # Queue entries and link spool entries alike hold the event: whichever lets go
        # last deletes it (a spooled event must outlive its local queue's ack).
        refs = [
            (pack_seq(ev.seq), _U32.pack(count))
            for ev in shared
            if (count := len(ev.queue_ids) + len(ev.forwards)) > 1
        ]
        if refs:
            txn.cursor(db=self.refs).putmulti(refs, append=True)
        forwards = [(ev.seq, f) for ev in shared for f in ev.forwards]
        if forwards:
            self._put_forwards(txn, forwards)

    def _put_forwards(self, txn: lmdb.Transaction, forwards: list[tuple[int, Forward]]) -> None:
        txn.cursor(db=self.spools).putmulti(
            [
                (_ENTRY_KEY.pack(f.link_id, f.link_seq), _U64.pack(seq) + f.envelope)
                for seq, f in forwards
            ]
        )
        last: dict[int, int] = {}
        for _seq, f in forwards:
            last[f.link_id] = max(last.get(f.link_id, 0), f.link_seq)
        for link_id, link_seq in last.items():
            txn.put(b"link-sent:" + _U32.pack(link_id), _U64.pack(link_seq), db=self.meta)

    # ------------------------------------------------------------ link spools

    def link_id(self, txn: lmdb.Transaction, peer: str) -> int:
        """The id of the link to `peer`, allocated on first use."""
        key = b"link:" + peer.encode()
        raw = txn.get(key, db=self.meta)
        if raw is not None:
            return int(_U32.unpack(raw)[0])
        raw = txn.get(b"next-link-id", db=self.meta)
        link_id = _U32.unpack(raw)[0] if raw else 1
        txn.put(b"next-link-id", _U32.pack(link_id + 1), db=self.meta)
        txn.put(key, _U32.pack(link_id), db=self.meta)
        return int(link_id)

    def set_received(self, txn: lmdb.Transaction, link_id: int, upto: int) -> None:
        """The last link seq stored from the peer of `link_id`, in the same commit."""
        txn.put(b"link-received:" + _U32.pack(link_id), _U64.pack(upto), db=self.meta)

    def trim(self, txn: lmdb.Transaction, link_id: int, upto: int) -> tuple[int, int]:
        """Delete spooled events up to `upto` (the peer stored them): (how many, bytes)."""
        return self._unspool(txn, link_id, upto, None)

    def drop_oldest(self, txn: lmdb.Transaction, link_id: int, free_bytes: int) -> tuple[int, int]:
        """Delete a link's oldest spooled events until `free_bytes` are freed: (count, bytes)."""
        return self._unspool(txn, link_id, _LAST_SEQ, free_bytes)

    def _unspool(
        self, txn: lmdb.Transaction, link_id: int, upto: int, free_bytes: int | None
    ) -> tuple[int, int]:
        """Delete a link's spooled events in order up to link seq `upto` (or until
        `free_bytes` are freed) and release their events: (count, bytes of the events)."""
        cursor = txn.cursor(db=self.spools)
        if not cursor.set_range(_U32.pack(link_id)):
            return 0, 0
        last_key = _ENTRY_KEY.pack(link_id, upto)
        events = txn.cursor(db=self.events)
        refs = _RefsWalk(txn, self.refs)
        removed = size = 0
        while free_bytes is None or size < free_bytes:
            key = cursor.key()
            if not key or key > last_key:  # past the end, `upto` or the link
                break
            seq_key = cursor.value()[:8]
            if not cursor.delete():
                break
            removed += 1
            # Spooled in seq order: a delete leaves `events` on the next one, no search.
            if events.key() == seq_key or events.set_key(seq_key):
                size += len(events.value())
                if not refs.release(seq_key):
                    events.delete()
        return removed, size

    def link_marks(self, peer: str) -> tuple[int, int, int]:
        """(link id or 0, last link seq spooled, last link seq received) for a peer."""
        with self._env.reading() as txn:
            raw = txn.get(b"link:" + peer.encode(), db=self.meta)
            if raw is None:
                return 0, 0, 0
            link_id = _U32.unpack(raw)[0]
            sent = txn.get(b"link-sent:" + raw, db=self.meta)
            received = txn.get(b"link-received:" + raw, db=self.meta)
        return (
            int(link_id),
            _U64.unpack(sent)[0] if sent else 0,
            _U64.unpack(received)[0] if received else 0,
        )

    def read_spool(
        self, link_id: int, after: int, limit: int, max_bytes: int | None = None
    ) -> list[SpooledEvent]:
        """Up to `limit` spooled events of a link after link seq `after`, with their data
        (None for an entry whose event is gone: data written before spool entries
        counted in an event's references may hold some). With `max_bytes`, reading
        stops once the events read (data and envelope) reach it: at least one is read."""
        found: list[SpooledEvent] = []
        size = 0
        unpack_key, new = _ENTRY_KEY.unpack, _new_spooled
        with self._env.reading() as txn:
            cursor = txn.cursor(db=self.spools)
            if not cursor.set_range(_ENTRY_KEY.pack(link_id, after + 1)):
                return found
            events = txn.cursor(db=self.events)
            prefix = _U32.pack(link_id)
            for key, value in cursor:
                if key[:4] != prefix or len(found) >= limit:
                    break
                if max_bytes is not None and found and size >= max_bytes:
                    break
                seq_key = value[:8]
                # Spooled in seq order: the event read last leaves `events` one step
                # before this one, no search.
                if (events.next() and events.key() == seq_key) or events.set_key(seq_key):
                    data: bytes | None = events.value()
                else:
                    data = None
                found.append(new((unpack_key(key)[1], _U64.unpack(seq_key)[0], value[8:], data)))
                size += len(data or b"") + len(value) - 8
        return found

    def spool_totals(self, link_id: int) -> tuple[int, int]:
        """(events, payload bytes) spooled for a link, by scanning it."""
        count = size = 0
        with self._env.reading() as txn:
            cursor = txn.cursor(db=self.spools)
            prefix = _U32.pack(link_id)
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if key[:4] != prefix:
                        break
                    data = txn.get(value[:8], db=self.events)
                    count += 1
                    size += len(data or b"")
        return count, size

    def remove_entries(self, txn: lmdb.Transaction, queue_id: int, seqs: Iterable[int]) -> int:
        """Delete entries (acked or dropped) and release their events; returns how many."""
        removed = 0
        cursor = txn.cursor(db=self.entries)
        pack = _ENTRY_KEY.pack
        refs: _RefsWalk | None = None
        for seq in seqs:
            key = pack(queue_id, seq)
            # A delete leaves the cursor on the next entry: in-order acks need no search.
            if cursor.key() == key or cursor.set_key(key):
                if len(cursor.value()) == _HEADER_BYTES:  # a shared event's entry
                    refs = refs or _RefsWalk(txn, self.refs)
                    self._let_go(txn, refs, seq)
                cursor.delete()
                removed += 1
        return removed

    def purge_entries(
        self,
        txn: lmdb.Transaction,
        queue_id: int,
        after_seq: int,
        keep: Container[int],
        limit: int,
    ) -> PurgedPage:
        """Delete a queue's entries with seq > after_seq, except `keep`, looking at up
        to `limit` of them, and release their events."""
        cursor = txn.cursor(db=self.entries)
        prefix = _U32.pack(queue_id)
        seqs: list[int] = []
        size = looked = 0
        last = after_seq
        if not cursor.set_range(_ENTRY_KEY.pack(queue_id, after_seq + 1)):
            return PurgedPage(seqs, size, last, False)
        refs = _RefsWalk(txn, self.refs)
        while cursor.key()[:4] == prefix:
            if looked >= limit:
                return PurgedPage(seqs, size, last, True)
            looked += 1
            last = _ENTRY_KEY.unpack(cursor.key())[1]
            if last in keep:
                cursor.next()
                continue
            value = cursor.value()
            size += _ENTRY_VALUE.unpack_from(value)[2]
            if not cursor.delete():
                break
            if len(value) == _HEADER_BYTES:
                self._let_go(txn, refs, last)
            seqs.append(last)
        return PurgedPage(seqs, size, last, False)

    def move_entries(
        self, txn: lmdb.Transaction, from_queue: int, to_queue: int, seqs: Iterable[int]
    ) -> int:
        """Move entries to another queue (the dead-message queue); the event stays put."""
        moved = 0
        for seq in seqs:
            key = _ENTRY_KEY.pack(from_queue, seq)
            value = txn.get(key, db=self.entries)
            if value is None:
                continue
            txn.delete(key, db=self.entries)
            _count, _expiry, size = _ENTRY_VALUE.unpack_from(value)
            # A dead event does not expire again in the dead-message queue; its data, when
            # the entry held it, moves with it.
            moved_value = _ENTRY_VALUE.pack(0, 0, size) + value[_HEADER_BYTES:]
            txn.put(_ENTRY_KEY.pack(to_queue, seq), moved_value, db=self.entries)
            moved += 1
        return moved

    def set_delivery_count(
        self, txn: lmdb.Transaction, queue_id: int, seq: int, count: int
    ) -> None:
        key = _ENTRY_KEY.pack(queue_id, seq)
        value = txn.get(key, db=self.entries)
        if value is not None:
            _old, expiry, size = _ENTRY_VALUE.unpack_from(value)
            header = _ENTRY_VALUE.pack(min(count, 0xFFFF), expiry, size)
            txn.put(key, header + value[_HEADER_BYTES:], db=self.entries)

    def put_queue(self, txn: lmdb.Transaction, name: str, config: bytes) -> int:
        """Store a new queue's config under a fresh id; returns the id."""
        raw = txn.get(b"next-queue-id", db=self.meta)
        queue_id = _U32.unpack(raw)[0] if raw else 1
        txn.put(b"next-queue-id", _U32.pack(queue_id + 1), db=self.meta)
        txn.put(_QUEUE_PREFIX + name.encode(), _U32.pack(queue_id) + config, db=self.meta)
        return queue_id

    def set_queue_config(
        self, txn: lmdb.Transaction, name: str, queue_id: int, config: bytes
    ) -> bool:
        """Replace a queue's config, keeping its id and entries; False when the queue
        `name` with that id is no longer stored (deleted meanwhile)."""
        key = _QUEUE_PREFIX + name.encode()
        raw = txn.get(key, db=self.meta)
        if raw is None or _U32.unpack(raw[:4])[0] != queue_id:
            return False
        txn.put(key, _U32.pack(queue_id) + config, db=self.meta)
        return True

    def delete_queue(self, txn: lmdb.Transaction, name: str, queue_id: int) -> int:
        """Delete a queue and every entry in it; returns the number of entries dropped."""
        txn.delete(_QUEUE_PREFIX + name.encode(), db=self.meta)
        prefix = _U32.pack(queue_id)
        dropped = 0
        shared = []
        cursor = txn.cursor(db=self.entries)
        if cursor.set_range(prefix):
            while cursor.key()[:4] == prefix:
                key, value = cursor.item()
                if not cursor.delete():
                    break
                dropped += 1
                if len(value) == _HEADER_BYTES:
                    shared.append(_ENTRY_KEY.unpack(key)[1])
        refs = _RefsWalk(txn, self.refs)
        for seq in shared:
            self._let_go(txn, refs, seq)
        return dropped

    def _let_go(self, txn: lmdb.Transaction, refs: _RefsWalk, seq: int) -> None:
        """One holder of event `seq` lets go of it: the event goes with its last holder."""
        seq_key = _U64.pack(seq)
        if not refs.release(seq_key):
            txn.delete(seq_key, db=self.events)

    # ------------------------------------------------------------ reads

    def last_seq(self) -> int:
        with self._env.reading() as txn:
            raw = txn.get(b"seq", db=self.meta)
        return _U64.unpack(raw)[0] if raw else 0

    def queues(self) -> list[QueueRecord]:
        found = []
        with self._env.reading() as txn:
            cursor = txn.cursor(db=self.meta)
            if cursor.set_range(_QUEUE_PREFIX):
                for key, value in cursor:
                    if not key.startswith(_QUEUE_PREFIX):
                        break
                    found.append(
                        QueueRecord(
                            key[len(_QUEUE_PREFIX) :].decode(), _U32.unpack(value[:4])[0], value[4:]
                        )
                    )
        return found

    def read_entries(self, queue_id: int, after_seq: int, limit: int) -> list[EntryRecord]:
        """Up to `limit` entries of a queue with seq > after_seq, in order."""
        with self._env.reading() as txn:
            return list(self._scan(txn, queue_id, after_seq + 1, limit))

    def read_window(
        self, queue_id: int, after_seq: int, limit: int
    ) -> list[tuple[int, int, int, int, bytes | None]]:
        """Up to `limit` entries of a queue with seq > after_seq, in order, with their
        events: (seq, delivery count, expiry ms, size, encoded event or None if gone)."""
        found: list[tuple[int, int, int, int, bytes | None]] = []
        prefix = _U32.pack(queue_id)
        unpack_key, unpack_value = _ENTRY_KEY.unpack, _ENTRY_VALUE.unpack_from
        with self._env.reading() as txn:
            cursor = txn.cursor(db=self.entries)
            if not cursor.set_range(_ENTRY_KEY.pack(queue_id, after_seq + 1)):
                return found
            for key, value in cursor:
                if key[:4] != prefix or len(found) >= limit:
                    break
                seq = unpack_key(key)[1]
                if len(value) > _HEADER_BYTES:
                    data: bytes | None = value[_HEADER_BYTES:]
                else:
                    data = txn.get(_U64.pack(seq), db=self.events)
                found.append((seq, *unpack_value(value), data))
        return found

    def queue_totals(self, queue_id: int) -> tuple[int, int, int, int]:
        """(entries, bytes, first seq, last seq) of a queue, by scanning it (seqs 0 if empty)."""
        count = size = first = last = 0
        with self._env.reading() as txn:
            for record in self._scan(txn, queue_id, 0, None):
                if not first:
                    first = record.seq
                last = record.seq
                count += 1
                size += record.size
        return count, size, first, last

    def _scan(
        self, txn: lmdb.Transaction, queue_id: int, from_seq: int, limit: int | None
    ) -> Iterable[EntryRecord]:
        prefix = _U32.pack(queue_id)
        cursor = txn.cursor(db=self.entries)
        if not cursor.set_range(_ENTRY_KEY.pack(queue_id, from_seq)):
            return
        for n, (key, value) in enumerate(cursor):
            if key[:4] != prefix or (limit is not None and n >= limit):
                return
            count, expiry, size = _ENTRY_VALUE.unpack_from(value)
            yield EntryRecord(_ENTRY_KEY.unpack(key)[1], count, expiry, size)
