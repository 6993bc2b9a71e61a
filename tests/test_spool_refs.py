"""An event stored in a local queue and spooled for a link lives until both let go of it."""

from __future__ import annotations

import pytest

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


def _spool_only(env: Environment, spool: Spool, payload: bytes, size: int) -> None:
    """Events 1-10, each spooled for the link (link seq = seq) and in no queue."""
    stored = [
        StoredEvent(seq, payload, (), 0, size, (Forward(LINK_ID, seq, b"envelope"),))
        for seq in range(1, 11)
    ]
    with env.env.begin(write=True) as txn:
        spool.put_events(txn, stored)


def test_reading_a_spool_stops_at_a_byte_budget_but_always_reads_one(
    env: Environment, spool: Spool
) -> None:
    _spool_only(env, spool, payload=b"p" * 100, size=7)
    # 108 bytes an event (payload and envelope): the third one reaches 250.
    assert [s.link_seq for s in spool.read_spool(LINK_ID, 0, 10, 250)] == [1, 2, 3]
    assert [s.link_seq for s in spool.read_spool(LINK_ID, 0, 10, 0)] == [1]
    assert len(spool.read_spool(LINK_ID, 0, 10)) == 10


def _stored_events(env: Environment, spool: Spool) -> dict[int, bytes]:
    with env.reading() as txn:
        return {
            int.from_bytes(key, "big"): bytes(value) for key, value in txn.cursor(db=spool.events)
        }


@pytest.mark.parametrize("spooled_in", ["seq order", "reverse seq order"])
def test_trimming_a_spool_keeps_exactly_the_events_a_queue_still_holds(
    env: Environment, spool: Spool, spooled_in: str
) -> None:
    # Link-only events, events also in one or two queues, in runs: the trim walks them
    # all in one go and must release each by its own count, in whatever seq order the
    # link spooled them.
    holders = {seq: (QUEUE_ID,) * (seq % 3) for seq in range(1, 31)}
    link_seq = {seq: seq if spooled_in == "seq order" else 31 - seq for seq in holders}
    stored = [
        StoredEvent(
            seq,
            b"event-%d" % seq,
            tuple(QUEUE_ID + k for k in range(len(queues))),
            0,
            7,
            (Forward(LINK_ID, link_seq[seq], b"envelope"),),
        )
        for seq, queues in holders.items()
    ]
    with env.env.begin(write=True) as txn:
        spool.put_events(txn, stored)
    with env.env.begin(write=True) as txn:
        count, size = spool.trim(txn, LINK_ID, 20)
    trimmed = {seq for seq in holders if link_seq[seq] <= 20}
    assert (count, size) == (20, sum(len(b"event-%d" % seq) for seq in trimmed))
    unsent = set(holders) - trimmed
    queued = {seq for seq, queues in holders.items() if queues}
    assert set(_stored_events(env, spool)) == queued | unsent
    assert [s.link_seq for s in spool.read_spool(LINK_ID, 0, 100)] == list(range(21, 31))
    # The queues let go too: nothing of the trimmed events is left, nor of their counts.
    with env.env.begin(write=True) as txn:
        for k in range(2):
            spool.remove_entries(txn, QUEUE_ID + k, sorted(trimmed))
    assert set(_stored_events(env, spool)) == unsent
    with env.reading() as txn:
        counted = {int.from_bytes(key, "big") for key, _ in txn.cursor(db=spool.refs)}
    assert counted <= unsent


def test_dropping_the_oldest_spooled_events_frees_at_least_what_was_asked(
    env: Environment, spool: Spool
) -> None:
    _spool_only(env, spool, payload=b"p" * 10, size=10)
    with env.env.begin(write=True) as txn:
        assert spool.drop_oldest(txn, LINK_ID, 25) == (3, 30)
    assert set(_stored_events(env, spool)) == set(range(4, 11))
    assert [s.link_seq for s in spool.read_spool(LINK_ID, 0, 100)] == list(range(4, 11))
