"""Routing between regions over whatever links are up: shortest paths, loop-free forwarding.

Sans-IO: a `RouteTable` is fed the set of links up anywhere in the cluster and
answers where an event goes next. No clock, no sockets.

How loops and duplicates are ruled out, even while regions disagree about
which links are up: every forwarded copy of an event carries `visited`, the
regions that copy must never enter. `forward` puts in it the regions the copy
already crossed *and* the regions handed to its sibling copies: when a node
splits an event into copies, each copy gets the regions of its own subtree of the
node's shortest-path tree and nothing else. Sibling copies therefore roam
disjoint sets of regions, and a copy never re-enters a region it crossed, so
no region receives an event twice and no link carries it twice — whatever each
node believes about the links. When every node sees the same connected graph,
each copy follows shortest paths and every destination gets exactly one copy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Copy", "Forwarding", "RouteTable"]

# Distinct (destinations, visited) pairs remembered between link changes. Events
# on a topic mostly share a destination set, so a few entries serve most traffic.
PLAN_CACHE_ENTRIES = 4096


@dataclass(frozen=True)
class Copy:
    """One copy of an event to send over the link to `next_hop`."""

    next_hop: str
    destinations: frozenset[str]
    # Carry this in the forwarded event and pass it to the next hop's `forward`.
    visited: frozenset[str]


@dataclass(frozen=True)
class Forwarding:
    """What to do with an event: deliver locally or not, which copies to send."""

    local: bool  # this region is one of the destinations
    copies: tuple[Copy, ...]  # sorted by next hop
    unreachable: frozenset[str]  # destinations no allowed path reaches


class RouteTable:
    """Next hops from one region, recomputed whenever the set of up links changes."""

    def __init__(self, self_region: str) -> None:
        self.region = self_region
        self.version = 0  # bumped by every update that changes the links
        self._links: frozenset[frozenset[str]] = frozenset()
        # Every region of the cluster this table was told of, up links or not.
        self._regions: frozenset[str] = frozenset({self_region})
        self._adjacent: dict[str, tuple[str, ...]] = {self_region: ()}
        self._first_hop: dict[str, str] = {}
        self._parent: dict[str, str] = {}
        self._plans: dict[tuple[frozenset[str], frozenset[str]], Forwarding] = {}

    @property
    def links(self) -> frozenset[frozenset[str]]:
        """The links this table was last told are up."""
        return self._links

    def update(self, up_links: Iterable[frozenset[str]], regions: Iterable[str] = ()) -> None:
        """Take the links currently up anywhere in the cluster, and the cluster's regions
        (those without an up link too); recompute shortest paths.

        The regions matter while views disagree: a region this table sees no up link
        to may be up in another node's view, and each copy of an event must still
        know whether it may enter it (see `_plan`).
        """
        links = frozenset(frozenset(link) for link in up_links)
        for link in links:
            if len(link) != 2:
                raise ValueError(f"a link joins two different regions, got {sorted(link)}")
        known = frozenset(regions).union(*links, {self.region})
        if links == self._links and known == self._regions:
            return  # keep the cached plans
        self._regions = known
        adjacent: dict[str, list[str]] = {self.region: []}
        for link in links:
            a, b = link
            adjacent.setdefault(a, []).append(b)
            adjacent.setdefault(b, []).append(a)
        self._links = links
        # Sorted neighbours make the breadth-first search, and so every tie, depend
        # on region names only: the same view gives the same routes on every node.
        self._adjacent = {region: tuple(sorted(peers)) for region, peers in adjacent.items()}
        self._first_hop, self._parent = self._search(frozenset())
        self._plans.clear()
        self.version += 1

    def next_hop(self, destination: str) -> str | None:
        """The neighbour on the shortest path to `destination`; None if unreachable or self."""
        return self._first_hop.get(destination)

    def reachable(self) -> frozenset[str]:
        """Regions reachable over up links, not counting this one."""
        return frozenset(self._first_hop)

    def neighbours(self) -> frozenset[str]:
        """Regions with an up link to this one."""
        return frozenset(self._adjacent[self.region])

    def path(self, destination: str) -> list[str]:
        """Regions from this one to `destination`, both included; [] if unreachable."""
        if destination == self.region:
            return [self.region]
        if destination not in self._parent:
            return []
        path = [destination]
        while path[-1] != self.region:
            path.append(self._parent[path[-1]])
        return path[::-1]

    def split(
        self, destinations: Iterable[str], visited: Iterable[str] = ()
    ) -> tuple[dict[str, frozenset[str]], frozenset[str]]:
        """Destinations grouped by next hop, and the unreachable ones.

        This region, if among the destinations, is in neither: it delivers locally.
        No next hop is in `visited`. To send, use `forward`, which also says what
        `visited` each copy must carry.
        """
        plan = self.forward(destinations, visited)
        return {copy.next_hop: copy.destinations for copy in plan.copies}, plan.unreachable

    def forward(self, destinations: Iterable[str], visited: Iterable[str] = ()) -> Forwarding:
        """Plan one event: local delivery, one copy per next hop, the unreachable rest.

        `visited` is what the event arrived with (empty where it was published).
        Paths avoid it; when it blocks a shortest path, the search runs on the graph
        without the visited regions, so a copy detours if it can and is reported
        unreachable otherwise.
        """
        dests, avoid = frozenset(destinations), frozenset(visited)
        key = (dests, avoid)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(dests, avoid)
            if len(self._plans) >= PLAN_CACHE_ENTRIES:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _plan(self, dests: frozenset[str], visited: frozenset[str]) -> Forwarding:
        blocked = visited - {self.region}
        first_hop = self._first_hop
        if blocked and not blocked.isdisjoint(first_hop):
            first_hop, _ = self._search(blocked)
        groups: dict[str, set[str]] = {}
        unreachable: set[str] = set()
        for dest in dests - {self.region}:
            hop = first_hop.get(dest)
            if hop is None:
                unreachable.add(dest)
            else:
                groups.setdefault(hop, set()).add(dest)
        hops = sorted(groups)
        # Each copy may enter the regions of its own subtree only...
        allowed = {hop: {r for r, h in first_hop.items() if h == hop} for hop in hops}
        known = self._regions | visited | dests
        if hops:
            # ...and one copy (the first) also gets the regions no copy claims, so a
            # lone copy, the usual case, may detour through any region it has not crossed.
            claimed = set().union(*allowed.values())
            allowed[hops[0]] |= known - visited - claimed - {self.region}
        copies = tuple(
            Copy(hop, frozenset(groups[hop]), frozenset(known - allowed[hop])) for hop in hops
        )
        return Forwarding(self.region in dests, copies, frozenset(unreachable))

    def _search(self, blocked: frozenset[str]) -> tuple[dict[str, str], dict[str, str]]:
        """Breadth-first search from this region avoiding `blocked`: (first hop, parent)."""
        first_hop: dict[str, str] = {}
        parent: dict[str, str] = {}
        queue = deque([self.region])
        while queue:
            here = queue.popleft()
            for there in self._adjacent[here]:
                if there == self.region or there in parent or there in blocked:
                    continue
                parent[there] = here
                first_hop[there] = there if here == self.region else first_hop[here]
                queue.append(there)
        return first_hop, parent
