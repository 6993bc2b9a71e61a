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
        ClientClosed,
        DataDirLocked,
        FailedPrecondition,
        InternalError,
        InvalidArgument,
        InvalidPattern,
        InvalidTopic,
        NotFound,
        NotPermitted,
        PermissionDenied,
        PlexusError,
        QueueExists,
        QueueFull,
        QueueNotFound,
        ResourceExhausted,
        SpoolFull,
        StorageFull,
        Timeout,
        Unauthenticated,
        Unavailable,
    )

_CLIENT_NAMES = frozenset(
    {"Client", "Consumer", "Delivery", "Event", "NodeInfo", "QueueInfo", "Subscription"}
)
_ERROR_NAMES = frozenset(
    {
        "AlreadyExists",
        "ClientClosed",
        "DataDirLocked",
        "FailedPrecondition",
        "InternalError",
        "InvalidArgument",
        "InvalidPattern",
        "InvalidTopic",
        "NotFound",
        "NotPermitted",
        "PermissionDenied",
        "PlexusError",
        "QueueExists",
        "QueueFull",
        "QueueNotFound",
        "ResourceExhausted",
        "SpoolFull",
        "StorageFull",
        "Timeout",
        "Unauthenticated",
        "Unavailable",
    }
)

__all__ = [
    "AlreadyExists",
    "Client",
    "ClientClosed",
    "Consumer",
    "DataDirLocked",
    "Delivery",
    "Event",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "InvalidPattern",
    "InvalidTopic",
    "NodeInfo",
    "NotFound",
    "NotPermitted",
    "PermissionDenied",
    "PlexusError",
    "QueueExists",
    "QueueFull",
    "QueueInfo",
    "QueueNotFound",
    "ResourceExhausted",
    "SpoolFull",
    "StorageFull",
    "Subscription",
    "Timeout",
    "Unauthenticated",
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
