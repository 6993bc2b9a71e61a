"""Publishing over one long-lived bidirectional Publish stream.

`PublishStream` batches for the caller: `enqueue` appends an event to the
request being filled, and a sender task writes every queued request as soon as
the stream can take one. When traffic is light a request carries one event (no
added latency); under load requests grow up to `MAX_BATCH_EVENTS` events or
`MAX_BATCH_BYTES` bytes, so one ~80 µs stream write carries many events.

Acks come back by index (the event's position over the whole stream, from 0):
guaranteed events resolve their future with the id the node assigned, refused
events fail it with the PlexusError of the ack. Refused direct events have no
future; they are counted and the first one is raised from `flush`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import grpc
from grpc import aio

from plexus.client.channel import error_from_ack, stream_broke, stream_ended
from plexus.client.framing import FLUSH, EventFramer
from plexus.errors import PlexusError, Unavailable
from plexus.v1 import plexus_pb2 as pb

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_BUFFERED_EVENTS",
    "MAX_IN_FLIGHT_EVENTS",
    "PublishStream",
]

MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1024 * 1024
# Events queued in the client and not yet written: publish() waits beyond this.
MAX_BUFFERED_EVENTS = 20_000
# Guaranteed events written and not yet acked: publish() waits beyond this.
MAX_IN_FLIGHT_EVENTS = 10_000

PUBLISH_METHOD = "/plexus.v1.Broker/Publish"


class _Request:
    """One PublishRequest being filled: its encoded events and its flush flag."""

    __slots__ = ("flush", "frames")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.flush = False

    def encode(self) -> bytes:
        data = b"".join(self.frames)
        return data + FLUSH if self.flush else data


class PublishStream:
    """One Publish call: its queued requests, its in-flight acks, its two tasks.

    A stream that failed stays failed (`failure` is set, every pending future
    has failed with it); the Client reports the failure once and opens a new
    stream for the next publish.
    """

    def __init__(self, channel: aio.Channel, address: str) -> None:
        self._address = address
        self._loop = asyncio.get_running_loop()
        # Requests go out as bytes encoded here (see plexus.client.framing).
        self._call: aio.StreamStreamCall = channel.stream_stream(
            PUBLISH_METHOD,
            request_serializer=None,
            response_deserializer=pb.PublishResponse.FromString,
        )()
        self._framer = EventFramer()
        self._pending: deque[_Request] = deque()
        # The request being filled (None: start a new one) and its frame list.
        self._filling: _Request | None = None
        self._frames: list[bytes] | None = None
        # Index of the first event of the request being filled.
        self._filling_first = 0
        # Bytes the request being filled may still take (topics and payloads).
        self._filling_room = 0
        # Events handed to gRPC so far; the rest of `_next_index` is buffered.
        self._written = 0
        self._next_index = 0
        self._processed = 0
        self._futures: dict[int, asyncio.Future[int | None]] = {}
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._space: asyncio.Future[None] | None = None
        self._wakeup = asyncio.Event()
        self._closing = False
        self.failure: PlexusError | None = None
        self.direct_errors = 0
        self._unreported_error: PlexusError | None = None
        # A future every direct publish returns: done, result None.
        self._done: asyncio.Future[int | None] = self._loop.create_future()
        self._done.set_result(None)
        self._sender = asyncio.ensure_future(self._send_loop())
        self._receiver = asyncio.ensure_future(self._receive_loop())

    # ------------------------------------------------------------ publishing

    @property
    def sent(self) -> int:
        """Events enqueued on this stream so far (the next event's index)."""
        return self._next_index

    @property
    def processed(self) -> int:
        """Events the node has reported handled on this stream."""
        return self._processed

    @property
    def has_capacity(self) -> bool:
        return (
            self._next_index - self._written < MAX_BUFFERED_EVENTS
            and len(self._futures) < MAX_IN_FLIGHT_EVENTS
        ) or self.failure is not None

    def enqueue(
        self,
        topic: str,
        payload: bytes,
        guaranteed: bool,
        headers: dict[str, str] | None,
        ttl_ms: int,
    ) -> asyncio.Future[int | None]:
        """Queue one (already validated) event; the future resolves on its ack."""
        index = self._next_index
        frames = self._frames
        if (
            frames is None
            or self._filling_room <= 0
            or index - self._filling_first >= MAX_BATCH_EVENTS
        ):
            frames = self._start_request(index)
        if headers or ttl_ms:
            frame = self._framer.frame_full(topic, payload, guaranteed, headers, ttl_ms)
        else:
            frame = self._framer.frame(topic, payload, guaranteed)
        frames.append(frame)
        self._filling_room -= len(frame)
        self._next_index = index + 1
        if guaranteed:
            fut: asyncio.Future[int | None] = self._loop.create_future()
            self._futures[index] = fut
            return fut
        return self._done

    def _start_request(self, first_index: int) -> list[bytes]:
        req = self._filling = _Request()
        self._frames = req.frames
        self._filling_first = first_index
        self._filling_room = MAX_BATCH_BYTES
        self._pending.append(req)
        self._wakeup.set()
        return req.frames

    async def wait_for_capacity(self) -> None:
        """Wait until the buffer and the in-flight window have room again."""
        while not self.has_capacity:
            if self._space is None or self._space.done():
                self._space = self._loop.create_future()
            await asyncio.shield(self._space)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the node has handled every event sent so far on this stream.

        Raises the first error the node reported for a direct event since the
        last flush, or the stream's failure.
        """
        target = self._next_index
        if self.failure is None and self._processed < target:
            req = self._filling
            if req is None:
                req = _Request()
                self._pending.append(req)
            req.flush = True
            self._filling = self._frames = None
            self._wakeup.set()
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._flush_waiters.append((target, waiter))
            try:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except TimeoutError:
                raise Unavailable(
                    f"node at {self._address} did not confirm {target - self._processed} "
                    f"published events within {timeout} s"
                ) from None
        if self.failure is not None:
            raise self.failure
        err, self._unreported_error = self._unreported_error, None
        if err is not None:
            raise err

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, end the stream, wait (bounded) for the last acks."""
        if self.failure is None and not self._closing:
            self._closing = True
            self._wakeup.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._receiver), timeout)
        self._fail(Unavailable(f"publish stream to node at {self._address} closed"))
        self._call.cancel()
        for task in (self._sender, self._receiver):
            task.cancel()
        await asyncio.gather(self._sender, self._receiver, return_exceptions=True)

    # ------------------------------------------------------------ tasks

    async def _send_loop(self) -> None:
        call, pending = self._call, self._pending
        try:
            while self.failure is None:
                if not pending:
                    if self._closing:
                        await call.done_writing()
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                req = pending.popleft()
                if req is self._filling:
                    self._filling = self._frames = None
                self._written += len(req.frames)
                self._notify_space()
                await call.write(req.encode())
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            self._fail(stream_broke(exc, self._address, "publish stream"))
        except Exception as exc:  # write after the call ended: InvalidStateError
            self._fail(await self._call_failure(exc))

    async def _receive_loop(self) -> None:
        call = self._call
        futures = self._futures
        try:
            while True:
                resp = await call.read()
                if resp is aio.EOF:
                    break
                for ack in resp.acks:
                    fut = futures.pop(ack.index, None)
                    if ack.HasField("error"):
                        err = error_from_ack(ack.error)
                        if fut is None:
                            self.direct_errors += 1
                            if self._unreported_error is None:
                                self._unreported_error = err
                        elif not fut.done():
                            fut.set_exception(err)
                    else:
                        if fut is not None and not fut.done():
                            fut.set_result(ack.id)
                        # A run acks `count` consecutive events with consecutive ids.
                        for k in range(1, ack.count):
                            fut = futures.pop(ack.index + k, None)
                            if fut is not None and not fut.done():
                                fut.set_result(ack.id + k)
                if resp.processed > self._processed:
                    self._processed = resp.processed
                    self._wake_flushers()
                self._notify_space()
            self._fail(Unavailable(f"node at {self._address} ended the publish stream"))
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            self._fail(stream_broke(exc, self._address, "publish stream"))

    async def _call_failure(self, exc: Exception) -> PlexusError:
        try:
            code = await asyncio.wait_for(self._call.code(), 1.0)
            details = await self._call.details()
        except Exception:
            return Unavailable(f"publish stream to node at {self._address} failed: {exc}")
        if code == grpc.StatusCode.OK:
            return Unavailable(f"node at {self._address} ended the publish stream")
        return stream_ended(code, details, self._address, "publish stream")

    # ------------------------------------------------------------ helpers

    def _wake_flushers(self) -> None:
        done = self._processed
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, waiter in self._flush_waiters:
            if target <= done:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                keep.append((target, waiter))
        self._flush_waiters = keep

    def _notify_space(self) -> None:
        space = self._space
        if space is not None and not space.done() and self.has_capacity:
            space.set_result(None)

    def _fail(self, err: PlexusError) -> None:
        """Fail the stream once: every pending future and waiter gets `err`."""
        if self.failure is not None:
            return
        self.failure = err
        futures, self._futures = self._futures, {}
        for fut in futures.values():
            if not fut.done():
                fut.set_exception(err)
                # Retrieved or not, the caller learns of it from flush or publish.
                fut.add_done_callback(_consume_exception)
        for _, waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._flush_waiters = []
        self._notify_space()
        self._wakeup.set()


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
