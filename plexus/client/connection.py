"""`Connection`: the channel to one of a client's node addresses, replaced when it breaks.

Streams (publish, subscriptions, consumers) share one `Connection`. A stream
that sees the connection break reports it with `broken(generation)` and waits
in `ready(generation)` for a newer one; the first report starts one reconnect
cycle that every stream then shares: probe the current channel once (a stream
may end while the connection is fine), else try each address in turn on a
fresh channel, with exponential backoff and jitter between rounds, until a
node answers, the application's limit (`max_reconnect_s`) passes or the client
is closed. Each change of state is told to the `on_state` callback and to
every `states()` iterator.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc import aio

from plexus.client.channel import (
    open_channel,
    parse_address,
    translate_rpc_error,
    unreachable_reason,
)
from plexus.client.credentials import call_metadata
from plexus.errors import (
    ClientClosed,
    InvalidArgument,
    PermissionDenied,
    PlexusError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as pb_grpc

__all__ = ["Connection", "ConnectionState", "StateChange"]

log = logging.getLogger("plexus.client")

# Backoff between reconnect rounds: from the first to the last, doubling, each
# slept for a random 50-100 % of it (jitter, so clients of a restarted node do
# not come back in one wave).
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 0.25
PUBLISH_METHOD = "/plexus.v1.Broker/Publish"
SUBSCRIPTIONS_METHOD = "/plexus.v1.Broker/Subscriptions"
# Two start times of a node computed from its uptime further apart than this are
# two processes (a restart).
NODE_START_TOLERANCE_S = 0.25
# How long a node has to answer the probe of a (re)connect.
PROBE_TIMEOUT_S = 2.0
# Answers that say the node is up but refuses this client's token.
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class ConnectionState(enum.Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTED = "reconnected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class StateChange:
    """One change of a client's connection: its new state, the node address, why."""

    state: ConnectionState
    address: str
    reason: str = ""
    # Wall-clock time of the change (time.time()).
    at: float = 0.0


StateCallback = Callable[[StateChange], None]


class Connection:
    def __init__(
        self,
        addresses: Sequence[str],
        *,
        reconnect: bool = True,
        max_reconnect_s: float | None = None,
        on_state: StateCallback | None = None,
        ca: bytes | None = None,
        token: str | None = None,
        name: str | None = None,
    ) -> None:
        if not addresses:
            raise InvalidArgument("no node address given: expected HOST:PORT")
        for address in addresses:
            parse_address(address)
        if max_reconnect_s is not None and max_reconnect_s < 0:
            raise InvalidArgument(f"max_reconnect_s must be 0 or more, got {max_reconnect_s}")
        self.addresses = list(addresses)
        self.address = self.addresses[0]
        self.reconnect = reconnect
        self.max_reconnect_s = max_reconnect_s
        self._on_state = on_state
        self.ca = ca  # the cluster CA (PEM): TLS to every address
        # Sent with every call: the token and the client's name (plexus.client.credentials).
        self.metadata = call_metadata(token, name)
        self._channel: aio.Channel | None = None
        self.broker: pb_grpc.BrokerStub | None = None
        self.admin: pb_grpc.AdminStub | None = None
        self.publish: aio.StreamStreamMultiCallable | None = None
        self.subscriptions: aio.StreamStreamMultiCallable | None = None
        # Bumped by every (re)connect; streams remember the one they opened on.
        self.generation = 0
        self.reconnects = 0
        self.failure: PlexusError | None = None
        self.closed = False
        self._cycle: asyncio.Task[None] | None = None
        # When the node process answering now started (wall clock, from its uptime).
        self._node_started_at = 0.0
        self._changed = asyncio.Event()
        self._listeners: list[asyncio.Queue[StateChange | None]] = []

    # ------------------------------------------------------------ lifecycle

    async def open(self, timeout: float) -> None:
        """Connect to the first address that answers within `timeout` (each tried once)."""
        errors: list[PlexusError] = []
        for address in self.addresses:
            try:
                await self._try(address, timeout)
            except (Unavailable, Timeout) as exc:
                errors.append(exc)
                continue
            self._tell(ConnectionState.CONNECTED, "")
            return
        if len(errors) == 1:
            raise errors[0]
        raise Unavailable("; ".join(str(e) for e in errors))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.failure is None:
            self.failure = ClientClosed(f"client for node at {self.address}")
        if self._cycle is not None:
            self._cycle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cycle
        if self._channel is not None:
            await self._channel.close()
        self._tell(ConnectionState.CLOSED, "closed by the application")
        for listener in self._listeners:
            listener.put_nowait(None)
        self._changed.set()

    @property
    def connected(self) -> bool:
        return self._channel is not None and self._cycle is None and self.failure is None

    # ------------------------------------------------------------ breaks

    def broken(self, generation: int, reason: str) -> None:
        """A stream opened on `generation` found the connection broken: reconnect (once)."""
        if self.closed or self.failure is not None or generation != self.generation:
            return
        if self._cycle is None:
            self._cycle = asyncio.get_running_loop().create_task(self._reconnect(reason))

    async def ready(self, generation: int, timeout: float | None = None) -> int:
        """Wait for a connection newer than `generation`; returns its generation.

        Raises the connection's failure (ClientClosed, or Unavailable once the
        client gave up reconnecting) and Timeout after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.failure is not None:
                raise self.failure
            if self.generation > generation and self._cycle is None:
                return self.generation
            self._changed.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(f"reconnect to node at {self.address}", timeout)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()

    async def usable(self, timeout: float | None) -> None:
        """Wait (bounded) while a reconnect is under way; raise when the client cannot call."""
        if self.failure is not None:
            raise self.failure
        if self._cycle is not None:
            await self.ready(self.generation - 1 if self.generation else 0, timeout)

    async def _reconnect(self, reason: str) -> None:
        try:
            if await self._still_up():
                self.generation += 1
                return
            self._tell(ConnectionState.DISCONNECTED, reason)
            if not self.reconnect:
                self.failure = Unavailable(f"lost node at {self.address} ({reason})")
                self._tell(ConnectionState.CLOSED, "reconnect is off")
                return
            await self._retry(reason)
        finally:
            self._cycle = None
            self._changed.set()

    async def _still_up(self) -> bool:
        """The current channel still answers the same node process: a stream ended, not
        the connection. (gRPC may have reconnected the channel to a restarted node: that
        is a break the application hears of.)"""
        if self._channel is None:
            return False
        stub = pb_grpc.BrokerStub(self._channel)
        try:
            info = await stub.GetNodeInfo(
                pb.NodeInfoRequest(), timeout=PROBE_TIMEOUT_S / 2, metadata=self.metadata
            )
        except grpc.RpcError:
            return False
        return abs(_started_at(info) - self._node_started_at) < NODE_START_TOLERANCE_S

    async def _retry(self, reason: str) -> None:
        started = time.monotonic()
        backoff = FIRST_BACKOFF_S
        first = self.addresses.index(self.address) if self.address in self.addresses else 0
        order = self.addresses[first:] + self.addresses[:first]
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        while True:
            for address in order:
                try:
                    await self._try(address, PROBE_TIMEOUT_S)
                except (Unavailable, Timeout) as exc:
                    reason = str(exc)
                    continue
                except (Unauthenticated, PermissionDenied) as exc:  # retrying cannot help
                    self.failure = exc
                    self._tell(ConnectionState.CLOSED, str(exc))
                    return
                self.reconnects += 1
                self._tell(ConnectionState.RECONNECTED, "")
                return
            waited = time.monotonic() - started
            if self.max_reconnect_s is not None and waited >= self.max_reconnect_s:
                self.failure = Unavailable(
                    f"gave up reconnecting to {', '.join(self.addresses)} after "
                    f"{waited:.1f} s: {reason}"
                )
                self._tell(ConnectionState.CLOSED, str(self.failure))
                return
            pause = backoff * random.uniform(0.5, 1.0)
            if self.max_reconnect_s is not None:
                pause = min(pause, max(0.0, self.max_reconnect_s - waited))
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _try(self, address: str, timeout: float) -> None:
        """Open a channel to `address` and check a node answers; install it or raise."""
        channel = open_channel(address, self.ca)
        try:
            info = await pb_grpc.BrokerStub(channel).GetNodeInfo(
                pb.NodeInfoRequest(), timeout=timeout, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            await channel.close()
            if exc.code() in _REFUSED:  # the node answers, but not to this token
                raise translate_rpc_error(exc, address) from None
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise Timeout(f"connecting to node at {address}", timeout) from None
            raise Unavailable(
                f"cannot reach node at {address}: "
                f"{unreachable_reason(exc.details() or '', self.ca is not None)}"
            ) from None
        except BaseException:
            await channel.close()
            raise
        self._channel = channel
        self._node_started_at = _started_at(info)
        self.address = address
        self.broker = pb_grpc.BrokerStub(channel)
        self.admin = pb_grpc.AdminStub(channel)
        # Publish requests go out as bytes the SDK encodes itself (plexus.client.framing).
        self.publish = channel.stream_stream(
            PUBLISH_METHOD,
            request_serializer=None,
            response_deserializer=pb.PublishResponse.FromString,
        )
        # Each response with its size on the wire, by which subscriptions bound what they hold.
        self.subscriptions = channel.stream_stream(
            SUBSCRIPTIONS_METHOD,
            request_serializer=pb.SubscriptionsRequest.SerializeToString,
            response_deserializer=_sized_response,
        )
        self.generation += 1

    # ------------------------------------------------------------ states

    def _tell(self, state: ConnectionState, reason: str) -> None:
        change = StateChange(state, self.address, reason, time.time())
        log.info("connection to %s: %s%s", self.address, state.value, f" ({reason})" * bool(reason))
        for listener in self._listeners:
            listener.put_nowait(change)
        if self._on_state is not None:
            try:
                self._on_state(change)
            except Exception:
                log.exception("on_state callback failed for %s", change)

    async def states(self) -> AsyncIterator[StateChange]:
        """Each change of state from now on, until the client is closed."""
        if self.closed:
            return
        listener: asyncio.Queue[StateChange | None] = asyncio.Queue()
        self._listeners.append(listener)
        try:
            while True:
                change = await listener.get()
                if change is None:
                    return
                yield change
        finally:
            self._listeners.remove(listener)


def _sized_response(raw: bytes) -> tuple[int, pb.SubscriptionsResponse]:
    return len(raw), pb.SubscriptionsResponse.FromString(raw)


def _started_at(info: pb.NodeInfo) -> float:
    return time.time() - info.uptime_ms / 1000
