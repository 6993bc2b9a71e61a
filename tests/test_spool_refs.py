"""An event stored in a local queue and spooled for a link lives until both let go of it."""

from __future__ import annotations

from storage.environment import Environment
from storage.spool import Forward, Spool, StoredEvent

LINK_ID = 1
QUEUE_ID = 7


def _event(env: Environment, spool: Spool) -> bytes | None:
    with env.reading() as txn:
        return txn.get((1).to_bytes(8, "big"), db=spool.events)


def _store_in_queue_and_link(
    env: Environment, spool: Spool, queue_ids: tuple[int, ...] = (QUEUE_ID,)
) -> None:
    forwards = (Forward(LINK_ID, 1, b"envelope"),)
    stored = StoredEvent(1, b"payload", queue_ids, 0, 7, forwards)
    with env.env.begin(write=True) as txn:
        spool.put_events(txn, [stored])


def test_a_spooled_event_survives_its_local_queue_ack(env: Environment, spool: Spool) -> None:
    _store_in_queue_and_link(env, spool)
    with env.env.begin(write=True) as txn:
        assert spool.remove_entries(txn, QUEUE_ID, [1]) == 1
    sent = spool.read_spool(LINK_ID, 0, 10)
    assert [(s.link_seq, s.data) for s in sent] == [(1, b"payload")]
    with env.env.begin(write=True) as txn:
        assert spool.trim(txn, LINK_ID, 1) == (1, 7)
    assert _event(env, spool) is None


def test_a_queued_event_survives_its_link_trim(env: Environment, spool: Spool) -> None:
    _store_in_queue_and_link(env, spool, (QUEUE_ID, QUEUE_ID + 1))
    with env.env.begin(write=True) as txn:
        spool.trim(txn, LINK_ID, 1)
        spool.remove_entries(txn, QUEUE_ID, [1])
    assert _event(env, spool) == b"payload"
    with env.env.begin(write=True) as txn:
        spool.remove_entries(txn, QUEUE_ID + 1, [1])
    assert _event(env, spool) is None


def test_reading_a_spool_stops_at_a_byte_budget_but_always_reads_one(
    env: Environment, spool: Spool
) -> None:
    stored = [
        StoredEvent(seq, b"p" * 100, (), 0, 7, (Forward(LINK_ID, seq, b"envelope"),))
        for seq in range(1, 11)
    ]
    with env.env.begin(write=True) as txn:
        spool.put_events(txn, stored)
    # 108 bytes an event (payload and envelope): the third one reaches 250.
    assert [s.link_seq for s in spool.read_spool(LINK_ID, 0, 10, 250)] == [1, 2, 3]
    assert [s.link_seq for s in spool.read_spool(LINK_ID, 0, 10, 0)] == [1]
    assert len(spool.read_spool(LINK_ID, 0, 10)) == 10
