"""The node's MQTT listener: the asyncio shell around node/mqtt/session.py.

One `_Connection` per TCP (or TLS) connection reads bytes, decodes packets,
feeds the session and performs what it decides on the node's `Gateway`:
publish, a direct subscription per Plexus pattern, and for a persistent
session a durable queue (see `queue_name`) consumed while the client is
connected. Output is written once per wake, whatever the number of events.

Identity: the MQTT password is a Plexus token and its permissions apply; the
username only names the client (`plexus clients`). A node without a token key
accepts any password, or none. A persistent session's queue is the front
door's own: it is created and consumed with the node's authority, once the
client's token allowed each subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import ssl
from collections.abc import Coroutine, Iterable
from contextlib import ExitStack
from typing import Any, Protocol

from node.gateway import Gateway, GatewayConsumer, GatewaySubscription
from node.grpc_server import PortInUse
from node.mqtt.actions import (
    AckDeliveries,
    Action,
    Authenticate,
    Close,
    PublishEvent,
    SendRetained,
    SubscriptionsChanged,
)
from node.mqtt.codec import Decoder
from node.mqtt.packets import Packet, ProtocolError, ReasonCode
from node.mqtt.session import Phase, Session, SessionLimits
from node.mqtt.session_state import SessionState
from node.permissions import OPEN, Access
from node.queues import QUEUE_NAME
from plexus.errors import (
    InvalidArgument,
    PlexusError,
    QueueNotFound,
    Unauthenticated,
)
from plexus.v1 import plexus_pb2 as pb

__all__ = ["MqttFrontDoor", "queue_name"]

log = logging.getLogger(__name__)

READ_BYTES = 256 * 1024
# A connection that sends no CONNECT within this long is closed.
CONNECT_TIMEOUT_S = 10.0
# How long a taken-over connection may take to let go of its session.
TAKEOVER_TIMEOUT_S = 5.0
# QoS 0 publishes read but not yet handed to the broker, past which reading pauses.
MAX_UNPUBLISHED = 10_000
# Queue deliveries in flight to one persistent session (its receive maximum, up to this).
MAX_SESSION_CREDITS = 1_000
# Bytes an MQTT packet adds to an event's payload, beyond the node's payload limit.
PACKET_OVERHEAD_BYTES = 64 * 1024
QUEUE_PREFIX = "mqtt."
# How long a closing connection reads what its client still sends (see `_linger`).
LINGER_S = 1.0


def queue_name(client_id: str) -> str:
    """The durable queue of a persistent session: `mqtt.c.<client id>` when the id fits
    the queue-name grammar (letters, digits, `.`, `_`, `-`; the name at most 100
    characters), else `mqtt.h.<sha-256 of the id, 40 hex digits>`: the two forms never
    collide."""
    plain = f"{QUEUE_PREFIX}c.{client_id}"
    if QUEUE_NAME.match(plain):
        return plain
    digest = hashlib.sha256(client_id.encode()).hexdigest()[:40]
    return f"{QUEUE_PREFIX}h.{digest}"


class RetainedMessages(Protocol):
    """Retained messages per Plexus topic (node/mqtt/retained.py's RetainedStore)."""

    async def retain(self, topic: str, event: pb.Event) -> None: ...

    def matching(self, patterns: Iterable[str]) -> list[pb.Event]: ...


class MqttFrontDoor:
    """MQTT 3.1.1 and 5.0 on `address`, with TLS when `ssl_context` is given."""

    def __init__(
        self,
        gateway: Gateway,
        address: str,
        ssl_context: ssl.SSLContext | None = None,
        region: str = "",
        retained: RetainedMessages | None = None,
        *,
        max_connections: int = 10_000,
    ) -> None:
        self.gateway = gateway
        self.requested = address
        self.ssl_context = ssl_context
        self.region = region or gateway.config.name
        self.retained = retained
        self.max_connections = max_connections
        self.limits = SessionLimits(
            maximum_packet_bytes=gateway.config.max_payload_bytes + PACKET_OVERHEAD_BYTES
        )
        self.address = ""
        self._server: asyncio.Server | None = None
        self._connections: dict[str, _Connection] = {}  # by client id, once connected
        self._open: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Persistent sessions' state while the node runs (their queues keep the rest).
        self.sessions: dict[str, SessionState] = {}
        # Delayed wills and v5 session expiries, by client id: a return cancels them.
        self._wills: dict[str, asyncio.TimerHandle] = {}
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self.stopping = False

    async def start(self) -> str:
        """Listen; returns the "host:port" bound (port 0 picks a free one)."""
        host, sep, port = self.requested.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidArgument(f"invalid MQTT address {self.requested!r}: expected HOST:PORT")
        try:
            self._server = await asyncio.start_server(
                self._accept, host.strip("[]"), int(port), ssl=self.ssl_context
            )
        except OSError as exc:
            raise PortInUse(self.requested) from exc
        bound = self._server.sockets[0].getsockname()[1]
        self.address = f"{host}:{bound}"
        log.info("MQTT listening on %s%s", self.address, " (TLS)" if self.ssl_context else "")
        return self.address

    async def stop(self) -> None:
        """Stop listening and close every connection; persistent sessions stay in their queues."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for handle in [*self._wills.values(), *self._expiries.values()]:
            handle.cancel()  # a session expiry due is kept: the queue stays
        self._wills.clear()
        self._expiries.clear()
        for connection in list(self._open):
            connection.end(connection.session.shut_down())
            if not connection._tasks:
                connection.writer.close()  # wakes a read still waiting for CONNECT
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def session_of(self, client_id: str) -> Session | None:
        """The session of the client connected as `client_id`, if any."""
        connection = self._connections.get(client_id)
        return connection.session if connection is not None else None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        connection = _Connection(self, reader, writer)
        self._open.add(connection)
        try:
            await connection.run()
        except Exception:  # a bug: log it, and keep serving the others
            log.exception("MQTT connection %s failed", connection.peer)
        finally:
            self._open.discard(connection)
            if self._connections.get(connection.session.client_id) is connection:
                del self._connections[connection.session.client_id]
            try:
                if not self.stopping:
                    await _linger(reader, writer)
                writer.close()
                with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
                    await writer.wait_closed()
            finally:
                self._tasks.discard(task)  # type: ignore[arg-type]

    async def take_over(self, client_id: str, connection: _Connection) -> None:
        """Make `connection` the one of `client_id`, closing the one before it (0x8E)."""
        for timers in (self._wills, self._expiries):
            handle = timers.pop(client_id, None)
            if handle is not None:
                handle.cancel()  # the client came back within its will delay or expiry
        old = self._connections.get(client_id)
        self._connections[client_id] = connection
        if old is not None:
            old.taken_over = True
            old.end(old.session.take_over())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TAKEOVER_TIMEOUT_S):
                    await old.finished.wait()

    def publish_will(self, client_id: str, access: Access, will: PublishEvent, delay: int) -> None:
        if self.stopping:
            return

        def start() -> None:
            self._wills.pop(client_id, None)
            task = asyncio.get_running_loop().create_task(self._publish_will(access, will))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        if delay:
            self._wills[client_id] = asyncio.get_running_loop().call_later(delay, start)
        else:
            start()

    def expire_later(self, client_id: str, queue: str, after_s: int) -> None:
        """End the persistent session of `client_id` after `after_s` seconds away (v5)."""
        if self.stopping:
            return

        def start() -> None:
            self._expiries.pop(client_id, None)
            if client_id in self._connections:
                return
            self.sessions.pop(client_id, None)
            task = asyncio.get_running_loop().create_task(self._expire(queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._expiries[client_id] = asyncio.get_running_loop().call_later(after_s, start)

    async def _expire(self, queue: str) -> None:
        with contextlib.suppress(QueueNotFound):
            await self.gateway.delete_queue(OPEN, queue)
        log.info("MQTT session queue %s expired", queue)

    async def _publish_will(self, access: Access, will: PublishEvent) -> None:
        topic = will.event.topic
        try:
            [result] = await self.gateway.publish(access, [will.event], peer=f"mqtt:{self.region}")
            error = result.error
            if error is None and will.retain and self.retained is not None:
                await self.retained.retain(topic, will.event)
        except PlexusError as exc:
            error = exc
        if error is not None:
            log.warning("will message to %s refused: %s", topic, error)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close and read what the client still sends, briefly: closing a socket with
    unread input resets it, and the reset can destroy our last packet (a DISCONNECT
    saying why) before the client reads it."""
    if writer.is_closing() or not writer.can_write_eof():
        return
    with contextlib.suppress(TimeoutError, OSError):
        writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            while await reader.read(READ_BYTES):
                pass


class _Connection:
    """One client connection: reads, the session, its subscriptions and queue."""

    def __init__(
        self, door: MqttFrontDoor, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.door = door
        self.gateway = door.gateway
        self.reader = reader
        self.writer = writer
        host, port = writer.get_extra_info("peername")[:2]
        self.peer = f"mqtt:{host}:{port}"
        # An id for a client that sends none: unique across restarts too, so that it never
        # inherits the persistent session of another.
        assigned = f"plexus-{door.region}-{secrets.token_hex(8)}"
        self.session = Session(door.limits, assigned_id=assigned)
        self.decoder = Decoder(max_packet_size=door.limits.maximum_packet_bytes)
        self.access: Access = OPEN
        self.token: str | None = None
        self.finished = asyncio.Event()
        self.taken_over = False
        self.closing = asyncio.Event()
        self.close_reason = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: dict[str, tuple[ExitStack, asyncio.Task[None]]] = {}
        self._consumer: GatewayConsumer | None = None
        self._queue = ""
        self._stack = ExitStack()
        self._holding = False  # output held back (see _subscriptions_changed)
        self._unpublished: list[PublishEvent] = []
        self._publish_wake = asyncio.Event()
        self._published = asyncio.Event()

    @property
    def name(self) -> str:
        return self.session.username or self.session.client_id

    # ------------------------------------------------------------ life

    async def run(self) -> None:
        try:
            with self._stack:  # the session's queue consumer, once it has one
                if await self._handshake():
                    await self._serve()
                self._flush()
        finally:
            self.finished.set()
        will = self.session.will()
        # A delayed will is for a client that does not come back in time: this one has.
        if will is not None and not (self.taken_over and will[1]):
            self.door.publish_will(self.session.client_id, self.access, *will)
        if self._queue and self.session.expiry_s is not None and not self.taken_over:
            self.door.expire_later(self.session.client_id, self._queue, self.session.expiry_s)
        dropped = self.session.dropped
        log.info(
            "MQTT %s (%s) closed: %s%s",
            self.peer,
            self.session.client_id,
            self.close_reason,
            f"; {dropped} messages dropped (larger than its maximum packet size, or no room)"
            if dropped
            else "",
        )

    async def _handshake(self) -> bool:
        """Read until CONNECT is answered; True when the connection was accepted."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                while self.session.phase != Phase.CONNECTED and not self.closing.is_set():
                    if not await self._read():
                        return False
        except TimeoutError:
            self._close(f"no CONNECT in {CONNECT_TIMEOUT_S:.0f} s")
            return False
        return not self.closing.is_set()

    async def _serve(self) -> None:
        self._tasks = [
            self._start(self._reading()),
            self._start(self._publishing()),
            self._start(self._keepalive()),
        ]
        if self._consumer is not None:
            self._tasks.append(self._start(self._pump(self._consumer)))
        for pattern in self.session.patterns():
            self._watch(pattern)
        await self.closing.wait()
        tasks = self._tasks + [task for _, task in self._subscriptions.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stack, _ in self._subscriptions.values():
            stack.close()

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # A bug in one part of the connection ends the connection, not the node.
        if not task.cancelled() and task.exception() is not None:
            log.error("MQTT %s failed", self.peer, exc_info=task.exception())
            self._close(f"internal error: {task.exception()}")

    def end(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Close):
                self._close(action.reason)

    def _close(self, reason: str) -> None:
        if not self.closing.is_set():
            self.close_reason = reason
            self.closing.set()

    def _flush(self) -> None:
        if self._holding:
            return
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _drain(self) -> None:
        self._flush()
        try:
            await self.writer.drain()
        except (ConnectionError, ssl.SSLError) as exc:
            self._close(f"connection lost: {exc}")

    # ------------------------------------------------------------ reading

    async def _read(self) -> bool:
        """Read, decode and act on one chunk; False at the end of the stream."""
        try:
            data = await self.reader.read(READ_BYTES)
        except (ConnectionError, ssl.SSLError) as exc:
            self._close(f"connection lost: {exc}")
            return False
        if not data:
            self._close("connection lost")
            return False
        error: ProtocolError | None = None
        try:
            packets = self.decoder.feed(data)
        except ProtocolError as exc:
            packets, error = getattr(exc, "packets", []), exc
        actions = await self._receive(packets)
        if error is not None:
            actions += self.session.fail(error, self.decoder.version)
        await self._perform(actions)
        await self._drain()
        return not self.closing.is_set()

    async def _receive(self, packets: list[Packet]) -> list[Action]:
        """Feed `packets` to the session; what a CONNECT needs is done before the packets
        after it, which a client may send without waiting for CONNACK."""
        now = asyncio.get_running_loop().time()
        actions: list[Action] = []
        for packet in packets:
            actions += self.session.receive(packet, now)
            if self.session.phase == Phase.AUTHENTICATING:
                await self._perform(actions)
                actions = []
        return actions

    async def _reading(self) -> None:
        while await self._read():
            while len(self._unpublished) >= MAX_UNPUBLISHED:
                self._published.clear()
                await self._published.wait()

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while (deadline := self.session.keepalive_deadline()) is not None:
            if self.session.expired(loop.time()):
                self.end(self.session.time_out())
                return
            await asyncio.sleep(max(deadline - loop.time(), 0.0) + 0.01)

    # ------------------------------------------------------------ actions

    async def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case PublishEvent():
                    self._unpublished.append(action)
                    self._publish_wake.set()
                case AckDeliveries(tags=tags):
                    if self._consumer is not None:
                        self._consumer.ack(tags)
                        self._consumer.grant(len(tags))
                case SubscriptionsChanged():
                    await self._subscriptions_changed(action)
                case SendRetained(patterns=patterns):
                    if self.door.retained is not None:
                        events = self.door.retained.matching(patterns)
                        await self._perform(self.session.deliver(events, retained=True))
                case Authenticate():
                    await self._connect(action)
                case Close(reason=reason):
                    self._close(reason)

    async def _connect(self, action: Authenticate) -> None:
        connect = action.connect
        password = connect.password
        token = password.decode("utf-8", "replace") if password else None
        try:
            self.access = self.gateway.identify(token)
        except Unauthenticated as exc:
            reason = ReasonCode.BAD_USER_NAME_OR_PASSWORD if token else ReasonCode.NOT_AUTHORIZED
            await self._perform(self.session.refuse(reason, str(exc)))
            return
        self.token = token
        if len(self.door._open) > self.door.max_connections:
            await self._perform(self.session.refuse(ReasonCode.SERVER_BUSY, "too many clients"))
            return
        client_id = self.session.client_id
        await self.door.take_over(client_id, self)
        state: SessionState | None = None
        try:
            state = await self._open_session(connect.clean_start)
        except PlexusError as exc:
            log.warning("MQTT %s: session of %r: %s", self.peer, client_id, exc)
            await self._perform(self.session.refuse(ReasonCode.SERVER_UNAVAILABLE, str(exc)))
            return
        self.session.authenticated(asyncio.get_running_loop().time(), self._may_subscribe, state)

    async def _open_session(self, clean_start: bool) -> SessionState | None:
        """The persistent session to resume, if any; for a persistent session, its queue."""
        client_id = self.session.client_id
        name = queue_name(client_id)
        queues = self.gateway.queues
        existing = None
        with contextlib.suppress(QueueNotFound):
            existing = queues.get(name)
        if existing is not None and (clean_start or not self.session.persistent):
            await self.gateway.delete_queue(OPEN, name)
            existing = None
            self.door.sessions.pop(client_id, None)
        if not self.session.persistent:
            self.door.sessions.pop(client_id, None)
            return None
        state = self.door.sessions.get(client_id) if existing is not None else None
        if existing is not None and state is None:
            # The node restarted: the queue's subscriptions are what the session had.
            state = SessionState.of_patterns(existing.config.subscriptions)
        if state is None:
            await self.gateway.ensure_queue(OPEN, pb.QueueConfig(name=name, exclusive=True))
        self.door.sessions[client_id] = state if state is not None else self.session.state
        self._queue = name
        credits = min(self.session.window, MAX_SESSION_CREDITS)
        self._consumer = self._stack.enter_context(
            self.gateway.consume(OPEN, name, credits, peer=self.peer, name=self.name)
        )
        return state

    def _may_subscribe(self, pattern: str) -> bool:
        try:
            self.access.require_subscribe((pattern,))
        except PlexusError:
            return False
        return True

    async def _subscriptions_changed(self, change: SubscriptionsChanged) -> None:
        for pattern in change.removed:
            stack, task = self._subscriptions.pop(pattern)
            task.cancel()
            stack.close()
        if self._queue:
            # The SUBACK waits for the queue to hold the new patterns durably: until then,
            # nothing is written (other tasks' output included, which keeps its order).
            self._holding = True
            try:
                await self.gateway.set_queue_subscriptions(OPEN, self._queue, list(change.patterns))
            except PlexusError as exc:
                self._close(f"subscriptions of queue {self._queue}: {exc}")
                self.session.data_to_send()  # not the SUBACK: the session did not get them
                return
            finally:
                self._holding = False
            self.door.sessions[self.session.client_id] = self.session.state
        if self.session.phase == Phase.CONNECTED and self._tasks:
            for pattern in change.added:
                self._watch(pattern)

    def _watch(self, pattern: str) -> None:
        stack = ExitStack()
        try:
            subscription = stack.enter_context(
                self.gateway.subscribe(self.access, pattern, peer=self.peer, name=self.name)
            )
        except PlexusError as exc:
            self._close(f"subscribing to {pattern}: {exc}")
            return
        self._subscriptions[pattern] = (stack, self._start(self._pump(subscription)))

    # ------------------------------------------------------------ delivering

    async def _pump(self, source: GatewaySubscription | GatewayConsumer) -> None:
        """Deliver what `source` has, one write per wake."""
        from_queue = isinstance(source, GatewayConsumer)
        while True:
            await source.wake.wait()
            source.wake.clear()
            if not self._token_valid():
                return
            events = source.take()
            if not from_queue and self._queue:
                # The session's queue brings the guaranteed ones, durably.
                events = [e for e in events if e.mode != pb.DeliveryMode.GUARANTEED]
            if events:
                await self._perform(self.session.deliver(events))
                await self._drain()

    # ------------------------------------------------------------ publishing

    def _token_valid(self) -> bool:
        """False (and the connection closing) once the token expired or was revoked."""
        try:
            self.gateway.still_valid(self.token)
        except Unauthenticated as exc:
            self.end(self.session.refuse(ReasonCode.NOT_AUTHORIZED, str(exc)))
            return False
        return True

    async def _publishing(self) -> None:
        """Hands what the client published to the broker, a batch at a time, in order."""
        while True:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            batch, self._unpublished = self._unpublished, []
            self._published.set()
            if not batch:
                continue
            if not self._token_valid():
                return
            results = await self.gateway.publish(
                self.access, [p.event for p in batch], peer=self.peer, name=self.name
            )
            actions: list[Action] = []
            for publish, result in zip(batch, results, strict=True):
                error = result.error
                if error is None and publish.retain and self.door.retained is not None:
                    try:
                        await self.door.retained.retain(publish.event.topic, publish.event)
                    except PlexusError as exc:
                        error = exc
                if publish.ref is not None:
                    actions += self.session.published(publish.ref, error)
                elif error is not None:
                    log.info(
                        "MQTT %s: publish to %s refused: %s", self.peer, publish.event.topic, error
                    )
                    actions += self.session.publish_refused(error)
            await self._perform(actions)
            await self._drain()
