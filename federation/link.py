"""The asyncio shell of one link stream: reads frames, runs the protocol, writes frames.

A `LinkSession` is the same for the dialling and the accepting end: it is
given the stream's `read` and `write` and runs until the protocol closes the
link or the stream breaks. Direct events wait in a bounded buffer (at most
once: past the bound they are dropped and counted, never blocking the
publisher); everything else is written in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from federation.link_protocol import (
    Close,
    CloseReason,
    Deliver,
    LinkProtocol,
    LinkState,
    Opened,
    Resync,
    Send,
    Store,
    Trim,
)
from federation.mesh import Mesh
from federation.spool_tail import guaranteed_frame
from federation.spools import LinkSpools
from plexus.errors import PlexusError
from plexus.v1 import link_pb2 as lpb

log = logging.getLogger(__name__)

# Direct events waiting to be written to a link: past either bound a batch is
# dropped and counted (direct is at most once).
MAX_DIRECT_BUFFERED_EVENTS = 100_000
MAX_DIRECT_BUFFERED_BYTES = 32 << 20
MIN_TICK_MS = 5  # a late timer never spins the loop
RATE_WINDOW_S = 2.0
REFUSAL_GRACE_S = 1.0
# How long a closing link lets a write in flight finish before cancelling it.
WRITE_DRAIN_S = 1.0
SPOOL_READ = 1000  # spooled events per read and per frame
# What a frame's content may fail with once the protocol took it: the peer's error.
# Anything else raised while handling a frame is a bug here, and said to be one.
PEER_FAULTS = (DecodeError, PlexusError, ValueError)


# gRPC's words for why a TLS link could not be dialled, and what they mean to an operator.
TLS_FAILURES = (
    (
        ("hostname verification", "not in peer certificate"),
        "its certificate does not name the region dialled",
    ),
    (("wrong_version_number",), "it does not serve TLS"),
    (
        ("signature failure", "certificate_verify_failed", "local issuer", "unknown_ca"),
        "its certificate is not signed by this cluster's CA",
    ),
    (("handshake failed",), "the TLS handshake failed"),
)


def _tls_failure(exc: grpc.RpcError) -> str:
    """Why TLS stopped a dial, if it did (the operator's next step differs)."""
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    lowered = details.lower()
    for needles, meaning in TLS_FAILURES:
        if any(needle in lowered for needle in needles):
            return f" (TLS: {meaning})"
    return ""


class StreamGone(Exception):
    """The stream ended under a read or a write (the peer cancelled the call): the
    stream is lost, not a bug here. The shell that owns the stream raises it."""


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Rate:
    """Events and bytes per second over a short sliding window."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int, int]] = deque()
        self.events = 0
        self.bytes = 0

    def add(self, events: int, size: int) -> None:
        self.events += events
        self.bytes += size
        now = time.monotonic()
        self.samples.append((now, self.events, self.bytes))
        while self.samples and now - self.samples[0][0] > RATE_WINDOW_S:
            self.samples.popleft()

    def per_second(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return 0.0, 0.0
        (t0, e0, b0), (t1, e1, b1) = self.samples[0], self.samples[-1]
        span = max(time.monotonic() - t0, t1 - t0, 1e-3)
        return (e1 - e0) / span, (b1 - b0) / span


class LinkSession:
    """One link stream, dialled or accepted."""

    def __init__(
        self,
        mesh: Mesh,
        protocol: LinkProtocol,
        registry: dict[str, LinkSession],
        spools: LinkSpools,
    ) -> None:
        self.mesh = mesh
        self.spools = spools
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Trims the spool up to the peer's newest ack, one commit at a time (None: idle).
        self._trimmer: asyncio.Task[None] | None = None
        self._trim_upto = 0
        # Where the supervisor finds the latest session per peer.
        self._registry = registry
        self.protocol = protocol
        self.peer = protocol.peer or "?"
        # Frames to write, each with the direct events it carries and their bytes (0, 0: none).
        self._outbox: deque[tuple[lpb.LinkFrame, int, int]] = deque()
        self._direct_buffered = 0
        self._direct_buffered_bytes = 0
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self.close_reason: CloseReason | None = None
        self.close_detail = ""
        self.opened = False
        # The mesh is told once that an opened link went down, as it goes down.
        self._down_reported = False
        self.rate_in = Rate()
        self.rate_out = Rate()
        self.direct_dropped = 0

    # ------------------------------------------------------------ LinkPort

    def send(self, frame: lpb.LinkFrame) -> None:
        self._outbox.append((frame, 0, 0))
        self._wake.set()

    def send_direct(self, frame: lpb.LinkFrame, count: int) -> None:
        size = frame.ByteSize()
        if (
            self._direct_buffered + count > MAX_DIRECT_BUFFERED_EVENTS
            or self._direct_buffered_bytes + size > MAX_DIRECT_BUFFERED_BYTES
        ):
            self.direct_dropped += count
            return
        self._direct_buffered += count
        self._direct_buffered_bytes += size
        self._outbox.append((frame, count, size))
        self._wake.set()

    def set_digest(self, digest: int) -> None:
        self.protocol.local_digest = digest

    def replaced(self) -> None:
        self.take_down(CloseReason.DUPLICATE_LINK, "a newer link to the same region took over")

    def take_down(self, reason: CloseReason, detail: str = "") -> None:
        self._perform(self.protocol.take_down(reason, detail))

    # ------------------------------------------------------------ running

    @property
    def state(self) -> LinkState:
        # A stream that broke, or a call cancelled under the session, leaves the
        # protocol OPEN (nobody told it): the session's own close is the truth.
        if self.close_reason is not None:
            return LinkState.CLOSED
        return self.protocol.state

    async def run(
        self,
        read: Callable[[], Awaitable[Any]],
        write: Callable[[lpb.LinkFrame], Awaitable[None]],
    ) -> None:
        """Run until the link closes; the stream is the caller's to end.

        One task owns each direction of the stream: `_read_loop` is the only one
        that reads, `_write_loop` the only one that writes. A write in flight is
        never cancelled while the stream lives on (gRPC would still hold the
        operation, and the next operation on the call fails with
        GRPC_CALL_ERROR_TOO_MANY_OPERATIONS): the writer stops between frames,
        and is cancelled only if one write does not finish in WRITE_DRAIN_S.
        """
        self._perform(self.protocol.start(now_ms()))
        writer = asyncio.create_task(self._write_loop(write))
        others = [
            asyncio.create_task(self._read_loop(read)),
            asyncio.create_task(self._tick_loop()),
        ]
        try:
            await self._closed.wait()
        finally:
            if self.close_reason is None:  # cancelled from outside: the call went away
                self.close_reason, self.close_detail = CloseReason.STREAM_LOST, "call cancelled"
            self._report_down()
            self._closed.set()
            self._wake.set()
            done, _ = await asyncio.wait([writer], timeout=WRITE_DRAIN_S)
            trimmer = [self._trimmer] if self._trimmer is not None else []
            tasks = [*others, *self._tasks, *trimmer, *([] if done else [writer])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(writer, *tasks, return_exceptions=True)

    def _report_down(self) -> None:
        """Tell the mesh, once, that this opened link is down: as it happens, so that a
        newer link to the same peer is only ever logged up after this one was logged down."""
        if self.opened and not self._down_reported:
            self._down_reported = True
            self.mesh.link_closed(self, self.describe_close())

    def describe_close(self) -> str:
        if self.close_reason is None:
            return ""
        detail = f" ({self.close_detail})" if self.close_detail else ""
        return f"{self.close_reason.name.lower()}: {self.close_reason.value}{detail}"

    async def _read_loop(self, read: Callable[[], Awaitable[Any]]) -> None:
        try:
            while True:
                frame = await read()
                if frame is grpc.aio.EOF:
                    self._stream_ended("the peer ended the stream")
                    return
                direct = frame.WhichOneof("frame") == "direct"
                if direct:
                    self.rate_in.add(len(frame.direct.events), frame.ByteSize())
                self._perform(self.protocol.receive(frame, now_ms()))
                if direct:
                    # Let the local subscribers' writers this frame woke send before the
                    # next read is set up, as a client's publish stream does.
                    await asyncio.sleep(0)
        except grpc.RpcError as exc:
            self._stream_ended(f"stream failed: {exc.code().name}{_tls_failure(exc)}")
        except StreamGone as exc:
            self._stream_ended(str(exc))
        except PEER_FAULTS as exc:  # a frame the protocol took that its content then failed
            log.warning("link %s: bad input: %r", self.peer, exc)
            self._perform(self.protocol.take_down(CloseReason.BAD_FRAME, str(exc)[:200]))
        except Exception:
            self._bug("handling a frame")

    async def _write_loop(self, write: Callable[[lpb.LinkFrame], Awaitable[None]]) -> None:
        try:
            while not self._closed.is_set():
                await self._wake.wait()
                self._wake.clear()
                while self._outbox and not self._closed.is_set():
                    frame, events, size = self._outbox.popleft()
                    if events:
                        self._direct_buffered -= events
                        self._direct_buffered_bytes -= size
                        self.rate_out.add(events, size)
                    await write(frame)
                    if not events and frame.WhichOneof("frame") == "refusal":
                        self._closed.set()
                        return
        except grpc.RpcError as exc:
            self._stream_ended(f"stream failed: {exc.code().name}{_tls_failure(exc)}")
        except (asyncio.InvalidStateError, RuntimeError) as exc:
            self._stream_ended(f"stream closed: {exc}")
        except StreamGone as exc:
            self._stream_ended(str(exc))
        except Exception:
            self._bug("writing frames")

    async def _tick_loop(self) -> None:
        try:
            while True:
                now = now_ms()
                self._perform(self.protocol.tick(now))
                due = self.protocol.next_tick_ms(now)
                if due is None:
                    return
                await asyncio.sleep(max(due - now_ms(), MIN_TICK_MS) / 1000)
        except Exception:
            self._bug("keeping time")

    def _bug(self, doing: str) -> None:
        """A bug in this node's code (not the peer's input): log it, tell the peer it was ours."""
        region = self.protocol.region
        log.exception(
            "bug in node %s while %s on the link to %s",
            region,
            doing,
            self.peer,
            extra={"event": "internal_error", "region": region, "peer": self.peer},
        )
        detail = f"internal error in node {region}, see its log"
        actions = self.protocol.take_down(CloseReason.INTERNAL_ERROR, detail)
        if actions:  # the peer is told, then the link closes
            self._perform(actions)
            return
        if self.close_reason is None:
            self.close_reason, self.close_detail = CloseReason.INTERNAL_ERROR, detail
        self._report_down()
        self._closed.set()

    def _stream_ended(self, detail: str) -> None:
        if self.close_reason is None:
            reason = CloseReason.STREAM_LOST if self.opened else CloseReason.UNREACHABLE
            self.close_reason, self.close_detail = reason, detail
        self._report_down()
        self._closed.set()

    def _perform(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.send(action.frame)
            elif isinstance(action, Deliver):
                self.mesh.received(self, action.frame)
            elif isinstance(action, Opened):
                self.peer = action.peer
                old = self.mesh.links.get(self.peer)
                if old is not None and old is not self:
                    # An older link to the peer is still open here (its stream has not
                    # broken yet on this side): it goes down, and is logged down, first.
                    old.replaced()
                self.opened = True
                self._registry[self.peer] = self
                self.mesh.link_opened(self)
                if self.peer in self.spools.links:
                    self._tasks.append(asyncio.create_task(self._send_spool()))
            elif isinstance(action, Resync):
                self.mesh.resync(self)
            elif isinstance(action, Store):
                self.mesh.store_guaranteed(
                    self, action.events, action.upto, self._stored(action.upto)
                )
            elif isinstance(action, Trim):
                self._room.set()
                self._trim(action.upto)
            elif isinstance(action, Close):
                self.close_reason, self.close_detail = action.reason, action.detail
                self._report_down()
                if self._outbox_has_refusal():
                    # The writer closes once the peer has been told why; never wait long.
                    asyncio.get_running_loop().call_later(REFUSAL_GRACE_S, self._closed.set)
                else:
                    self._closed.set()

    def _trim(self, upto: int) -> None:
        """The peer stored everything up to `upto`: trim the spool there. While a trim's
        commit is on its way, later acks wait and are trimmed together in the next one."""
        self._trim_upto = upto
        if self._trimmer is None:
            self._trimmer = asyncio.create_task(self._trim_spool())

    async def _trim_spool(self) -> None:
        trimmed = 0
        try:
            while self._trim_upto > trimmed:
                trimmed = self._trim_upto
                await self.spools.trim(self.peer, trimmed)
        except Exception as exc:  # the spool keeps them; the peer's next ack trims again
            log.error("link to %s: trimming the spool up to %d failed: %r", self.peer, trimmed, exc)
        finally:
            self._trimmer = None

    def _stored(self, upto: int) -> Callable[[], None]:
        def done() -> None:
            self._perform(self.protocol.stored(upto))

        return done

    async def _send_spool(self) -> None:
        """Send spooled guaranteed events in order, as fast as the peer acks them."""
        tail = self.spools.links[self.peer].tail
        tail.sender_started()
        try:
            await self._send_spooled()
        except Exception:
            self._bug("sending the spool")
        finally:
            tail.sender_stopped()

    async def _send_spooled(self) -> None:
        link = self.spools.links[self.peer]
        while True:
            room = self.protocol.room()
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            link.changed.clear()  # before reading, so no commit after the read is missed
            after, limit = self.protocol.sent_upto, min(room, SPOOL_READ)
            events = link.tail.take(after, limit, self.protocol.room_bytes())
            if events is None:
                events, upto = await self._read_spool(link.link_id, after, limit)
            else:
                upto = events[-1][0] if events else after
            if upto == after:
                await link.changed.wait()
                continue
            size = sum(len(envelope) + len(data) for _seq, envelope, data in events)
            self.protocol.sent(upto, size)
            self.rate_out.add(len(events), size)
            if events:
                self.send(guaranteed_frame(events))

    async def _read_spool(
        self, link_id: int, after: int, limit: int
    ) -> tuple[list[tuple[int, bytes, bytes]], int]:
        """Spooled events after link seq `after` from disk, and the last link seq read."""
        batch = await asyncio.to_thread(
            self.spools.store.read_spool, link_id, after, limit, self.protocol.room_bytes()
        )
        if not batch:
            return [], after
        events = [(e.link_seq, e.envelope, e.data) for e in batch if e.data is not None]
        if len(events) < len(batch):
            log.warning(
                "link %s: %d spooled events are missing from the store and were skipped "
                "(spooled before spool entries counted in an event's references)",
                self.peer,
                len(batch) - len(events),
            )
        return events, batch[-1].link_seq

    def _outbox_has_refusal(self) -> bool:
        return any(f.WhichOneof("frame") == "refusal" for f, _, _ in self._outbox)
