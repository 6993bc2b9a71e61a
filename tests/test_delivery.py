"""Queue delivery state (node/delivery.py): credits, exclusivity, acks, dead events, the window."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from node.delivery import DeadReason, Entry, QueueDelivery


def entries(*seqs: int, size: int = 10, expires_at_ms: int = 0) -> list[Entry]:
    return [Entry(seq, size, expires_at_ms, data=b"e%d" % seq) for seq in seqs]


def delivered(qd: QueueDelivery, now_ms: int = 0) -> dict[int, list[int]]:
    pulled = qd.pull(now_ms)
    assert pulled.dead == []
    return {consumer: [e.seq for e in got] for consumer, got in pulled.deliveries}


def ready_seqs(qd: QueueDelivery) -> list[int]:
    return [e.seq for e in qd.ready]


# --------------------------------------------------------------------------
# credits and round-robin
# --------------------------------------------------------------------------


def test_entries_wait_until_a_consumer_has_credit() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.push(entries(1, 2))
    assert delivered(qd) == {}
    qd.add_consumer(7)
    assert delivered(qd) == {}
    qd.grant(7, 1)
    assert delivered(qd) == {7: [1]}
    assert qd.credits[7] == 0
    assert ready_seqs(qd) == [2]


def test_non_exclusive_consumers_take_turns() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    for consumer in (1, 2, 3):
        qd.add_consumer(consumer, credits=10)
    qd.push(entries(*range(1, 7)))
    assert delivered(qd) == {1: [1, 4], 2: [2, 5], 3: [3, 6]}
    assert qd.credits == {1: 8, 2: 8, 3: 8}


def test_a_consumer_out_of_credit_is_skipped_until_granted_more() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.add_consumer(1, credits=1)
    qd.add_consumer(2, credits=5)
    qd.push(entries(*range(1, 6)))
    assert delivered(qd) == {1: [1], 2: [2, 3, 4, 5]}
    qd.grant(1, 2)
    qd.push(entries(6, 7, 8))
    got = delivered(qd)
    assert sorted(got[1] + got.get(2, [])) == [6, 7, 8]
    assert len(got[1]) == 2
    assert all(credit >= 0 for credit in qd.credits.values())


def test_grant_to_an_unknown_consumer_is_ignored() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.grant(9, 5)
    assert qd.credits == {}
    qd.push(entries(1))
    assert delivered(qd) == {}


# --------------------------------------------------------------------------
# exclusive queues
# --------------------------------------------------------------------------


def test_exclusive_queue_delivers_only_to_the_first_bound_consumer() -> None:
    qd = QueueDelivery(exclusive=True, max_deliveries=0)
    qd.add_consumer(1, credits=2)
    qd.add_consumer(2, credits=10)
    qd.push(entries(1, 2, 3))
    assert delivered(qd) == {1: [1, 2]}
    # Out of credit, the first consumer still holds the queue: nobody else gets entry 3.
    assert delivered(qd) == {}
    assert ready_seqs(qd) == [3]


def test_next_exclusive_consumer_takes_over_with_the_unacked_entries_when_the_first_leaves() -> (
    None
):
    qd = QueueDelivery(exclusive=True, max_deliveries=0)
    qd.add_consumer(1, credits=2)
    qd.add_consumer(2, credits=10)
    qd.add_consumer(3, credits=10)
    qd.push(entries(1, 2, 3))
    assert delivered(qd) == {1: [1, 2]}
    qd.ack(1, [1])
    back = qd.remove_consumer(1)
    assert [e.seq for e in back] == [2]
    pulled = qd.pull(0)
    assert [(c, [e.seq for e in got]) for c, got in pulled.deliveries] == [(2, [2, 3])]
    first, second = pulled.deliveries[0][1]
    assert (first.redelivered, first.delivery_count) == (True, 2)
    assert (second.redelivered, second.delivery_count) == (False, 1)
    qd.remove_consumer(2)
    assert delivered(qd) == {3: [2, 3]}


# --------------------------------------------------------------------------
# acks and nacks
# --------------------------------------------------------------------------


def test_ack_removes_only_the_consumers_own_in_flight_entries() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.add_consumer(1, credits=1)
    qd.add_consumer(2, credits=1)
    qd.push(entries(1, 2))
    assert delivered(qd) == {1: [1], 2: [2]}
    assert qd.ack(1, [2, 99]) == []  # another consumer's tag, an unknown tag
    assert [e.seq for e in qd.ack(1, [1])] == [1]
    assert qd.ack(1, [1]) == []  # acked once only
    assert set(qd.inflight) == {2}


def test_nack_puts_entries_back_at_the_front_in_seq_order_flagged_redelivered() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.add_consumer(1, credits=3)
    qd.push(entries(1, 2, 3, 4, 5))
    assert delivered(qd) == {1: [1, 2, 3]}
    back = qd.nack(1, [3, 1, 42])
    assert [e.seq for e in back] == [3, 1]
    assert ready_seqs(qd) == [1, 3, 4, 5]
    assert qd.ready_bytes == 40
    assert set(qd.inflight) == {2}
    qd.grant(1, 3)
    pulled = qd.pull(0)
    got = pulled.deliveries[0][1]
    assert [(e.seq, e.redelivered, e.delivery_count) for e in got] == [
        (1, True, 2),
        (3, True, 2),
        (4, False, 1),
    ]


def test_nack_by_another_consumer_is_ignored() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.add_consumer(1, credits=1)
    qd.add_consumer(2, credits=0)
    qd.push(entries(1))
    delivered(qd)
    assert qd.nack(2, [1]) == []
    assert qd.inflight[1][0] == 1


def test_removed_consumer_returns_its_in_flight_entries_to_the_front() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.add_consumer(1, credits=2)
    qd.add_consumer(2, credits=2)
    qd.push(entries(1, 2, 3, 4, 5, 6))
    assert delivered(qd) == {1: [1, 3], 2: [2, 4]}
    back = qd.remove_consumer(1)
    assert sorted(e.seq for e in back) == [1, 3]
    assert ready_seqs(qd) == [1, 3, 5, 6]
    assert all(e.redelivered for e in back)
    assert set(qd.inflight) == {2, 4}
    assert 1 not in qd.credits
    assert qd.remove_consumer(1) == []


# --------------------------------------------------------------------------
# dead events
# --------------------------------------------------------------------------


def test_entry_delivered_max_deliveries_times_is_dead_on_the_next_pull() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=2)
    qd.add_consumer(1, credits=10)
    qd.push(entries(1, 2))
    for _ in range(2):
        assert delivered(qd) in ({1: [1, 2]}, {1: [1]})
        qd.nack(1, [1])
        qd.ack(1, [2])
    pulled = qd.pull(0)
    assert pulled.deliveries == []
    assert [(e.seq, reason) for e, reason in pulled.dead] == [(1, DeadReason.MAX_DELIVERIES)]
    assert qd.credits[1] == 7  # dead entries use no credit
    assert not qd.ready and not qd.inflight


def test_expired_entry_is_dead_on_pull_and_the_next_one_is_delivered() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.add_consumer(1, credits=1)
    qd.push(entries(1, expires_at_ms=1000) + entries(2, expires_at_ms=5000) + entries(3))
    pulled = qd.pull(now_ms=1000)  # expiry is inclusive
    assert [(e.seq, r) for e, r in pulled.dead] == [(1, DeadReason.EXPIRED)]
    assert [(c, [e.seq for e in got]) for c, got in pulled.deliveries] == [(1, [2])]


def test_entries_are_not_judged_dead_while_nobody_can_take_them() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.push(entries(1, expires_at_ms=10))
    assert qd.pull(now_ms=100).dead == []
    assert ready_seqs(qd) == [1]


def test_expire_removes_only_expired_ready_entries() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.add_consumer(1, credits=1)
    qd.push(entries(1, expires_at_ms=10))
    delivered(qd)  # seq 1 in flight: not expire()'s business
    qd.push(entries(2, 3, expires_at_ms=10) + entries(4) + entries(5, expires_at_ms=50))
    assert qd.expire(now_ms=9) == []
    gone = qd.expire(now_ms=10)
    assert [e.seq for e in gone] == [2, 3]
    assert ready_seqs(qd) == [4, 5]
    assert qd.ready_bytes == 20
    assert set(qd.inflight) == {1}


def test_drop_forgets_ready_and_in_flight_entries() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0)
    qd.add_consumer(1, credits=1)
    qd.push(entries(1, 2, 3))
    delivered(qd)
    qd.drop([1, 3])
    assert ready_seqs(qd) == [2]
    assert qd.inflight == {}
    assert qd.ready_bytes == 10


# --------------------------------------------------------------------------
# the memory window
# --------------------------------------------------------------------------


def test_push_past_the_window_spills_and_later_pushes_stay_on_disk() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=4)
    qd.push(entries(*range(1, 7)))
    assert ready_seqs(qd) == [1, 2, 3, 4]
    assert qd.spilled and qd.last_loaded_seq == 4 and qd.last_pushed_seq == 6
    assert not qd.wants_load()  # still full
    qd.add_consumer(1, credits=1)
    delivered(qd)
    assert not qd.wants_load()  # 3 ready: more than half the window
    qd.push(entries(7))
    assert ready_seqs(qd) == [2, 3, 4]  # spilled: 7 stays on disk even though there is room
    qd.grant(1, 1)
    delivered(qd)
    assert qd.wants_load()  # 2 ready: half the window


def test_entries_stored_while_spilled_are_only_counted_and_a_load_brings_them() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=2)
    qd.push(entries(1, 2, 3))  # 3 spills
    assert qd.spilled_for(4) and not qd.spilled_for(2)
    qd.pushed_on_disk(6)  # 4-6 committed: no entry objects made for them
    assert ready_seqs(qd) == [1, 2] and qd.last_pushed_seq == 6
    qd.add_consumer(1, credits=10)
    assert delivered(qd) == {1: [1, 2]}
    qd.loading = True
    qd.loaded(entries(3, 4, 5, 6, 7), asked=10)  # 7 read before its commit was reported
    assert delivered(qd) == {1: [3, 4, 5, 6]}
    assert not qd.spilled and not qd.spilled_for(7)  # so 7's own push brings it
    qd.push(entries(7))
    assert delivered(qd) == {1: [7]}


def test_push_past_window_bytes_spills() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=100, window_bytes=25)
    qd.push(entries(1, 2, 3, 4))
    assert ready_seqs(qd) == [1, 2, 3]
    assert qd.spilled


def test_loaded_entries_join_in_order_and_a_short_read_ends_the_spill() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=4)
    qd.push(entries(*range(1, 10)))
    qd.add_consumer(1, credits=4)
    assert delivered(qd) == {1: [1, 2, 3, 4]}
    assert qd.wants_load()
    qd.loading = True
    assert not qd.wants_load()
    qd.loaded(entries(5, 6, 7, 8), asked=4)
    assert qd.spilled  # a full read: there may be more
    assert ready_seqs(qd) == [5, 6, 7, 8]
    qd.grant(1, 4)
    delivered(qd)
    qd.loading = True
    qd.loaded(entries(9), asked=4)
    assert not qd.spilled
    qd.push(entries(10))
    assert ready_seqs(qd) == [9, 10]


def test_loaded_skips_entries_already_in_memory() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=2)
    qd.push(entries(1, 2, 3))
    qd.loading = True
    qd.loaded(entries(2, 3), asked=10)
    assert ready_seqs(qd) == [1, 2, 3]


def test_push_during_a_load_is_not_lost_when_the_read_missed_it() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=4)
    qd.push(entries(1, 2, 3, 4, 5))
    qd.add_consumer(1, credits=4)
    delivered(qd)
    assert qd.wants_load()
    qd.loading = True
    after = qd.last_loaded_seq
    read = entries(5)  # the disk as it was when the read began
    qd.push(entries(6))  # committed while the read was in flight
    qd.loaded(read, asked=10)
    assert after == 4 and ready_seqs(qd) == [5]
    assert qd.spilled and qd.wants_load()  # 6 is still to be read
    qd.loading = True
    qd.loaded(entries(6), asked=10)
    assert ready_seqs(qd) == [5, 6]
    assert not qd.spilled


def test_a_load_that_reads_an_entry_before_its_push_leaves_it_to_the_push() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=2)
    qd.push(entries(1, 2, 3))  # 3 spills
    qd.add_consumer(1, credits=2)
    assert delivered(qd) == {1: [1, 2]}
    qd.loading = True
    qd.loaded(entries(3, 4), asked=10)  # 4 is committed, its push not yet run
    assert ready_seqs(qd) == [3]
    qd.push(entries(4))
    assert ready_seqs(qd) == [3, 4]


def test_a_dead_message_entry_read_by_a_load_before_its_push_is_not_duplicated() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=2)
    qd.push(entries(10, 11, 14))  # 14 spills
    qd.add_consumer(1, credits=2)
    assert delivered(qd) == {1: [10, 11]}
    qd.loading = True
    qd.loaded(entries(12, 14), asked=10)  # 12 moved in, its push not yet run
    qd.push(entries(12))
    assert ready_seqs(qd) == [12, 14]


def test_out_of_order_push_then_load_does_not_duplicate_entries() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=4)
    qd.push(entries(10, 11, 12))
    qd.push(entries(5))  # a nacked entry that reached max deliveries after 10-12 expired
    qd.push(entries(13))  # spills
    qd.add_consumer(1, credits=3)
    assert delivered(qd) == {1: [10, 11, 12]}
    assert qd.wants_load()
    qd.loading = True
    disk = [10, 11, 12, 13]  # entries in flight stay on disk until acked
    qd.loaded(entries(*sorted(s for s in disk if s > qd.last_loaded_seq)), asked=10)
    in_memory = ready_seqs(qd) + list(qd.inflight)
    assert sorted(in_memory) == [5, 10, 11, 12, 13]


def test_out_of_order_push_while_spilled_stays_in_memory_and_is_not_lost() -> None:
    qd = QueueDelivery(exclusive=False, max_deliveries=0, window=2)
    qd.push(entries(10, 11, 12))  # 12 spills
    qd.push(entries(4))  # a dead event with an old seq: no load would read it back
    assert ready_seqs(qd) == [10, 11, 4]
    qd.add_consumer(1, credits=10)
    assert delivered(qd) == {1: [10, 11, 4]}
    qd.loading = True
    qd.loaded(entries(12), asked=10)
    assert delivered(qd) == {1: [12]} and not qd.spilled


# --------------------------------------------------------------------------
# Stateful: random operations against a model, with a fake disk
# --------------------------------------------------------------------------

DELIVERY_SETTINGS = settings(
    max_examples=80,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class DeliveryMachine(RuleBasedStateMachine):
    """Drives a QueueDelivery as the queue shell does, checking it against a model.

    The fake disk holds every pushed entry not yet acked or dead, like the
    entries database; loads read from it after `last_loaded_seq`.
    """

    @initialize(
        exclusive=st.booleans(),
        max_deliveries=st.sampled_from([0, 2, 3]),
        window=st.integers(min_value=2, max_value=5),
        window_bytes=st.sampled_from([1 << 20, 25, 60]),
    )
    def setup(self, exclusive: bool, max_deliveries: int, window: int, window_bytes: int) -> None:
        self.qd = QueueDelivery(exclusive, max_deliveries, window=window, window_bytes=window_bytes)
        self.now = 0
        self.next_seq = 1
        self.next_consumer = 1
        self.disk: dict[int, tuple[int, int]] = {}  # seq -> (size, expires_at_ms)
        self.pushed: set[int] = set()
        self.finished: dict[int, str] = {}  # seq -> "acked" / "dead"
        self.inflight: dict[int, int] = {}  # seq -> consumer
        self.times_delivered: dict[int, int] = {}
        self.returned: set[int] = set()  # nacked or given back since last delivered
        self.ever_returned: set[int] = set()
        self.bound: list[int] = []  # consumers in bind order
        self.credits: dict[int, int] = {}
        self.last_fresh_seq: dict[int, int] = {}  # per consumer
        self.load: tuple[int, list[int] | None] | None = None  # (asked, snapshot or None)

    # ------------------------------------------------------------ helpers

    def _disk_after(self, after: int, asked: int) -> list[int]:
        return sorted(seq for seq in self.disk if seq > after)[:asked]

    def _entries_from_disk(self, seqs: list[int]) -> list[Entry]:
        return [Entry(seq, *self.disk[seq], data=b"%d" % seq) for seq in seqs if seq in self.disk]

    def _finish(self, seq: int, how: str) -> None:
        assert seq in self.pushed
        assert seq not in self.finished, f"seq {seq} {how} after being {self.finished.get(seq)}"
        self.finished[seq] = how
        self.disk.pop(seq, None)

    def _holder(self) -> int | None:
        return self.bound[0] if self.bound else None

    def _pull(self) -> None:
        pulled = self.qd.pull(self.now)
        for entry, reason in pulled.dead:
            if reason is DeadReason.EXPIRED:
                assert entry.expires_at_ms and self.now >= entry.expires_at_ms
            else:
                assert self.qd.max_deliveries
                assert self.times_delivered.get(entry.seq, 0) >= self.qd.max_deliveries
            assert entry.seq not in self.inflight
            self._finish(entry.seq, "dead")
            self.returned.discard(entry.seq)
        for consumer, got in pulled.deliveries:
            assert consumer in self.credits
            if self.qd.exclusive:
                assert consumer == self._holder()
            assert len(got) <= self.credits[consumer]
            self.credits[consumer] -= len(got)
            for entry in got:
                seq = entry.seq
                assert seq not in self.finished
                assert seq not in self.inflight, f"seq {seq} in flight to two consumers"
                if self.times_delivered.get(seq):
                    assert seq in self.returned, f"seq {seq} delivered twice without a nack"
                self.returned.discard(seq)
                self.times_delivered[seq] = self.times_delivered.get(seq, 0) + 1
                assert entry.delivery_count == self.times_delivered[seq]
                assert entry.redelivered == (seq in self.ever_returned)
                if not entry.redelivered:
                    assert seq > self.last_fresh_seq.get(consumer, 0), "out of order"
                    self.last_fresh_seq[consumer] = seq
                self.inflight[seq] = consumer

    def _give_back(self, seqs: list[int]) -> None:
        for seq in seqs:
            del self.inflight[seq]
            self.returned.add(seq)
            self.ever_returned.add(seq)

    # ------------------------------------------------------------ rules

    @rule(
        count=st.integers(min_value=1, max_value=4),
        size=st.integers(min_value=1, max_value=12),
        ttl=st.sampled_from([0, 0, 0, 5, 30]),
    )
    def push(self, count: int, size: int, ttl: int) -> None:
        batch = []
        for _ in range(count):
            seq = self.next_seq
            self.next_seq += 1
            expires = self.now + ttl if ttl else 0
            self.disk[seq] = (size, expires)  # stored first, then pushed
            self.pushed.add(seq)
            batch.append(Entry(seq, size, expires, data=b"%d" % seq))
        self.qd.push(batch)

    @rule(credits=st.integers(min_value=0, max_value=4))
    def add_consumer(self, credits: int) -> None:
        consumer = self.next_consumer
        self.next_consumer += 1
        self.qd.add_consumer(consumer, credits)
        self.bound.append(consumer)
        self.credits[consumer] = credits

    @precondition(lambda self: self.bound)
    @rule(data=st.data())
    def remove_consumer(self, data: st.DataObject) -> None:
        consumer = data.draw(st.sampled_from(self.bound))
        back = self.qd.remove_consumer(consumer)
        mine = sorted(seq for seq, owner in self.inflight.items() if owner == consumer)
        assert sorted(e.seq for e in back) == mine
        assert [e.seq for e in list(self.qd.ready)[: len(mine)]] == mine
        self._give_back(mine)
        self.bound.remove(consumer)
        del self.credits[consumer]

    @precondition(lambda self: self.bound)
    @rule(data=st.data(), credits=st.integers(min_value=1, max_value=5))
    def grant(self, data: st.DataObject, credits: int) -> None:
        consumer = data.draw(st.sampled_from(self.bound))
        self.qd.grant(consumer, credits)
        self.credits[consumer] += credits

    @rule()
    def pull(self) -> None:
        self._pull()

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.inflight)), min_size=1))
        consumer = self.inflight[seqs[0]]
        done = self.qd.ack(consumer, seqs)
        expected = sorted({s for s in seqs if self.inflight[s] == consumer})
        assert sorted(e.seq for e in done) == expected
        for seq in expected:
            del self.inflight[seq]
            self._finish(seq, "acked")

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.inflight)), min_size=1))
        consumer = self.inflight[seqs[0]]
        back = self.qd.nack(consumer, seqs)
        expected = sorted({s for s in seqs if self.inflight[s] == consumer})
        assert sorted(e.seq for e in back) == expected
        assert [e.seq for e in list(self.qd.ready)[: len(expected)]] == expected
        self._give_back(expected)

    @rule(step=st.integers(min_value=1, max_value=20))
    def tick(self, step: int) -> None:
        self.now += step

    @rule()
    def expire(self) -> None:
        for entry in self.qd.expire(self.now):
            assert entry.expires_at_ms and self.now >= entry.expires_at_ms
            self._finish(entry.seq, "dead")
            self.returned.discard(entry.seq)

    @precondition(lambda self: self.load is None and self.qd.wants_load())
    @rule(asked=st.integers(min_value=1, max_value=4), read_now=st.booleans())
    def start_load(self, asked: int, read_now: bool) -> None:
        self.qd.loading = True
        snapshot = self._disk_after(self.qd.last_loaded_seq, asked) if read_now else None
        self.load = (asked, snapshot)

    @precondition(lambda self: self.load is not None)
    @rule()
    def finish_load(self) -> None:
        assert self.load is not None
        asked, snapshot = self.load
        self.load = None
        if snapshot is None:  # the read saw the disk as it is now
            snapshot = self._disk_after(self.qd.last_loaded_seq, asked)
        self.qd.loaded(self._entries_from_disk(snapshot), asked)

    # ------------------------------------------------------------ invariants

    @invariant()
    def credits_match_the_model_and_never_go_negative(self) -> None:
        if hasattr(self, "qd"):
            assert self.qd.credits == self.credits
            assert all(credit >= 0 for credit in self.qd.credits.values())

    @invariant()
    def in_flight_matches_the_model(self) -> None:
        if hasattr(self, "qd"):
            assert {seq: owner for seq, (owner, _e) in self.qd.inflight.items()} == self.inflight

    @invariant()
    def memory_holds_each_live_entry_at_most_once(self) -> None:
        if hasattr(self, "qd"):
            ready = [e.seq for e in self.qd.ready]
            assert len(ready) == len(set(ready))
            assert not set(ready) & set(self.inflight)
            assert not set(ready) & set(self.finished)
            assert self.qd.ready_bytes == sum(e.size for e in self.qd.ready)
            fresh = [seq for seq in ready if seq not in self.ever_returned]
            assert len(fresh) <= self.qd.window + 4  # bounded: a window plus one load

    @invariant()
    def every_live_entry_is_in_memory_or_still_to_be_loaded(self) -> None:
        if hasattr(self, "qd"):
            in_memory = {e.seq for e in self.qd.ready} | set(self.inflight)
            for seq in self.pushed - set(self.finished) - in_memory:
                assert self.qd.spilled and seq > self.qd.last_loaded_seq, f"seq {seq} lost"

    def teardown(self) -> None:
        if not hasattr(self, "qd"):
            return
        # Consumers keep acking until the queue is empty: everything ends exactly once.
        if self.load is not None:
            self.finish_load()
        if not self.bound:
            self.add_consumer(0)
        for _ in range(10 * len(self.pushed) + 10):
            holder = self._holder()
            assert holder is not None
            self.qd.grant(holder, 4)
            self.credits[holder] += 4
            self._pull()
            if self.qd.wants_load():
                self.qd.loading = True
                self.load = (4, None)
                self.finish_load()
            if self.inflight:
                for consumer in set(self.inflight.values()):
                    seqs = [s for s, owner in self.inflight.items() if owner == consumer]
                    for entry in self.qd.ack(consumer, seqs):
                        del self.inflight[entry.seq]
                        self._finish(entry.seq, "acked")
            if len(self.finished) == len(self.pushed):
                break
        unfinished = sorted(self.pushed - set(self.finished))
        assert not unfinished, f"entries never acked nor dead: {unfinished}"
        assert not self.qd.ready and not self.qd.inflight


DeliveryMachine.TestCase.settings = DELIVERY_SETTINGS
test_delivery_state_machine = DeliveryMachine.TestCase
