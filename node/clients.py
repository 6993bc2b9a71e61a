"""The clients connected to this node now, keyed by gRPC peer, for Admin.ListClients.

A client is a connection (one peer address) with at least one Publish,
Subscribe or Consume stream open: it is registered with its first stream and
forgotten with its last. Streams count on objects they already hold (publish
counts per batch, subscribers and consumers per write), so the hot path does
no lookups here; the totals are added up when someone asks.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager

from node.direct import Subscriber
from node.queues import Consumer
from plexus.v1 import plexus_pb2 as pb


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
        )


class ClientRegistry:
    """Every connected client, by peer address."""

    def __init__(self) -> None:
        self.by_peer: dict[str, ConnectedClient] = {}
        self._ids = itertools.count(1)

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

    def infos(self) -> list[pb.ClientInfo]:
        """Every client, in the order they connected."""
        return [c.info() for c in sorted(self.by_peer.values(), key=lambda c: c.id)]

    @contextmanager
    def _stream(self, peer: str) -> Iterator[ConnectedClient]:
        client = self.by_peer.get(peer)
        if client is None:
            client = ConnectedClient(next(self._ids), peer, time.time_ns() // 1_000_000)
            self.by_peer[peer] = client
        client.streams += 1
        try:
            yield client
        finally:
            client.streams -= 1
            if not client.streams:
                del self.by_peer[peer]
