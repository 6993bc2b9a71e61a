"""Plexus client side: the SDK (`plexus.Client`), the CLI and the shared contract.

`plexus.v1` is the generated wire contract, `plexus.topics` the topic grammar
and `plexus.errors` the error taxonomy; every layer may import those three.
The rest of this package talks to nodes only over gRPC.

The SDK names below are imported lazily, so the node importing
`plexus.topics` or `plexus.errors` does not load the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from plexus.client import (
        Client,
        Consumer,
        Delivery,
        Event,
        NodeInfo,
        QueueInfo,
        Subscription,
    )
    from plexus.errors import (
        AlreadyExists,
        InvalidArgument,
        InvalidPattern,
        InvalidTopic,
        NotFound,
        PlexusError,
        QueueExists,
        QueueFull,
        QueueNotFound,
        ResourceExhausted,
        Unavailable,
    )

_CLIENT_NAMES = frozenset(
    {"Client", "Consumer", "Delivery", "Event", "NodeInfo", "QueueInfo", "Subscription"}
)
_ERROR_NAMES = frozenset(
    {
        "AlreadyExists",
        "InvalidArgument",
        "InvalidPattern",
        "InvalidTopic",
        "NotFound",
        "PlexusError",
        "QueueExists",
        "QueueFull",
        "QueueNotFound",
        "ResourceExhausted",
        "Unavailable",
    }
)

__all__ = [
    "AlreadyExists",
    "Client",
    "Consumer",
    "Delivery",
    "Event",
    "InvalidArgument",
    "InvalidPattern",
    "InvalidTopic",
    "NodeInfo",
    "NotFound",
    "PlexusError",
    "QueueExists",
    "QueueFull",
    "QueueInfo",
    "QueueNotFound",
    "ResourceExhausted",
    "Subscription",
    "Unavailable",
]


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from plexus import client

        return getattr(client, name)
    if name in _ERROR_NAMES:
        from plexus import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'plexus' has no attribute {name!r}")
