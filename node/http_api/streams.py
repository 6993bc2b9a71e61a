"""The open SSE and WebSocket streams of one front door, and what they share.

A stream waits on its subscriptions' `wake`s; `close_all` (the front door
stopping) sets a stream's `stop` so it ends at once, with a last word to its
client, instead of lingering until the server's shutdown timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from node.gateway import Gateway, GatewaySubscription
from plexus.v1 import plexus_pb2 as pb

__all__ = ["HEARTBEAT_S", "OpenStreams", "next_check_s", "pump"]

# How often an idle stream sends a keep-alive (an SSE comment, a WebSocket ping) and
# re-checks its token's expiry: proxies close connections idle for 30-60 s.
HEARTBEAT_S = 15.0
# Past a token's expiry before a stream re-checks it: the node's clock decides, not ours.
EXPIRY_MARGIN_S = 0.05


def next_check_s(expires_at: float) -> float:
    """How long an idle stream may wait before its next keep-alive or its token's expiry."""
    return min(HEARTBEAT_S, max(0.0, expires_at - time.time()) + EXPIRY_MARGIN_S)


class OpenStreams:
    """The stop events of the streams open now."""

    def __init__(self) -> None:
        self._stops: set[asyncio.Event] = set()
        self.closing = False

    @contextmanager
    def open(self) -> Iterator[asyncio.Event]:
        """A stream's `stop`, set when the front door stops."""
        stop = asyncio.Event()
        if self.closing:
            stop.set()
        self._stops.add(stop)
        try:
            yield stop
        finally:
            self._stops.discard(stop)

    def close_all(self) -> None:
        self.closing = True
        for stop in self._stops:
            stop.set()


async def pump(
    gateway: Gateway,
    token: str | None,
    subscription: GatewaySubscription,
    send: Callable[[list[pb.Event]], Awaitable[None]],
) -> None:
    """Send what `subscription` gets, as it comes, until the token is revoked or expires
    (raises `Unauthenticated`) or the task is cancelled.

    A client that reads slowly holds up `send`; meanwhile the subscription's bounded
    buffer drops and counts, and the next event sent says how many were discarded.
    """
    wake = subscription.wake
    while True:
        await wake.wait()
        wake.clear()
        gateway.still_valid(token)  # a revocation wakes every stream
        events = subscription.take()
        if events:
            await send(events)
