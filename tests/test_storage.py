"""The LMDB layer (storage/): real files in tmp_path, no mocks."""

from __future__ import annotations

import os
import random
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest

from plexus.errors import DataDirLocked, StorageFull
from storage.data_file import DataDirUnusable, DataFileDamaged, check_data_file
from storage.environment import Environment, translate_error
from storage.spool import EntryRecord, Spool, StoredEvent
from storage.writer import SpoolWriter, WriteOp

WAIT_S = 10.0
# An entry's delivery count, expiry and size; the event follows when the entry alone holds it.
ENTRY_HEADER_BYTES = 14


def write(env: Environment, fn: Callable[[lmdb.Transaction], Any]) -> Any:
    with env.env.begin(write=True) as txn:
        return fn(txn)


def event(seq: int, *queue_ids: int, expires_at_ms: int = 0) -> StoredEvent:
    data = b"event-%d" % seq
    return StoredEvent(seq, data, queue_ids, expires_at_ms, len(data))


def stored_events(env: Environment, spool: Spool) -> dict[int, bytes]:
    """Every event still on disk: shared ones in `events`, the others in their entry."""
    with env.reading() as txn:
        found = {struct.unpack(">Q", k)[0]: v for k, v in txn.cursor(db=spool.events)}
        for key, value in txn.cursor(db=spool.entries):
            if len(value) > ENTRY_HEADER_BYTES:
                found[struct.unpack(">IQ", key)[1]] = value[ENTRY_HEADER_BYTES:]
    return found


def shared_events(env: Environment, spool: Spool) -> list[int]:
    with env.reading() as txn:
        keys = txn.cursor(db=spool.events).iternext(values=False)
        return [struct.unpack(">Q", k)[0] for k in keys]


def stored_refs(env: Environment, spool: Spool) -> dict[int, int]:
    with env.reading() as txn:
        return {
            struct.unpack(">Q", k)[0]: struct.unpack(">I", v)[0]
            for k, v in txn.cursor(db=spool.refs)
        }


def seqs_of(spool: Spool, queue_id: int) -> list[int]:
    return [r.seq for r in spool.read_entries(queue_id, 0, 1_000_000)]


class Completions:
    """Collects the writer's `on_done` groups; `wait(n)` blocks until n ops are done."""

    def __init__(self) -> None:
        self.ops: list[WriteOp] = []
        self.groups = 0
        self._want = 0
        self._lock = threading.Lock()
        self._reached = threading.Event()

    def __call__(self, group: list[WriteOp]) -> None:
        with self._lock:
            self.ops.extend(group)
            self.groups += 1
            if len(self.ops) >= self._want:
                self._reached.set()

    def expect(self, count: int) -> None:
        with self._lock:
            self._want = count
            if len(self.ops) < count:
                self._reached.clear()

    def wait(self) -> None:
        assert self._reached.wait(WAIT_S), f"only {len(self.ops)}/{self._want} ops done"


# --------------------------------------------------------------------------
# the environment
# --------------------------------------------------------------------------


def test_second_environment_on_the_same_directory_is_refused_naming_path_and_pid(
    env: Environment,
) -> None:
    with pytest.raises(DataDirLocked) as caught:
        Environment(env.data_dir)
    assert caught.value.path == str(env.data_dir)
    assert caught.value.pid == os.getpid()
    assert str(env.data_dir) in str(caught.value)
    assert str(os.getpid()) in str(caught.value)


def test_data_directory_can_be_reopened_after_close(tmp_path: Path) -> None:
    first = Environment(tmp_path / "data")
    spool = Spool(first)
    write(first, lambda txn: spool.put_events(txn, [event(1, 1)]))
    first.close()
    again = Environment(tmp_path / "data")
    try:
        assert Spool(again).last_seq() == 1
    finally:
        again.close()


def test_no_space_left_on_device_becomes_storage_full(tmp_path: Path) -> None:
    exc = lmdb.Error("mdb_txn_commit: No space left on device")
    translated = translate_error(exc, tmp_path)
    assert isinstance(translated, StorageFull)
    assert translated.path == str(tmp_path)
    other = lmdb.Error("mdb_get: MDB_CORRUPTED")
    assert translate_error(other, tmp_path) is other


def test_input_output_error_is_storage_full_only_when_the_device_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    exc = lmdb.Error("mdb_txn_commit: Input/output error")
    assert translate_error(exc, tmp_path) is exc or shutil.disk_usage(tmp_path).free < 16 << 20
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(100, 100, 0))  # type: ignore[attr-defined]
    full = translate_error(exc, tmp_path)
    assert isinstance(full, StorageFull)
    assert "0.0 MiB free of 0.0 MiB" in full.detail


# --------------------------------------------------------------------------
# the spool layout
# --------------------------------------------------------------------------


def test_event_in_several_queues_is_stored_once_with_a_ref_count(
    env: Environment, spool: Spool
) -> None:
    write(env, lambda txn: spool.put_events(txn, [event(1, 1), event(2, 1, 2, 3), event(3, 2)]))
    assert stored_events(env, spool) == {1: b"event-1", 2: b"event-2", 3: b"event-3"}
    assert shared_events(env, spool) == [2]  # the others are in their one entry
    assert stored_refs(env, spool) == {2: 3}  # absent means one
    assert seqs_of(spool, 1) == [1, 2]
    assert seqs_of(spool, 2) == [2, 3]
    assert seqs_of(spool, 3) == [2]
    assert spool.last_seq() == 3
    assert spool.read_window(2, 0, 10) == [(2, 0, 0, 7, b"event-2"), (3, 0, 0, 7, b"event-3")]


def test_event_is_deleted_only_when_the_last_queue_lets_go(env: Environment, spool: Spool) -> None:
    write(env, lambda txn: spool.put_events(txn, [event(1, 1, 2, 3)]))
    assert write(env, lambda txn: spool.remove_entries(txn, 2, [1])) == 1
    assert stored_refs(env, spool) == {1: 2}
    assert 1 in stored_events(env, spool)
    assert write(env, lambda txn: spool.remove_entries(txn, 2, [1])) == 0  # already gone
    assert stored_refs(env, spool) == {1: 2}
    assert write(env, lambda txn: spool.remove_entries(txn, 1, [1])) == 1
    assert stored_refs(env, spool) == {}
    assert 1 in stored_events(env, spool)
    assert write(env, lambda txn: spool.remove_entries(txn, 3, [1])) == 1
    assert stored_events(env, spool) == {}
    assert seqs_of(spool, 1) == seqs_of(spool, 2) == seqs_of(spool, 3) == []


def test_removing_a_single_queue_event_deletes_it(env: Environment, spool: Spool) -> None:
    write(env, lambda txn: spool.put_events(txn, [event(1, 1), event(2, 1)]))
    assert write(env, lambda txn: spool.remove_entries(txn, 1, [1, 7])) == 1
    assert stored_events(env, spool) == {2: b"event-2"}


def test_move_entries_keeps_the_event_and_clears_expiry_and_delivery_count(
    env: Environment, spool: Spool
) -> None:
    write(env, lambda txn: spool.put_events(txn, [event(1, 1, 5, expires_at_ms=99), event(2, 1)]))
    write(env, lambda txn: spool.set_delivery_count(txn, 1, 1, 4))
    assert spool.read_entries(1, 0, 10)[0] == EntryRecord(1, 4, 99, len(b"event-1"))
    assert write(env, lambda txn: spool.move_entries(txn, 1, 9, [1, 42])) == 1
    assert seqs_of(spool, 1) == [2]
    assert spool.read_entries(9, 0, 10) == [EntryRecord(1, 0, 0, len(b"event-1"))]
    assert stored_refs(env, spool) == {1: 2}  # still two entries: queue 5 and queue 9
    write(env, lambda txn: spool.remove_entries(txn, 9, [1]))
    write(env, lambda txn: spool.remove_entries(txn, 5, [1]))
    assert stored_events(env, spool) == {2: b"event-2"}


def test_delete_queue_drops_only_its_entries_and_releases_their_events(
    env: Environment, spool: Spool
) -> None:
    ids = write(env, lambda txn: [spool.put_queue(txn, n, n.encode()) for n in ("a", "b", "c")])
    a, b, c = ids
    assert ids == [1, 2, 3]
    write(
        env,
        lambda txn: spool.put_events(
            txn, [event(1, a), event(2, a, b), event(3, b), event(4, a, c), event(5, c)]
        ),
    )
    assert write(env, lambda txn: spool.delete_queue(txn, "b", b)) == 2
    assert seqs_of(spool, a) == [1, 2, 4]
    assert seqs_of(spool, b) == []
    assert seqs_of(spool, c) == [4, 5]
    assert sorted(stored_events(env, spool)) == [1, 2, 4, 5]
    assert stored_refs(env, spool) == {4: 2}  # seq 2 is back to one ref (absent)
    assert [q.name for q in spool.queues()] == ["a", "c"]
    # The last queue in the key space deletes cleanly up to the end of the database.
    assert write(env, lambda txn: spool.delete_queue(txn, "c", c)) == 2
    assert sorted(stored_events(env, spool)) == [1, 2, 4]
    assert stored_refs(env, spool) == {}


def test_purge_pages_delete_all_but_kept_entries_and_release_only_unshared_events(
    env: Environment, spool: Spool
) -> None:
    a, b = write(env, lambda txn: [spool.put_queue(txn, n, n.encode()) for n in ("a", "b")])
    events = [event(seq, a) for seq in range(1, 8)] + [event(8, a, b), event(9, b)]
    write(env, lambda txn: spool.put_events(txn, events))
    keep = {3}  # in flight: stays queued
    pages = []
    after = 0
    while True:
        page = write(env, lambda txn, after=after: spool.purge_entries(txn, a, after, keep, 3))
        pages.append(page)
        if not page.more:
            break
        after = page.last_seq
    assert [p.seqs for p in pages] == [[1, 2], [4, 5, 6], [7, 8]]
    assert sum(p.size for p in pages) == sum(e.size for e in events[:8] if e.seq != 3)
    assert seqs_of(spool, a) == [3]
    assert seqs_of(spool, b) == [8, 9]
    # Purged events are gone unless another queue still holds them.
    assert sorted(stored_events(env, spool)) == [3, 8, 9]
    assert stored_refs(env, spool) == {}
    # The last queue in the key space purges cleanly up to the end of the database.
    page = write(env, lambda txn: spool.purge_entries(txn, b, 0, set(), 100))
    assert (page.seqs, page.more) == ([8, 9], False)
    assert write(env, lambda txn: spool.purge_entries(txn, b, 0, set(), 100)).seqs == []


def test_queues_lists_stored_configs_and_ids_are_never_reused(
    env: Environment, spool: Spool
) -> None:
    assert spool.queues() == []
    write(env, lambda txn: spool.put_queue(txn, "orders", b"\x01cfg"))
    write(env, lambda txn: spool.put_queue(txn, "orders.dead", b""))
    write(env, lambda txn: spool.put_queue(txn, "émoji", b"\xff"))
    write(env, lambda txn: spool.delete_queue(txn, "orders.dead", 2))
    assert write(env, lambda txn: spool.put_queue(txn, "next", b"n")) == 4
    found = {(q.name, q.queue_id, q.config) for q in spool.queues()}
    assert found == {("orders", 1, b"\x01cfg"), ("émoji", 3, b"\xff"), ("next", 4, b"n")}


def test_read_entries_pages_after_a_seq_within_one_queue(env: Environment, spool: Spool) -> None:
    write(env, lambda txn: spool.put_events(txn, [event(s, 1 + s % 2) for s in range(1, 21)]))
    assert [r.seq for r in spool.read_entries(2, 0, 3)] == [1, 3, 5]
    assert [r.seq for r in spool.read_entries(2, 5, 3)] == [7, 9, 11]
    assert [r.seq for r in spool.read_entries(2, 6, 3)] == [7, 9, 11]
    assert [r.seq for r in spool.read_entries(2, 15, 10)] == [17, 19]
    assert spool.read_entries(2, 19, 10) == []
    assert spool.read_entries(1, 0, 0) == []
    assert [r.seq for r in spool.read_entries(1, 18, 10)] == [20]
    assert spool.read_entries(3, 0, 10) == []


def test_queue_totals_counts_entries_and_bytes(env: Environment, spool: Spool) -> None:
    assert spool.queue_totals(1) == (0, 0, 0, 0)
    write(env, lambda txn: spool.put_events(txn, [event(3, 1), event(4, 2), event(12, 1, 2)]))
    assert spool.queue_totals(1) == (2, len(b"event-3") + len(b"event-12"), 3, 12)
    assert spool.queue_totals(2) == (2, len(b"event-4") + len(b"event-12"), 4, 12)


# --------------------------------------------------------------------------
# the writer
# --------------------------------------------------------------------------


def test_writer_groups_many_ops_into_few_commits(env: Environment, spool: Spool) -> None:
    done = Completions()
    writer = SpoolWriter(env, done)
    writer.start()
    try:
        ops = 1_000
        done.expect(ops)
        for seq in range(1, ops + 1):
            batch = [event(seq, 1)]
            writer.submit(WriteOp(lambda txn, b=batch: spool.put_events(txn, b), token=seq))
        done.wait()
    finally:
        writer.stop()
    assert sorted(op.token for op in done.ops) == list(range(1, ops + 1))
    assert all(op.error is None for op in done.ops)
    assert writer.ops == ops
    assert writer.commits < ops
    assert done.groups == writer.commits
    assert spool.queue_totals(1)[0] == ops


def test_a_failing_op_gets_its_error_and_the_rest_of_its_group_lands(
    env: Environment, spool: Spool
) -> None:
    def bad(txn: lmdb.Transaction) -> None:
        spool.put_events(txn, [event(100, 1)])  # rolled back with the op
        raise ValueError("bad op")

    done = Completions()
    writer = SpoolWriter(env, done)
    ops = [WriteOp(lambda txn, s=s: spool.put_events(txn, [event(s, 1)]), token=s) for s in (1, 2)]
    ops.append(WriteOp(bad, token="bad"))
    ops += [WriteOp(lambda txn, s=s: spool.put_events(txn, [event(s, 1)]), token=s) for s in (3, 4)]
    done.expect(len(ops))
    for op in ops:  # queued before the thread starts: one group
        writer.submit(op)
    writer.start()
    try:
        done.wait()
    finally:
        writer.stop()
    assert done.groups == 1
    errors = {op.token: op.error for op in done.ops}
    assert isinstance(errors.pop("bad"), ValueError)
    assert errors == {1: None, 2: None, 3: None, 4: None}
    assert seqs_of(spool, 1) == [1, 2, 3, 4]
    assert 100 not in stored_events(env, spool)


def test_writer_stop_applies_everything_already_submitted(env: Environment, spool: Spool) -> None:
    done = Completions()
    writer = SpoolWriter(env, done)
    writer.start()
    for seq in range(1, 51):
        writer.submit(WriteOp(lambda txn, s=seq: spool.put_events(txn, [event(s, 1)])))
    writer.stop()
    assert len(done.ops) == 50
    assert spool.queue_totals(1)[0] == 50


def test_hand_over_returns_once_its_group_is_applied_and_the_commit_follows(
    env: Environment, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.writer.HAND_OVER_WAIT_MIN_S", 0.0)  # always wait
    committing = threading.Event()  # held shut: the commit cannot be reported yet
    done = Completions()

    def on_done(group: list[WriteOp]) -> None:
        assert committing.wait(WAIT_S)
        done(group)

    writer = SpoolWriter(env, on_done)
    writer.start()
    try:
        group = [
            WriteOp(lambda txn, s=s: spool.put_events(txn, [event(s, 1)]), token=s)
            for s in (1, 2, 3)
        ]
        done.expect(3)
        writer.hand_over(group)
        # Back before the group's report: it was applied, its commit still to come.
        assert done.ops == []
        committing.set()
        done.wait()
    finally:
        committing.set()
        writer.stop()
    assert done.groups == 1
    assert seqs_of(spool, 1) == [1, 2, 3]


def test_hand_over_to_a_writer_that_stopped_fails_instead_of_waiting_forever(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.writer.HAND_OVER_CHECK_S", 0.01)
    monkeypatch.setattr("storage.writer.HAND_OVER_WAIT_MIN_S", 0.0)
    writer = SpoolWriter(env, Completions())
    writer.start()
    writer.stop()
    with pytest.raises(RuntimeError, match="spool writer has stopped"):
        writer.hand_over([WriteOp(lambda txn: None)])


def test_a_failing_completion_callback_does_not_stop_the_writer(
    env: Environment, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Completions()
    calls = 0

    def flaky(group: list[WriteOp]) -> None:
        nonlocal calls
        calls += 1
        seen(group)
        if calls == 1:
            raise RuntimeError("caller bug")

    writer = SpoolWriter(env, flaky)
    writer.start()
    try:
        seen.expect(1)
        writer.submit(WriteOp(lambda txn: spool.put_events(txn, [event(1, 1)])))
        seen.wait()
        seen.expect(2)
        writer.submit(WriteOp(lambda txn: spool.put_events(txn, [event(2, 1)])))
        seen.wait()
    finally:
        writer.stop()
    assert seqs_of(spool, 1) == [1, 2]
    assert "completion callback failed" in caplog.text


def test_writer_grows_a_full_map_while_readers_read_and_every_op_succeeds(
    tmp_path: Path,
) -> None:
    env = Environment(tmp_path / "data", map_size_bytes=64 * 1024)
    try:
        spool = Spool(env)
        start_map = env.map_bytes()
        done = Completions()
        writer = SpoolWriter(env, done)
        payload = os.urandom(16 * 1024)
        ops = 256  # 4 MiB of events
        reads: list[int] = []
        read_errors: list[BaseException] = []
        finished = threading.Event()

        def read_until_finished() -> None:
            try:
                while not finished.is_set():
                    reads.append(spool.queue_totals(1)[0])
            except BaseException as exc:
                read_errors.append(exc)

        reader = threading.Thread(target=read_until_finished)
        reader.start()
        writer.start()
        done.expect(ops)
        try:
            for seq in range(1, ops + 1):
                ev = StoredEvent(seq, payload, (1,), 0, len(payload))
                writer.submit(WriteOp(lambda txn, e=ev: spool.put_events(txn, [e])))
            done.wait()
        finally:
            writer.stop()
            finished.set()
            reader.join(WAIT_S)
        assert not reader.is_alive()
        assert read_errors == []
        assert reads == sorted(reads)  # each read sees a committed prefix
        assert [op.error for op in done.ops] == [None] * ops
        assert env.map_bytes() > start_map
        assert env.map_bytes() >= ops * len(payload)
        assert spool.queue_totals(1) == (ops, ops * len(payload), 1, ops)
        assert spool.read_window(1, ops - 1, 10) == [(ops, 0, 0, len(payload), payload)]
    finally:
        env.close()


# --------------------------------------------------------------------------
# the data file checked before it is mapped


def _environment_with_data(data: Path) -> Path:
    env = Environment(data)
    spool = Spool(env)
    write(env, lambda txn: spool.put_events(txn, [event(seq, seq) for seq in range(1, 200)]))
    env.close()
    assert not (data / "HELD-DATA").exists()  # written by the writer's commits, not this one
    Environment(data).close()  # a directory with data from before the marker gets one
    assert (data / "HELD-DATA").exists()
    return data / "lmdb" / "data.mdb"


def test_truncated_data_file_is_refused_before_it_is_mapped(tmp_path: Path) -> None:
    data_file = _environment_with_data(tmp_path / "data")
    size = data_file.stat().st_size
    os.truncate(data_file, size // 2)
    with pytest.raises(DataFileDamaged, match="is truncated") as refused:
        Environment(tmp_path / "data")
    assert refused.value.path == str(data_file)
    assert "restore it from a backup" in str(refused.value)


def test_data_file_ending_before_pages_freed_in_their_own_transaction_is_accepted(
    tmp_path: Path,
) -> None:
    # LMDB never writes pages a transaction allocated and freed again, so a
    # healthy file may end before the last page its meta counts (seen after a
    # kill -9 in CI): the check must walk the trees, not compare sizes.
    directory = tmp_path / "data"
    (directory / "lmdb").mkdir(parents=True)
    env = lmdb.open(str(directory / "lmdb"), map_size=1 << 30, max_dbs=2)
    dbs = [env.open_db(b"a"), env.open_db(b"b")]
    rnd, live, short_seen = random.Random(28), {}, 0
    for _ in range(30):
        with env.begin(write=True) as txn:
            for _ in range(rnd.randint(1, 300)):
                key = rnd.randint(0, 3000)
                if rnd.random() < 0.6:
                    live[key] = b"x" * rnd.choice([10, 300, 5000])
                    txn.put(b"%06d" % key, live[key], db=dbs[key % 2])
                elif live.pop(key, None) is not None:
                    txn.delete(b"%06d" % key, db=dbs[key % 2])
        size = (directory / "lmdb" / "data.mdb").stat().st_size
        short_seen += size < (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        check_data_file(directory)
    env.close()
    assert short_seen, "no transaction left the file short of its last page: the case is untested"
    env = lmdb.open(str(directory / "lmdb"), max_dbs=2)
    dbs = [env.open_db(b"a"), env.open_db(b"b")]
    with env.begin() as txn:
        assert {key: txn.get(b"%06d" % key, db=dbs[key % 2]) for key in live} == live
    env.close()


def test_empty_data_file_is_refused_only_where_data_was_held(tmp_path: Path) -> None:
    data_file = _environment_with_data(tmp_path / "data")
    os.truncate(data_file, 0)
    with pytest.raises(DataFileDamaged, match="is empty but this directory held data"):
        Environment(tmp_path / "data")
    (tmp_path / "data" / "HELD-DATA").unlink()
    Environment(tmp_path / "data").close()  # no marker: a fresh start is what was asked


def test_garbled_pages_are_refused_naming_the_data_file(tmp_path: Path) -> None:
    data_file = _environment_with_data(tmp_path / "data")
    with open(data_file, "r+b") as f:
        f.seek(2 * 4096)
        f.write(b"\xa5" * (data_file.stat().st_size - 2 * 4096))
    with pytest.raises(DataFileDamaged, match="is corrupt"):
        Environment(tmp_path / "data")
    # the refusal released the directory's lock
    with pytest.raises(DataFileDamaged):
        Environment(tmp_path / "data")


def test_data_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("x")
    with pytest.raises(DataDirUnusable, match="is a file"):
        Environment(tmp_path / "data")


def test_a_full_disk_fails_the_whole_group_and_the_writer_goes_on(
    env: Environment, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One commit refused for a full disk (as LMDB reports it: EIO), the next lands."""
    full = {"now": True}

    def store(seq: int) -> Callable[[lmdb.Transaction], Any]:
        def apply(txn: lmdb.Transaction) -> Any:
            if full["now"]:
                raise lmdb.Error("mdb_txn_commit: Input/output error")
            return spool.put_events(txn, [event(seq, 1)])

        return apply

    done = Completions()
    writer = SpoolWriter(env, done)
    assert not (env.data_dir / "HELD-DATA").exists()
    monkeypatch.setattr(env, "has_room", lambda: not full["now"])
    monkeypatch.setattr("storage.environment.FULL_DISK_MARGIN_BYTES", 1 << 62)  # any device
    try:
        done.expect(3)
        for seq in (1, 2, 3):
            writer.submit(WriteOp(store(seq), token=seq))
        writer.start()
        done.wait()
        assert done.groups == 1
        assert all(isinstance(op.error, StorageFull) for op in done.ops)
        assert writer.full is not None
        full["now"] = False
        done.expect(4)
        writer.submit(WriteOp(store(4), token=4))
        done.wait()
    finally:
        writer.stop()
    assert done.ops[-1].token == 4 and done.ops[-1].error is None
    assert writer.full is None
    assert (env.data_dir / "HELD-DATA").exists()
