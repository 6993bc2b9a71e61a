"""The pre-vote in front of pysyncobj's election (federation/prevote.py), in one process.

Three `PreVoteSyncObj` voters on loopback with the node's Raft timings. A
silent partition is simulated by making one voter's transport drop everything
it sends and receives while its TCP connections stay up (what a cut-off region
sees for `connectionTimeout`); tests/test_partition.py does the same with real
network namespaces.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pysyncobj import SyncObjConf

from federation.prevote import PreVoteSyncObj
from tests.harness import free_port, wait_for

pytestmark = [pytest.mark.solo, pytest.mark.timeout(60)]

ISOLATED_ROUNDS = 3  # rounds the isolated voter runs, its term unchanged throughout


def conf() -> SyncObjConf:
    # The timings of federation/membership.py.
    return SyncObjConf(
        connectionTimeout=30.0,
        connectionRetryTime=0.5,
        raftMinTimeout=0.31,
        raftMaxTimeout=0.55,
        appendEntriesPeriod=0.1,
        autoTickPeriod=0.1,
        appendEntriesUseBatch=False,
        leaderFallbackTimeout=3.0,
        dynamicMembershipChange=True,
    )


@pytest.fixture
def voters() -> Iterator[list[PreVoteSyncObj]]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    made = [PreVoteSyncObj(me, [a for a in addresses if a != me], conf=conf()) for me in addresses]
    try:
        wait_for(lambda: leader_of(made) is not None, 10, "a Raft leader")
        yield made
    finally:
        for voter in made:
            voter.destroy()


def leader_of(voters: list[PreVoteSyncObj]) -> Any:
    leaders = {v._getLeader() for v in voters if v._getLeader() is not None}
    return leaders.pop() if len(leaders) == 1 and all(v._getLeader() for v in voters) else None


def isolate(voter: PreVoteSyncObj) -> Any:
    """Drop all of `voter`'s Raft traffic, both ways; returns a function that heals it."""
    transport = voter._SyncObj__transport
    send, receive = transport.send, transport._onMessageReceivedCallback
    transport.send = lambda node, message: True
    transport._onMessageReceivedCallback = lambda node, message: None

    def heal() -> None:
        transport.send = send
        transport._onMessageReceivedCallback = receive

    return heal


def test_an_isolated_voter_keeps_its_term_and_the_leader_keeps_the_lead(
    voters: list[PreVoteSyncObj],
) -> None:
    leader = leader_of(voters)
    term = voters[0].raftCurrentTerm
    [cut, *rest] = [v for v in voters if v._SyncObj__selfNode != leader]
    heal = isolate(cut)
    rounds = cut._prevote_round

    def campaigned_in_vain() -> bool:
        """Each pre-vote round would have been an election without pre-vote."""
        assert cut.raftCurrentTerm == term
        assert all(v._getLeader() == leader for v in rest)
        return cut._prevote_round >= rounds + ISOLATED_ROUNDS

    wait_for(campaigned_in_vain, 15, f"{ISOLATED_ROUNDS} pre-vote rounds of the isolated voter")
    heal()
    wait_for(lambda: cut._getLeader() == leader, 10, "the isolated voter to follow again")
    assert [v.raftCurrentTerm for v in voters] == [term] * 3
    assert leader_of(voters) == leader


def test_followers_that_lost_the_leader_elect_another_within_a_second(
    voters: list[PreVoteSyncObj],
) -> None:
    leader = leader_of(voters)
    [chief] = [v for v in voters if v._SyncObj__selfNode == leader]
    rest = [v for v in voters if v is not chief]
    isolate(chief)  # as good as killed, for the others
    lost = time.monotonic()
    wait_for(
        lambda: (
            len({v._getLeader() for v in rest} - {None, leader}) == 1
            and all(v._getLeader() not in (None, leader) for v in rest)
        ),
        5,
        "a new leader",
    )
    took = time.monotonic() - lost
    assert took < 1.0, f"failover took {took:.2f} s"
