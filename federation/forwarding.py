"""Guaranteed events towards other regions: which link spools an event goes into.

The node calls this while it builds a commit: for a locally published event
(destinations: every region interested in its topic) or for one that arrived
over a link (destinations: what is left of the event's list). Spooling is
refused past a link's quota for local publishers (the publisher hears
RESOURCE_EXHAUSTED); relayed events are never refused, only counted, since
their publisher already has its ack.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from federation.mesh import Mesh
from federation.spools import LinkSpools, SpoolFull, envelope
from plexus.errors import Unavailable
from storage.spool import Forward

log = logging.getLogger(__name__)


class GuaranteedForwarder:
    def __init__(self, mesh: Mesh, spools: LinkSpools) -> None:
        self.mesh = mesh
        self.spools = spools
        self.region = mesh.region
        # Where a locally published event has been: here (made once, not per event).
        self._published_here = frozenset((mesh.region,))
        self._peer_of: dict[int, str] = {}

    def wants(self, topic: str) -> bool:
        return bool(self.mesh.guaranteed_regions(topic))

    def forwards(
        self,
        topic: str,
        size: int,
        destinations: frozenset[str] | None = None,
        visited: frozenset[str] | None = None,
    ) -> tuple[Forward, ...]:
        """Reserve a place in the spool of each next hop; SpoolFull for a local publish."""
        local_publish = destinations is None
        regions = self.mesh.guaranteed_regions(topic) if destinations is None else destinations
        if not regions:
            return ()
        visited = visited or self._published_here
        reserved: list[Forward] = []
        try:
            for copy in self.mesh.plan(regions, visited):
                if copy.next_hop not in self.spools.links:
                    # A link added a moment ago whose spool is still opening.
                    if local_publish:
                        raise Unavailable(
                            f"the link to {copy.next_hop} is still opening: publish again"
                        )
                    log.warning(
                        "a relayed guaranteed event on %r for %s was not spooled: "
                        "the link to %s is still opening",
                        topic,
                        ", ".join(sorted(copy.destinations)),
                        copy.next_hop,
                    )
                    continue
                meta = envelope(copy.destinations, copy.visited, topic)
                forward = self.spools.reserve(
                    copy.next_hop, size, meta, enforce_quota=local_publish
                )
                self._peer_of[forward.link_id] = copy.next_hop
                reserved.append(forward)
        except (SpoolFull, Unavailable):
            self.release(reserved, size)
            raise
        return tuple(reserved)

    def release(self, forwards: Iterable[Forward], size: int) -> None:
        """Reservations whose commit failed."""
        for forward in forwards:
            self.spools.released(self._peer_of[forward.link_id], size, 1)

    def committed(self, forwards: Iterable[tuple[Forward, bytes]]) -> None:
        """Spooled and durable ((its place, the stored event) each): on to the links' senders."""
        peer_of = self._peer_of
        self.spools.spooled((peer_of[f.link_id], f, data) for f, data in forwards)
