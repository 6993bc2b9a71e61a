"""Subscribing to a topic pattern: a stream of direct-event batches, made again after a break."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from plexus.client.channel import stream_broke, stream_ended
from plexus.client.connection import Connection
from plexus.client.event import Event
from plexus.errors import ClientClosed, PlexusError, Timeout, Unavailable
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

    def __init__(self, connection: Connection, pattern: str, buffer_events: int = 0) -> None:
        self.pattern = pattern
        self._conn = connection
        self._request = pb.SubscribeRequest(pattern=pattern, buffer_events=buffer_events)
        self._call: aio.UnaryStreamCall | None = None
        self._generation = 0
        if connection.connected:
            self._open()
        self._events: list[Event] = []
        self._index = 0
        self._closed = False
        self._receiving: asyncio.Future[Any] | None = None
        self.received = 0
        # Times the subscription was made again after a break (each a gap in its events).
        self.reconnects = 0

    def _open(self) -> aio.UnaryStreamCall:
        assert self._conn.broker is not None
        self._generation = self._conn.generation
        self._call = self._conn.broker.Subscribe(self._request)
        return self._call

    @property
    def _what(self) -> str:
        return f"subscription {self.pattern!r}"

    async def ready(self, timeout: float | None = 5.0) -> None:
        """Wait until the subscription is live on the node.

        The node sends the stream's headers once the subscription is in its
        index: events published after this returns are delivered.
        """
        call = self._call
        if call is None:
            await self._conn.usable(timeout)
            call = self._open()
        try:
            async with asyncio.timeout(timeout):
                await call.initial_metadata()
        except TimeoutError:
            raise Timeout(
                f"node at {self._conn.address} confirming {self._what}", timeout
            ) from None
        except grpc.RpcError as exc:
            raise stream_broke(exc, self._conn.address, self._what) from None
        if call.done():
            # The node refused the pattern or went away before any event.
            code = await call.code()
            if code != grpc.StatusCode.OK:
                details = await call.details()
                raise stream_ended(
                    code, details, self._conn.address, self._what, await call.trailing_metadata()
                )

    async def next_batch(self, timeout: float | None = None) -> list[Event]:
        """The next events (at least one); [] when the subscription ended or on timeout."""
        if self._index < len(self._events):
            rest = self._events[self._index :]
            self._events, self._index = [], 0
            return rest
        if self._closed:
            return []
        # Cancelling a read cancels the whole call in grpc.aio, so a receive that
        # outlives a timeout stays pending and the next call picks it up.
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(self._receive())
        done, _ = await asyncio.wait({self._receiving}, timeout=timeout)
        if not done:
            return []
        receiving, self._receiving = self._receiving, None
        try:
            batch = receiving.result()
        except asyncio.CancelledError:
            if self._closed:
                return []
            raise
        if batch is None:
            self._closed = True
            return []
        events = [Event(m) for m in batch.events]
        self.received += len(events)
        return events

    async def _receive(self) -> pb.EventBatch | None:
        """The next batch, across breaks; None once closed."""
        while True:
            call = self._call
            if call is None:
                err: PlexusError = Unavailable(f"not connected to node at {self._conn.address}")
            else:
                try:
                    batch = await call.read()
                except grpc.RpcError as exc:
                    if self._closed:
                        return None
                    err = stream_broke(exc, self._conn.address, self._what)
                else:
                    if batch is not aio.EOF:
                        return batch
                    if self._closed:
                        return None
                    code = await call.code()
                    details = await call.details()
                    trailing = await call.trailing_metadata()
                    err = stream_ended(code, details, self._conn.address, self._what, trailing)
            if not isinstance(err, Unavailable) or not self._conn.reconnect:
                raise err
            await self._subscribe_again(str(err))

    async def _subscribe_again(self, reason: str) -> None:
        """Wait for the client's reconnect and make the subscription again, live."""
        while True:
            self._conn.broken(self._generation, reason)
            try:
                await self._conn.ready(self._generation)
            except ClientClosed:
                self._closed = True
                raise
            call = self._open()
            try:
                await call.initial_metadata()
            except grpc.RpcError as exc:
                err = stream_broke(exc, self._conn.address, self._what)
                if not isinstance(err, Unavailable):
                    raise err from None
                reason = str(err)
                continue
            if call.done():  # ended before any event
                code = await call.code()
                details = await call.details()
                trailing = await call.trailing_metadata()
                err = stream_ended(code, details, self._conn.address, self._what, trailing)
                if not isinstance(err, Unavailable):
                    raise err
                reason = str(err)
                continue
            self.reconnects += 1
            return

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
        if self._call is not None:
            self._call.cancel()
        receiving, self._receiving = self._receiving, None
        if receiving is not None:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, PlexusError):
                await receiving

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
