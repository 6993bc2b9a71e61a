"""How a node comes to know the cluster: Raft membership from a cluster file, or by joining.

A region listed in a cluster file with a Raft address runs replicated
membership seeded from the file. A new region joins by asking any member
(over gRPC, proving it knows the cluster secret) to add it; the member answers
with the membership and every Raft member's address, and the new node starts
its Raft node with that full list (pysyncobj needs it: a node started with one
seed campaigns on its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from federation.membership import RaftMembership, join_proof
from federation.topology import RegionSpec, Topology
from node.config import NodeConfig
from plexus.errors import AlreadyExists, Unavailable, error_from_status
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc

JOIN_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class JoinRequest:
    """Join the cluster through `via` (a member's gRPC address) as a new region."""

    via: str
    raft: str
    links: tuple[str, ...]


async def start_membership(
    config: NodeConfig, file: Topology, join: JoinRequest | None
) -> RaftMembership | None:
    """Replicated membership for this node, or None when the file has no Raft addresses."""
    if join is not None:
        seed, members = await _join(config, file, join)
        membership = RaftMembership(config.name, join.raft, members, file.secret, config.data, seed)
    else:
        spec = file.regions[config.name]
        if not spec.raft:
            return None
        rafts = [r.raft for r in file.regions.values() if r.raft]
        membership = RaftMembership(config.name, spec.raft, rafts, file.secret, config.data, file)
    await membership.start()
    return membership


async def _join(
    config: NodeConfig, file: Topology, join: JoinRequest
) -> tuple[Topology, list[str]]:
    request = pb.AddRegionRequest(
        region=pb.RegionMember(name=config.name, grpc=config.listen, raft=join.raft),
        links=join.links,
        proof=join_proof(file.secret, file.cluster, config.name),
    )
    try:
        async with grpc.aio.insecure_channel(join.via) as channel:
            admin = rpc.AdminStub(channel)
            try:
                reply = await admin.AddRegion(request, timeout=JOIN_TIMEOUT_S)
                info, members = reply.membership, list(reply.raft_members)
            except grpc.aio.AioRpcError as exc:
                error = error_from_status(exc.code(), exc.details() or "")
                if not isinstance(error, AlreadyExists):
                    raise error from None
                # Already a member (a restart with --join): carry on from the membership.
                info = await admin.GetMembership(pb.MembershipRequest(), timeout=JOIN_TIMEOUT_S)
                members = [r.raft for r in info.regions if r.raft]
    except grpc.aio.AioRpcError as exc:
        raise Unavailable(f"cannot join through {join.via}: {exc.code().name}") from None
    regions = {
        r.name: RegionSpec(name=r.name, grpc=r.grpc, raft=r.raft or None) for r in info.regions
    }
    links = frozenset(frozenset(link.split("-", 1)) for link in info.links)
    seed = Topology(info.cluster, file.secret, regions, links, file.settings, info.version)
    return seed, members


__all__ = ["JoinRequest", "start_membership"]
