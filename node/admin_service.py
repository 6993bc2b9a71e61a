"""The gRPC `plexus.v1.Admin` service: a region's links and what it knows of other regions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from federation.auth_state import AuthState, TokenStore
from federation.join_proof import NONCE_BYTES, JoinChallenges, join_proven, prove_join
from federation.link_protocol import LinkState
from federation.mesh import Mesh
from federation.region_membership import RegionMembership
from federation.status import abort, guard_servicer
from federation.supervisor import LinkSupervisor
from federation.topology import RegionSpec, Topology
from federation.transport import channel_to
from node.auth import Authenticator, audit, forwarded
from node.clients import ClientRegistry
from node.subscription_list import SubscriptionList
from node.token_messages import grants_of, token_info
from plexus.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PlexusError,
    Unavailable,
    error_from_metadata,
)
from plexus.tokens import new_claims, sign
from plexus.topics import validate_pattern, validate_topic
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc

if TYPE_CHECKING:
    from federation.tls import NodeTls

log = logging.getLogger(__name__)

# For a topic: how many local direct subscribers match, and which local queues.
LocalView = Callable[[str], tuple[int, list[str]]]
ASK_REGION_TIMEOUT_S = 3.0
DRAIN_TIMEOUT_MS = 30_000
# A change asked of a voter may wait for a removed region to drain its spools.
ASK_VOTER_TIMEOUT_S = DRAIN_TIMEOUT_MS / 1000 + 30.0
DRAIN_POLL_S = 0.05
STOP_AFTER_REPLY_S = 0.2
# A watched membership is sent again at least this often, changed or not.
WATCH_BEAT_S = 10.0


class AdminService(rpc.AdminServicer):
    def __init__(
        self,
        region: str,
        supervisor: LinkSupervisor | None,
        mesh: Mesh | None,
        local_view: LocalView,
        membership: RegionMembership | None = None,
        request_stop: Callable[[], None] = lambda: None,
        refuse_publishes: Callable[[PlexusError], None] = lambda _error: None,
        *,
        clients: ClientRegistry,
        subscriptions: SubscriptionList,
        tls: NodeTls | None = None,
        auth: Authenticator | None = None,
        tokens: TokenStore | None = None,
    ) -> None:
        self.region = region
        # Other regions are asked over TLS when this node has it.
        self.tls = tls
        self.auth = auth if auth is not None else Authenticator()
        self.tokens = tokens
        self.clients = clients
        self.subscriptions = subscriptions
        self.request_stop = request_stop
        self.refuse_publishes = refuse_publishes
        self.supervisor = supervisor
        self.mesh = mesh
        self.local_view = local_view
        self.membership = membership
        self.join_challenges = JoinChallenges()
        # One event per WatchMembership call, set when the membership changes.
        self._watches: set[asyncio.Event] = set()
        if membership is not None:
            membership.watch(self._wake_watches)
        if tokens is not None:
            tokens.watch_auth(self._wake_watches)

    # ------------------------------------------------------------ membership

    async def GetMembership(self, request: pb.MembershipRequest, context: Any) -> pb.MembershipInfo:
        return self._membership_info()

    async def WatchMembership(
        self, request: pb.MembershipRequest, context: Any
    ) -> AsyncIterator[pb.MembershipInfo]:
        changed = asyncio.Event()
        self._watches.add(changed)
        try:
            while True:
                changed.clear()
                yield self._membership_info()
                with contextlib.suppress(TimeoutError):  # the beat: the same again
                    async with asyncio.timeout(WATCH_BEAT_S):
                        await changed.wait()
        finally:
            self._watches.discard(changed)

    def _wake_watches(self, _change: Topology | AuthState) -> None:
        for changed in self._watches:
            changed.set()

    async def JoinChallenge(
        self, request: pb.JoinChallengeRequest, context: Any
    ) -> pb.JoinChallengeResponse:
        nonce = os.urandom(NONCE_BYTES)
        self.join_challenges.issue(nonce, _now_ms())
        return pb.JoinChallengeResponse(nonce=nonce, expires_in_ms=self.join_challenges.ttl_ms)

    async def AddRegion(self, request: pb.AddRegionRequest, context: Any) -> pb.AddRegionResponse:
        # Checked where the challenge was issued, before a follower forwards it to a voter.
        await self._answer(context, lambda: self._check_join(request))

        async def change() -> pb.AddRegionResponse:
            membership = self._raft()
            new = request.region
            spec = RegionSpec(name=new.name, grpc=new.grpc, raft=new.raft or None)
            after = await membership.add_region(spec, list(request.links))
            voters = after.raft_voters()
            return pb.AddRegionResponse(
                membership=self._membership_info(),
                raft_members=sorted(after.regions[r].raft or "" for r in voters),
                voter=new.name in voters,
            )

        return await self._change(context, "AddRegion", request, change)

    async def _check_join(self, request: pb.AddRegionRequest) -> None:
        membership = self._raft()
        name = request.region.name
        if not self.join_challenges.redeem(request.nonce, _now_ms()):
            raise PermissionDenied(
                f"join of region {name!r} refused: its challenge nonce is unknown here, "
                "already used or expired (ask JoinChallenge first)"
            )
        if not join_proven(membership.secret, membership.current().cluster, request):
            raise PermissionDenied(
                f"join of region {name!r} refused: the proof does not hold (the joiner does "
                "not know the cluster secret, or the request was altered)"
            )

    async def _vouch(self, voter: rpc.AdminStub, request: pb.AddRegionRequest) -> Any:
        """The checked join, proven again over the voter's own challenge."""
        membership = self._raft()
        challenge = await voter.JoinChallenge(
            pb.JoinChallengeRequest(), timeout=ASK_REGION_TIMEOUT_S
        )
        again = pb.AddRegionRequest(
            region=request.region, links=request.links, nonce=challenge.nonce
        )
        return prove_join(membership.secret, membership.current().cluster, again)

    async def RemoveRegion(
        self, request: pb.RemoveRegionRequest, context: Any
    ) -> pb.MembershipInfo:
        self._admin(context, "remove region", request.name)
        if request.name == self.region:
            error = FailedPrecondition(
                f"region {self.region!r} cannot remove itself: ask another region"
            )
            await abort(context, error)

        async def change() -> pb.MembershipInfo:
            membership = self._raft()
            spec = membership.current().regions.get(request.name)
            if spec is None:
                raise NotFound(f"no region named {request.name!r} in the cluster")
            left = await _shut_down(
                channel_to(self.tls, spec.grpc, spec.name),
                request.force,
                forwarded(_metadata(context)),
            )
            if left:
                log.warning("region %s stopped with %d events spooled", request.name, left)
            await membership.remove_region(request.name)
            return self._membership_info()

        return await self._change(context, "RemoveRegion", request, change)

    async def Shutdown(self, request: pb.ShutdownRequest, context: Any) -> pb.ShutdownResponse:
        """Refuse new publishes, drain the outbound spools (unless forced), then stop."""
        self._admin(context, "shut down", self.region)
        self.refuse_publishes(
            FailedPrecondition(f"region {self.region!r} is leaving the cluster: publish elsewhere")
        )
        deadline = time.monotonic() + (request.drain_timeout_ms or DRAIN_TIMEOUT_MS) / 1000
        spools = self.supervisor.spools if self.supervisor is not None else None
        left = 0
        while spools is not None:
            left = sum(link.depth for link in spools.links.values())
            if not left or request.force or time.monotonic() > deadline:
                break
            await asyncio.sleep(DRAIN_POLL_S)
        log.info("region %s leaves the cluster (%d events still spooled)", self.region, left)
        asyncio.get_running_loop().call_later(STOP_AFTER_REPLY_S, self.request_stop)
        return pb.ShutdownResponse(spooled_left=left)

    async def AddLink(self, request: pb.LinkChangeRequest, context: Any) -> pb.MembershipInfo:
        self._admin(context, "add link", f"{request.a}-{request.b}")

        async def change() -> pb.MembershipInfo:
            await self._raft().add_link(request.a, request.b)
            return self._membership_info()

        return await self._change(context, "AddLink", request, change)

    async def RemoveLink(self, request: pb.LinkChangeRequest, context: Any) -> pb.MembershipInfo:
        self._admin(context, "remove link", f"{request.a}-{request.b}")

        async def change() -> pb.MembershipInfo:
            await self._raft().remove_link(request.a, request.b)
            return self._membership_info()

        return await self._change(context, "RemoveLink", request, change)

    async def _change(
        self, context: Any, method: str, request: Any, change: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Apply a membership or token change here if this region votes in Raft (tokens are
        signed with the replicated key), else ask a voter to."""
        if self.membership is not None and self.membership.raft is None:
            metadata = forwarded(_metadata(context))
            return await self._answer(context, lambda: self._ask_voter(method, request, metadata))
        return await self._answer(context, change)

    async def _ask_voter(
        self, method: str, request: Any, metadata: tuple[tuple[str, str], ...]
    ) -> Any:
        topology = self.membership.current() if self.membership is not None else None
        voters = (
            []
            if topology is None
            else [
                (name, topology.regions[name].grpc)
                for name in topology.raft_voters()
                if name in topology.regions and name != self.region
            ]
        )
        for name, address in voters:
            async with channel_to(self.tls, address, name) as channel:
                voter = rpc.AdminStub(channel)
                try:
                    if method == "AddRegion":
                        request = await self._vouch(voter, request)
                    return await getattr(voter, method)(
                        request, timeout=ASK_VOTER_TIMEOUT_S, metadata=metadata
                    )
                except grpc.aio.AioRpcError as exc:
                    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                        raise error_from_metadata(
                            exc.code(), exc.details() or "", exc.trailing_metadata()
                        ) from None
        raise Unavailable(f"no Raft voter answers ({', '.join(voters) or 'none known'})")

    async def _answer(self, context: Any, change: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await change()
        except PlexusError as exc:
            await abort(context, exc)

    def _raft(self) -> RegionMembership:
        if self.membership is None:
            raise FailedPrecondition(
                f"region {self.region!r} runs without replicated membership "
                "(a cluster file without raft addresses, or no cluster)"
            )
        return self.membership

    def _membership_info(self) -> pb.MembershipInfo:
        info = pb.MembershipInfo(region=self.region)
        if self.supervisor is None:
            return info
        topology = self.supervisor.topology
        info.cluster, info.version = topology.cluster, topology.version
        voters = set(topology.raft_voters()) if self.membership is not None else set()
        for name, spec in topology.regions.items():
            info.regions.append(
                pb.RegionMember(
                    name=name, grpc=spec.grpc, raft=spec.raft or "", voter=name in voters
                )
            )
        info.links.extend(sorted("-".join(sorted(link)) for link in topology.links))
        auth = self.auth.state
        info.token_verify_key, info.auth_version = auth.verify_key, auth.version
        info.revoked_token_names.extend(sorted(auth.revoked_names))
        info.revoked_token_ids.extend(sorted(auth.revoked_ids))
        if self.membership is not None:
            status = self.membership.status()
            info.raft_role, info.raft_term = status.role, status.term
            info.raft_leader = status.leader or ""
            info.raft_commit_index, info.raft_has_quorum = status.commit_index, status.has_quorum
        return info

    async def Explain(self, request: pb.ExplainRequest, context: Any) -> pb.ExplainResponse:
        self.auth.identify(_metadata(context))
        topic = request.topic
        try:
            validate_topic(topic)
        except PlexusError as exc:
            await abort(context, exc)
        subscribers, queues = self.local_view(topic)
        here = pb.ExplainedRegion(
            region=self.region,
            path=[self.region],
            guaranteed_path=[self.region],
            subscribers=subscribers,
            queues=queues,
            reachable=True,
        )
        reply = pb.ExplainResponse(topic=topic, regions=[here])
        if request.local_only or self.mesh is None or self.supervisor is None:
            return reply
        mesh, topology = self.mesh, self.supervisor.topology
        regions = sorted(mesh.remote.regions_for(topic))
        metadata = forwarded(_metadata(context))
        answers = await asyncio.gather(
            *(
                self._ask(r, topology.regions[r].grpc, topic, metadata)
                for r in regions
                if r in topology.regions
            )
        )
        reachable = mesh.routes.reachable()
        for region, answer in zip(regions, answers, strict=True):
            up = region in reachable
            path = mesh.routes.path(region) if up else mesh.configured_routes.path(region)
            entry = pb.ExplainedRegion(
                region=region,
                path=path,
                guaranteed_path=mesh.configured_routes.path(region),
                reachable=up,
            )
            if isinstance(answer, pb.ExplainedRegion):
                entry.subscribers, entry.queues[:] = answer.subscribers, list(answer.queues)
            else:
                entry.error = answer
            reply.regions.append(entry)
        return reply

    async def _ask(
        self, region: str, address: str, topic: str, metadata: tuple[tuple[str, str], ...]
    ) -> pb.ExplainedRegion | str:
        try:
            async with channel_to(self.tls, address, region) as channel:
                answer = await rpc.AdminStub(channel).Explain(
                    pb.ExplainRequest(topic=topic, local_only=True),
                    timeout=ASK_REGION_TIMEOUT_S,
                    metadata=metadata,
                )
            return answer.regions[0]
        except grpc.aio.AioRpcError as exc:
            return f"could not ask {address}: {exc.code().name}"

    # ------------------------------------------------------------ clients, subscriptions

    async def ListClients(
        self, request: pb.ListClientsRequest, context: Any
    ) -> pb.ListClientsResponse:
        self.auth.identify(_metadata(context)).require_admin()
        return pb.ListClientsResponse(clients=self.clients.infos())

    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: Any
    ) -> pb.ListSubscriptionsResponse:
        self.auth.identify(_metadata(context)).require_admin()
        return self.subscriptions.find(request.contains, request.limit)

    # ------------------------------------------------------------ links

    async def ListLinks(self, request: pb.ListLinksRequest, context: Any) -> pb.ListLinksResponse:
        self.auth.identify(_metadata(context))
        reply = pb.ListLinksResponse(region=self.region)
        if self.supervisor is None or self.mesh is None:
            return reply
        for peer in sorted(self.supervisor.link_states()):
            reply.links.append(self._link_info(peer))
        if request.without_interest:
            return reply
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
        self._admin(context, "set link up" if request.up else "hold link down", request.peer)
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
            await abort(context, exc)

    # ------------------------------------------------------------ tokens

    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: Any
    ) -> pb.CreateTokenResponse:
        self._admin(context, "create token", request.name)

        async def create() -> pb.CreateTokenResponse:
            signing_key = self._token_store().auth().signing_key
            if not signing_key:  # a region that follows the membership: a voter signs
                raise FailedPrecondition(f"region {self.region!r} does not hold the token key")
            grants = grants_of(request.grants)
            for pattern in (*grants.publish, *grants.subscribe):
                validate_pattern(pattern)
            expires_in_s = request.expires_in_s or None
            claims = new_claims(request.name, grants, expires_in_s)
            token = sign(claims, signing_key)
            await self._token_store().record_token(claims)
            return pb.CreateTokenResponse(token=token, info=token_info(claims, self.auth.state))

        return await self._change(context, "CreateToken", request, create)

    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: Any
    ) -> pb.RevokeTokenResponse:
        self._admin(context, "revoke token", request.id or request.name)

        async def revoke() -> pb.RevokeTokenResponse:
            if not (request.name or request.id):
                raise InvalidArgument("revoking a token needs its name or its id")
            await self._token_store().revoke_token(request.name, request.id)
            return pb.RevokeTokenResponse()

        return await self._change(context, "RevokeToken", request, revoke)

    async def ListTokens(
        self, request: pb.ListTokensRequest, context: Any
    ) -> pb.ListTokensResponse:
        self.auth.identify(_metadata(context)).require_admin()

        async def listed() -> pb.ListTokensResponse:
            state = self._token_store().auth()
            return pb.ListTokensResponse(
                tokens=[token_info(claims, state) for claims in state.issued],
                revoked_names=sorted(state.revoked_names),
            )

        # A region that follows the membership knows the revocations, not the tokens made.
        return await self._change(context, "ListTokens", request, listed)

    def _token_store(self) -> TokenStore:
        if self.tokens is None or not self.auth.enabled:
            raise FailedPrecondition(
                f"region {self.region!r} runs without a token key "
                "(start it with --auth-key FILE, or give the cluster file an [auth] key)"
            )
        return self.tokens

    def _admin(self, context: Any, action: str, target: str) -> None:
        """Refuse a caller without the admin permission; log the action with who asked."""
        access = self.auth.identify(_metadata(context))
        access.require_admin()
        audit(access, action, target)

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
            info.reason = "" if state is LinkState.OPEN else supervisor.down_reason(peer)
            info.rtt_ms = session.protocol.rtt_ms or 0.0
            info.events_in_per_s, info.bytes_in_per_s = session.rate_in.per_second()
            info.events_out_per_s, info.bytes_out_per_s = session.rate_out.per_second()
            info.events_in, info.events_out = session.rate_in.events, session.rate_out.events
            info.direct_dropped = session.direct_dropped
        return info


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _metadata(context: Any) -> Any:
    return context.invocation_metadata()


async def _shut_down(
    channel: grpc.aio.Channel, force: bool, metadata: tuple[tuple[str, str], ...]
) -> int:
    """Ask a region to drain and stop; 0 if it cannot be reached (it is down already)."""
    try:
        async with channel:
            reply = await rpc.AdminStub(channel).Shutdown(
                pb.ShutdownRequest(drain_timeout_ms=DRAIN_TIMEOUT_MS, force=force),
                timeout=DRAIN_TIMEOUT_MS / 1000 + 5,
                metadata=metadata,
            )
        return int(reply.spooled_left)
    except grpc.aio.AioRpcError:
        return 0


def add_admin_service(server: grpc.aio.Server, service: AdminService) -> None:
    """Serve `service`: errors as statuses with details, bugs as INTERNAL (federation/status)."""
    rpc.add_AdminServicer_to_server(
        guard_servicer(service, service.region, "plexus.v1.Admin"), server
    )
