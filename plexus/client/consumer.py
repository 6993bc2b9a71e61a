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
from plexus.client.connection import Connection
from plexus.client.event import Event
from plexus.client.info import QueueInfo
from plexus.errors import ClientClosed, PlexusError, Timeout, Unavailable
from plexus.v1 import plexus_pb2 as pb

__all__ = ["Consumer", "Delivery"]


class Delivery(Event):
    """An event delivered from a queue; settle it with `ack()` or `nack()`."""

    __slots__ = ("_consumer", "_epoch")

    def __init__(self, message: pb.Event, consumer: Consumer, epoch: int) -> None:
        self.message = message
        self._consumer = consumer
        self._epoch = epoch

    @property
    def event(self) -> Event:
        return self

    def ack(self) -> asyncio.Future[None]:
        """Remove the event from the queue; the future resolves once durable."""
        return self._consumer.ack(self.message.delivery_tag, self._epoch)

    def nack(self) -> asyncio.Future[None]:
        """Redeliver the event now (or dead-letter it past max_deliveries)."""
        return self._consumer.nack(self.message.delivery_tag, self._epoch)


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

    When the connection breaks, the consumer binds to its queue again once the
    client has reconnected (`reconnects` counts it). Deliveries not acked and
    confirmed before the break come back, marked redelivered; settling one
    received before the break fails with Unavailable (it is delivered again),
    and an ack not yet confirmed at the break fails the same way: the event
    may come back. Nothing whose ack was confirmed comes back.
    """

    def __init__(
        self,
        connection: Connection,
        queue: str,
        prefetch: int = 256,
        credit_on_receive: bool = False,
    ) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.queue = queue
        self.prefetch = prefetch
        self.info: QueueInfo | None = None
        self._conn = connection
        # Which binding deliveries came on: bumped at each (re)bind.
        self._epoch = 0
        self._generation = 0
        self._restarting: asyncio.Task[None] | None = None
        self.reconnects = 0
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

    @property
    def _address(self) -> str:
        return self._conn.address

    @property
    def _what(self) -> str:
        return f"consumer of {self.queue!r}"

    async def start(self, timeout: float | None = None) -> QueueInfo:
        """Bind to the queue (done by the first iteration if not called)."""
        async with self._start_lock:
            if self.info is not None:
                return self.info
            if self._closed:
                raise ClientClosed(f"consumer of queue {self.queue!r}")
            await self._conn.usable(timeout)
            try:
                async with asyncio.timeout(timeout):
                    self.info = await self._bind()
            except TimeoutError:
                raise Timeout(f"node at {self._address} binding {self._what}", timeout) from None
            return self.info

    async def _bind(self) -> QueueInfo:
        """Open a Consume call, bind it to the queue and start its reader and writer."""
        assert self._conn.broker is not None
        self._generation = self._conn.generation
        call = self._call = self._conn.broker.Consume(metadata=self._conn.metadata)
        try:
            start = pb.ConsumeStart(queue=self.queue, credits=self.prefetch)
            await call.write(pb.ConsumeRequest(start=start))
            resp = await call.read()
        except grpc.RpcError as exc:
            raise stream_broke(exc, self._address, self._what) from None
        except asyncio.InvalidStateError:
            raise await self._ended(call) from None
        if resp is aio.EOF:
            raise await self._ended(call)
        if resp.WhichOneof("action") != "started":
            call.cancel()
            raise PlexusError(f"node at {self._address} did not answer the consume start")
        self._epoch += 1
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read_loop(call, self._epoch)),
            loop.create_task(self._write_loop(call)),
        ]
        return QueueInfo.from_proto(resp.started)

    async def drain(self, timeout: float | None = 5.0) -> None:
        """Wait until every ack and nack made so far is confirmed durable."""
        waiters = {group.future for group in self._unconfirmed.values()}
        if not waiters:
            return
        done, pending = await asyncio.wait(waiters, timeout=timeout)
        if pending:
            raise Timeout(
                f"node at {self._address} confirming {len(pending)} acks on queue {self.queue!r}",
                timeout,
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
            self._fail(ClientClosed(f"consumer of queue {self.queue!r}"))
            if self._call is not None:
                self._call.cancel()
            tasks = list(self._tasks)
            if self._restarting is not None:
                tasks.append(self._restarting)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return []
            if not ready:
                self._raise_failure()
                return []
        batch = list(ready)
        ready.clear()
        return batch

    # ------------------------------------------------------------ settling

    def ack(self, tag: int, epoch: int | None = None) -> asyncio.Future[None]:
        """Ack a delivery tag; the future resolves once the node confirms it.

        Acks made before the next stream write go out together and share one
        future, resolved when all of them are confirmed.
        """
        if self.failure is not None:
            return self._failed_future()
        if epoch is not None and epoch != self._epoch:
            return self._stale_future(tag)
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

    def nack(self, tag: int, epoch: int | None = None) -> asyncio.Future[None]:
        """Nack a delivery tag: redelivered now. The future resolves once the nack
        is written (the node confirms acks, not nacks: a lost nack redelivers too)."""
        if self.failure is not None:
            return self._failed_future()
        if epoch is not None and epoch != self._epoch:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)  # it comes back anyway
            return fut
        fut = asyncio.get_running_loop().create_future()
        self._nacks.append(tag)
        self._nack_waiters.append(fut)
        if not self._credit_on_receive:
            self._owed_credit += 1
        self._wakeup.set()
        return fut

    def _stale_future(self, tag: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_exception(
            Unavailable(
                f"delivery {tag} of queue {self.queue!r} came before the connection broke: "
                "it is delivered again"
            )
        )
        fut.add_done_callback(_consume_exception)
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

    async def _read_loop(self, call: aio.StreamStreamCall, epoch: int) -> None:
        ready, unconfirmed = self._ready, self._unconfirmed
        try:
            while True:
                resp = await call.read()
                if resp is aio.EOF:
                    self._broke(await self._ended(call))
                    return
                kind = resp.WhichOneof("action")
                if kind == "events":
                    ready.extend(Delivery(m, self, epoch) for m in resp.events.events)
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
            self._broke(stream_broke(exc, self._address, self._what))

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
            self._broke(stream_broke(exc, self._address, self._what))
        except asyncio.InvalidStateError:
            self._broke(await self._ended(call))

    # ------------------------------------------------------------ breaks

    def _broke(self, err: PlexusError) -> None:
        """The call ended: bind again after the client's reconnect, or fail for good."""
        if self._closed or self.failure is not None or self._restarting is not None:
            return
        if not isinstance(err, Unavailable) or not self._conn.reconnect:
            self._fail(err)
            return
        self._restarting = asyncio.get_running_loop().create_task(self._bind_again(err))

    async def _bind_again(self, err: PlexusError) -> None:
        # What was received, settled or owed on the broken call is void: the node
        # delivers every unconfirmed event again.
        self._abandon(err)
        if self._call is not None:
            self._call.cancel()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reason = str(err)
        try:
            while True:
                self._conn.broken(self._generation, reason)
                await self._conn.ready(self._generation)
                try:
                    self.info = await self._bind()
                except Unavailable as exc:
                    reason = str(exc)
                    continue
                self.reconnects += 1
                return
        except PlexusError as exc:
            self._fail(exc)
        finally:
            self._restarting = None

    def _abandon(self, err: PlexusError) -> None:
        """Fail what waits on the broken call and forget what it received."""
        self._epoch += 1
        self._ready.clear()
        self._acks, self._nacks, self._owed_credit = [], [], 0
        groups = {id(g): g for g in self._unconfirmed.values()}
        self._unconfirmed, self._open_group = {}, None
        waiters, self._nack_waiters = self._nack_waiters, []
        for fut in (g.future for g in groups.values()):
            if not fut.done():
                fut.set_exception(err)
                fut.add_done_callback(_consume_exception)
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------ failure

    async def _ended(self, call: aio.StreamStreamCall) -> PlexusError:
        try:
            async with asyncio.timeout(1.0):
                code = await call.code()
            details = await call.details()
        except (TimeoutError, grpc.RpcError):
            return Unavailable(f"node at {self._address} ended the consumer of {self.queue!r}")
        if code == grpc.StatusCode.OK:
            return Unavailable(f"node at {self._address} ended the consumer of {self.queue!r}")
        return stream_ended(
            code, details, self._address, self._what, await call.trailing_metadata()
        )

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
