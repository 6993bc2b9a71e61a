"""How a node comes to know the cluster: Raft membership from a cluster file, or by joining.

A region listed in a cluster file with a Raft address runs replicated
membership seeded from the file. A new region joins by asking any member
(over gRPC) for a join challenge, then to add it, proving it knows the cluster
secret over that challenge and the addresses it registers
(federation/join_proof.py); the member answers with the membership; the new
node starts its Raft node with every voter's address (pysyncobj needs the full
list: a node started with one seed campaigns on its own), or, once the cluster
has its voters, follows without voting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from federation.join_proof import prove_join
from federation.region_membership import RegionMembership, topology_from
from federation.topology import Topology
from federation.transport import channel_to
from node.config import NodeConfig
from plexus.errors import AlreadyExists, Unavailable, error_from_metadata
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc

if TYPE_CHECKING:
    from federation.tls import NodeTls

JOIN_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class JoinRequest:
    """Join the cluster through `via` (a member's gRPC address) as a new region."""

    via: str
    raft: str
    links: tuple[str, ...]


async def start_membership(
    config: NodeConfig, file: Topology, join: JoinRequest | None, tls: NodeTls | None = None
) -> RegionMembership | None:
    """Replicated membership for this node, or None when the file has no Raft addresses."""
    if join is not None:
        seed = await _join(config, file, join, tls)
        membership = RegionMembership(config.name, join.raft, file.secret, config.data, seed, tls)
    else:
        spec = file.regions[config.name]
        if not spec.raft:
            return None
        membership = RegionMembership(config.name, spec.raft, file.secret, config.data, file, tls)
    await membership.start()
    return membership


async def _join(
    config: NodeConfig, file: Topology, join: JoinRequest, tls: NodeTls | None
) -> Topology:
    member = pb.RegionMember(name=config.name, grpc=config.listen, raft=join.raft)
    try:
        # The member is known by its address only: its certificate must name that host.
        async with channel_to(tls, join.via) as channel:
            admin = rpc.AdminStub(channel)
            challenge = await admin.JoinChallenge(pb.JoinChallengeRequest(), timeout=JOIN_TIMEOUT_S)
            request = pb.AddRegionRequest(region=member, links=join.links, nonce=challenge.nonce)
            prove_join(file.secret, file.cluster, request)
            try:
                info = (await admin.AddRegion(request, timeout=JOIN_TIMEOUT_S)).membership
            except grpc.aio.AioRpcError as exc:
                error = error_from_metadata(
                    exc.code(), exc.details() or "", exc.trailing_metadata()
                )
                if not isinstance(error, AlreadyExists):
                    raise error from None
                # Already a member (a restart with --join): carry on from the membership.
                info = await admin.GetMembership(pb.MembershipRequest(), timeout=JOIN_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        raise Unavailable(
            f"cannot join through {join.via}: {exc.code().name}: {(exc.details() or '')[:200]}"
        ) from None
    return topology_from(info, file.secret, file)


__all__ = ["JoinRequest", "start_membership"]
