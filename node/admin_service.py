"""The gRPC `plexus.v1.Admin` service: a region's links and what it knows of other regions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from federation.link_protocol import LinkState
from federation.mesh import Mesh
from federation.supervisor import LinkSupervisor
from plexus.errors import NotFound, PlexusError
from plexus.topics import validate_topic
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc

# For a topic: how many local direct subscribers match, and which local queues.
LocalView = Callable[[str], tuple[int, list[str]]]
ASK_REGION_TIMEOUT_S = 3.0


class AdminService(rpc.AdminServicer):
    def __init__(
        self,
        region: str,
        supervisor: LinkSupervisor | None,
        mesh: Mesh | None,
        local_view: LocalView,
    ) -> None:
        self.region = region
        self.supervisor = supervisor
        self.mesh = mesh
        self.local_view = local_view

    async def Explain(self, request: pb.ExplainRequest, context: Any) -> pb.ExplainResponse:
        topic = request.topic
        try:
            validate_topic(topic)
        except PlexusError as exc:
            await context.abort(exc.status_code, str(exc))
            raise
        subscribers, queues = self.local_view(topic)
        here = pb.ExplainedRegion(
            region=self.region,
            path=[self.region],
            subscribers=subscribers,
            queues=queues,
            reachable=True,
        )
        reply = pb.ExplainResponse(topic=topic, regions=[here])
        if request.local_only or self.mesh is None or self.supervisor is None:
            return reply
        mesh, topology = self.mesh, self.supervisor.topology
        regions = sorted(mesh.remote.regions_for(topic))
        answers = await asyncio.gather(
            *(self._ask(topology.regions[r].grpc, topic) for r in regions if r in topology.regions)
        )
        reachable = mesh.routes.reachable()
        for region, answer in zip(regions, answers, strict=True):
            up = region in reachable
            path = mesh.routes.path(region) if up else mesh.configured_routes.path(region)
            entry = pb.ExplainedRegion(region=region, path=path, reachable=up)
            if isinstance(answer, pb.ExplainedRegion):
                entry.subscribers, entry.queues[:] = answer.subscribers, list(answer.queues)
            else:
                entry.error = answer
            reply.regions.append(entry)
        return reply

    async def _ask(self, address: str, topic: str) -> pb.ExplainedRegion | str:
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                answer = await rpc.AdminStub(channel).Explain(
                    pb.ExplainRequest(topic=topic, local_only=True), timeout=ASK_REGION_TIMEOUT_S
                )
            return answer.regions[0]
        except grpc.aio.AioRpcError as exc:
            return f"could not ask {address}: {exc.code().name}"

    async def ListLinks(self, request: pb.ListLinksRequest, context: Any) -> pb.ListLinksResponse:
        reply = pb.ListLinksResponse(region=self.region)
        if self.supervisor is None or self.mesh is None:
            return reply
        for peer in sorted(self.supervisor.link_states()):
            reply.links.append(self._link_info(peer))
        mesh = self.mesh
        version, advertised = mesh.interest.snapshot()
        reply.interest.append(
            pb.RegionInterest(
                region=self.region, version=version, patterns=sorted(advertised), reachable=True
            )
        )
        reachable = mesh.routes.reachable()
        for region in sorted(mesh.remote.regions()):
            reply.interest.append(
                pb.RegionInterest(
                    region=region,
                    version=mesh.remote.version_of(region),
                    patterns=sorted(mesh.remote.patterns_of(region)),
                    next_hop=mesh.routes.next_hop(region) or "",
                    reachable=region in reachable,
                )
            )
        return reply

    async def SetLink(self, request: pb.SetLinkRequest, context: Any) -> pb.SetLinkResponse:
        try:
            supervisor = self._supervisor()
            if request.peer not in supervisor.topology.neighbours(self.region):
                raise NotFound(f"region {self.region!r} has no link to {request.peer!r}")
            if request.up:
                supervisor.release(request.peer)
            else:
                supervisor.hold_down(request.peer)
            return pb.SetLinkResponse(link=self._link_info(request.peer))
        except PlexusError as exc:
            await context.abort(exc.status_code, str(exc))
            raise

    def _supervisor(self) -> LinkSupervisor:
        if self.supervisor is None:
            raise NotFound(f"region {self.region!r} runs alone: it has no links")
        return self.supervisor

    def _link_info(self, peer: str) -> pb.LinkInfo:
        supervisor = self._supervisor()
        state = supervisor.link_states().get(peer, LinkState.CLOSED)
        info = pb.LinkInfo(
            peer=peer,
            state=state.value,
            dialler=supervisor.topology.dialer(self.region, peer) == self.region,
            held_down=peer in supervisor.held_down,
        )
        spool = supervisor.spools.links.get(peer)
        if spool is not None:
            info.spool_depth = spool.depth
            info.spool_oldest_age_ms = supervisor.spools.oldest_age_ms(peer)
            info.spool_discarded = spool.discarded
        session = supervisor.sessions.get(peer)
        if session is not None:
            info.reason = "" if state is LinkState.OPEN else session.describe_close()
            info.rtt_ms = session.protocol.rtt_ms or 0.0
            info.events_in_per_s, info.bytes_in_per_s = session.rate_in.per_second()
            info.events_out_per_s, info.bytes_out_per_s = session.rate_out.per_second()
            info.events_in, info.events_out = session.rate_in.events, session.rate_out.events
            info.direct_dropped = session.direct_dropped
        return info


def add_admin_service(server: grpc.aio.Server, service: AdminService) -> None:
    rpc.add_AdminServicer_to_server(service, server)
