"""A region's place in the mesh: interest, link state and routes, shared by all its links.

`Mesh` runs on the node's event loop and never blocks. It keeps this region's
own interest and what it knows of every other region (interest and which of
their links are up, both flooded over every link with versions), computes
routes over the links that are up, and forwards direct events: one copy per
next hop, each carrying its destinations and the regions it must not enter.
Links reach it through `LinkPort`; local delivery is the node's, reached
through `LocalDelivery`, so this package never imports `node`. What it learns
of other regions' interest it reports to a `KnownInterestSink` (which keeps
it durable), and a restarted node hands back with `restore`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from federation.interest import (
    DeltaResult,
    InterestDelta,
    LocalInterest,
    RemoteInterest,
    interest_digest,
)
from federation.routes import Copy, RouteTable
from plexus.errors import InvalidPattern
from plexus.v1 import link_pb2 as lpb

log = logging.getLogger(__name__)


class LocalDelivery(Protocol):
    """What the node does with events that reached this region from a link."""

    def deliver_direct(self, items: list[tuple[str, bytes]]) -> None:
        """(topic, encoded event) pairs to hand to local subscribers."""

    def store_guaranteed(
        self, peer: str, events: list[lpb.GuaranteedEvent], upto: int, done: Callable[[], None]
    ) -> None:
        """Store events from `peer` in local queues and onward spools, with the link's
        received mark, in one commit; then call `done` (which acks them to the peer)."""


class LinkPort(Protocol):
    """An open link, as the mesh uses it."""

    peer: str

    def send(self, frame: lpb.LinkFrame) -> None: ...

    def send_direct(self, frame: lpb.LinkFrame, count: int) -> None:
        """A frame of `count` direct events (dropped and counted past the link's buffer)."""

    def set_digest(self, digest: int) -> None: ...

    def replaced(self) -> None:
        """A newer link to the same peer took over: close this one."""


class KnownInterestSink(Protocol):
    """Told of every change to what this region knows of other regions' interest."""

    def changed(self, region: str) -> None:
        """`region`'s interest (version or patterns) changed here, or was forgotten."""


class _Unrecorded:
    def changed(self, region: str) -> None:
        pass


def _start_version() -> int:
    # Versions must grow across restarts, or peers would ignore a restarted
    # region's adverts as stale: start from the clock, in microseconds.
    return time.time_ns() // 1000


class Mesh:
    def __init__(
        self, region: str, local: LocalDelivery, known: KnownInterestSink | None = None
    ) -> None:
        self.region = region
        self.local = local
        self.known = known or _Unrecorded()
        self.interest = LocalInterest(region, version=_start_version())
        self.remote = RemoteInterest(region)
        self.routes = RouteTable(region)
        # Routes over every configured link, up or not: the one way guaranteed events
        # take, waiting (spooled) while a link on it is down, so they keep their order.
        self.configured_routes = RouteTable(region)
        # Every region's up links, as that region last advertised them.
        self.link_states: dict[str, tuple[int, frozenset[str]]] = {}
        self._link_state_version = _start_version()
        self.links: dict[str, LinkPort] = {}

    # ------------------------------------------------------------ local interest

    def subscribe(self, pattern: str) -> None:
        """A local subscription or queue subscription appeared."""
        self._advertise(self.interest.add(pattern))

    def unsubscribe(self, pattern: str) -> None:
        self._advertise(self.interest.remove(pattern))

    def _advertise(self, delta: InterestDelta | None) -> None:
        if delta is None:
            return
        self._flood(lpb.LinkFrame(interest_delta=_delta_frame(delta)))
        self._digest_changed()

    # ------------------------------------------------------------ links

    def link_opened(self, link: LinkPort) -> None:
        """A link finished its handshake: our new link state, then a full sync."""
        old = self.links.get(link.peer)
        if old is not None and old is not link:
            old.replaced()
        self.links[link.peer] = link
        # The new state first, so the full sync carries it. Sent after, the sync's
        # older state would reach the peer first and be flooded on: regions further
        # away would see our links drop for a moment, then come back.
        self._own_links_changed(but=link.peer)
        for frame in self._full_sync_frames(()):
            link.send(frame)
        link.set_digest(self.digest())
        log.info(
            "link %s-%s is up",
            self.region,
            link.peer,
            extra={"event": "link_up", "region": self.region, "peer": link.peer},
        )

    def link_closed(self, link: LinkPort, reason: str) -> None:
        if self.links.get(link.peer) is link:
            del self.links[link.peer]
            self._own_links_changed()
            # A node that stops takes its links down on purpose: not a warning.
            level = logging.INFO if reason.startswith("shutdown") else logging.WARNING
            log.log(
                level,
                "link %s-%s is down: %s",
                self.region,
                link.peer,
                reason,
                extra={
                    "event": "link_down",
                    "region": self.region,
                    "peer": link.peer,
                    "reason": reason,
                },
            )

    def received(self, link: LinkPort, frame: lpb.LinkFrame) -> None:
        """An interest, link-state or direct frame from `link`."""
        kind = frame.WhichOneof("frame")
        if kind == "direct":
            self._on_direct(frame.direct)
        elif kind == "interest_delta":
            self._on_interest_delta(link, frame)
        elif kind == "interest_full":
            full = frame.interest_full
            if self.remote.apply_full(full.region, full.version, full.patterns):
                self.known.changed(full.region)
                self._flood(frame, but=link.peer)
                self._digest_changed()
        elif kind == "link_state":
            self._on_link_state(link, frame)
        elif kind == "interest_request":
            for reply in self._full_sync_frames(frame.interest_request.regions):
                link.send(reply)

    def known_regions(self) -> set[str]:
        return set(self.remote.regions()) | set(self.link_states) - {self.region}

    def forget(self, region: str) -> None:
        """A region left the cluster: drop its interest and its links from routing."""
        self.remote.forget(region)
        self.known.changed(region)
        self.link_states.pop(region, None)
        self._recompute_routes()
        self._digest_changed()

    def restore(self, known: Iterable[tuple[str, int, Iterable[str]]]) -> None:
        """(region, version, patterns) as this region knew them before it restarted.

        Guaranteed events route by them until the links sync (a full sync with
        a version at least as new replaces them). Call before any link opens.
        """
        for region, version, patterns in known:
            try:
                self.remote.apply_full(region, version, patterns)
            except InvalidPattern as exc:
                log.error("kept interest of region %s not restored: %s", region, exc)
        self._digest_changed()

    def resync(self, link: LinkPort) -> None:
        """Our digests differ: ask the peer for everything it knows."""
        link.send(lpb.LinkFrame(interest_request=lpb.InterestRequest()))

    def _on_interest_delta(self, link: LinkPort, frame: lpb.LinkFrame) -> None:
        d = frame.interest_delta
        delta = InterestDelta(d.region, d.version, tuple(d.added), tuple(d.removed))
        result = self.remote.apply_delta(delta)
        if result is DeltaResult.APPLIED:
            self.known.changed(d.region)
            self._flood(frame, but=link.peer)
            self._digest_changed()
        elif result is DeltaResult.GAP:
            request = lpb.InterestRequest(regions=[d.region])
            link.send(lpb.LinkFrame(interest_request=request))

    def _on_link_state(self, link: LinkPort, frame: lpb.LinkFrame) -> None:
        state = frame.link_state
        if state.region == self.region:
            return
        known = self.link_states.get(state.region)
        if known is not None and known[0] >= state.version:
            return
        self.link_states[state.region] = (state.version, frozenset(state.up))
        self._recompute_routes()
        self._flood(frame, but=link.peer)

    def _own_links_changed(self, but: str | None = None) -> None:
        self._link_state_version += 1
        up = frozenset(self.links)
        self.link_states[self.region] = (self._link_state_version, up)
        self._recompute_routes()
        self._flood(lpb.LinkFrame(link_state=self._own_link_state()), but=but)

    def _own_link_state(self) -> lpb.LinkState:
        version, up = self.link_states.get(self.region, (self._link_state_version, frozenset()))
        return lpb.LinkState(region=self.region, version=version, up=sorted(up))

    def _recompute_routes(self) -> None:
        # A link counts as up only when both ends say so.
        up = set()
        for region, (_version, neighbours) in self.link_states.items():
            for peer in neighbours:
                if region in self.link_states.get(peer, (0, frozenset()))[1]:
                    up.add(frozenset((region, peer)))
        # Every region of the cluster, so copies split here never both enter one this
        # node sees no link to (federation/routes.py).
        regions = set(self.link_states).union(*self.configured_routes.links)
        self.routes.update(up, regions)

    def _full_sync_frames(self, regions: Iterable[str]) -> list[lpb.LinkFrame]:
        wanted = set(regions)
        frames = []
        version, advertised = self.interest.snapshot()
        if not wanted or self.region in wanted:
            full = lpb.InterestFull(
                region=self.region, version=version, patterns=sorted(advertised)
            )
            frames.append(lpb.LinkFrame(interest_full=full))
            frames.append(lpb.LinkFrame(link_state=self._own_link_state()))
        for region in sorted(self.remote.regions()):
            if wanted and region not in wanted:
                continue
            full = lpb.InterestFull(
                region=region,
                version=self.remote.version_of(region),
                patterns=sorted(self.remote.patterns_of(region)),
            )
            frames.append(lpb.LinkFrame(interest_full=full))
        for region, (state_version, up) in sorted(self.link_states.items()):
            if region != self.region and (not wanted or region in wanted):
                state = lpb.LinkState(region=region, version=state_version, up=sorted(up))
                frames.append(lpb.LinkFrame(link_state=state))
        return frames

    def _flood(self, frame: lpb.LinkFrame, but: str | None = None) -> None:
        for peer, link in self.links.items():
            if peer != but:
                link.send(frame)

    def digest(self) -> int:
        return interest_digest({**self.remote.versions(), self.region: self.interest.version})

    def _digest_changed(self) -> None:
        digest = self.digest()
        for link in self.links.values():
            link.set_digest(digest)

    # ------------------------------------------------------------ guaranteed events

    def set_configured_links(self, links: Iterable[frozenset[str]]) -> None:
        self.configured_routes.update(links)
        self._recompute_routes()

    def guaranteed_regions(self, topic: str) -> frozenset[str]:
        """Regions that hold interest in `topic` (guaranteed events go to each)."""
        return self.remote.regions_for(topic)

    def plan(self, destinations: frozenset[str], visited: frozenset[str]) -> tuple[Copy, ...]:
        """One copy per next hop over the configured links, up or not.

        Guaranteed events never take a detour: events spooled towards a link that is
        down would be overtaken by later ones on the detour, and a publisher's events
        must reach each region in publish order. They wait in the spool (durable)
        until their link is back; direct events do reroute.
        """
        return self.configured_routes.forward(destinations, visited).copies

    def store_guaranteed(
        self, link: LinkPort, events: list[lpb.GuaranteedEvent], upto: int, done: Callable[[], None]
    ) -> None:
        self.local.store_guaranteed(link.peer, events, upto, done)

    # ------------------------------------------------------------ direct events

    def route_direct(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Forward locally published direct events to every region interested in them."""
        regions_for = self.remote.regions_for
        groups: dict[frozenset[str], tuple[list[str], list[bytes]]] = {}
        for topic, data in items:
            regions = regions_for(topic)
            if regions:
                group = groups.get(regions)
                if group is None:
                    group = groups[regions] = ([], [])
                group[0].append(topic)
                group[1].append(data)
        visited = frozenset((self.region,))
        for regions, (topics, events) in groups.items():
            self._forward(regions, visited, topics, events)

    def wants(self, topic: str) -> bool:
        """Does any other region hold interest in `topic`?"""
        return bool(self.remote.regions_for(topic))

    def _on_direct(self, batch: lpb.DirectBatch) -> None:
        destinations = frozenset(batch.destinations)
        if self.region in destinations:
            self.local.deliver_direct(list(zip(batch.topics, batch.events, strict=True)))
        rest = destinations - {self.region}
        if rest:
            visited = frozenset(batch.visited) | {self.region}
            self._forward(rest, visited, list(batch.topics), list(batch.events))

    def _forward(
        self,
        destinations: frozenset[str],
        visited: frozenset[str],
        topics: list[str],
        events: list[bytes],
    ) -> None:
        forwarding = self.routes.forward(destinations, visited)
        for copy in forwarding.copies:
            link = self.links.get(copy.next_hop)
            if link is None:
                continue
            # Built in place (a DirectBatch passed to LinkFrame would be copied).
            frame = lpb.LinkFrame(
                direct={
                    "destinations": _sorted(copy.destinations),
                    "visited": _sorted(copy.visited),
                    "events": events,
                    "topics": topics,
                }
            )
            link.send_direct(frame, len(events))


@functools.lru_cache(maxsize=1024)
def _sorted(regions: frozenset[str]) -> tuple[str, ...]:
    """A route's regions as a frame lists them (the routes are few; each is sorted once)."""
    return tuple(sorted(regions))


def _delta_frame(delta: InterestDelta) -> lpb.InterestDelta:
    return lpb.InterestDelta(
        region=delta.region, version=delta.version, added=delta.added, removed=delta.removed
    )
