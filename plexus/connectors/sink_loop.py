"""The sink loop: a durable queue's deliveries, through the transform, written by a Sink.

Deliveries are written in queue order, a batch at a time, and acked only after
`Sink.write` returned (the destination confirmed them). A TransientError
retries the same batch with exponential backoff and jitter (tenacity) for as
long as it takes, holding the deliveries, so order is kept and nothing is
lost, or, with a retry budget (`[consume] retry_for`, or the kind's), for that
long, then hands the batch back to the queue: each delivery spent counts toward
`max_deliveries`, so a destination that never recovers fills the dead-message
queue instead of holding the queue for ever. A PermanentError for a batch
of several is narrowed down by writing its events one at a time, and each
event refused is nacked, so that the queue dead-letters it after its
`max_deliveries`. A stop abandons the batch in hand
unacked: the queue delivers it again, as after a kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_random_exponential,
)

from plexus.client import Event
from plexus.client.consumer import Consumer, Delivery
from plexus.connectors.base import (
    ConsumeSection,
    Context,
    Outgoing,
    PermanentError,
    Sink,
    TransientError,
)
from plexus.connectors.config import TransformFailed
from plexus.errors import PlexusError, QueueExists
from plexus.v1 import plexus_pb2 as pb

__all__ = ["SinkLoop", "Stopped"]

log = logging.getLogger("plexus.connectors")

FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 30.0


class Stopped(Exception):
    """The connector was told to stop while it waited to retry."""


class SinkLoop:
    def __init__(
        self, sink: Sink, ctx: Context, consume: ConsumeSection, ready: asyncio.Event
    ) -> None:
        self.sink = sink
        self.ready = ready  # set once consuming
        self.ctx = ctx
        self.consume = consume
        self.max_deliveries = consume.max_deliveries
        self.retry_for = consume.retry_for or sink.retry_for

    async def run(self) -> None:
        """Consume until `ctx.stopping` is set (then return) or the consumer fails (raise)."""
        await self._create_queue()
        try:
            await self._retrying(self.sink.open)
            consumer = self.ctx.client.consume(self.consume.queue, prefetch=self.consume.prefetch)
            try:
                info = await consumer.start()
                self.max_deliveries = info.max_deliveries
                self.ctx.stats.state = "running"
                self.ready.set()
                while (batch := await self._next(consumer)) is not None:
                    await self._handle(batch)
            finally:
                await consumer.close()
        except Stopped:
            pass
        finally:
            await self.sink.close()

    async def _create_queue(self) -> None:
        c = self.consume
        try:
            # Exclusive: a connector restarted after a kill -9 binds while its killed self
            # still holds deliveries; it takes over once those are back at the front, so
            # it writes them first. Shared, it would get later events first (out of order).
            await self.ctx.client.create_queue(
                c.queue, c.subscribe, exclusive=True, max_deliveries=c.max_deliveries
            )
        except QueueExists:
            info = await self.ctx.client.describe_queue(c.queue)
            if not info.exclusive:
                log.warning(
                    "%s: queue %s is shared, not exclusive: after a restart, events the "
                    "stopped connector held may be written after later ones",
                    self.ctx.name,
                    c.queue,
                )
            if set(info.subscriptions) != set(c.subscribe):
                log.warning(
                    "%s: queue %s exists with subscriptions %s, not %s: consuming it as it is",
                    self.ctx.name,
                    c.queue,
                    list(info.subscriptions),
                    c.subscribe,
                )

    async def _next(self, consumer: Consumer) -> list[Delivery] | None:
        """The next deliveries, or None once stopping."""
        stopping = self.ctx.stopping
        if stopping.is_set():
            return None
        take = asyncio.ensure_future(consumer.next_batch())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({take, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not take.done():
                take.cancel()  # deliveries taken meanwhile stay unacked: redelivered
                with contextlib.suppress(asyncio.CancelledError):
                    await take
        if stopping.is_set():
            return None
        batch = take.result()  # a consumer that failed for good raises here
        if not batch:  # only a consumer that ended returns none
            raise consumer.failure or PlexusError(f"consumer of queue {consumer.queue!r} ended")
        return batch

    async def _handle(self, batch: list[Delivery]) -> None:
        self.ctx.stats.events_in += len(batch)
        items: list[tuple[Delivery, list[Event]]] = []
        for delivery in batch:
            try:
                items.append((delivery, self._transformed(delivery)))
            except TransformFailed as exc:
                self._refuse(delivery, exc)
        await self._write(items)

    def _transformed(self, delivery: Delivery) -> list[Event]:
        transform = self.ctx.transform
        if transform is None:
            return [delivery]
        return [Event(_rewritten(delivery.message, o)) for o in transform(delivery)]

    async def _write(self, items: Sequence[tuple[Delivery, list[Event]]]) -> None:
        events = [event for _delivery, out in items for event in out]

        async def write() -> None:  # a coroutine function: tenacity awaits only those
            await self.sink.write(events)

        try:
            if events:
                await self._retrying(write, self.retry_for)
        except TransientError as exc:  # failing past the retry budget
            for delivery, _out in items:
                self._refuse(delivery, f"still failing after {self.retry_for:g} s: {exc}")
            return
        except PermanentError as exc:
            if len(items) == 1:
                self._refuse(items[0][0], exc)
            else:  # find which: the others are written, in order
                for item in items:
                    await self._write([item])
            return
        stats = self.ctx.stats
        stats.events_out += len(events)
        for delivery, _out in items:
            _settled(delivery.ack())
        if items:
            last = items[-1][0]
            stats.position = str(last.id)
            stats.lag_s = max(0.0, time.time() - last.publish_time_ms / 1000)

    def _refuse(self, delivery: Delivery, error: BaseException | str) -> None:
        """Nack an event the sink (or the transform) can never take: dead-lettered at the
        queue's limit, redelivered before that."""
        stats = self.ctx.stats
        stats.failed(f"event {delivery.id} ({delivery.topic}): {error}")
        if self.max_deliveries and delivery.delivery_count >= self.max_deliveries:
            stats.dead_lettered += 1
        _settled(delivery.nack())

    async def _retrying(
        self, attempt: Callable[[], Awaitable[None]], budget_s: float | None = None
    ) -> None:
        """`attempt()` until it does not raise TransientError, with backoff, for at most
        `budget_s` (then its TransientError); Stopped once stopping (the attempt in
        hand is abandoned)."""
        stats = self.ctx.stats
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_never if budget_s is None else stop_after_delay(budget_s),
            wait=wait_random_exponential(multiplier=FIRST_BACKOFF_S, max=MAX_BACKOFF_S),
            sleep=self._pause,
            before_sleep=self._failed_once,
            reraise=True,
        )
        await retrying(attempt)
        if stats.state == "retrying":
            stats.state = "running"

    def _failed_once(self, state: RetryCallState) -> None:
        stats = self.ctx.stats
        error = state.outcome.exception() if state.outcome is not None else None
        stats.retries += 1
        stats.failed(error or "transient error")
        stats.state = "retrying"

    async def _pause(self, seconds: float) -> None:
        """Sleep before a retry, cut short (raising Stopped) by a stop."""
        stopping = self.ctx.stopping
        if not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await stopping.wait()
        if stopping.is_set():
            raise Stopped


def _rewritten(message: pb.Event, out: Outgoing) -> pb.Event:
    """The delivery's event with the transform's topic, payload and headers."""
    event = pb.Event()
    event.CopyFrom(message)
    event.topic = out.topic
    event.payload = out.payload
    event.headers.clear()
    event.headers.update(out.headers)
    return event


def _settled(future: asyncio.Future[None]) -> None:
    """An ack or nack nobody waits for: one lost to a break comes back as a redelivery."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
