"""The gRPC `plexus.v1.Admin` service: a region's links and what it knows of other regions."""

from __future__ import annotations

from typing import Any

import grpc

from federation.link_protocol import LinkState
from federation.mesh import Mesh
from federation.supervisor import LinkSupervisor
from plexus.errors import NotFound, PlexusError
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc


class AdminService(rpc.AdminServicer):
    def __init__(self, region: str, supervisor: LinkSupervisor | None, mesh: Mesh | None) -> None:
        self.region = region
        self.supervisor = supervisor
        self.mesh = mesh

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
