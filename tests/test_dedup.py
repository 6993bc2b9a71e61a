"""Idempotent publishing: the de-duplication window, its durable log, and a real node using it."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.dedup import PENDING, DedupWindow, app_key, producer_key, producer_name
from plexus import Client
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as pb_grpc
from storage.dedup import DedupLog, DedupRecord
from storage.environment import Environment
from storage.spool import FORMAT, Spool
from tests.harness import Nodes

NOW_MS = 1_800_000_000_000


def _id(at_ms: int, n: int = 0) -> int:
    return (at_ms << 22) | n


def _record(seq: int, key: bytes, at_ms: int = NOW_MS) -> DedupRecord:
    return DedupRecord(seq, _id(at_ms, seq), key)


# ---------------------------------------------------------------- the window (sans-IO)


def test_a_landed_key_answers_with_its_first_id() -> None:
    window = DedupWindow(max_keys=10, max_age_ms=60_000)
    key = producer_key(b"p" * 16, 1)
    assert window.claim(key) is None  # new: now pending
    assert window.claim(key) == PENDING
    window.landed([_record(5, key)], NOW_MS)
    assert window.claim(key) == _id(NOW_MS, 5)


def test_resends_of_a_pending_key_share_its_outcome() -> None:
    window = DedupWindow(max_keys=10, max_age_ms=60_000)
    landed_key, failed_key = app_key("a"), app_key("b")
    assert window.claim(landed_key) is None and window.claim(failed_key) is None
    window.join(landed_key, "resend-1")
    window.join(landed_key, "resend-2")
    window.join(failed_key, "resend-3")
    assert window.landed([_record(1, landed_key)], NOW_MS) == [
        ("resend-1", _id(NOW_MS, 1)),
        ("resend-2", _id(NOW_MS, 1)),
    ]
    assert window.failed([failed_key]) == ["resend-3"]
    # A failed first copy leaves its key free: the next copy is stored.
    assert window.claim(failed_key) is None


def test_the_window_keeps_the_newest_keys_up_to_its_size() -> None:
    window = DedupWindow(max_keys=3, max_age_ms=60_000)
    keys = [app_key(str(i)) for i in range(5)]
    window.landed([_record(i + 1, k) for i, k in enumerate(keys)], NOW_MS)
    assert [window.claim(k) is not None for k in keys] == [False, False, True, True, True]
    assert window.trim_upto == 2


def test_keys_older_than_the_window_are_forgotten() -> None:
    window = DedupWindow(max_keys=100, max_age_ms=1_000)
    old, new = app_key("old"), app_key("new")
    window.landed([_record(1, old, NOW_MS - 5_000)], NOW_MS - 5_000)
    window.landed([_record(2, new, NOW_MS)], NOW_MS)
    assert window.claim(old) is None
    assert window.claim(new) == _id(NOW_MS, 2)


def test_trims_of_the_log_come_in_runs() -> None:
    window = DedupWindow(max_keys=1, max_age_ms=60_000)
    window.landed([_record(i, app_key(str(i))) for i in range(1, 10)], NOW_MS)
    assert window.trim_due() == 0  # eight forgotten: not worth a write yet
    window.landed([_record(i, app_key(str(i))) for i in range(10, 2000)], NOW_MS)
    assert window.trim_due() == 1998


PRODUCER = b"\x07" * 16


def _run(seq: int, first: int, count: int, at_ms: int = NOW_MS) -> DedupRecord:
    """A producer's sequences first.. stored as events seq.. (ids counting up from seq's)."""
    return DedupRecord(seq, _id(at_ms, seq), producer_key(PRODUCER, first), count)


def test_a_run_claimed_at_once_answers_each_key_with_its_own_id() -> None:
    window = DedupWindow(max_keys=100, max_age_ms=60_000)
    assert window.claim_run(producer_name(PRODUCER), 1, 10)
    assert window.claim(producer_key(PRODUCER, 4)) == PENDING
    window.join(producer_key(PRODUCER, 4), "resend-4")
    assert window.landed([_run(20, 1, 10)], NOW_MS) == [("resend-4", _id(NOW_MS, 23))]
    assert len(window) == 10
    assert window.claim(producer_key(PRODUCER, 1)) == _id(NOW_MS, 20)
    assert window.claim(producer_key(PRODUCER, 10)) == _id(NOW_MS, 29)
    assert window.claim(producer_key(PRODUCER, 11)) is None  # past the run: new


def test_a_run_overlapping_known_keys_is_not_claimed_at_once() -> None:
    window = DedupWindow(max_keys=100, max_age_ms=60_000)
    name = producer_name(PRODUCER)
    assert window.claim_run(name, 5, 5)
    window.landed([_run(1, 5, 5)], NOW_MS)
    assert not window.claim_run(name, 9, 3)  # 9 is known
    assert not window.claim_run(name, 1, 3)  # before known keys: one by one
    assert window.claim(producer_key(PRODUCER, 1)) is None
    assert window.claim(producer_key(PRODUCER, 9)) == _id(NOW_MS, 5)
    assert window.claim_run(name, 10, 3)


def test_a_failed_run_frees_its_keys_and_fails_its_waiters() -> None:
    window = DedupWindow(max_keys=100, max_age_ms=60_000)
    assert window.claim_run(producer_name(PRODUCER), 1, 3)
    window.join(producer_key(PRODUCER, 2), "resend-2")
    assert window.failed([producer_key(PRODUCER, 1)]) == ["resend-2"]
    assert window.claim(producer_key(PRODUCER, 2)) is None


def test_the_window_cuts_its_oldest_run_to_keep_max_keys() -> None:
    window = DedupWindow(max_keys=5, max_age_ms=60_000)
    window.landed([_run(1, 1, 3)], NOW_MS)
    window.landed([_run(4, 4, 4)], NOW_MS)
    assert len(window) == 5
    known = [window.claim(producer_key(PRODUCER, s)) is not None for s in range(1, 8)]
    assert known == [False, False, True, True, True, True, True]
    assert window.trim_upto == 2  # the seq of the last key forgotten


def test_keys_of_a_run_older_than_the_window_are_forgotten() -> None:
    window = DedupWindow(max_keys=100, max_age_ms=1_000)
    window.landed([_run(1, 1, 3, NOW_MS - 5_000)], NOW_MS - 5_000)
    window.landed([_run(4, 4, 2)], NOW_MS)
    assert len(window) == 2
    assert window.claim(producer_key(PRODUCER, 3)) is None
    assert window.claim(producer_key(PRODUCER, 5)) == _id(NOW_MS, 5)
    assert window.trim_upto == 3


class _KeyByKey:
    """The naive window: every key on its own, oldest forgotten first (the reference)."""

    def __init__(self, max_keys: int, max_age_ms: int) -> None:
        self.max_keys, self.max_age_ms = max_keys, max_age_ms
        self.ids: dict[bytes, int] = {}
        self.order: list[bytes] = []

    def claim(self, key: bytes) -> int | None:
        if key not in self.ids:
            self.ids[key] = PENDING
            return None
        return self.ids[key]

    def landed(self, keys: list[tuple[bytes, int]], now_ms: int) -> None:
        for key, event_id in keys:
            self.ids[key] = event_id
            self.order.append(key)
        while self.order and (
            len(self.order) > self.max_keys
            or self.ids[self.order[0]] >> 22 < now_ms - self.max_age_ms
        ):
            del self.ids[self.order.pop(0)]

    def failed(self, keys: list[bytes]) -> None:
        for key in keys:
            del self.ids[key]


_batches = st.lists(
    st.tuples(
        st.integers(0, 1),  # producer
        st.integers(1, 40),  # first sequence
        st.integers(1, 8),  # count
        st.booleans(),  # its commit lands (or fails)
        st.integers(0, 400),  # ms since the last batch
    ),
    max_size=60,
)


@given(_batches, st.integers(1, 30))
def test_runs_answer_every_key_as_a_key_by_key_window_does(
    batches: list[tuple[int, int, int, bool, int]], max_keys: int
) -> None:
    window, reference = DedupWindow(max_keys, 1_000), _KeyByKey(max_keys, 1_000)
    now, seq = NOW_MS, 0
    for producer, first, count, lands, elapsed in batches:
        now += elapsed
        name = producer_name(bytes([producer]))
        keys = [producer_key(bytes([producer]), first + i) for i in range(count)]
        # As the publisher does: the batch at once when it can, else key by key.
        if window.claim_run(name, first, count):
            claimed = [(keys[0], count)]
            assert [reference.claim(k) for k in keys] == [None] * count
        else:
            answers = [window.claim(k) for k in keys]
            assert answers == [reference.claim(k) for k in keys]
            claimed = [(k, 1) for k, a in zip(keys, answers, strict=True) if a is None]
        if lands:
            records = []
            for key, n in claimed:
                records.append(DedupRecord(seq + 1, _id(now, seq + 1), key, n))
                seq += n
            window.landed(records, now)
            reference.landed(
                [
                    (
                        r.key[:-8] + (int.from_bytes(r.key[-8:], "big") + i).to_bytes(8, "big"),
                        r.event_id + i,
                    )
                    for r in records
                    for i in range(r.count)
                ],
                now,
            )
        else:
            window.failed([key for key, _n in claimed])
            reference.failed(
                [
                    k[:-8] + (int.from_bytes(k[-8:], "big") + i).to_bytes(8, "big")
                    for k, n in claimed
                    for i in range(n)
                ]
            )
        assert len(window) == len(reference.order)


# ---------------------------------------------------------------- the durable log


def test_the_log_appends_trims_and_reads_back(tmp_path: Path) -> None:
    env = Environment(tmp_path)
    try:
        log = DedupLog(env)
        records = [_record(seq, app_key(f"k{seq}")) for seq in range(1, 6)]
        with env.env.begin(write=True) as txn:
            log.append(txn, records[:3])  # one commit's keys: one LMDB record
            log.append(txn, records[3:])
        assert log.read_all() == records
        with env.env.begin(write=True) as txn:
            assert log.trim(txn, 2) == 0  # a commit's record goes with its last key
            assert log.trim(txn, 3) == 1
        assert log.read_all() == records[3:]
        with env.env.begin(write=True) as txn:
            assert log.trim(txn, 100) == 1
            assert log.trim(txn, 100) == 0
        assert log.read_all() == []
    finally:
        env.close()


def test_a_log_written_one_record_per_key_reads_and_trims_beside_new_records(
    tmp_path: Path,
) -> None:
    env = Environment(tmp_path)
    try:
        log = DedupLog(env)
        old = [_record(seq, app_key(f"old{seq}")) for seq in (1, 2)]
        with env.env.begin(write=True) as txn:
            for seq, event_id, key, _count in old:  # as nodes before format 2 wrote them
                txn.put(seq.to_bytes(8, "big"), event_id.to_bytes(8, "big") + key, db=log.db)
            log.append(txn, [_record(3, app_key("new"))])
        assert log.read_all() == [*old, _record(3, app_key("new"))]
        with env.env.begin(write=True) as txn:
            assert log.trim(txn, 2) == 2
        assert log.read_all() == [_record(3, app_key("new"))]
    finally:
        env.close()


def test_a_log_of_runs_reads_back_and_trims_by_each_commits_last_seq(tmp_path: Path) -> None:
    env = Environment(tmp_path)
    try:
        log = DedupLog(env)
        first, second = [_run(1, 1, 1000), _record(1001, app_key("a"))], [_run(1002, 1001, 5)]
        with env.env.begin(write=True) as txn:
            log.append(txn, first)
            log.append(txn, second)
        assert log.read_all() == [*first, *second]
        with env.env.begin(write=True) as txn:
            assert log.trim(txn, 1000) == 0
            assert log.trim(txn, 1001) == 1
        assert log.read_all() == second
    finally:
        env.close()


def test_keys_logged_without_an_event_mark_the_data_file_so_older_nodes_refuse_it(
    tmp_path: Path,
) -> None:
    env = Environment(tmp_path)
    try:
        log = DedupLog(env)
        spool = Spool(env)
        with env.env.begin(write=True) as txn:  # keyed events no queue took: no event stored
            log.append(txn, [_run(1, 1, 10)])
        with env.env.begin() as txn:
            mark = txn.get(b"format", db=spool.meta)
        assert mark is not None and struct.unpack(">I", mark)[0] == FORMAT == 3
    finally:
        env.close()


def _put_format_2(txn: object, log: DedupLog, records: list[DedupRecord]) -> None:
    """One commit's keys as nodes before format 3 wrote them."""
    value = b"".join(
        r.seq.to_bytes(8, "big")
        + r.event_id.to_bytes(8, "big")
        + len(r.key).to_bytes(2, "big")
        + r.key
        for r in records
    )
    key = records[0].seq.to_bytes(8, "big") + records[-1].seq.to_bytes(8, "big")
    txn.put(key, value, db=log.db)  # type: ignore[attr-defined]


def test_a_window_reloaded_from_per_key_records_knows_them_as_runs(tmp_path: Path) -> None:
    env = Environment(tmp_path)
    try:
        log = DedupLog(env)
        # A producer's keys 1..4 as consecutive events, then a commit of format 3.
        old = [DedupRecord(s, _id(NOW_MS, s), producer_key(PRODUCER, s)) for s in range(1, 5)]
        with env.env.begin(write=True) as txn:
            _put_format_2(txn, log, old[:2])
            _put_format_2(txn, log, old[2:])
            log.append(txn, [_run(5, 5, 3)])
        assert log.read_all() == [*old, _run(5, 5, 3)]
        window = DedupWindow(max_keys=6, max_age_ms=60_000)
        window.load(log.read_all(), NOW_MS)
        assert len(window) == 6
        assert window.claim(producer_key(PRODUCER, 1)) is None  # over the window's size
        assert window.claim(producer_key(PRODUCER, 2)) == _id(NOW_MS, 2)
        assert window.claim(producer_key(PRODUCER, 7)) == _id(NOW_MS, 7)
        assert window.claim_run(producer_name(PRODUCER), 8, 10)
    finally:
        env.close()


def test_a_reloaded_window_knows_what_was_logged(tmp_path: Path) -> None:
    env = Environment(tmp_path)
    try:
        log = DedupLog(env)
        with env.env.begin(write=True) as txn:
            log.append(txn, [_record(1, app_key("a")), _record(2, app_key("b"))])
        window = DedupWindow(max_keys=1, max_age_ms=60_000)
        window.load(log.read_all(), NOW_MS)
        assert window.claim(app_key("a")) is None  # over the window's size
        assert window.claim(app_key("b")) == _id(NOW_MS, 2)
    finally:
        env.close()


# ---------------------------------------------------------------- a real node


def _request(producer: bytes, topic_seq: list[tuple[str, int]]) -> pb.PublishRequest:
    return pb.PublishRequest(
        events=[pb.Event(topic=t, payload=b"v", mode=pb.GUARANTEED) for t, _ in topic_seq],
        producer=producer,
        sequences=[s for _, s in topic_seq],
        flush=True,
    )


async def _publish_raw(address: str, request: pb.PublishRequest) -> list[pb.PublishAck]:
    """One Publish call: send `request`, collect acks until every event is answered."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.BrokerStub(channel).Publish()
        await call.write(request)
        acks: list[pb.PublishAck] = []
        while sum(max(1, a.count) for a in acks) < len(request.events):
            async with asyncio.timeout(10):
                resp = await call.read()
            acks.extend(resp.acks)
        await call.done_writing()
        return acks


async def test_a_resent_producer_sequence_is_acked_with_the_first_id_and_stored_once(
    node,  # type: ignore[no-untyped-def]
) -> None:
    async with await Client.connect(node.address) as client:
        await client.create_queue("once", ["once/>"])
    producer = b"\x01" * 16
    first = await _publish_raw(node.address, _request(producer, [("once/a", 1), ("once/b", 2)]))
    again = await _publish_raw(node.address, _request(producer, [("once/b", 2), ("once/c", 3)]))
    assert not any(a.duplicate for a in first)
    by_index = {a.index: a for a in again}
    assert by_index[0].duplicate and by_index[0].id == first[0].id + 1
    assert not by_index[1].duplicate
    async with await Client.connect(node.address) as client:
        assert (await client.describe_queue("once")).depth == 3


async def test_a_malformed_dedup_request_is_refused_naming_what_is_wrong(node) -> None:  # type: ignore[no-untyped-def]
    request = _request(b"", [("x/a", 1)])
    acks = await _publish_raw(node.address, request)
    assert acks[0].HasField("error") and "producer" in acks[0].error.message
    request = _request(b"p" * 16, [("x/a", 1)])
    del request.sequences[:]
    request.sequences.extend([1, 2])
    acks = await _publish_raw(node.address, request)
    assert "sequences has 2 entries for 1 events" in acks[0].error.message


@pytest.mark.slow
async def test_keys_survive_a_node_kill_9(nodes: Nodes) -> None:
    node = nodes.start("us")
    async with await Client.connect(node.address) as client:
        await client.create_queue("durable", ["d/>"])
        ids = [
            await client.publish(f"d/{i}", b"v", guaranteed=True, key=f"row-{i}") for i in range(50)
        ]
    node.kill()
    node = await asyncio.to_thread(nodes.restart, node)
    async with await Client.connect(node.address) as client:
        again = [
            await client.publish(f"d/{i}", b"v", guaranteed=True, key=f"row-{i}") for i in range(50)
        ]
        assert again == ids
        assert client.publish_stats()["duplicates"] == 50
        assert (await client.describe_queue("durable")).depth == 50


@pytest.mark.slow
async def test_a_key_outside_the_window_is_stored_again(nodes: Nodes, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("[node]\ndedup_window_events = 3\n")
    node = nodes.start("us", None, "--config", str(config))
    async with await Client.connect(node.address) as client:
        await client.create_queue("small", ["s/>"])
        for i in range(5):
            await client.publish(f"s/{i}", b"v", guaranteed=True, key=f"k{i}")
        await client.publish("s/0", b"v", guaranteed=True, key="k0")  # fell out: stored again
        await client.publish("s/4", b"v", guaranteed=True, key="k4")  # still in: acked again
        assert client.publish_stats()["duplicates"] == 1
        assert (await client.describe_queue("small")).depth == 6


async def test_a_batch_with_a_refused_event_keeps_the_keys_of_those_stored(
    node,  # type: ignore[no-untyped-def]
) -> None:
    async with await Client.connect(node.address) as client:
        await client.create_queue("part", ["part/>"])
    producer = b"\x02" * 16
    request = _request(producer, [(f"part/{s}", s) for s in range(1, 6)])
    request.events[2].ttl_ms = 2**63  # over the maximum: this one alone is refused
    first = await _publish_raw(node.address, request)
    refused = [a.index for a in first if a.HasField("error")]
    assert refused == [2]
    ids = {a.index + i: a.id + i for a in first if not a.HasField("error") for i in range(a.count)}
    request.events[2].ttl_ms = 0
    again = {a.index: a for a in await _publish_raw(node.address, request)}
    assert {i: (a.id, a.duplicate) for i, a in again.items() if i != 2} == {
        i: (ids[i], True) for i in (0, 1, 3, 4)
    }
    assert not again[2].duplicate and not again[2].HasField("error")
    async with await Client.connect(node.address) as client:
        assert (await client.describe_queue("part")).depth == 5


@pytest.mark.slow
async def test_a_producers_batch_survives_a_node_kill_9_and_its_resend_is_stored_once(
    nodes: Nodes,
) -> None:
    node = nodes.start("us")
    async with await Client.connect(node.address) as client:
        await client.create_queue("batch", ["b/>"])
    request = _request(b"\x03" * 16, [(f"b/{s % 7}", s) for s in range(1, 1001)])
    first = await _publish_raw(node.address, request)
    assert not any(a.HasField("error") or a.duplicate for a in first)
    node.kill()
    node = await asyncio.to_thread(nodes.restart, node)
    again = await _publish_raw(node.address, request)
    assert all(a.duplicate for a in again) and len(again) == 1000
    ids = [a.id + i for a in first for i in range(max(1, a.count))]
    assert [a.id for a in sorted(again, key=lambda a: a.index)] == ids
    async with await Client.connect(node.address) as client:
        assert (await client.describe_queue("batch")).depth == 1000
