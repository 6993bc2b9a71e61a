"""A region's view of the membership: as a Raft voter, or as a follower of the voters.

Three regions (or five, by the cluster's settings) vote in Raft
(`Topology.raft_voters`). The others do not run Raft at all: they watch a
voter's `Admin.WatchMembership` stream and follow its snapshots, so a large
cluster's Raft traffic and elections stay small and an idle follower does
nothing on a timer. When a voter leaves, the replicated state promotes a
follower; that region then starts its Raft node with the voters' addresses
and stops watching.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from federation.auth_state import OFF, AuthState, state_of_key
from federation.raft_status import RaftStatus
from federation.topology import RegionSpec, Topology
from federation.transport import channel_to
from plexus.errors import FailedPrecondition
from plexus.tokens import TokenClaims
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc

if TYPE_CHECKING:
    from federation.membership import RaftMembership
    from federation.tls import NodeTls

log = logging.getLogger(__name__)

# A voter sends the membership at least every 10 s (WATCH_BEAT_S): silence
# for longer means it is gone, and the next voter is watched.
WATCH_SILENCE_S = 25.0
NEXT_VOTER_PAUSE_S = 0.5
NON_VOTER = "non-voter"


def topology_from(info: pb.MembershipInfo, secret: str, like: Topology) -> Topology:
    """A topology from a voter's answer (settings are the cluster's, known already)."""
    regions = {
        r.name: RegionSpec(name=r.name, grpc=r.grpc, raft=r.raft or None) for r in info.regions
    }
    return Topology(
        cluster=info.cluster,
        secret=secret,
        regions=regions,
        links=frozenset(frozenset(link.split("-", 1)) for link in info.links),
        settings=like.settings,
        version=info.version,
        voters=frozenset(r.name for r in info.regions if r.voter),
        auth_key=like.auth_key,
    )


def auth_from(info: pb.MembershipInfo) -> AuthState:
    """The token state a voter shows a follower: the public key and revocations only."""
    return AuthState(
        verify_key=info.token_verify_key,
        revoked_names=frozenset(info.revoked_token_names),
        revoked_ids=frozenset(info.revoked_token_ids),
        version=info.auth_version,
    )


class RegionMembership:
    """TopologySource and membership changes for one region, voter or not."""

    def __init__(
        self,
        region: str,
        raft: str,
        secret: str,
        data_dir: Path,
        seed: Topology,
        tls: NodeTls | None = None,
    ) -> None:
        self.region = region
        self.tls = tls
        self.raft_address = raft
        self.secret = secret
        self._data_dir = data_dir
        self._topology = seed
        self._watchers: list[Callable[[Topology], None]] = []
        self.raft: RaftMembership | None = None
        self._follower: asyncio.Task[None] | None = None
        # Until the replicated state arrives, the cluster file's key (version 0): a node
        # that starts never serves open when its cluster has a key.
        self._auth = state_of_key(seed.auth_key.encode()) if seed.auth_key else OFF
        self._auth_watchers: list[Callable[[AuthState], None]] = []

    async def start(self) -> None:
        if self.region in self._topology.raft_voters():
            await self._start_raft()
        else:
            log.info("region %s follows the membership (not a Raft voter)", self.region)
            self._follower = asyncio.create_task(self._follow())

    def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
        if self.raft is not None:
            self.raft.stop()

    # ------------------------------------------------------------ TopologySource

    def current(self) -> Topology:
        return self._topology

    def watch(self, callback: Callable[[Topology], None]) -> None:
        self._watchers.append(callback)

    def _publish(self, topology: Topology) -> None:
        if topology.version <= self._topology.version and self._topology.version:
            return
        before, self._topology = self._topology, topology
        self._log_regions(before, topology)
        for callback in list(self._watchers):
            callback(topology)
        if self.raft is None and self.region in topology.raft_voters():
            if self._follower is not None:
                self._follower.cancel()
                self._follower = None
            log.info("region %s is promoted to a Raft voter", self.region)
            asyncio.get_running_loop().create_task(self._start_raft())

    def _log_regions(self, before: Topology, after: Topology) -> None:
        for name in sorted(after.regions.keys() - before.regions.keys()):
            log.info(
                "region %s joined the cluster",
                name,
                extra={"event": "region_joined", "region": self.region, "peer": name},
            )
        for name in sorted(before.regions.keys() - after.regions.keys()):
            log.info(
                "region %s left the cluster",
                name,
                extra={"event": "region_left", "region": self.region, "peer": name},
            )

    # ------------------------------------------------------------ tokens

    def auth(self) -> AuthState:
        return self._auth

    def watch_auth(self, callback: Callable[[AuthState], None]) -> None:
        self._auth_watchers.append(callback)

    def _publish_auth(self, state: AuthState) -> None:
        if state.version <= self._auth.version:
            return
        self._auth = state
        for callback in list(self._auth_watchers):
            callback(state)

    async def record_token(self, claims: TokenClaims) -> None:
        await self._voter().record_token(claims)

    async def revoke_token(self, name: str, jti: str) -> None:
        await self._voter().revoke_token(name, jti)

    # ------------------------------------------------------------ roles

    async def _start_raft(self) -> None:
        # pysyncobj loads only in a region that votes: the others follow a voter's stream.
        from federation.membership import RaftMembership

        topology = self._topology
        voters = [topology.regions[r].raft for r in topology.raft_voters() if r in topology.regions]
        raft = RaftMembership(
            self.region,
            self.raft_address,
            [address for address in voters if address],
            self.secret,
            self._data_dir,
            topology,
        )
        raft.watch(self._publish)
        raft.watch_auth(self._publish_auth)
        await raft.start()
        self.raft = raft

    async def _follow(self) -> None:
        """Watch the voters' membership, one voter at a time, and follow it."""
        turn = 0
        while True:
            voters = [r for r in self._topology.raft_voters() if r in self._topology.regions]
            if voters:
                turn += 1
                await self._watch_voter(voters[turn % len(voters)])
            await asyncio.sleep(NEXT_VOTER_PAUSE_S)

    async def _watch_voter(self, voter: str) -> None:
        """Follow one voter's membership stream until it ends, fails or falls silent."""
        address = self._topology.regions[voter].grpc
        async with channel_to(self.tls, address, voter) as channel:
            stream = rpc.AdminStub(channel).WatchMembership(pb.MembershipRequest())
            try:
                while True:
                    async with asyncio.timeout(WATCH_SILENCE_S):
                        info = await stream.read()
                    if info is grpc.aio.EOF:
                        return
                    if info.version:
                        self._publish(topology_from(info, self.secret, self._topology))
                    if info.auth_version:
                        self._publish_auth(auth_from(info))
            except (grpc.aio.AioRpcError, TimeoutError):
                return  # that voter is down or gone: the next one is watched

    # ------------------------------------------------------------ changes

    def _voter(self) -> RaftMembership:
        if self.raft is None:
            voters = ", ".join(self._topology.raft_voters())
            raise FailedPrecondition(
                f"region {self.region!r} does not vote in Raft: ask a voter ({voters})"
            )
        return self.raft

    async def add_region(self, spec: RegionSpec, links: list[str]) -> Topology:
        return await self._voter().add_region(spec, links)

    async def remove_region(self, name: str) -> Topology:
        return await self._voter().remove_region(name)

    async def add_link(self, a: str, b: str) -> Topology:
        return await self._voter().add_link(a, b)

    async def remove_link(self, a: str, b: str) -> Topology:
        return await self._voter().remove_link(a, b)

    def status(self) -> RaftStatus:
        if self.raft is None:
            return RaftStatus(role=NON_VOTER, term=0, leader=None, commit_index=0, has_quorum=False)
        return self.raft.status()
