"""What `plexus top` shows, as plain frozen data: the mesh and one region in detail.

A source (`sources.py`) builds these from the admin API; the views only render
them, so a fixed snapshot drives the views in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ClientRow",
    "LinkState",
    "Mesh",
    "QueueRow",
    "RegionDetail",
    "RegionState",
    "SpoolRow",
]

LINK_STATES = ("up", "connecting", "down")


@dataclass(frozen=True, slots=True)
class RegionState:
    """A region of the mesh: `up` when its node answered the last refresh."""

    name: str
    address: str
    up: bool
    raft_role: str = ""
    raft_term: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class LinkState:
    """A link a-b: "up" only when both ends say so; events per second each way."""

    a: str
    b: str
    state: str
    rate_ab: float = 0.0
    rate_ba: float = 0.0
    spool_depth: int = 0
    held_down: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.a, self.b)

    def rate_from(self, region: str) -> float:
        """Events per second leaving `region` over this link."""
        return self.rate_ab if region == self.a else self.rate_ba


@dataclass(frozen=True, slots=True)
class Mesh:
    """The whole mesh at one refresh."""

    cluster: str
    regions: tuple[RegionState, ...]
    links: tuple[LinkState, ...]

    def region(self, name: str) -> RegionState | None:
        return next((r for r in self.regions if r.name == name), None)

    def link(self, a: str, b: str) -> LinkState | None:
        return next((k for k in self.links if {k.a, k.b} == {a, b}), None)

    @property
    def leader(self) -> str:
        return next((r.name for r in self.regions if r.up and r.raft_role == "leader"), "")


EMPTY_MESH = Mesh(cluster="", regions=(), links=())


@dataclass(frozen=True, slots=True)
class QueueRow:
    name: str
    depth: int
    consumers: int
    unacked: int
    rate_in: float
    rate_out: float
    oldest_age_ms: int
    dead: int  # events in its dead-message queue


@dataclass(frozen=True, slots=True)
class SpoolRow:
    """The outbound spool of one link of the region, and the link's state at this end."""

    peer: str
    state: str
    depth: int
    oldest_age_ms: int
    direct_dropped: int
    held_down: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RegionDetail:
    name: str
    address: str
    version: str
    uptime_ms: int
    metrics_address: str  # HOST:PORT of its Prometheus metrics, "" when it serves none
    raft_role: str
    raft_term: int
    raft_leader: str
    subscriptions: int  # direct ones; the queues' are in the subscriptions list (/)
    rate_in: float  # events per second published at this region, both modes
    rate_out: float  # events per second delivered to its subscribers and consumers
    discarded: int  # direct events its subscribers lost to full buffers
    queues: tuple[QueueRow, ...]
    spools: tuple[SpoolRow, ...]


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A client connected to a region (one connection with streams open); counts since
    it connected."""

    id: int
    peer: str
    connected_ms: int  # how long ago it connected
    publishers: int  # Publish streams open
    subscriptions: int  # direct subscriptions open
    consuming: tuple[str, ...]  # the queue of each Consume stream
    published: int
    delivered: int
    discarded: int
