"""`Client`: the asyncio SDK's entry point, one connection to one node."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from plexus.client.channel import open_channel, parse_address, translate_rpc_error
from plexus.client.consumer import Consumer
from plexus.client.info import (
    ClientInfo,
    LinkInfo,
    LinksView,
    NodeInfo,
    QueueInfo,
    SubscriptionsView,
)
from plexus.client.publisher import PublishStream
from plexus.client.subscription import Subscription
from plexus.errors import InvalidArgument, Unavailable
from plexus.topics import validate_topic
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as pb_grpc

__all__ = ["MAX_PAYLOAD_BYTES", "Client"]

MAX_PAYLOAD_BYTES = 1024 * 1024
# Distinct topics remembered as valid, so hot topics are validated once.
_VALID_TOPICS_CACHED = 10_000
# Subscriptions listed per call at most (the node's cap too).
MAX_SUBSCRIPTIONS_LISTED = 10_000


class Client:
    """A connection to one Plexus node.

    ::

        async with await Client.connect("127.0.0.1:7000") as client:
            await client.publish("orders/us/1", b'{"id": 1}')
            event_id = await client.publish("orders/us/2", b"...", guaranteed=True)

    Publishing uses one long-lived stream per client and batches for you;
    `publish_nowait` pipelines many events, `flush` waits until the node has
    handled everything published so far.
    """

    def __init__(self, address: str, channel: aio.Channel) -> None:
        self.address = address
        self._channel = channel
        self._stub = pb_grpc.BrokerStub(channel)
        self._admin = pb_grpc.AdminStub(channel)
        self._stream: PublishStream | None = None
        self._valid_topics: set[str] = set()
        self._closed = False

    @classmethod
    async def connect(cls, address: str, timeout: float = 5.0) -> Client:
        """Open a channel to `address` (HOST:PORT) and check the node answers.

        Raises InvalidArgument for a malformed address and Unavailable, naming
        the address, when no node answers within `timeout` seconds.
        """
        parse_address(address)
        client = cls(address, open_channel(address))
        try:
            await client._stub.GetNodeInfo(pb.NodeInfoRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            await client._channel.close()
            err = translate_rpc_error(exc, address)
            if isinstance(err, Unavailable):
                err = Unavailable(
                    f"cannot reach node at {address}: {_unreachable_reason(exc, timeout)}"
                )
            raise err from None
        except BaseException:
            await client._channel.close()
            raise
        return client

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
            await self._channel.close()

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
    ) -> asyncio.Future[int | None]:
        """Queue an event without waiting; returns a future of its ack.

        The future resolves to the event id once a guaranteed event is durable
        (or fails with the node's refusal); for a direct event it is already
        resolved to None. Never waits: call `await drain()` now and then (or
        use `publish`) so the buffer and the in-flight window stay bounded.
        Raises InvalidTopic / InvalidArgument at once for a bad topic or an
        oversize payload, and Unavailable (once) when the stream broke.
        """
        if topic not in self._valid_topics:
            self._check_topic(topic)
        if type(payload) is not bytes:
            payload = _as_bytes(payload)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise InvalidArgument(
                f"payload of {len(payload)} bytes is over the limit of {MAX_PAYLOAD_BYTES} bytes"
            )
        stream = self._stream
        if stream is None or stream.failure is not None:
            stream = self._open_stream()
        return stream.enqueue(topic, payload, guaranteed, headers, ttl_ms)

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        guaranteed: bool = False,
        headers: dict[str, str] | None = None,
        ttl_ms: int = 0,
    ) -> int | None:
        """Publish one event.

        Direct: returns None once queued (waits only while the outgoing buffer
        is full). Guaranteed: returns the event id once the node acked it
        durable; raises the node's refusal as a PlexusError (e.g. QueueFull).
        """
        fut = self.publish_nowait(
            topic, payload, guaranteed=guaranteed, headers=headers, ttl_ms=ttl_ms
        )
        if guaranteed:
            return await fut
        stream = self._stream
        if stream is not None and not stream.has_capacity:
            await stream.wait_for_capacity()
        return None

    async def drain(self) -> None:
        """Wait until the outgoing buffer and the in-flight window have room."""
        stream = self._stream
        if stream is not None:
            await stream.wait_for_capacity()

    async def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until the node has handled every event published so far.

        Raises the first error the node reported for a direct event since the
        last flush, or Unavailable when the publish stream broke.
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

    def _open_stream(self) -> PublishStream:
        if self._closed:
            raise Unavailable(f"client for node at {self.address} is closed")
        old = self._stream
        self._stream = None
        if old is not None and old.failure is not None:
            # Report a broken stream once; the next publish opens a new one.
            raise old.failure
        self._stream = PublishStream(self._channel, self.address)
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
        return Subscription(self._stub, self.address, pattern, buffer_events)

    def consume(
        self, queue: str, *, prefetch: int = 256, credit_on_receive: bool = False
    ) -> Consumer:
        """Consume `queue` (an async iterator of deliveries to ack or nack).

        The consumer binds on its first iteration (or `async with`); an unknown
        queue raises NotFound there.
        """
        if prefetch < 1:
            raise InvalidArgument(f"prefetch must be at least 1, got {prefetch}")
        return Consumer(self._stub, self.address, queue, prefetch, credit_on_receive)

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
        info = await self._unary(self._stub.CreateQueue, pb.CreateQueueRequest(config=config))
        return QueueInfo.from_proto(info)

    async def delete_queue(self, name: str) -> None:
        await self._unary(self._stub.DeleteQueue, pb.DeleteQueueRequest(name=name))

    async def list_queues(self) -> list[QueueInfo]:
        resp = await self._unary(self._stub.ListQueues, pb.ListQueuesRequest())
        return [QueueInfo.from_proto(q) for q in resp.queues]

    async def describe_queue(self, name: str) -> QueueInfo:
        info = await self._unary(self._stub.DescribeQueue, pb.DescribeQueueRequest(name=name))
        return QueueInfo.from_proto(info)

    async def purge_queue(self, name: str) -> int:
        """Drop every event queued in `name` and not yet delivered; returns how many.

        Deliveries in flight stay with their consumers (acked, they are gone;
        nacked or let go, they are queued again). Raises NotFound for an
        unknown queue.
        """
        resp = await self._unary(self._stub.PurgeQueue, pb.PurgeQueueRequest(name=name))
        return int(resp.purged)

    async def node_info(self) -> NodeInfo:
        info = await self._unary(self._stub.GetNodeInfo, pb.NodeInfoRequest())
        return NodeInfo.from_proto(info)

    async def clients(self) -> list[ClientInfo]:
        """The clients connected to the node now (connections with a stream open)."""
        resp = await self._unary(self._admin.ListClients, pb.ListClientsRequest())
        return [ClientInfo.from_proto(c) for c in resp.clients]

    async def subscriptions(self, *, contains: str = "", limit: int = 200) -> SubscriptionsView:
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
        resp = await self._unary(self._admin.ListSubscriptions, request)
        return SubscriptionsView.from_proto(resp)

    # ------------------------------------------------------------ links (Admin)

    async def list_links(self, *, interest: bool = True) -> LinksView:
        """The node's region, its links and the interest it learned from each region.

        `interest=False` leaves the interest out (`LinksView.interest` is empty):
        the answer stays small however many subscriptions the mesh holds, for a
        caller that only wants the links. A node that is not part of a cluster
        answers with no links.
        """
        request = pb.ListLinksRequest(without_interest=not interest)
        resp = await self._unary(self._admin.ListLinks, request)
        return LinksView.from_proto(resp)

    async def membership(self) -> dict[str, Any]:
        """The cluster's replicated membership as this node sees it: regions, links, and
        its Raft role, term and leader ("" role when the cluster runs without Raft)."""
        info = await self._unary(self._admin.GetMembership, pb.MembershipRequest())
        return _membership_dict(info)

    async def remove_region(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """Remove region `name` from the cluster: it drains its spools (unless `force`) and
        stops, then leaves Raft. Ask any region but the one removed."""
        request = pb.RemoveRegionRequest(name=name, force=force)
        return _membership_dict(await self._unary(self._admin.RemoveRegion, request))

    async def add_link(self, a: str, b: str) -> dict[str, Any]:
        """Link regions `a` and `b` (one replicated change); routes follow."""
        request = pb.LinkChangeRequest(a=a, b=b)
        return _membership_dict(await self._unary(self._admin.AddLink, request))

    async def remove_link(self, a: str, b: str) -> dict[str, Any]:
        request = pb.LinkChangeRequest(a=a, b=b)
        return _membership_dict(await self._unary(self._admin.RemoveLink, request))

    async def explain(self, topic: str) -> list[dict[str, Any]]:
        """Where an event on `topic` published at this node would go, without sending one.

        One dict per region (this one first): `region`, `path` (regions the event
        passes through), `subscribers` (matching direct subscribers there),
        `queues` (queues there that would store it), `reachable`, `error`.
        """
        validate_topic(topic)
        resp = await self._unary(self._admin.Explain, pb.ExplainRequest(topic=topic))
        return [
            {
                "region": r.region,
                "path": list(r.path),
                "subscribers": r.subscribers,
                "queues": list(r.queues),
                "reachable": r.reachable,
                "error": r.error,
            }
            for r in resp.regions
        ]

    async def set_link(self, peer: str, up: bool) -> LinkInfo:
        """Take the link to region `peer` down (`up=False`) and hold it down, or
        let it come back (`up=True`); returns the link as it is right after.

        Raises NotFound when the node's region has no link to `peer`.
        """
        if not isinstance(peer, str) or not peer:
            raise InvalidArgument(f"peer must be a region name, got {peer!r}")
        resp = await self._unary(self._admin.SetLink, pb.SetLinkRequest(peer=peer, up=up))
        return LinkInfo.from_proto(resp.link)

    async def _unary(self, method, request, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        if self._closed:
            raise Unavailable(f"client for node at {self.address} is closed")
        try:
            return await method(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise translate_rpc_error(exc, self.address) from None


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    raise InvalidArgument(f"payload must be bytes or str, got {type(payload).__name__}")


def _unreachable_reason(exc: grpc.RpcError, timeout: float) -> str:
    """A short reason from gRPC's long connection-failure details."""
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout} s"
    details = exc.details() or ""
    for needle, reason in (
        ("Connection refused", "connection refused (is the node running?)"),
        ("DNS resolution failed", "unknown host"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
    ):
        if needle in details:
            return reason
    return details.splitlines()[0] if details else "unavailable"


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
