"""pysyncobj with a pre-vote: a voter campaigns only once a majority would elect it.

pysyncobj 0.3.17 has no pre-vote. In `SyncObj._onTick`, a follower whose
election deadline passed becomes candidate and increments its term as soon as
it has any TCP connection (`__connectedToAnyone`). A region cut off silently
(packets vanish, no RST) keeps its connections for `connectionTimeout` (30 s),
so it campaigns every election timeout and runs its term up; when it returns,
its higher term deposes a healthy leader.

`PreVoteSyncObj` adds the pre-vote of the Raft thesis (Ongaro, section 9.6) in
front of that step, without touching the rest of pysyncobj:

- When the election deadline passes, the voter first asks the other voters
  `pre_vote` with the term it would campaign for and its log position, and
  pushes its deadline back by a fresh election timeout; its term is unchanged.
- A voter grants a pre-vote only if it has not heard from a leader within the
  minimum election timeout (it is no leader itself) and the asker's log is at
  least as up to date as its own. Granting changes nothing on the granter.
- With grants from a majority (itself included) within that round, the asker's
  deadline is set to now and pysyncobj's own election runs on the next tick,
  unchanged: a follower that truly lost its leader campaigns one round trip
  later than before.

A region cut off from the majority never gets a majority of grants, so it
never increments its term, and when it returns the leader's next append
entries make it a follower again at the same term.

Every time here is read from pysyncobj's own clock (`raft_clock`), never
`time.monotonic()`: pysyncobj's `monotonic` module may fall back to
`time.time()` (it does on these machines), and its deadlines are in that clock.

Everything here runs on pysyncobj's tick thread (the transport calls back from
within `_onTick`), like the code it extends. It reaches into pysyncobj's
private attributes (`_SyncObj__*`); the version is pinned in constraints.txt.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.syncobj import monotonicTime as raft_clock

log = logging.getLogger(__name__)

PRE_VOTE = "pre_vote"
PRE_VOTE_RESPONSE = "pre_vote_response"


class PreVoteSyncObj(SyncObj):  # type: ignore[misc]  # pysyncobj has no type hints
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before SyncObj.__init__ starts the tick thread, which reads them.
        self._prevote_round = 0
        self._prevote_term = 0
        self._prevote_grants: set[Any] = set()
        self._prevote_won = False
        self._leader_heard_at = 0.0
        self._tick_at = 0.0
        self._stalled = False  # this tick started late
        self._skipped_for_stall = False
        self._prevote_logged = False
        self._election_deadline = 0.0  # pysyncobj's, behind the property below
        self._campaign_allowed = False
        super().__init__(*args, **kwargs)
        transport = self._SyncObj__transport
        self._pysyncobj_on_message = transport._onMessageReceivedCallback
        transport.setOnMessageReceivedCallback(self._on_message)

    # ------------------------------------------------------------ the election step

    # pysyncobj reads its election deadline in one place, the check in `_onTick` that
    # makes it a candidate. It sees the real deadline only in a tick where
    # `_before_election` allowed a campaign, and never-due otherwise: so it cannot
    # campaign on a deadline that passed between that check and its own.
    @property
    def _SyncObj__raftElectionDeadline(self) -> float:
        return self._election_deadline if self._campaign_allowed else math.inf

    @_SyncObj__raftElectionDeadline.setter
    def _SyncObj__raftElectionDeadline(self, value: float) -> None:
        self._election_deadline = value

    def _onTick(self, timeToWait: float = 0.0) -> None:  # pysyncobj's name and signature
        self._note_stall()
        ready = getattr(self._SyncObj__transport, "ready", False)
        self._campaign_allowed = bool(ready) and self._before_election()
        try:
            super()._onTick(self._wait_until_deadline(timeToWait))
        finally:
            self._campaign_allowed = False

    def _wait_until_deadline(self, tick_s: float) -> float:
        """Wake at the election deadline, not at the next tick after it.

        Followers hear the leader's append entries at the same moment and then
        tick in step every `autoTickPeriod`: checked only at those ticks, their
        random election timeouts fall into two or three shared slots and the
        survivors of a leader often campaign in the same tick and split the vote.
        """
        if self._SyncObj__raftState not in (_RAFT_STATE.FOLLOWER, _RAFT_STATE.CANDIDATE):
            return tick_s
        until_deadline = self._election_deadline - raft_clock()
        return max(0.0, min(tick_s, until_deadline)) if until_deadline > 0 else tick_s

    def _note_stall(self) -> None:
        """Note whether this tick started late (a starved CPU, a slow disk).

        pysyncobj checks the election deadline before it reads the messages that
        waited meanwhile: after a stall, the leader's append entries are still
        unread. In the tick after a stall, this voter grants no pre-vote (it may
        not have read the leader yet), and it skips one round of its own (it
        reads first); only one, so that a voter starved for long still campaigns.
        """
        conf = self._SyncObj__conf
        now = raft_clock()
        late = conf.autoTickPeriod + conf.raftMinTimeout / 2
        self._stalled = bool(self._tick_at) and now - self._tick_at > late
        self._tick_at = now

    def _before_election(self) -> bool:
        """Whether pysyncobj may campaign in this tick: only after a won pre-vote (or a
        leadership transfer); when the deadline passed without one, start a round."""
        if self._SyncObj__selfNode is None:
            return False  # a read-only replica never campaigns
        if self._SyncObj__raftState not in (_RAFT_STATE.FOLLOWER, _RAFT_STATE.CANDIDATE):
            return False
        now = raft_clock()
        if self._election_deadline >= now:
            return False
        voters = self._SyncObj__otherNodes
        # A leadership transfer (the leader's `timeout_now`) campaigns at once, as before.
        if not voters or self._prevote_won or self._SyncObj__transferInProgress:
            self._prevote_won = False
            return True  # pysyncobj campaigns in this tick
        # The deadline passed: a new pre-vote round instead of a new term.
        self._election_deadline = now + self._SyncObj__generateRaftTimeout()
        if self._stalled and not self._skipped_for_stall:
            self._skipped_for_stall = True
            return False  # read what waited during the stall first
        self._skipped_for_stall = False
        if not self._prevote_logged:  # once per outage of the leader, not per round
            self._prevote_logged = True
            log.info(
                "Raft: no leader heard for %.0f ms; asking the other voters for a pre-vote "
                "before campaigning for term %d",
                (now - self._leader_heard_at) * 1000 if self._leader_heard_at else 0,
                self._SyncObj__raftCurrentTerm + 1,
                extra={"event": "raft_pre_vote"},
            )
        self._prevote_round += 1
        self._prevote_term = self._SyncObj__raftCurrentTerm + 1
        self._prevote_grants = set()
        request = {
            "type": PRE_VOTE,
            "round": self._prevote_round,
            "term": self._prevote_term,
            "last_log_index": self._SyncObj__getCurrentLogIndex(),
            "last_log_term": self._SyncObj__getCurrentLogTerm(),
        }
        for node in voters:
            self._SyncObj__transport.send(node, request)
        return False

    # ------------------------------------------------------------ messages

    def _on_message(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == PRE_VOTE:
            self._answer_pre_vote(node, message)
            return
        if kind == PRE_VOTE_RESPONSE:
            self._count_pre_vote(node, message)
            return
        if kind == "append_entries" and message["term"] >= self._SyncObj__raftCurrentTerm:
            self._leader_heard_at = raft_clock()
            self._prevote_won = False  # a leader is back: a won round is void
            self._prevote_logged = False
        self._pysyncobj_on_message(node, message)

    def _answer_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        self._SyncObj__transport.send(
            node,
            {
                "type": PRE_VOTE_RESPONSE,
                "round": message["round"],
                "term": message["term"],
                "granted": self._grants(message),
            },
        )

    def _grants(self, message: dict[str, Any]) -> bool:
        if self._SyncObj__selfNode is None:
            return False  # read-only replicas do not vote
        if message["term"] <= self._SyncObj__raftCurrentTerm:
            return False  # a vote at that term would be refused too
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            return False
        if self._stalled:
            return False  # the leader's latest append entries may be unread
        quiet_s = raft_clock() - self._leader_heard_at
        if self._SyncObj__raftLeader is not None and quiet_s < self._SyncObj__conf.raftMinTimeout:
            return False  # the leader is alive as far as this voter knows
        # The same log check as a real vote (Raft 5.4.1).
        my_term = self._SyncObj__getCurrentLogTerm()
        if message["last_log_term"] != my_term:
            return bool(message["last_log_term"] > my_term)
        return bool(message["last_log_index"] >= self._SyncObj__getCurrentLogIndex())

    def _count_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        if message["round"] != self._prevote_round or message["term"] != self._prevote_term:
            return  # a late answer to an earlier round
        if not message["granted"] or node not in self._SyncObj__otherNodes:
            return
        if self._SyncObj__raftCurrentTerm + 1 != self._prevote_term:
            return  # the term moved meanwhile (another voter's election)
        self._prevote_grants.add(node)
        voters = len(self._SyncObj__otherNodes) + 1
        if not self._prevote_won and len(self._prevote_grants) + 1 > voters / 2:
            self._prevote_won = True
            self._election_deadline = 0.0  # campaign on the next tick
