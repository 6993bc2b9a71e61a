"""What an MQTT session asks of its shell (node/mqtt/server.py): the broker work its
packets need, as values (the session itself does no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from node.mqtt.packets import Connect
from plexus.v1 import plexus_pb2 as pb

__all__ = [
    "AckDeliveries",
    "Action",
    "Authenticate",
    "Close",
    "PublishEvent",
    "SendRetained",
    "SubscriptionsChanged",
]


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Check the CONNECT's credentials, then call `authenticated` (or `refuse`)."""

    connect: Connect


@dataclass(frozen=True, slots=True)
class PublishEvent:
    """Publish `event` (store it as retained first when `retain`); answer `published(ref, …)`
    unless `ref` is None (QoS 0 and will messages need no answer)."""

    event: pb.Event
    retain: bool
    ref: int | None


@dataclass(frozen=True, slots=True)
class SubscriptionsChanged:
    """Plexus patterns to start and stop receiving; `patterns` is the whole set now."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SendRetained:
    """Look up the retained messages for `patterns` and `deliver(..., retained=True)` them."""

    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AckDeliveries:
    """Queue deliveries the client has (or will never get: too large, not matched)."""

    tags: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """End the connection once the bytes to send are written; `reason` is for the log."""

    reason: str


Action = Authenticate | PublishEvent | SubscriptionsChanged | SendRetained | AckDeliveries | Close
