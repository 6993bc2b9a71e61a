"""Subscribing to a topic pattern: direct-event batches on the client's subscriptions stream."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from plexus.client.event import Event
from plexus.client.subscription_stream import MAX_BUFFERED_BYTES, SubscriptionStream
from plexus.errors import ClientClosed, PlexusError, Timeout
from plexus.v1 import plexus_pb2 as pb

__all__ = ["Subscription"]


class Subscription:
    """Direct events matching one pattern, as an async iterator of `Event`.

    ::

        async with client.subscribe("orders/>") as sub:
            async for event in sub:
                print(event.topic, event.payload)

    `batches()` yields the events as the node sent them, a list at a time,
    which is cheaper at high rates. When the connection breaks, the
    subscription is made again once the client has reconnected, before any
    further event is handed over; events published meanwhile are missed
    (direct events are at most once) and `reconnects` counts each such gap.
    Errors from the node (a pattern it refused) and the client giving up are
    raised as PlexusError by the iteration.
    """

    def __init__(self, stream: SubscriptionStream, pattern: str, buffer_events: int = 0) -> None:
        self.pattern = pattern
        self.request = pb.SubscribeRequest(pattern=pattern, buffer_events=buffer_events)
        self._stream = stream
        self._loop = asyncio.get_running_loop()
        # Received batches not handed over yet, and their size on the wire.
        self._batches: deque[pb.SubscriptionEvents] = deque()
        self._buffered_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._live: asyncio.Future[None] = self._loop.create_future()
        self._live.add_done_callback(_consume_exception)
        self._made = False
        self._error: PlexusError | None = None
        self._events: list[Event] = []
        self._index = 0
        self._closed = False
        self.received = 0
        # Times the subscription was made again after a break (each a gap in its events).
        self.reconnects = 0
        self._id = stream.add(self)

    @property
    def _what(self) -> str:
        return f"subscription {self.pattern!r}"

    # ------------------------------------------------------------ told by the stream

    def subscribed(self) -> None:
        """The node answered: the subscription is live (again, after a break)."""
        if self._made:
            self.reconnects += 1
        self._made = True
        if not self._live.done():
            self._live.set_result(None)

    def broke(self) -> None:
        """The stream broke: live again only once the node answers on the next one."""
        if self._live.done() and self._error is None:
            self._live = self._loop.create_future()
            self._live.add_done_callback(_consume_exception)

    def deliver(self, events: pb.SubscriptionEvents, size: int) -> bool:
        """Hold a received batch; whether the application was waiting for one."""
        self._batches.append(events)
        self._buffered_bytes += size
        if self._buffered_bytes > MAX_BUFFERED_BYTES:
            self._stream.full(self._id)
        return self._wake()

    def fail(self, err: PlexusError) -> None:
        """The subscription ended with `err` (refused, or the stream is over for good)."""
        if self._error is None and not self._closed:
            self._error = err
        if not self._live.done():
            self._live.set_exception(err)
        self._wake()

    def _wake(self) -> bool:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            return True
        return False

    # ------------------------------------------------------------ the application's side

    async def ready(self, timeout: float | None = 5.0) -> None:
        """Wait until the subscription is live on the node.

        The node answers once the subscription is in its index: events
        published after this returns are delivered. Raises the node's refusal,
        or Timeout naming what it still waits for (the node's answer, or a
        reconnect to it).
        """
        live = self._live
        if not live.done():
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(live)
            except TimeoutError:
                if self._stream.connected:
                    what = f"node at {self._stream.address} confirming {self._what}"
                else:
                    what = f"reconnect to node at {self._stream.address} for {self._what}"
                raise Timeout(what, timeout) from None
        if live.done() and live.exception() is not None:
            raise live.exception()  # type: ignore[misc]

    async def next_batch(self, timeout: float | None = None) -> list[Event]:
        """The next events (at least one); [] when the subscription ended or on timeout."""
        if self._index < len(self._events):
            rest = self._events[self._index :]
            self._events, self._index = [], 0
            return rest
        batches = self._batches
        if not batches:
            if self._closed:
                return []
            if self._error is not None:
                raise self._error
            await self._wait(timeout)
            if not batches:
                if self._error is not None and not self._closed:
                    raise self._error
                return []
        batch = batches.popleft()
        if not batches:
            self._buffered_bytes = 0
            self._stream.has_room(self._id)
        events = [Event(m) for m in batch.events]
        self.received += len(events)
        return events

    async def _wait(self, timeout: float | None) -> None:
        """Until a batch arrives, the subscription ends, or `timeout` passes."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = self._loop.create_future()
        if timeout is None:
            await waiter
            return
        expiry = self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            expiry.cancel()

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Yield lists of events until the subscription is closed or ends."""
        while True:
            events = await self.next_batch()
            if not events:
                return
            yield events

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        events, i = self._events, self._index
        if i < len(events):
            self._index = i + 1
            return events[i]
        events = await self.next_batch()
        if not events:
            raise StopAsyncIteration
        self._events, self._index = events, 1
        return events[0]

    async def close(self) -> None:
        """End the subscription; iteration then stops."""
        if self._closed:
            return
        self._closed = True
        self._stream.remove(self._id)
        self._batches.clear()
        self._wake()
        if not self._live.done():
            self._live.set_exception(ClientClosed(self._what))

    async def __aenter__(self) -> Subscription:
        await self.ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
