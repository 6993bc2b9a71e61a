"""Keeps a region's links up: dials the links it owns, admits the ones it accepts.

Of each link, the region whose name sorts first dials (`Topology.dialer`),
re-dialling with exponential backoff and jitter after any failure; the other
end accepts through the `Link` gRPC service. Operators can hold a link down
(drills, tests); a held link is neither dialled nor accepted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from grpc._cython.cygrpc import ExecuteBatchError  # not exported by grpc.aio

from federation.link import LinkSession, StreamGone, now_ms
from federation.link_protocol import CloseReason, LinkProtocol, LinkState
from federation.mesh import Mesh
from federation.spools import LinkSpools
from federation.status import guard
from federation.topology import Topology, TopologySource
from federation.transport import channel_to
from plexus.v1 import link_pb2 as lpb
from plexus.v1 import link_pb2_grpc as lrpc

if TYPE_CHECKING:
    from federation.tls import NodeTls

log = logging.getLogger(__name__)


def wall_ms() -> int:
    """Link proofs carry wall-clock time: the two ends share no monotonic clock."""
    return time.time_ns() // 1_000_000


CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 128 << 20),
    ("grpc.max_send_message_length", 128 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class LinkSupervisor:
    def __init__(
        self,
        region: str,
        source: TopologySource,
        mesh: Mesh,
        spools: LinkSpools,
        tls: NodeTls | None = None,
    ) -> None:
        self.region = region
        # With TLS, each end's certificate must name its region (federation/tls.py).
        self.tls = tls
        self._proof = tls.link_proof(source.current().cluster) if tls else None
        self.source = source
        self.mesh = mesh
        self.spools = spools
        self.held_down: set[str] = set()
        # The latest session per peer (open, connecting or just closed), for `link list`.
        self.sessions: dict[str, LinkSession] = {}
        self._dialers: dict[str, asyncio.Task[None]] = {}
        self._released: dict[str, asyncio.Event] = {}
        # Why each link that is failing to open failed last (logged once per reason).
        self._failing: dict[str, CloseReason] = {}
        # Links whose current outage is logged down already (by the mesh when an open
        # link closed, or here): retries log a changed reason as "still down", never
        # a second "is down", so each side logs exactly one line per transition.
        self._down_logged: set[str] = set()
        # Why each peer's last finished session closed: shown while a new one opens.
        self._last_close: dict[str, str] = {}
        # Refusals of accepted links logged since a link last opened here.
        self._refusals: set[str] = set()
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def topology(self) -> Topology:
        return self.source.current()

    async def start(self) -> None:
        await self.spools.open_all(self.topology.neighbours(self.region))
        self._started = True
        self._follow(self.topology)
        self.source.watch(self._follow)

    async def _open_then_dial(self, topology: Topology, peers: set[str]) -> None:
        """New links: their spools need ids on disk before anything is spooled or sent."""
        await self.spools.open_all(peers)
        self._follow(self.topology)

    async def _drop_spool(self, peer: str) -> None:
        """A link left the cluster: what was spooled for it can go nowhere. Say so."""
        dropped = await self.spools.drop_all(peer)
        if dropped:
            log.warning(
                "link %s-%s left the cluster: dropped %d events spooled for it",
                self.region,
                peer,
                dropped,
            )

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            session.take_down(CloseReason.SHUTDOWN)
        for task in [*self._dialers.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._dialers.values(), *self._tasks, return_exceptions=True)

    def _follow(self, topology: Topology) -> None:
        """Dial every link this region owns; stop dialling links that are gone."""
        peers = topology.neighbours(self.region)
        self.mesh.set_configured_links(topology.links)
        for peer in sorted(peers & set(self.spools.links)):
            if topology.dialer(self.region, peer) == self.region and peer not in self._dialers:
                self._dialers[peer] = asyncio.create_task(self._dial_forever(peer))
        for peer in list(self._dialers):
            if peer not in peers:
                self._dialers.pop(peer).cancel()
        for peer, session in list(self.sessions.items()):
            if peer not in peers:
                session.take_down(CloseReason.UNKNOWN_REGION, "link removed from the cluster")
                del self.sessions[peer]
        for peer in set(self._last_close) - peers:
            del self._last_close[peer]
        for region in self.mesh.known_regions() - set(topology.regions):
            self.mesh.forget(region)
        new_peers = peers - set(self.spools.links)
        if new_peers and self._started:
            self._tasks.add(asyncio.create_task(self._open_then_dial(topology, new_peers)))
        for peer in set(self.spools.links) - peers:
            self._tasks.add(asyncio.create_task(self._drop_spool(peer)))

    # ------------------------------------------------------------ operator

    def hold_down(self, peer: str) -> None:
        self.held_down.add(peer)
        self._released.setdefault(peer, asyncio.Event()).clear()
        session = self.sessions.get(peer)
        if session is not None:
            session.take_down(CloseReason.TAKEN_DOWN)

    def release(self, peer: str) -> None:
        self.held_down.discard(peer)
        self._released.setdefault(peer, asyncio.Event()).set()

    # ------------------------------------------------------------ dialling

    async def _dial_forever(self, peer: str) -> None:
        settings = self.topology.settings
        delay_ms = settings.reconnect_min_ms
        while True:
            if peer in self.held_down:
                await self._released.setdefault(peer, asyncio.Event()).wait()
            spec = self.topology.regions.get(peer)
            if spec is None:
                return
            opened = await self._dial_once(peer, spec.grpc)
            if opened:
                delay_ms = settings.reconnect_min_ms
            else:
                delay_ms = min(delay_ms * 2, settings.reconnect_max_ms)
            # Jitter keeps regions that lost each other from re-dialling in lockstep.
            await asyncio.sleep(delay_ms * random.uniform(0.5, 1.5) / 1000)

    async def _dial_once(self, peer: str, address: str) -> bool:
        session = LinkSession(
            self.mesh, self._protocol(dialled_peer=peer), self.sessions, self.spools
        )
        self.sessions[peer] = session
        async with channel_to(self.tls, address, peer, CHANNEL_OPTIONS) as channel:
            proof = self._proof.metadata(self.region, peer, wall_ms()) if self._proof else None
            call = lrpc.LinkStub(channel).Connect(metadata=proof)
            try:
                await session.run(call.read, call.write)
            finally:
                call.cancel()
        self._ended(session)
        reason = session.close_reason
        if session.opened:  # the mesh logged it up and down
            self._failing.pop(peer, None)
            self._down_logged.add(peer)
        elif reason not in (None, CloseReason.SHUTDOWN, self._failing.get(peer)):
            # A link that does not open: one line per outage and reason, not per attempt.
            self._failing[peer] = reason
            described = session.describe_close()
            if self.tls is not None and CloseReason.WRONG_CERTIFICATE.name in described:
                named = ", ".join(repr(r) for r in self.tls.regions) or "no region"
                described += f"; this node's certificate names {named}"
            self._not_opened(peer, described)
        return session.opened

    def _ended(self, session: LinkSession) -> None:
        # Neighbours only: a stranger's refused hello must not grow this.
        peer = session.peer
        if session.close_reason is not None and peer in self.topology.neighbours(self.region):
            self._last_close[peer] = session.describe_close()

    def _not_opened(self, peer: str, reason: str) -> None:
        if peer in self._down_logged:
            log.warning(
                "link %s-%s still down: %s; retrying",
                self.region,
                peer,
                reason,
                extra={
                    "event": "link_still_down",
                    "region": self.region,
                    "peer": peer,
                    "reason": reason,
                },
            )
            return
        self._down_logged.add(peer)
        log.warning(
            "link %s-%s is down: %s; retrying",
            self.region,
            peer,
            reason,
            extra={"event": "link_down", "region": self.region, "peer": peer, "reason": reason},
        )

    # ------------------------------------------------------------ accepting

    async def accept(self, context: grpc.aio.ServicerContext) -> None:
        certified, why = None, ""
        if self._proof is not None:
            metadata = context.invocation_metadata() or ()
            certified, why = self._proof.certified(metadata, self.region, wall_ms())
        session = LinkSession(
            self.mesh,
            self._protocol(dialled_peer=None, certified=certified),
            self.sessions,
            self.spools,
        )

        # The dialler may cancel the call at any moment (it gave up, or its link went
        # down): grpc then fails the read or write in progress with its internal
        # ExecuteBatchError, sometimes before the context says it is done. With one
        # task per direction nothing else has an operation on the call, so that is
        # the stream ending, not a bug in this node.
        async def read() -> object:
            try:
                return await context.read()
            except ExecuteBatchError as exc:
                raise StreamGone("the dialler ended the call during a read") from exc

        async def write(frame: lpb.LinkFrame) -> None:
            try:
                await context.write(frame)
            except ExecuteBatchError as exc:
                raise StreamGone("the dialler ended the call during a write") from exc

        await session.run(read, write)
        self._ended(session)
        reason = session.describe_close()
        if session.close_reason is CloseReason.WRONG_CERTIFICATE:
            named = ", ".join(repr(r) for r in certified or ()) or "no region"
            reason += f": {why}" if why else f"; its certificate names {named}"
        if session.opened:  # the mesh logged it up and down
            self._refusals.clear()
        elif reason and reason not in self._refusals:
            # The peer re-dials with backoff: one line per refusal (which names the
            # region when it is known), not per attempt, until a link opens again.
            self._refusals.add(reason)
            log.warning(
                "link from %s refused: %s",
                context.peer(),
                reason,
                extra={"event": "link_refused", "region": self.region, "reason": reason},
            )

    def _admit(self, region: str, certified: tuple[str, ...] | None) -> CloseReason | None:
        """`certified`: the regions the dialler's certificate names (None: TLS is off)."""
        if certified is not None and region not in certified:
            return CloseReason.WRONG_CERTIFICATE
        if region not in self.topology.neighbours(self.region):
            return CloseReason.UNKNOWN_REGION
        if region in self.held_down:
            return CloseReason.TAKEN_DOWN
        return None

    def _protocol(
        self, dialled_peer: str | None, certified: tuple[str, ...] | None = None
    ) -> LinkProtocol:
        topology = self.topology
        settings = topology.settings
        return LinkProtocol(
            cluster=topology.cluster,
            secret=topology.secret,
            region=self.region,
            dialled_peer=dialled_peer,
            admit=lambda region: self._admit(region, certified),
            nonce=os.urandom(16),
            received_upto=self._received_upto(dialled_peer),
            received_mark=self._received_upto,
            heartbeat_ms=settings.heartbeat_ms,
            dead_after_ms=settings.dead_after_ms,
            now_ms=now_ms(),
        )

    def _received_upto(self, peer: str | None) -> int:
        link = self.spools.links.get(peer) if peer else None
        return link.received_upto if link else 0

    # ------------------------------------------------------------ reporting

    def down_reason(self, peer: str) -> str:
        """Why the link to `peer` is not open: its session's close or, while a new
        session is still opening, the last one's ("" if none closed yet)."""
        session = self.sessions.get(peer)
        reason = session.describe_close() if session is not None else ""
        return reason or self._last_close.get(peer, "")

    def link_states(self) -> dict[str, LinkState]:
        states = {}
        for peer in sorted(self.topology.neighbours(self.region)):
            session = self.sessions.get(peer)
            if peer in self.held_down or session is None:
                states[peer] = LinkState.CLOSED
            else:
                states[peer] = session.state
        return states


class LinkService(lrpc.LinkServicer):
    """The accepting end of links: the gRPC `plexus.v1.Link` service."""

    def __init__(self, supervisor: LinkSupervisor) -> None:
        self.supervisor = supervisor

    async def Connect(
        self, request_iterator: AsyncIterator[lpb.LinkFrame], context: grpc.aio.ServicerContext
    ) -> None:
        # A bug while accepting is logged here; the dialler gets INTERNAL, not a refusal.
        accept = guard(self.supervisor.region, "accepting a link", self._accept)
        await accept(request_iterator, context)

    async def _accept(self, _requests: object, context: grpc.aio.ServicerContext) -> None:
        await self.supervisor.accept(context)
