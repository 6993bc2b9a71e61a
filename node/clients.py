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

A client may name itself (the `plexus-client-name` metadata of its calls) and
say what it is doing with ReportStatus (a connector's counters). A connection
that reported but has no stream open (a source that has not published yet)
stays listed for STATUS_TTL_S after its last report.
"""

from __future__ import annotations

import itertools
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from node.config import NodeConfig
from node.direct import Subscriber
from node.queues import Consumer
from plexus.errors import InvalidArgument, LimitReached
from plexus.v1 import plexus_pb2 as pb

log = logging.getLogger(__name__)

# The limit a per-event refusal's reason names, from its fields ("max depth" -> queue_max_depth).
_LIMIT_OF_REASON: dict[str, Callable[[Mapping[str, str]], str]] = {
    "QUEUE_FULL": lambda fields: "queue_" + fields.get("limit", "limit").replace(" ", "_"),
    "SPOOL_FULL": lambda _fields: "link_spool_quota",
    "STORAGE_FULL": lambda _fields: "storage_space",
    "LIMIT_REACHED": lambda fields: fields.get("limit", "limit"),
}

# The metadata key a client's name travels in (plexus.client.credentials sends it).
NAME_METADATA = "plexus-client-name"
MAX_NAME_CHARS = 100
# A reported status: at most this many keys, of these sizes (UTF-8 bytes).
MAX_STATUS_KEYS = 32
MAX_STATUS_KEY_BYTES = 64
MAX_STATUS_VALUE_BYTES = 1024
# How long a connection with no stream open stays listed after its last report
# (a connector reports every second).
STATUS_TTL_S = 5.0

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
        self.name = ""
        self.status: dict[str, str] = {}
        self.reported_at = 0.0  # time.monotonic() of the last report; 0: never

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
            name=self.name,
            status=self.status,
        )

    def reported_recently(self, now: float) -> bool:
        return bool(self.reported_at) and now - self.reported_at < STATUS_TTL_S


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
    def publishing(self, peer: str, name: str = "") -> Iterator[ConnectedClient]:
        """The client of `peer` while this Publish stream is open (it counts `published`)."""
        with self._stream(peer, name) as client:
            client.publishers += 1
            try:
                yield client
            finally:
                client.publishers -= 1

    @contextmanager
    def subscribing(self, peer: str, subscriber: Subscriber, name: str = "") -> Iterator[None]:
        """`subscriber` belongs to the client of `peer` while its Subscribe stream is open."""
        with self._stream(peer, name) as client:
            self.add_subscriber(client, subscriber)
            try:
                yield
            finally:
                self.remove_subscriber(client, subscriber)

    @contextmanager
    def holding_subscriptions(self, peer: str, name: str = "") -> Iterator[ConnectedClient]:
        """The client of `peer` while its Subscriptions stream is open (one stream, however
        many subscriptions it holds: each is added and removed on its own)."""
        with self._stream(peer, name) as client:
            yield client

    def add_subscriber(self, client: ConnectedClient, subscriber: Subscriber) -> None:
        """`subscriber` belongs to `client` (until removed); LimitReached past its limit."""
        if len(client.subscribers) >= self.max_subscriptions_per_client:
            self.hit(client, "max_subscriptions_per_client")
            raise LimitReached("max_subscriptions_per_client", self.max_subscriptions_per_client)
        subscriber.client_id = client.id
        client.subscribers[subscriber] = None

    def remove_subscriber(self, client: ConnectedClient, subscriber: Subscriber) -> None:
        del client.subscribers[subscriber]
        client.delivered_closed += subscriber.delivered
        client.discarded_closed += subscriber.discarded

    @contextmanager
    def consuming(
        self, peer: str, queue: str, consumer: Consumer, name: str = ""
    ) -> Iterator[None]:
        """`consumer` of `queue` belongs to the client of `peer` while its stream is open."""
        with self._stream(peer, name) as client:
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

    def report(self, peer: str, name: str, status: Mapping[str, str]) -> None:
        """Keep what the client of `peer` says of itself, replacing its last report."""
        check_status(status)
        self._forget_silent(time.monotonic())
        client = self.by_peer.get(peer) or self._admit(peer)
        if name:
            client.name = name
        client.status = dict(status)
        client.reported_at = time.monotonic()

    def infos(self) -> list[pb.ClientInfo]:
        """Every client, in the order they connected."""
        self._forget_silent(time.monotonic())
        return [c.info() for c in sorted(self.by_peer.values(), key=lambda c: c.id)]

    def _forget_silent(self, now: float) -> None:
        """Drop the connections with no stream open that stopped reporting."""
        for peer in [
            peer
            for peer, c in self.by_peer.items()
            if not c.streams and not c.reported_recently(now)
        ]:
            del self.by_peer[peer]

    def _admit(self, peer: str) -> ConnectedClient:
        if len(self.by_peer) >= self.max_connections:
            self.hit(None, "max_client_connections")
            raise LimitReached("max_client_connections", self.max_connections)
        client = ConnectedClient(next(self._ids), peer, time.time_ns() // 1_000_000)
        self.by_peer[peer] = client
        return client

    @contextmanager
    def _stream(self, peer: str, name: str = "") -> Iterator[ConnectedClient]:
        client = self.by_peer.get(peer)
        if client is None:
            client = self._admit(peer)
        elif client.streams >= self.max_streams_per_client:
            self.hit(client, "max_streams_per_client")
            raise LimitReached("max_streams_per_client", self.max_streams_per_client)
        if name:
            client.name = name
        client.streams += 1
        try:
            yield client
        finally:
            client.streams -= 1
            if not client.streams and not client.reported_recently(time.monotonic()):
                self.by_peer.pop(peer, None)


def client_name(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The name a client gave itself in its call metadata ("" when none), cut to a bound."""
    for key, value in metadata or ():
        if key == NAME_METADATA and isinstance(value, str):
            return value[:MAX_NAME_CHARS]
    return ""


def check_status(status: Mapping[str, str]) -> None:
    """Refuse a reported status over the bounds, naming the key."""
    if len(status) > MAX_STATUS_KEYS:
        raise InvalidArgument(f"status has {len(status)} keys, more than {MAX_STATUS_KEYS}")
    for key, value in status.items():
        if not key or len(key.encode()) > MAX_STATUS_KEY_BYTES:
            raise InvalidArgument(
                f"status key {key[:80]!r} must be 1 to {MAX_STATUS_KEY_BYTES} bytes"
            )
        if len(value.encode()) > MAX_STATUS_VALUE_BYTES:
            raise InvalidArgument(
                f"status {key!r} is {len(value.encode())} bytes, more than {MAX_STATUS_VALUE_BYTES}"
            )
