"""What a region's Raft node reports: its role, term, leader and commit index.

Apart from federation/membership.py so that a region that does not vote, and
its metrics, need not load pysyncobj to speak of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RaftStatus:
    role: str  # leader, follower, candidate (or non-voter: no Raft here)
    term: int
    leader: str | None
    commit_index: int
    has_quorum: bool
