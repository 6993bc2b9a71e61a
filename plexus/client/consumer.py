"""Consuming a queue: credits, batched acks and nacks, confirmations.

The Consume stream carries, towards the node, one start, then credit grants
and ack / nack batches; back from the node, the queue as it was at start, event
batches and `confirmed` tags once acks or nacks are durable. A reader task
handles what comes back; a writer task sends everything settled since its last
write as one message, so a burst of acks costs one stream write.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from plexus.client.channel import stream_broke, stream_ended
from plexus.client.event import Event
from plexus.client.info import QueueInfo
from plexus.errors import PlexusError, Unavailable
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as pb_grpc

__all__ = ["Consumer", "Delivery"]


class Delivery(Event):
    """An event delivered from a queue; settle it with `ack()` or `nack()`."""

    __slots__ = ("_consumer",)

    def __init__(self, message: pb.Event, consumer: Consumer) -> None:
        self.message = message
        self._consumer = consumer

    @property
    def event(self) -> Event:
        return self

    def ack(self) -> asyncio.Future[None]:
        """Remove the event from the queue; the future resolves once durable."""
        return self._consumer.ack(self.message.delivery_tag)

    def nack(self) -> asyncio.Future[None]:
        """Redeliver the event now (or dead-letter it past max_deliveries)."""
        return self._consumer.nack(self.message.delivery_tag)


class Consumer:
    """Deliveries from one queue, as an async iterator of `Delivery`.

    ::

        async with client.consume("billing", prefetch=256) as consumer:
            async for delivery in consumer:
                handle(delivery.payload)
                delivery.ack()

    Up to `prefetch` deliveries may be unsettled at a time; credit comes back
    to the node in batches as deliveries are acked or nacked (or, with
    `credit_on_receive`, as they are handed to the caller: use it when not
    acking). `close()` waits, with a deadline, for pending confirmations.
    """

    def __init__(
        self,
        stub: pb_grpc.BrokerStub,
        address: str,
        queue: str,
        prefetch: int = 256,
        credit_on_receive: bool = False,
    ) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.queue = queue
        self.prefetch = prefetch
        self.info: QueueInfo | None = None
        self._stub, self._address = stub, address
        self._credit_on_receive = credit_on_receive
        self._grant_at = max(1, prefetch // 2)
        self._call: aio.StreamStreamCall | None = None
        self._start_lock = asyncio.Lock()
        self._ready: deque[Delivery] = deque()
        self._arrived = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._acks: list[int] = []
        self._nacks: list[int] = []
        self._owed_credit = 0
        # Acks written together share one future: tag -> its write's _AckGroup.
        self._unconfirmed: dict[int, _AckGroup] = {}
        self._open_group: _AckGroup | None = None
        self._nack_waiters: list[asyncio.Future[None]] = []
        self._idle: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: PlexusError | None = None
        self._failure_reported = False
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> QueueInfo:
        """Bind to the queue (done by the first iteration if not called)."""
        async with self._start_lock:
            if self.info is not None:
                return self.info
            if self._closed:
                raise Unavailable(f"consumer of queue {self.queue!r} is closed")
            call = self._call = self._stub.Consume()
            try:
                start = pb.ConsumeStart(queue=self.queue, credits=self.prefetch)
                await call.write(pb.ConsumeRequest(start=start))
                resp = await call.read()
            except grpc.RpcError as exc:
                raise stream_broke(exc, self._address, f"consumer of {self.queue!r}") from None
            except asyncio.InvalidStateError:
                raise await self._ended(call) from None
            if resp is aio.EOF:
                raise await self._ended(call)
            if resp.WhichOneof("action") != "started":
                call.cancel()
                raise PlexusError(f"node at {self._address} did not answer the consume start")
            self.info = QueueInfo.from_proto(resp.started)
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._read_loop(call)),
                loop.create_task(self._write_loop(call)),
            ]
            return self.info

    async def drain(self, timeout: float | None = 5.0) -> None:
        """Wait until every ack and nack made so far is confirmed durable."""
        waiters = {group.future for group in self._unconfirmed.values()}
        if not waiters:
            return
        done, pending = await asyncio.wait(waiters, timeout=timeout)
        if pending:
            raise Unavailable(
                f"node at {self._address} did not confirm {len(pending)} acks "
                f"on queue {self.queue!r} within {timeout} s"
            )
        for fut in done:
            if not fut.cancelled() and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]

    async def close(self, timeout: float | None = 5.0) -> None:
        """Wait (bounded) for confirmations, then leave the queue.

        Deliveries never settled go back to the queue and are redelivered.
        """
        if self._closed:
            return
        try:
            if self.info is not None and self.failure is None:
                await self.drain(timeout)
        finally:
            self._closed = True
            self._fail(Unavailable(f"consumer of queue {self.queue!r} closed"))
            if self._call is not None:
                self._call.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ receiving

    async def next_batch(self, timeout: float | None = None) -> list[Delivery]:
        """Deliveries received so far (at least one); [] on timeout or when closed."""
        batch = await self._take(timeout)
        if batch and self._credit_on_receive:
            self._owe(len(batch))
        return batch

    async def batches(self) -> AsyncIterator[list[Delivery]]:
        """Yield lists of deliveries until the consumer is closed or fails."""
        while True:
            batch = await self.next_batch()
            if not batch:
                return
            yield batch

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Delivery:
        ready = self._ready
        if not ready:
            batch = await self._take(None)
            if not batch:
                raise StopAsyncIteration
            ready.extend(batch)
        if self._credit_on_receive:
            self._owe(1)
        return ready.popleft()

    async def _take(self, timeout: float | None) -> list[Delivery]:
        if self.info is None:
            await self.start()
        ready = self._ready
        if not ready:
            self._raise_failure()
            if self._closed:
                return []
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return []
            if not ready:
                self._raise_failure()
                return []
        batch = list(ready)
        ready.clear()
        return batch

    # ------------------------------------------------------------ settling

    def ack(self, tag: int) -> asyncio.Future[None]:
        """Ack a delivery tag; the future resolves once the node confirms it.

        Acks made before the next stream write go out together and share one
        future, resolved when all of them are confirmed.
        """
        if self.failure is not None:
            return self._failed_future()
        group = self._open_group
        if group is None:
            group = self._open_group = _AckGroup(asyncio.get_running_loop().create_future())
        group.remaining += 1
        self._unconfirmed[tag] = group
        self._acks.append(tag)
        if not self._credit_on_receive:
            self._owed_credit += 1
        self._wakeup.set()
        return group.future

    def nack(self, tag: int) -> asyncio.Future[None]:
        """Nack a delivery tag: redelivered now. The future resolves once the nack
        is written (the node confirms acks, not nacks: a lost nack redelivers too)."""
        if self.failure is not None:
            return self._failed_future()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._nacks.append(tag)
        self._nack_waiters.append(fut)
        if not self._credit_on_receive:
            self._owed_credit += 1
        self._wakeup.set()
        return fut

    def _failed_future(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_exception(self.failure or Unavailable("consumer failed"))
        return fut

    def _owe(self, count: int) -> None:
        self._owed_credit += count
        if self._owed_credit >= self._grant_at:
            self._wakeup.set()

    # ------------------------------------------------------------ tasks

    async def _read_loop(self, call: aio.StreamStreamCall) -> None:
        ready, unconfirmed = self._ready, self._unconfirmed
        try:
            while True:
                resp = await call.read()
                if resp is aio.EOF:
                    self._fail(await self._ended(call))
                    return
                kind = resp.WhichOneof("action")
                if kind == "events":
                    ready.extend(Delivery(m, self) for m in resp.events.events)
                    self._arrived.set()
                elif kind == "confirmed":
                    for tag in resp.confirmed.tags:
                        group = unconfirmed.pop(tag, None)
                        if group is not None:
                            group.remaining -= 1
                            if group.remaining == 0 and not group.future.done():
                                group.future.set_result(None)
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            self._fail(stream_broke(exc, self._address, f"consumer of {self.queue!r}"))

    async def _write_loop(self, call: aio.StreamStreamCall) -> None:
        try:
            while self.failure is None:
                grant = self._owed_credit >= self._grant_at
                if not (self._acks or self._nacks or grant):
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                if self._acks:
                    tags, self._acks = self._acks, []
                    self._open_group = None
                    await call.write(pb.ConsumeRequest(ack=pb.Tags(tags=tags)))
                if self._nacks:
                    tags, self._nacks = self._nacks, []
                    waiters, self._nack_waiters = self._nack_waiters, []
                    await call.write(pb.ConsumeRequest(nack=pb.Tags(tags=tags)))
                    for fut in waiters:
                        if not fut.done():
                            fut.set_result(None)
                if self._owed_credit >= self._grant_at:
                    credit, self._owed_credit = self._owed_credit, 0
                    await call.write(pb.ConsumeRequest(credit=credit))
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            self._fail(stream_broke(exc, self._address, f"consumer of {self.queue!r}"))
        except asyncio.InvalidStateError:
            self._fail(await self._ended(call))

    # ------------------------------------------------------------ failure

    async def _ended(self, call: aio.StreamStreamCall) -> PlexusError:
        try:
            code = await asyncio.wait_for(call.code(), 1.0)
            details = await call.details()
        except (TimeoutError, grpc.RpcError):
            return Unavailable(f"node at {self._address} ended the consumer of {self.queue!r}")
        if code == grpc.StatusCode.OK:
            return Unavailable(f"node at {self._address} ended the consumer of {self.queue!r}")
        return stream_ended(code, details, self._address, f"consumer of {self.queue!r}")

    def _fail(self, err: PlexusError) -> None:
        if self.failure is not None:
            return
        self.failure = err
        groups = {id(g): g for g in self._unconfirmed.values()}
        self._unconfirmed, self._open_group = {}, None
        waiters, self._nack_waiters = self._nack_waiters, []
        for fut in [*(g.future for g in groups.values()), *waiters]:
            if not fut.done():
                fut.set_exception(err)
                fut.add_done_callback(_consume_exception)
        self._arrived.set()
        self._wakeup.set()

    def _raise_failure(self) -> None:
        if self.failure is not None and not self._failure_reported and not self._closed:
            self._failure_reported = True
            raise self.failure


class _AckGroup:
    """Acks written in one message: one future, resolved when all are confirmed."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.remaining = 0


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
