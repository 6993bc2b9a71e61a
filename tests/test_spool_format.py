"""The spool's layout versions: an event one queue alone holds lives in its entry
(format 2); data files of format 1 keep working; a newer format is refused."""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb
import pytest

from storage.environment import Environment
from storage.spool import DataFormatTooNew, Spool, StoredEvent

QUEUE, DEAD, OTHER = 1, 2, 3
_HEADER = struct.Struct(">HQI")


def _write(env: Environment, fn: object) -> object:
    with env.env.begin(write=True) as txn:
        return fn(txn)  # type: ignore[operator]


def _records(env: Environment, db: lmdb._Database) -> int:
    with env.reading() as txn:
        return int(txn.stat(db)["entries"])


def test_an_event_one_queue_holds_is_one_record_until_acked(env: Environment, spool: Spool) -> None:
    events = [StoredEvent(seq, b"event-%d" % seq, (QUEUE,), 0, 7) for seq in (1, 2, 3)]
    _write(env, lambda txn: spool.put_events(txn, events))
    assert _records(env, spool.events) == 0 and _records(env, spool.entries) == 3
    assert spool.read_window(QUEUE, 1, 10) == [(2, 0, 0, 7, b"event-2"), (3, 0, 0, 7, b"event-3")]
    assert spool.queue_totals(QUEUE) == (3, 21, 1, 3)
    assert _write(env, lambda txn: spool.remove_entries(txn, QUEUE, [2, 1, 9])) == 2
    assert spool.read_window(QUEUE, 0, 10) == [(3, 0, 0, 7, b"event-3")]


def test_a_dead_event_and_its_delivery_count_keep_the_data_its_entry_holds(
    env: Environment, spool: Spool
) -> None:
    _write(env, lambda txn: spool.put_events(txn, [StoredEvent(1, b"event", (QUEUE,), 99, 5)]))
    _write(env, lambda txn: spool.set_delivery_count(txn, QUEUE, 1, 3))
    assert spool.read_window(QUEUE, 0, 10) == [(1, 3, 99, 5, b"event")]
    assert _write(env, lambda txn: spool.move_entries(txn, QUEUE, DEAD, [1])) == 1
    assert spool.read_window(QUEUE, 0, 10) == []
    assert spool.read_window(DEAD, 0, 10) == [(1, 0, 0, 5, b"event")]
    assert _write(env, lambda txn: spool.delete_queue(txn, "dead", DEAD)) == 1
    assert _records(env, spool.entries) == 0


def _format_1_data(data_dir: Path) -> None:
    """What a node before format 2 wrote: every event in `events`, 14-byte entries, a
    second queue sharing seq 3 with a ref count, no format mark."""
    env = Environment(data_dir)
    try:
        spool = Spool(env)

        def old_layout(txn: lmdb.Transaction) -> None:
            for seq in (1, 2, 3):
                txn.put(seq.to_bytes(8, "big"), b"old-%d" % seq, db=spool.events)
                txn.put(struct.pack(">IQ", QUEUE, seq), _HEADER.pack(0, 0, 5), db=spool.entries)
            txn.put(struct.pack(">IQ", OTHER, 3), _HEADER.pack(0, 0, 5), db=spool.entries)
            txn.put((3).to_bytes(8, "big"), struct.pack(">I", 2), db=spool.refs)
            txn.put(b"seq", (3).to_bytes(8, "big"), db=spool.meta)

        _write(env, old_layout)
    finally:
        env.close()


def test_a_format_1_data_file_reads_acks_and_purges_as_before(tmp_path: Path) -> None:
    _format_1_data(tmp_path / "data")
    env = Environment(tmp_path / "data")
    try:
        spool = Spool(env)
        assert spool.last_seq() == 3
        assert [r[4] for r in spool.read_window(QUEUE, 0, 10)] == [b"old-1", b"old-2", b"old-3"]
        # New events land beside the old ones, in the new layout.
        _write(env, lambda txn: spool.put_events(txn, [StoredEvent(4, b"new-4", (QUEUE,), 0, 5)]))
        assert [r[4] for r in spool.read_window(QUEUE, 2, 10)] == [b"old-3", b"new-4"]
        assert _write(env, lambda txn: spool.remove_entries(txn, QUEUE, [1, 4])) == 2
        page = _write(env, lambda txn: spool.purge_entries(txn, QUEUE, 0, set(), 10))
        assert page.seqs == [2, 3]  # type: ignore[attr-defined]
        # Seq 3 is still held by the other queue; the rest of the old events are gone.
        assert spool.read_window(OTHER, 0, 10) == [(3, 0, 0, 5, b"old-3")]
        assert _records(env, spool.events) == 1
        assert _write(env, lambda txn: spool.remove_entries(txn, OTHER, [3])) == 1
        assert _records(env, spool.events) == 0 and _records(env, spool.refs) == 0
    finally:
        env.close()


def test_a_data_file_of_a_newer_format_is_refused_naming_it(tmp_path: Path) -> None:
    env = Environment(tmp_path / "data")
    try:
        spool = Spool(env)
        _write(env, lambda txn: txn.put(b"format", struct.pack(">I", 7), db=spool.meta))
        with pytest.raises(DataFormatTooNew, match=r"storage format 7; .* reads formats 1 to 3"):
            Spool(env)
    finally:
        env.close()
