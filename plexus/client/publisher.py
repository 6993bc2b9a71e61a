"""Publishing over one long-lived bidirectional Publish stream, re-opened after a break.

`PublishStream` batches for the caller: `enqueue` appends an event to the
request being filled, and a sender task writes every queued request as soon as
the stream can take one. When traffic is light a request carries one event (no
added latency); under load requests grow up to `MAX_BATCH_EVENTS` events or
`MAX_BATCH_BYTES` bytes, so one ~80 µs stream write carries many events.

Acks come back by index (the event's position over the current call, from 0):
guaranteed events resolve their future with the id the node assigned, refused
events fail it with the PlexusError of the ack. Refused direct events have no
future; they are counted and the first one is raised from `flush`.

Idempotent publishing: every guaranteed event carries this client's producer
id and its own sequence number (or the application's key). When the
connection breaks, the stream waits for the client's reconnect, then writes
again, in their original order, every guaranteed event not acked and every
event not yet written; the node acks a resend of an event it already stored
with the first copy's id, so each is stored once. Direct events written before
the break and not yet confirmed handled may be lost (at most once): they are
counted in `direct_unconfirmed`. With `direct_on_break="fail"`, direct events
are refused while the client is disconnected and those still buffered at the
break are dropped and counted in `direct_dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from typing import Any, Literal

import grpc
from grpc import aio

from plexus.client.channel import error_from_ack, stream_broke, stream_ended
from plexus.client.connection import Connection
from plexus.client.framing import FLUSH, EventFramer, varint
from plexus.errors import ClientClosed, PlexusError, Timeout, Unavailable
from plexus.v1 import plexus_pb2 as pb

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_BUFFERED_EVENTS",
    "MAX_IN_FLIGHT_EVENTS",
    "DirectOnBreak",
    "PublishStream",
]

MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1024 * 1024
# Events queued in the client and not yet written: publish() waits beyond this.
MAX_BUFFERED_EVENTS = 20_000
# Guaranteed events written and not yet acked: publish() waits beyond this.
MAX_IN_FLIGHT_EVENTS = 10_000
# A request asks the node how far it got at least this often while events flow,
# so a break loses track of little.
PROCESSED_MARK_S = 0.1

_PRODUCER_TAG = b"\x1a"  # PublishRequest.producer, field 3
_SEQUENCES_TAG = b"\x22"  # PublishRequest.sequences, field 4 (packed)
_KEY_TAG = b"\x2a"  # PublishRequest.keys, field 5

DirectOnBreak = Literal["buffer", "fail"]


class _Guaranteed:
    """A guaranteed event until its ack: what to write again after a break."""

    __slots__ = ("frame", "future", "key", "seq")

    def __init__(self, frame: bytes, seq: int, key: str, future: asyncio.Future[int | None]):
        self.frame, self.seq, self.key, self.future = frame, seq, key, future


class _Request:
    """One PublishRequest being filled: its events, their keys, its flush flag."""

    __slots__ = ("first", "flush", "frames", "guaranteed", "keyed")

    def __init__(self, first: int) -> None:
        self.first = first
        self.frames: list[bytes] = []
        # Parallel to `frames` once the request holds a guaranteed event (None: direct).
        self.guaranteed: list[_Guaranteed | None] | None = None
        self.keyed = False
        self.flush = False

    def add_guaranteed(self, item: _Guaranteed) -> None:
        if self.guaranteed is None:
            self.guaranteed = [None] * len(self.frames)
        self.guaranteed.append(item)
        self.frames.append(item.frame)
        if item.key:
            self.keyed = True

    def encode(self, producer: bytes) -> bytes:
        data = b"".join(self.frames)
        if self.guaranteed is not None:
            seqs = b"".join(varint(g.seq) if g is not None else b"\x00" for g in self.guaranteed)
            data += (
                _PRODUCER_TAG
                + varint(len(producer))
                + producer
                + _SEQUENCES_TAG
                + varint(len(seqs))
                + seqs
            )
            if self.keyed:
                for g in self.guaranteed:
                    key = g.key.encode() if g is not None else b""
                    data += _KEY_TAG + varint(len(key)) + key
        return data + FLUSH if self.flush else data


class PublishStream:
    """The client's publishing: its queued requests, in-flight acks and the current call.

    A stream that failed for good (the node refused the stream, the client gave
    up reconnecting or was closed) stays failed: `failure` is set and every
    pending future has failed with it; the Client reports it once and opens a
    new stream for the next publish.
    """

    def __init__(
        self,
        connection: Connection,
        producer: bytes | None = None,
        direct_on_break: DirectOnBreak = "buffer",
    ) -> None:
        self._conn = connection
        self._loop = asyncio.get_running_loop()
        self.producer = producer or os.urandom(16)
        self._direct_on_break = direct_on_break
        self._next_seq = 1
        self._framer = EventFramer()
        self._call: aio.StreamStreamCall | None = None
        self._generation = 0
        self._reset_call_state()
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._space: asyncio.Future[None] | None = None
        self._wakeup = asyncio.Event()
        self._closing = False
        self._broken = False
        self.failure: PlexusError | None = None
        self.direct_errors = 0
        self.direct_dropped = 0
        self.direct_unconfirmed = 0
        self.duplicates = 0
        self.resent = 0
        self._unreported_error: PlexusError | None = None
        self._last_mark = 0.0
        # A future every direct publish returns: done, result None.
        self._done: asyncio.Future[int | None] = self._loop.create_future()
        self._done.set_result(None)
        self._runner = asyncio.ensure_future(self._run())

    def _reset_call_state(self) -> None:
        self._pending: deque[_Request] = deque()
        # The request being filled (None: start a new one).
        self._filling: _Request | None = None
        # Bytes the request being filled may still take (topics and payloads).
        self._filling_room = 0
        # Events handed to gRPC on this call; the rest of `_next_index` is buffered.
        self._written = 0
        self._next_index = 0
        self._processed = 0
        self._futures: dict[int, _Guaranteed] = {}

    # ------------------------------------------------------------ publishing

    @property
    def processed(self) -> int:
        """Events the node has reported handled on the current call."""
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
        key: str = "",
    ) -> asyncio.Future[int | None]:
        """Queue one (already validated) event; the future resolves on its ack."""
        if headers or ttl_ms:
            frame = self._framer.frame_full(topic, payload, guaranteed, headers, ttl_ms)
        else:
            frame = self._framer.frame(topic, payload, guaranteed)
        if not guaranteed:
            if self._broken and self._direct_on_break == "fail":
                self.direct_dropped += 1
                raise Unavailable(
                    f"not connected to node at {self._conn.address}: direct event on "
                    f"{topic!r} refused (direct_on_break='fail')"
                )
            self._append(frame, None)
            return self._done
        fut: asyncio.Future[int | None] = self._loop.create_future()
        self._append(frame, _Guaranteed(frame, self._next_seq, key, fut))
        self._next_seq += 1
        return fut

    def _append(self, frame: bytes, item: _Guaranteed | None) -> None:
        index = self._next_index
        req = self._filling
        if req is None or self._filling_room <= 0 or index - req.first >= MAX_BATCH_EVENTS:
            req = self._start_request(index)
        if item is None:
            if req.guaranteed is not None:
                req.guaranteed.append(None)
            req.frames.append(frame)
        else:
            req.add_guaranteed(item)
            self._futures[index] = item
        self._filling_room -= len(frame)
        self._next_index = index + 1

    def _start_request(self, first_index: int) -> _Request:
        req = self._filling = _Request(first_index)
        self._filling_room = MAX_BATCH_BYTES
        self._pending.append(req)
        self._wakeup.set()
        return req

    async def wait_for_capacity(self) -> None:
        """Wait until the buffer and the in-flight window have room again."""
        while not self.has_capacity:
            if self._space is None or self._space.done():
                self._space = self._loop.create_future()
            await asyncio.shield(self._space)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the node has handled every event sent so far (across reconnects).

        Raises the first error the node reported for a direct event since the
        last flush, the stream's failure, or Timeout.
        """
        if self.failure is None and self._processed < self._next_index:
            self._mark_flush()
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._flush_waiters.append((self._next_index, waiter))
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(waiter)
            except TimeoutError:
                raise Timeout(
                    f"node at {self._conn.address} confirming "
                    f"{self._next_index - self._processed} published events",
                    timeout,
                ) from None
        if self.failure is not None:
            raise self.failure
        err, self._unreported_error = self._unreported_error, None
        if err is not None:
            raise err

    def _mark_flush(self) -> None:
        req = self._filling
        if req is None:
            req = _Request(self._next_index)
            self._pending.append(req)
        req.flush = True
        self._filling = None
        self._wakeup.set()

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, end the stream, wait (bounded) for the last acks."""
        if self.failure is None and not self._closing:
            self._closing = True
            self._wakeup.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._runner)
        self._fail(ClientClosed("publish stream"))
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner

    # ------------------------------------------------------------ the call, across breaks

    async def _run(self) -> None:
        conn = self._conn
        try:
            while True:
                if conn.publish is None:
                    raise Unavailable("not connected")
                self._generation = conn.generation
                call = self._call = conn.publish(metadata=conn.metadata)
                self._broken = False
                self._write_requests_again()
                err = await self._serve(call)
                if err is None:
                    return  # closed cleanly: everything written and acked
                if not isinstance(err, Unavailable) or not conn.reconnect or self._closing:
                    self._fail(err)
                    return
                self._broken = True
                self._carry_over()
                conn.broken(self._generation, str(err))
                try:
                    await conn.ready(self._generation)
                except PlexusError as exc:
                    self._fail(exc)
                    return
        except asyncio.CancelledError:
            raise
        except PlexusError as exc:
            self._fail(exc)

    async def _serve(self, call: aio.StreamStreamCall) -> PlexusError | None:
        """Run one call until it ends; None when it ended because the stream closed."""
        sender = asyncio.ensure_future(self._send_loop(call))
        receiver = asyncio.ensure_future(self._receive_loop(call))
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            err = first.result()
            if err is None and first is sender:
                err = await receiver  # the node acks the rest, then ends the call
            return err
        finally:
            call.cancel()
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    async def _send_loop(self, call: aio.StreamStreamCall) -> PlexusError | None:
        pending = self._pending
        try:
            while True:
                if not pending:
                    if self._closing:
                        await call.done_writing()
                        return None
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                req = pending.popleft()
                if req is self._filling:
                    self._filling = None
                now = time.monotonic()
                if now - self._last_mark >= PROCESSED_MARK_S:
                    req.flush = True
                if req.flush:
                    self._last_mark = now
                self._written += len(req.frames)
                self._notify_space()
                await call.write(req.encode(self.producer))
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            return stream_broke(exc, self._conn.address, "publish stream")
        except Exception as exc:  # write after the call ended: InvalidStateError
            return await self._call_failure(call, exc)

    async def _receive_loop(self, call: aio.StreamStreamCall) -> PlexusError | None:
        futures = self._futures
        try:
            while True:
                resp = await call.read()
                if resp is aio.EOF:
                    break
                for ack in resp.acks:
                    self._settle(futures, ack)
                if resp.processed > self._processed:
                    self._processed = resp.processed
                    self._wake_flushers()
                self._notify_space()
            if self._closing and not self._pending:
                return None
            return Unavailable(f"node at {self._conn.address} ended the publish stream")
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            return stream_broke(exc, self._conn.address, "publish stream")

    def _settle(self, futures: dict[int, _Guaranteed], ack: pb.PublishAck) -> None:
        item = futures.pop(ack.index, None)
        if ack.HasField("error"):
            err = error_from_ack(ack.error)
            if item is None:
                self.direct_errors += 1
                if self._unreported_error is None:
                    self._unreported_error = err
            elif not item.future.done():
                item.future.set_exception(err)
            return
        if ack.duplicate:
            self.duplicates += max(1, ack.count)
        if item is not None and not item.future.done():
            item.future.set_result(ack.id)
        # A run acks `count` consecutive events with consecutive ids.
        for k in range(1, ack.count):
            item = futures.pop(ack.index + k, None)
            if item is not None and not item.future.done():
                item.future.set_result(ack.id + k)

    async def _call_failure(self, call: aio.StreamStreamCall, exc: Exception) -> PlexusError:
        try:
            async with asyncio.timeout(1.0):
                code = await call.code()
            details = await call.details()
        except Exception:
            return Unavailable(f"publish stream to node at {self._conn.address} failed: {exc}")
        if code == grpc.StatusCode.OK:
            return Unavailable(f"node at {self._conn.address} ended the publish stream")
        return stream_ended(
            code, details, self._conn.address, "publish stream", await call.trailing_metadata()
        )

    # ------------------------------------------------------------ after a break

    def _carry_over(self) -> None:
        """Keep, in order, what must be written again on the next call: every guaranteed
        event not acked and every event not written (direct ones unless told to drop)."""
        written, processed, futures = self._written, self._processed, self._futures
        unacked = [futures[i] for i in sorted(futures) if i < written]
        # Direct events written after the node's last report of how far it got.
        self.direct_unconfirmed += max(0, written - processed - len(unacked))
        keep_direct = self._direct_on_break == "buffer"
        later: list[tuple[bytes, _Guaranteed | None]] = []
        for req in self._pending:
            for k, frame in enumerate(req.frames):
                item = req.guaranteed[k] if req.guaranteed is not None else None
                if item is not None:
                    later.append((frame, item))
                elif keep_direct:
                    later.append((frame, None))
                else:
                    self.direct_dropped += 1
        self._reset_call_state()
        for item in unacked:
            self._append(item.frame, item)
        self.resent += len(unacked)
        for frame, maybe in later:
            self._append(frame, maybe)
        if self._flush_waiters:
            target = self._next_index
            self._flush_waiters = [(target, waiter) for _, waiter in self._flush_waiters]
            self._mark_flush()

    def _write_requests_again(self) -> None:
        if self._pending:
            self._wakeup.set()

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
        futures, self._futures = self._futures, {}  # written or not
        for item in futures.values():
            fut = item.future
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
