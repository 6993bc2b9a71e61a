"""`Client`: the asyncio SDK's entry point, one connection to one node."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from plexus.client.channel import read_ca, translate_rpc_error
from plexus.client.connection import Connection, StateCallback, StateChange
from plexus.client.consumer import Consumer
from plexus.client.info import (
    ClientInfo,
    LinkInfo,
    LinksView,
    NodeInfo,
    QueueInfo,
    SubscriptionsView,
)
from plexus.client.publisher import DirectOnBreak, PublishStream
from plexus.client.subscription import Subscription
from plexus.client.subscription_stream import SubscriptionStream
from plexus.errors import ClientClosed, InvalidArgument, Timeout, Unavailable
from plexus.topics import validate_topic
from plexus.v1 import plexus_pb2 as pb

__all__ = ["MAX_PAYLOAD_BYTES", "Client"]

MAX_PAYLOAD_BYTES = 1024 * 1024
# Distinct topics remembered as valid, so hot topics are validated once.
_VALID_TOPICS_CACHED = 10_000
# Subscriptions listed per call at most (the node's cap too).
MAX_SUBSCRIPTIONS_LISTED = 10_000
# Longest application-given de-duplication key, UTF-8 bytes (the node's limit).
MAX_KEY_BYTES = 255
# Deadline of a call that was given none.
CALL_TIMEOUT_S = 30.0


class Client:
    """A connection to a Plexus node, kept up across restarts and breaks.

    ::

        async with await Client.connect("127.0.0.1:7000") as client:
            await client.publish("orders/us/1", b'{"id": 1}')
            event_id = await client.publish("orders/us/2", b"...", guaranteed=True)

    Publishing uses one long-lived stream per client and batches for you;
    `publish_nowait` pipelines many events, `flush` waits until the node has
    handled everything published so far.

    When the connection breaks, the client reconnects (to the addresses given,
    in turn, with exponential backoff and jitter) until it succeeds, the
    application's `max_reconnect_s` passes, or it is closed; subscriptions and
    consumers are made again and unacked guaranteed publishes are sent again,
    stored once by the node. `states()` and `on_state` tell the application
    each change: connected, disconnected, reconnected, closed.
    """

    def __init__(self, connection: Connection, direct_on_break: DirectOnBreak = "buffer") -> None:
        self._conn = connection
        self._direct_on_break = direct_on_break
        self._stream: PublishStream | None = None
        self._subscriptions: SubscriptionStream | None = None
        self._producer = os.urandom(16)
        self._valid_topics: set[str] = set()
        self._closed = False

    @classmethod
    async def connect(
        cls,
        address: str | Sequence[str],
        timeout: float = 5.0,
        *,
        reconnect: bool = True,
        max_reconnect_s: float | None = None,
        on_state: StateCallback | None = None,
        direct_on_break: DirectOnBreak = "buffer",
        ca: str | Path | bytes | None = None,
        token: str | None = None,
        name: str | None = None,
    ) -> Client:
        """Connect to the first of `address` (HOST:PORT, or several) whose node answers.

        `ca` (the cluster CA certificate: a file or its PEM bytes) connects over
        TLS, verifying that the node's certificate is signed by it and names the
        host dialled; without it the connection is plaintext.
        `reconnect=False` makes a broken connection final; `max_reconnect_s`
        bounds how long the client tries to reconnect (default: forever).
        `direct_on_break`: while disconnected, direct publishes wait in the
        bounded buffer ("buffer") or are refused at once ("fail").
        `token` (from `plexus token create`) goes with every call, streams included,
        and across reconnects; a node that refuses it raises Unauthenticated.
        `name` (e.g. a connector's) goes with every call too: `plexus clients` shows it.
        Raises InvalidArgument for a malformed address and Unavailable, naming
        each address, when no node answers within `timeout` seconds.
        """
        addresses = [address] if isinstance(address, str) else list(address)
        if direct_on_break not in ("buffer", "fail"):
            raise InvalidArgument(
                f"direct_on_break must be 'buffer' or 'fail', got {direct_on_break!r}"
            )
        connection = Connection(
            addresses,
            reconnect=reconnect,
            max_reconnect_s=max_reconnect_s,
            on_state=on_state,
            ca=read_ca(ca),
            token=token,
            name=name,
        )
        await connection.open(timeout)
        return cls(connection, direct_on_break)

    @property
    def address(self) -> str:
        """The address of the node the client is connected to (or reconnecting to)."""
        return self._conn.address

    @property
    def connected(self) -> bool:
        return self._conn.connected

    @property
    def reconnects(self) -> int:
        """How many times the client reconnected after its connection broke."""
        return self._conn.reconnects

    def states(self) -> AsyncIterator[StateChange]:
        """Each change of the connection's state from now on, until the client is closed."""
        return self._conn.states()

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, wait (bounded) for its acks, close the channel."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not None:
                await self._stream.close(timeout)
        finally:
            self._stream = None
            if self._subscriptions is not None:
                await self._subscriptions.close()
            await self._conn.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ publish

    def publish_nowait(
        self,
        topic: str,
        payload: bytes | str,
        *,
        guaranteed: bool = False,
        headers: dict[str, str] | None = None,
        ttl_ms: int = 0,
        key: str = "",
    ) -> asyncio.Future[int | None]:
        """Queue an event without waiting; returns a future of its ack.

        The future resolves to the event id once a guaranteed event is durable
        (or fails with the node's refusal); for a direct event it is already
        resolved to None. Never waits: call `await drain()` now and then (or
        use `publish`) so the buffer and the in-flight window stay bounded.
        A guaranteed event is stored once however often it is sent again
        across reconnects; `key` (e.g. a source's position) makes that hold
        across clients too: the node stores one event per key within its
        de-duplication window and acks a repeat with the first copy's id.
        Raises InvalidTopic / InvalidArgument at once for a bad topic or an
        oversize payload, ClientClosed on a closed client, and the failure
        (once) of a stream that broke for good.
        """
        if topic not in self._valid_topics:
            self._check_topic(topic)
        if type(payload) is not bytes:
            payload = _as_bytes(payload)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise InvalidArgument(
                f"payload of {len(payload)} bytes is over the limit of {MAX_PAYLOAD_BYTES} bytes"
            )
        if key:
            if not guaranteed:
                raise InvalidArgument("a de-duplication key is for guaranteed events only")
            if len(key.encode()) > MAX_KEY_BYTES:
                raise InvalidArgument(f"key of {len(key.encode())} bytes is over {MAX_KEY_BYTES}")
        stream = self._stream
        if stream is None or stream.failure is not None:
            stream = self._open_stream()
        return stream.enqueue(topic, payload, guaranteed, headers, ttl_ms, key)

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        guaranteed: bool = False,
        headers: dict[str, str] | None = None,
        ttl_ms: int = 0,
        key: str = "",
        timeout: float | None = None,
    ) -> int | None:
        """Publish one event.

        Direct: returns None once queued (waits only while the outgoing buffer
        is full). Guaranteed: returns the event id once the node acked it
        durable, across reconnects; raises the node's refusal as a PlexusError
        (e.g. QueueFull), and Timeout when not acked within `timeout` seconds
        (the event may still be stored: publish it again with the same `key`
        to be sure it is stored once).
        """
        fut = self.publish_nowait(
            topic, payload, guaranteed=guaranteed, headers=headers, ttl_ms=ttl_ms, key=key
        )
        if guaranteed:
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(fut)
            except TimeoutError:
                raise Timeout(f"node at {self.address} acking {topic!r}", timeout) from None
        stream = self._stream
        if stream is not None and not stream.has_capacity:
            await stream.wait_for_capacity()
        return None

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the outgoing buffer and the in-flight window have room."""
        stream = self._stream
        if stream is not None:
            try:
                async with asyncio.timeout(timeout):
                    await stream.wait_for_capacity()
            except TimeoutError:
                raise Timeout(f"room in the publish buffer to {self.address}", timeout) from None

    async def flush(self, timeout: float | None = CALL_TIMEOUT_S) -> None:
        """Wait until the node has handled every event published so far.

        Raises the first error the node reported for a direct event since the
        last flush, Timeout, or the failure of a stream that broke for good.
        """
        stream = self._stream
        if stream is None:
            return
        try:
            await stream.flush(timeout)
        finally:
            if stream.failure is not None and self._stream is stream:
                self._stream = None

    @property
    def direct_errors(self) -> int:
        """Direct events the node refused on the current publish stream."""
        return self._stream.direct_errors if self._stream is not None else 0

    def publish_stats(self) -> dict[str, int]:
        """What reconnects did to publishing: `resent` guaranteed events sent again,
        `duplicates` of them the node had stored already, `direct_dropped` (refused or
        dropped while disconnected), `direct_unconfirmed` (written before a break and
        never confirmed handled: they may be lost)."""
        stream = self._stream
        if stream is None:
            return dict.fromkeys(
                ("resent", "duplicates", "direct_dropped", "direct_unconfirmed"), 0
            )
        return {
            "resent": stream.resent,
            "duplicates": stream.duplicates,
            "direct_dropped": stream.direct_dropped,
            "direct_unconfirmed": stream.direct_unconfirmed,
        }

    def _open_stream(self) -> PublishStream:
        if self._closed:
            raise ClientClosed(f"client for node at {self.address}")
        old = self._stream
        self._stream = None
        if old is not None and old.failure is not None:
            # Report a broken stream once; the next publish opens a new one.
            raise old.failure
        self._stream = PublishStream(self._conn, self._producer, self._direct_on_break)
        return self._stream

    def _check_topic(self, topic: str) -> None:
        validate_topic(topic)
        if len(self._valid_topics) >= _VALID_TOPICS_CACHED:
            self._valid_topics.clear()
        self._valid_topics.add(topic)

    # ------------------------------------------------------------ subscribe, consume

    def subscribe(self, pattern: str, *, buffer_events: int = 0) -> Subscription:
        """Subscribe to direct events matching `pattern` (an async iterator).

        Raises InvalidPattern at once for a malformed pattern.
        """
        from plexus.topics import validate_pattern

        validate_pattern(pattern)
        if buffer_events < 0:
            raise InvalidArgument(f"buffer_events must be 0 or more, got {buffer_events}")
        self._check_open()
        stream = self._subscriptions
        if stream is None or stream.failure is not None:
            # One stream carries every subscription; a new one after one that failed for good.
            stream = self._subscriptions = SubscriptionStream(self._conn)
        return Subscription(stream, pattern, buffer_events)

    def consume(
        self, queue: str, *, prefetch: int = 256, credit_on_receive: bool = False
    ) -> Consumer:
        """Consume `queue` (an async iterator of deliveries to ack or nack).

        The consumer binds on its first iteration (or `async with`); an unknown
        queue raises NotFound there.
        """
        if prefetch < 1:
            raise InvalidArgument(f"prefetch must be at least 1, got {prefetch}")
        self._check_open()
        return Consumer(self._conn, queue, prefetch, credit_on_receive)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed(f"client for node at {self.address}")

    # ------------------------------------------------------------ queues, node

    async def create_queue(
        self,
        name: str,
        subscriptions: list[str] | tuple[str, ...],
        *,
        exclusive: bool = False,
        max_depth: int = 0,
        max_bytes: int = 0,
        max_deliveries: int = 0,
        timeout: float | None = CALL_TIMEOUT_S,
    ) -> QueueInfo:
        """Create a durable queue receiving events published from now on that
        match any of `subscriptions`. Limits of 0 take the node's defaults."""
        from plexus.topics import validate_pattern

        if isinstance(subscriptions, str):
            subscriptions = [subscriptions]
        for pattern in subscriptions:
            validate_pattern(pattern)
        for field, value in (
            ("max_depth", max_depth),
            ("max_bytes", max_bytes),
            ("max_deliveries", max_deliveries),
        ):
            if value < 0:
                raise InvalidArgument(f"{field} must be 0 or more, got {value}")
        config = pb.QueueConfig(
            name=name,
            subscriptions=list(subscriptions),
            exclusive=exclusive,
            limits=pb.QueueLimits(
                max_depth=max_depth, max_bytes=max_bytes, max_deliveries=max_deliveries
            ),
        )
        info = await self._unary(
            "broker.CreateQueue", pb.CreateQueueRequest(config=config), timeout
        )
        return QueueInfo.from_proto(info)

    async def delete_queue(self, name: str, *, timeout: float | None = CALL_TIMEOUT_S) -> None:
        await self._unary("broker.DeleteQueue", pb.DeleteQueueRequest(name=name), timeout)

    async def list_queues(self, *, timeout: float | None = CALL_TIMEOUT_S) -> list[QueueInfo]:
        resp = await self._unary("broker.ListQueues", pb.ListQueuesRequest(), timeout)
        return [QueueInfo.from_proto(q) for q in resp.queues]

    async def describe_queue(
        self, name: str, *, timeout: float | None = CALL_TIMEOUT_S
    ) -> QueueInfo:
        info = await self._unary(
            "broker.DescribeQueue", pb.DescribeQueueRequest(name=name), timeout
        )
        return QueueInfo.from_proto(info)

    async def purge_queue(self, name: str, *, timeout: float | None = CALL_TIMEOUT_S) -> int:
        """Drop every event queued in `name` and not yet delivered; returns how many.

        Deliveries in flight stay with their consumers (acked, they are gone;
        nacked or let go, they are queued again). Raises NotFound for an
        unknown queue.
        """
        resp = await self._unary("broker.PurgeQueue", pb.PurgeQueueRequest(name=name), timeout)
        return int(resp.purged)

    async def node_info(self, *, timeout: float | None = CALL_TIMEOUT_S) -> NodeInfo:
        info = await self._unary("broker.GetNodeInfo", pb.NodeInfoRequest(), timeout)
        return NodeInfo.from_proto(info)

    async def report_status(
        self, status: Mapping[str, str], *, timeout: float | None = CALL_TIMEOUT_S
    ) -> None:
        """Tell the node what this client is doing (replacing what it said before): the
        node shows it with this connection in `clients()`. At most 32 keys of at most
        64 bytes, values of at most 1024 bytes; any valid token may report."""
        request = pb.ReportStatusRequest(status={str(k): str(v) for k, v in status.items()})
        await self._unary("broker.ReportStatus", request, timeout)

    async def clients(self, *, timeout: float | None = CALL_TIMEOUT_S) -> list[ClientInfo]:
        """The clients connected to the node now (connections with a stream open)."""
        resp = await self._unary("admin.ListClients", pb.ListClientsRequest(), timeout)
        return [ClientInfo.from_proto(c) for c in resp.clients]

    async def subscriptions(
        self, *, contains: str = "", limit: int = 200, timeout: float | None = CALL_TIMEOUT_S
    ) -> SubscriptionsView:
        """The node's direct and queue subscriptions whose pattern or queue name contains
        `contains` (case-sensitive), at most `limit` of them, by pattern, with how many
        matched in all."""
        if not isinstance(contains, str):
            raise InvalidArgument(f"contains must be text, got {type(contains).__name__}")
        if not 1 <= limit <= MAX_SUBSCRIPTIONS_LISTED:
            raise InvalidArgument(
                f"limit must be from 1 to {MAX_SUBSCRIPTIONS_LISTED}, got {limit}"
            )
        request = pb.ListSubscriptionsRequest(contains=contains, limit=limit)
        resp = await self._unary("admin.ListSubscriptions", request, timeout)
        return SubscriptionsView.from_proto(resp)

    # ------------------------------------------------------------ links (Admin)

    async def list_links(
        self, *, interest: bool = True, timeout: float | None = CALL_TIMEOUT_S
    ) -> LinksView:
        """The node's region, its links and the interest it learned from each region.

        `interest=False` leaves the interest out (`LinksView.interest` is empty):
        the answer stays small however many subscriptions the mesh holds, for a
        caller that only wants the links. A node that is not part of a cluster
        answers with no links.
        """
        request = pb.ListLinksRequest(without_interest=not interest)
        resp = await self._unary("admin.ListLinks", request, timeout)
        return LinksView.from_proto(resp)

    async def membership(self, *, timeout: float | None = CALL_TIMEOUT_S) -> dict[str, Any]:
        """The cluster's replicated membership as this node sees it: regions, links, and
        its Raft role, term and leader ("" role when the cluster runs without Raft)."""
        info = await self._unary("admin.GetMembership", pb.MembershipRequest(), timeout)
        return _membership_dict(info)

    async def remove_region(
        self, name: str, *, force: bool = False, timeout: float | None = CALL_TIMEOUT_S
    ) -> dict[str, Any]:
        """Remove region `name` from the cluster: it drains its spools (unless `force`) and
        stops, then leaves Raft. Ask any region but the one removed."""
        request = pb.RemoveRegionRequest(name=name, force=force)
        return _membership_dict(await self._unary("admin.RemoveRegion", request, timeout))

    async def add_link(
        self, a: str, b: str, *, timeout: float | None = CALL_TIMEOUT_S
    ) -> dict[str, Any]:
        """Link regions `a` and `b` (one replicated change); routes follow."""
        request = pb.LinkChangeRequest(a=a, b=b)
        return _membership_dict(await self._unary("admin.AddLink", request, timeout))

    async def remove_link(
        self, a: str, b: str, *, timeout: float | None = CALL_TIMEOUT_S
    ) -> dict[str, Any]:
        request = pb.LinkChangeRequest(a=a, b=b)
        return _membership_dict(await self._unary("admin.RemoveLink", request, timeout))

    async def explain(
        self, topic: str, *, timeout: float | None = CALL_TIMEOUT_S
    ) -> list[dict[str, Any]]:
        """Where an event on `topic` published at this node would go, without sending one.

        One dict per region (this one first): `region`, `path` (regions a direct
        event passes through), `guaranteed_path` (those a guaranteed event passes
        through: configured links only, waiting in a spool while one is down),
        `subscribers` (matching direct subscribers there),
        `queues` (queues there that would store it), `reachable`, `error`.
        """
        validate_topic(topic)
        resp = await self._unary("admin.Explain", pb.ExplainRequest(topic=topic), timeout)
        return [
            {
                "region": r.region,
                "path": list(r.path),
                "guaranteed_path": list(r.guaranteed_path),
                "subscribers": r.subscribers,
                "queues": list(r.queues),
                "reachable": r.reachable,
                "error": r.error,
            }
            for r in resp.regions
        ]

    async def set_link(
        self, peer: str, up: bool, *, timeout: float | None = CALL_TIMEOUT_S
    ) -> LinkInfo:
        """Take the link to region `peer` down (`up=False`) and hold it down, or
        let it come back (`up=True`); returns the link as it is right after.

        Raises NotFound when the node's region has no link to `peer`.
        """
        if not isinstance(peer, str) or not peer:
            raise InvalidArgument(f"peer must be a region name, got {peer!r}")
        resp = await self._unary("admin.SetLink", pb.SetLinkRequest(peer=peer, up=up), timeout)
        return LinkInfo.from_proto(resp.link)

    # ------------------------------------------------------------ tokens (Admin)

    async def create_token(
        self,
        name: str,
        *,
        publish: Sequence[str] = (),
        subscribe: Sequence[str] = (),
        consume: Sequence[str] = (),
        create: Sequence[str] = (),
        purge: Sequence[str] = (),
        admin: bool = False,
        expires_in_s: int | None = None,
        timeout: float | None = CALL_TIMEOUT_S,
    ) -> dict[str, Any]:
        """A new token signed by the cluster (needs admin): `token`, and its `name` and `id`.

        `publish`/`subscribe` are topic patterns; `consume`/`create`/`purge` queue
        names ("*": every queue); `admin` grants everything.
        """
        grants = pb.TokenGrants(
            publish=publish,
            subscribe=subscribe,
            consume=consume,
            create=create,
            purge=purge,
            admin=admin,
        )
        request = pb.CreateTokenRequest(name=name, grants=grants, expires_in_s=expires_in_s or 0)
        resp = await self._unary("admin.CreateToken", request, timeout)
        return {"token": resp.token, **token_dict(resp.info)}

    async def revoke_token(
        self, name: str = "", *, id: str = "", timeout: float | None = CALL_TIMEOUT_S
    ) -> None:
        """Revoke every token named `name`, or the one token `id`, in every region."""
        request = pb.RevokeTokenRequest(name=name, id=id)
        await self._unary("admin.RevokeToken", request, timeout)

    async def list_tokens(self, *, timeout: float | None = CALL_TIMEOUT_S) -> list[dict[str, Any]]:
        """The tokens made through the cluster (not those signed offline), revoked or not."""
        resp = await self._unary("admin.ListTokens", pb.ListTokensRequest(), timeout)
        return [token_dict(info) for info in resp.tokens]

    async def _unary(self, method: str, request: Any, timeout: float | None) -> Any:
        """Call `method` of the Broker or Admin service, waiting (bounded) for a reconnect
        under way first. Not retried: a call cut by a break raises Unavailable."""
        self._check_open()
        conn = self._conn
        await conn.usable(timeout)
        service, _, name = method.partition(".")
        stub = conn.admin if service == "admin" else conn.broker
        generation = conn.generation
        try:
            return await getattr(stub, name)(request, timeout=timeout, metadata=conn.metadata)
        except grpc.RpcError as exc:
            err = translate_rpc_error(exc, self.address, timeout)
            if isinstance(err, Unavailable):
                conn.broken(generation, str(err))
            raise err from None


def token_dict(info: pb.TokenInfo) -> dict[str, Any]:
    grants = info.grants
    return {
        "name": info.name,
        "id": info.id,
        "publish": list(grants.publish),
        "subscribe": list(grants.subscribe),
        "consume": list(grants.consume),
        "create": list(grants.create),
        "purge": list(grants.purge),
        "admin": grants.admin,
        "expires_at": info.expires_at or None,
        "issued_at": info.issued_at,
        "revoked": info.revoked,
    }


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    raise InvalidArgument(f"payload must be bytes or str, got {type(payload).__name__}")


def _membership_dict(info: pb.MembershipInfo) -> dict[str, Any]:
    return {
        "cluster": info.cluster,
        "region": info.region,
        "version": info.version,
        "raft": {
            "role": info.raft_role,
            "term": info.raft_term,
            "leader": info.raft_leader,
            "commit_index": info.raft_commit_index,
            "has_quorum": info.raft_has_quorum,
        },
        "regions": [{"name": r.name, "grpc": r.grpc, "raft": r.raft} for r in info.regions],
        "links": [link.split("-", 1) for link in info.links],
    }
