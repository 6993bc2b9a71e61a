"""The clients connected to this node now, keyed by gRPC peer, for Admin.ListClients.

A client is a connection (one peer address) with at least one Publish,
Subscribe or Consume stream open: it is registered with its first stream and
forgotten with its last. Streams count on objects they already hold (publish
counts per batch, subscribers and consumers per write), so the hot path does
no lookups here; the totals are added up when someone asks.

The registry also holds the per-client limits (docs/architecture.md, "Limits"):
connections with streams open, streams per connection, subscriptions per
connection. A stream past one is refused with `LimitReached` (RESOURCE_EXHAUSTED)
naming the setting; each refusal by a limit is counted by the limit's name, per
client and for the node (`plexus clients`, `plexus_limit_hits_total`). gRPC
gives Python no cheap way to refuse a connection itself, so a connection over
the limit is refused stream by stream; unary calls (admin, node info) and links
are not counted, which is the reserve that keeps them working.
"""

from __future__ import annotations

import itertools
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from node.config import NodeConfig
from node.direct import Subscriber
from node.queues import Consumer
from plexus.errors import LimitReached
from plexus.v1 import plexus_pb2 as pb

log = logging.getLogger(__name__)

# The limit a per-event refusal's reason names, from its fields ("max depth" -> queue_max_depth).
_LIMIT_OF_REASON: dict[str, Callable[[Mapping[str, str]], str]] = {
    "QUEUE_FULL": lambda fields: "queue_" + fields.get("limit", "limit").replace(" ", "_"),
    "SPOOL_FULL": lambda _fields: "link_spool_quota",
    "STORAGE_FULL": lambda _fields: "storage_space",
    "LIMIT_REACHED": lambda fields: fields.get("limit", "limit"),
}

# Open files kept for what is not a client stream: LMDB, links, Raft, metrics, admin calls.
FD_RESERVE = 256
MIN_CLIENT_CONNECTIONS = 16
# The soft limit is raised to the hard limit, but no further than this (Linux refuses
# infinity, and code that walks every possible descriptor gets slow past it).
NOFILE_MAX = 1 << 20


def raise_open_file_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_MAX if hard == resource.RLIM_INFINITY else min(hard, NOFILE_MAX)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return NOFILE_MAX if soft == resource.RLIM_INFINITY else soft


def client_connection_limit(config: NodeConfig, open_files: int) -> int:
    """`max_client_connections`, or (0) the open-file limit less the reserve."""
    return config.max_client_connections or max(MIN_CLIENT_CONNECTIONS, open_files - FD_RESERVE)


class ConnectedClient:
    """One connection's open streams and counts."""

    def __init__(self, client_id: int, peer: str, since_ms: int) -> None:
        self.id = client_id
        self.peer = peer
        self.since_ms = since_ms
        self.streams = 0
        self.publishers = 0
        self.published = 0
        self.subscribers: dict[Subscriber, None] = {}
        self.consumers: dict[Consumer, str] = {}
        # What streams that have closed delivered and discarded.
        self.delivered_closed = 0
        self.discarded_closed = 0
        self.limits_hit: Counter[str] = Counter()

    def info(self) -> pb.ClientInfo:
        subscribers, consumers = self.subscribers, self.consumers
        return pb.ClientInfo(
            id=self.id,
            peer=self.peer,
            connected_since_ms=self.since_ms,
            publishers=self.publishers,
            subscriptions=[s.pattern for s in subscribers],
            consuming=list(consumers.values()),
            events_published=self.published,
            events_delivered=self.delivered_closed
            + sum(s.delivered for s in subscribers)
            + sum(c.delivered for c in consumers),
            events_discarded=self.discarded_closed + sum(s.discarded for s in subscribers),
            limits_hit=self.limits_hit,
        )


class ClientRegistry:
    """Every connected client, by peer address."""

    def __init__(
        self,
        max_connections: int = 1 << 20,
        max_streams_per_client: int = 1 << 20,
        max_subscriptions_per_client: int = 1 << 20,
    ) -> None:
        self.by_peer: dict[str, ConnectedClient] = {}
        self._ids = itertools.count(1)
        self.max_connections = max_connections
        self.max_streams_per_client = max_streams_per_client
        self.max_subscriptions_per_client = max_subscriptions_per_client
        # Refusals by limit since the node started, of clients gone too.
        self.limits_hit: Counter[str] = Counter()

    @classmethod
    def from_config(cls, config: NodeConfig, open_files: int) -> ClientRegistry:
        return cls(
            client_connection_limit(config, open_files),
            config.max_streams_per_client,
            config.max_subscriptions_per_client,
        )

    @contextmanager
    def publishing(self, peer: str) -> Iterator[ConnectedClient]:
        """The client of `peer` while this Publish stream is open (it counts `published`)."""
        with self._stream(peer) as client:
            client.publishers += 1
            try:
                yield client
            finally:
                client.publishers -= 1

    @contextmanager
    def subscribing(self, peer: str, subscriber: Subscriber) -> Iterator[None]:
        """`subscriber` belongs to the client of `peer` while its Subscribe stream is open."""
        with self._stream(peer) as client:
            if len(client.subscribers) >= self.max_subscriptions_per_client:
                self.hit(client, "max_subscriptions_per_client")
                raise LimitReached(
                    "max_subscriptions_per_client", self.max_subscriptions_per_client
                )
            subscriber.client_id = client.id
            client.subscribers[subscriber] = None
            try:
                yield
            finally:
                del client.subscribers[subscriber]
                client.delivered_closed += subscriber.delivered
                client.discarded_closed += subscriber.discarded

    @contextmanager
    def consuming(self, peer: str, queue: str, consumer: Consumer) -> Iterator[None]:
        """`consumer` of `queue` belongs to the client of `peer` while its stream is open."""
        with self._stream(peer) as client:
            client.consumers[consumer] = queue
            try:
                yield
            finally:
                del client.consumers[consumer]
                client.delivered_closed += consumer.delivered

    def hit(self, client: ConnectedClient | None, limit: str) -> None:
        """A limit refused `client` (None: one not admitted) something: count it."""
        self.limits_hit[limit] += 1
        if client is not None:
            client.limits_hit[limit] += 1

    def refused_events(self, client: ConnectedClient, acks: list[pb.PublishAck]) -> None:
        """Count the publishes a limit refused (a full queue, spool or disk) for `client`."""
        for ack in acks:
            limit = _LIMIT_OF_REASON.get(ack.error.reason) if ack.HasField("error") else None
            if limit is not None:
                self.hit(client, limit(ack.error.fields))

    def infos(self) -> list[pb.ClientInfo]:
        """Every client, in the order they connected."""
        return [c.info() for c in sorted(self.by_peer.values(), key=lambda c: c.id)]

    @contextmanager
    def _stream(self, peer: str) -> Iterator[ConnectedClient]:
        client = self.by_peer.get(peer)
        if client is None:
            if len(self.by_peer) >= self.max_connections:
                self.hit(None, "max_client_connections")
                raise LimitReached("max_client_connections", self.max_connections)
            client = ConnectedClient(next(self._ids), peer, time.time_ns() // 1_000_000)
            self.by_peer[peer] = client
        elif client.streams >= self.max_streams_per_client:
            self.hit(client, "max_streams_per_client")
            raise LimitReached("max_streams_per_client", self.max_streams_per_client)
        client.streams += 1
        try:
            yield client
        finally:
            client.streams -= 1
            if not client.streams:
                del self.by_peer[peer]
