"""Typed views of what the node reports: queues, node info, links and interest, clients
and subscriptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plexus.v1 import plexus_pb2 as pb

__all__ = [
    "ClientInfo",
    "LinkInfo",
    "LinksView",
    "NodeInfo",
    "QueueInfo",
    "RegionInterest",
    "SubscriptionInfo",
    "SubscriptionsView",
]


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's configuration and its state when the node answered."""

    name: str
    subscriptions: tuple[str, ...]
    exclusive: bool
    max_depth: int
    max_bytes: int
    max_deliveries: int
    depth: int
    bytes: int
    consumers: int
    unacked: int
    dead_message_queue: str
    events_in: int
    events_out: int
    oldest_age_ms: int

    @classmethod
    def from_proto(cls, info: pb.QueueInfo) -> QueueInfo:
        config, limits = info.config, info.config.limits
        return cls(
            name=config.name,
            subscriptions=tuple(config.subscriptions),
            exclusive=config.exclusive,
            max_depth=limits.max_depth,
            max_bytes=limits.max_bytes,
            max_deliveries=limits.max_deliveries,
            depth=info.depth,
            bytes=info.bytes,
            consumers=info.consumers,
            unacked=info.unacked,
            dead_message_queue=info.dead_message_queue,
            events_in=info.events_in,
            events_out=info.events_out,
            oldest_age_ms=info.oldest_age_ms,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (subscriptions as a list)."""
        data = _fields(self)
        data["subscriptions"] = list(self.subscriptions)
        return data


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node says about itself: identity, uptime, counters, storage use."""

    region: str
    version: str
    protocol_version: int
    listen_address: str
    data_dir: str
    uptime_ms: int
    subscriptions: int
    queues: int
    direct_in: int
    direct_out: int
    guaranteed_in: int
    guaranteed_out: int
    discarded: int
    storage_map_bytes: int
    storage_used_bytes: int
    # Where the node serves Prometheus metrics, HOST:PORT ("" when it serves none).
    metrics_address: str

    @classmethod
    def from_proto(cls, info: pb.NodeInfo) -> NodeInfo:
        return cls(**{name: getattr(info, name) for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return _fields(self)


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """One link of a region, seen from that region's end.

    `state` is "up", "connecting" or "down"; `reason` says why the link is
    down or was last closed ("" when up); `held_down` is true while an
    operator holds it down (`plexus link down`).
    """

    peer: str
    state: str
    reason: str
    dialler: bool
    rtt_ms: float
    events_in_per_s: float
    events_out_per_s: float
    bytes_in_per_s: float
    bytes_out_per_s: float
    events_in: int
    events_out: int
    direct_dropped: int
    spool_depth: int
    spool_oldest_age_ms: int
    held_down: bool
    # Spooled events dropped to stay under the spool's quota (policy discard-oldest).
    spool_discarded: int

    @property
    def up(self) -> bool:
        return self.state == "up"

    @classmethod
    def from_proto(cls, info: pb.LinkInfo) -> LinkInfo:
        return cls(**{name: getattr(info, name) for name in cls.__dataclass_fields__})

    def to_dict(self, region: str | None = None) -> dict[str, Any]:
        """A JSON-ready dict; given this end's region, with `regions: [region, peer]`."""
        data = _fields(self)
        if region is None:
            return data
        return {"peer": self.peer, "regions": [region, self.peer], **data}


@dataclass(frozen=True, slots=True)
class RegionInterest:
    """The patterns a region is known to subscribe to, and the way there."""

    region: str
    version: int
    patterns: tuple[str, ...]
    # The neighbour events for the region go through ("" for this region or when unreachable).
    next_hop: str
    reachable: bool

    @classmethod
    def from_proto(cls, interest: pb.RegionInterest) -> RegionInterest:
        return cls(
            region=interest.region,
            version=interest.version,
            patterns=tuple(interest.patterns),
            next_hop=interest.next_hop,
            reachable=interest.reachable,
        )

    def to_dict(self) -> dict[str, Any]:
        data = _fields(self)
        data["patterns"] = list(self.patterns)
        return data


@dataclass(frozen=True, slots=True)
class LinksView:
    """A region's links and the interest it learned: this region first, then the others.

    A node that is not part of a cluster has no links and no interest.
    """

    region: str
    links: tuple[LinkInfo, ...]
    interest: tuple[RegionInterest, ...]

    @classmethod
    def from_proto(cls, resp: pb.ListLinksResponse) -> LinksView:
        return cls(
            region=resp.region,
            links=tuple(LinkInfo.from_proto(link) for link in resp.links),
            interest=tuple(RegionInterest.from_proto(i) for i in resp.interest),
        )

    def link(self, peer: str) -> LinkInfo | None:
        """The link to `peer`, or None when this region has no such link."""
        return next((link for link in self.links if link.peer == peer), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "links": [link.to_dict(self.region) for link in self.links],
            "interest": [i.to_dict() for i in self.interest],
        }


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A client connected to the node: one connection with streams open.

    `peer` is its address as gRPC reports it; `subscriptions` holds the pattern
    of each direct subscription it has open, `consuming` the queue of each
    Consume stream. The counts run from when it connected; `limits_hit` counts
    what each limit refused it (e.g. {"max_streams_per_client": 2}). `name` is
    the name it connected with ("" when none), `status` what it last reported
    of itself (a connector's counters: `kind`, `state`, `events_in`, ...).
    """

    id: int
    peer: str
    connected_since_ms: int
    publishers: int
    subscriptions: tuple[str, ...]
    consuming: tuple[str, ...]
    events_published: int
    events_delivered: int
    events_discarded: int
    # How often each limit refused it something, by the limit's name.
    limits_hit: dict[str, int]
    name: str = ""
    status: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, info: pb.ClientInfo) -> ClientInfo:
        return cls(
            id=info.id,
            peer=info.peer,
            connected_since_ms=info.connected_since_ms,
            publishers=info.publishers,
            subscriptions=tuple(info.subscriptions),
            consuming=tuple(info.consuming),
            events_published=info.events_published,
            events_delivered=info.events_delivered,
            events_discarded=info.events_discarded,
            limits_hit=dict(sorted(info.limits_hit.items())),
            name=info.name,
            status=dict(sorted(info.status.items())),
        )

    def to_dict(self) -> dict[str, Any]:
        data = _fields(self)
        data["subscriptions"] = list(self.subscriptions)
        data["consuming"] = list(self.consuming)
        data["limits_hit"] = dict(self.limits_hit)
        data["status"] = dict(self.status)
        return data


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """One subscription of the node: a direct subscriber's, or a queue's (`queue` set).

    For a direct subscription: the client holding it (`ClientInfo.id`), the
    events delivered to it and discarded because its buffer was full, and its
    buffer's fill and size. A queue's subscription has zeros there.
    """

    pattern: str
    queue: str
    client_id: int
    delivered: int
    discarded: int
    buffered: int
    buffer_events: int

    @property
    def direct(self) -> bool:
        return not self.queue

    @classmethod
    def from_proto(cls, info: pb.SubscriptionInfo) -> SubscriptionInfo:
        return cls(**{name: getattr(info, name) for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return _fields(self)


@dataclass(frozen=True, slots=True)
class SubscriptionsView:
    """The subscriptions that matched a search, at most the limit asked, and how many
    matched in all (`total`, more than `len(subscriptions)` when the limit cut the list)."""

    subscriptions: tuple[SubscriptionInfo, ...]
    total: int

    @classmethod
    def from_proto(cls, resp: pb.ListSubscriptionsResponse) -> SubscriptionsView:
        return cls(
            subscriptions=tuple(SubscriptionInfo.from_proto(s) for s in resp.subscriptions),
            total=resp.total,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"subscriptions": [s.to_dict() for s in self.subscriptions], "total": self.total}


def _fields(info: Any) -> dict[str, Any]:
    """A flat dataclass's fields as a dict (asdict's deep copy costs ~0.1 ms an item)."""
    return {name: getattr(info, name) for name in info.__dataclass_fields__}
