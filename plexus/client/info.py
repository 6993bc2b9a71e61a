"""Typed views of what the node reports: queues and node info."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from plexus.v1 import plexus_pb2 as pb

__all__ = ["NodeInfo", "QueueInfo"]


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
        data = asdict(self)
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

    @classmethod
    def from_proto(cls, info: pb.NodeInfo) -> NodeInfo:
        return cls(**{name: getattr(info, name) for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
