"""Subscribing to a topic pattern: a server stream of direct-event batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from plexus.client.channel import stream_broke, stream_ended
from plexus.client.event import Event
from plexus.errors import Unavailable
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as pb_grpc

__all__ = ["Subscription"]


class Subscription:
    """Direct events matching one pattern, as an async iterator of `Event`.

    ::

        async with client.subscribe("orders/>") as sub:
            async for event in sub:
                print(event.topic, event.payload)

    `batches()` yields the events as the node sent them, a list at a time,
    which is cheaper at high rates. Errors from the node (an invalid pattern it
    refused, the node going away) are raised as PlexusError by the iteration.
    """

    def __init__(
        self, stub: pb_grpc.BrokerStub, address: str, pattern: str, buffer_events: int = 0
    ) -> None:
        self.pattern = pattern
        self._address = address
        self._call: aio.UnaryStreamCall = stub.Subscribe(
            pb.SubscribeRequest(pattern=pattern, buffer_events=buffer_events)
        )
        self._events: list[Event] = []
        self._index = 0
        self._closed = False
        self._pending_read: asyncio.Future[Any] | None = None
        self.received = 0

    async def ready(self, timeout: float | None = 5.0) -> None:
        """Wait until the subscription is live on the node.

        The node sends the stream's headers once the subscription is in its
        index: events published after this returns are delivered.
        """
        try:
            await asyncio.wait_for(self._call.initial_metadata(), timeout)
        except TimeoutError:
            raise Unavailable(
                f"node at {self._address} did not confirm subscription {self.pattern!r} "
                f"within {timeout} s"
            ) from None
        except grpc.RpcError as exc:
            raise stream_broke(exc, self._address, f"subscription {self.pattern!r}") from None
        if self._call.done():
            # The node refused the pattern or went away before any event.
            code = await self._call.code()
            if code != grpc.StatusCode.OK:
                details = await self._call.details()
                raise stream_ended(code, details, self._address, f"subscription {self.pattern!r}")

    async def next_batch(self, timeout: float | None = None) -> list[Event]:
        """The next events (at least one); [] when the stream ended or on timeout."""
        if self._index < len(self._events):
            rest = self._events[self._index :]
            self._events, self._index = [], 0
            return rest
        if self._closed:
            return []
        try:
            batch = await self._read(timeout)
        except TimeoutError:
            return []
        except asyncio.CancelledError:
            if self._closed:
                return []
            raise
        except grpc.RpcError as exc:
            self._closed = True
            if exc.code() == grpc.StatusCode.CANCELLED:
                return []
            raise stream_broke(exc, self._address, f"subscription {self.pattern!r}") from None
        if batch is aio.EOF:
            self._closed = True
            code = await self._call.code()
            if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
                details = await self._call.details()
                raise stream_ended(code, details, self._address, f"subscription {self.pattern!r}")
            return []
        events = [Event(m) for m in batch.events]
        self.received += len(events)
        return events

    async def _read(self, timeout: float | None) -> Any:
        # Cancelling a read cancels the whole call in grpc.aio, so a read that
        # outlives a timeout stays pending and the next call picks it up.
        if self._pending_read is None:
            if timeout is None:
                return await self._call.read()
            self._pending_read = asyncio.ensure_future(self._call.read())
        done, _ = await asyncio.wait({self._pending_read}, timeout=timeout)
        if not done:
            raise TimeoutError
        read, self._pending_read = self._pending_read, None
        return read.result()

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
        self._closed = True
        self._call.cancel()
        read, self._pending_read = self._pending_read, None
        if read is not None:
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await read

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
