"""A link's in-memory tail of committed events: what the sender takes from it and when it must
read the spool on disk instead."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from federation import spool_tail
from federation.spool_tail import SpoolTail, guaranteed_frame
from federation.spools import envelope
from plexus.v1 import link_pb2 as lpb
from plexus.v1 import plexus_pb2 as pb


def event(n: int) -> tuple[int, bytes, bytes]:
    return n, b"env", pb.Event(topic="t", payload=b"x" * n).SerializeToString()


def running() -> SpoolTail:
    tail = SpoolTail()
    tail.sender_started()
    return tail


def test_the_sender_takes_what_follows_what_it_sent() -> None:
    tail = running()
    for n in range(1, 6):
        tail.append(*event(n))
    assert [e[0] for e in tail.take(after=2, limit=2, max_bytes=1 << 20) or []] == [3, 4]
    assert [e[0] for e in tail.take(after=4, limit=10, max_bytes=1 << 20) or []] == [5]


def test_a_sender_behind_the_tail_reads_the_disk() -> None:
    tail = running()
    for n in range(10, 13):
        tail.append(*event(n))
    # A new stream resumes from the peer's mark (5): events 6-9 are only on disk.
    assert tail.take(after=5, limit=10, max_bytes=1 << 20) is None
    assert len(tail) == 3


def test_a_gap_left_by_a_failed_commit_restarts_the_tail() -> None:
    tail = running()
    tail.append(*event(1))
    tail.append(*event(3))  # 2's commit failed: the disk decides what comes after 1
    assert tail.take(after=1, limit=10, max_bytes=1 << 20) is None
    assert [e[0] for e in tail.take(after=2, limit=10, max_bytes=1 << 20) or []] == [3]


def test_a_sender_behind_finds_the_newest_in_a_bounded_tail(monkeypatch) -> None:
    monkeypatch.setattr(spool_tail, "TAIL_MAX_EVENTS", 3)
    tail = running()
    for n in range(1, 8):
        tail.append(*event(n))
    assert len(tail) == 3
    assert tail.take(after=0, limit=10, max_bytes=1 << 20) is None  # 1-4: from disk
    assert [e[0] for e in tail.take(after=4, limit=10, max_bytes=1 << 20) or []] == [5, 6, 7]


def test_a_take_stops_at_the_byte_bound_but_takes_at_least_one() -> None:
    tail = running()
    for n in range(1, 4):
        tail.append(n, b"", b"x" * 100)
    assert [e[0] for e in tail.take(after=0, limit=10, max_bytes=150) or []] == [1, 2]
    assert [e[0] for e in tail.take(after=2, limit=10, max_bytes=1) or []] == [3]


def test_a_link_without_a_running_sender_keeps_nothing() -> None:
    tail = SpoolTail()
    tail.append(*event(1))
    assert len(tail) == 0
    tail.sender_started()
    tail.sender_started()  # a new stream's sender, while the old one winds down
    tail.append(*event(1))
    tail.sender_stopped()
    assert len(tail) == 1
    tail.sender_stopped()
    assert len(tail) == 0


@given(
    st.lists(
        st.tuples(
            st.integers(1, 2**40),
            st.frozensets(st.sampled_from(["eu", "us", "ap"]), min_size=1),
            st.frozensets(st.sampled_from(["eu", "us", "ap"]), min_size=1),
            st.binary(max_size=300),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_a_frame_built_from_bytes_is_the_frame_built_from_messages(items) -> None:
    events = [(seq, envelope(dest, visited, "a/b"), data) for seq, dest, visited, data in items]
    expected = lpb.LinkFrame(
        guaranteed=lpb.GuaranteedBatch(
            events=[
                lpb.GuaranteedEvent(
                    link_seq=seq,
                    destinations=sorted(dest),
                    visited=sorted(visited),
                    topic="a/b",
                    event=data,
                )
                for seq, dest, visited, data in items
            ]
        )
    )
    assert guaranteed_frame(events) == expected
