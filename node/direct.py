"""Direct delivery: subscribers with bounded buffers, fed from the subscription index.

A publisher never waits on a subscriber: fan-out appends pre-framed bytes to
each matching subscriber's buffer and wakes its sender. A buffer is bounded in
events and in bytes (the encoded events, headers and topics included); a full
one discards the new event for that subscriber only, counts it, and the next
event it does receive says how many it lost. An empty buffer takes one event
of any size, so an event bigger than the byte bound is still delivered to a
subscriber that keeps up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable

from node import framing
from node.interest import InterestSink, NoInterestSink
from plexus.topics import SubscriptionTrie

_ids = itertools.count(1)


class Subscriber:
    """One subscription: a bounded buffer of framed events and its sender's wake-up."""

    __slots__ = (
        "buffer",
        "buffered_bytes",
        "capacity",
        "capacity_bytes",
        "client_id",
        "delivered",
        "discarded",
        "id",
        "pattern",
        "pending_discards",
        "size",
        "wake",
    )

    def __init__(
        self,
        pattern: str,
        capacity: int,
        capacity_bytes: int,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.id = next(_ids)
        self.pattern = pattern
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        # The connected client holding the subscription, set by node/clients.py.
        self.client_id = 0
        # Encoded events (one frame or a whole batch each) and how many events they hold.
        self.buffer: list[bytes] = []
        self.size = 0
        self.buffered_bytes = 0
        # Set when the buffer takes its first event (a sender may pass its own, to be told).
        self.wake = wake if wake is not None else asyncio.Event()
        self.discarded = 0
        self.pending_discards = 0
        self.delivered = 0

    def offer(self, framed: bytes) -> bool:
        """Buffer one framed event; False (and counted) when the buffer is full."""
        if self.size and (
            self.size >= self.capacity or self.buffered_bytes + len(framed) > self.capacity_bytes
        ):
            self.discarded += 1
            self.pending_discards += 1
            return False
        if self.pending_discards:
            body = framing.unframe(framed)
            framed = framing.frame(framing.with_discards(body, self.pending_discards))
            self.pending_discards = 0
        self._append(framed, 1)
        return True

    def offer_batch(self, batch: bytes, count: int) -> bool:
        """Buffer an encoded batch of `count` events whole, if it fits and owes no discard note."""
        if (
            self.pending_discards
            or self.size + count > self.capacity
            or self.buffered_bytes + len(batch) > self.capacity_bytes
        ):
            return False
        self._append(batch, count)
        return True

    def _append(self, encoded: bytes, count: int) -> None:
        if not self.size:
            self.wake.set()
        self.buffer.append(encoded)
        self.size += count
        self.buffered_bytes += len(encoded)

    def take(self) -> bytes:
        """Everything buffered, as one encoded EventBatch."""
        return b"".join(self.take_chunks()[0])

    def take_chunks(self) -> tuple[list[bytes], int]:
        """Everything buffered, as the parts of one encoded EventBatch, and their length."""
        chunks, self.buffer = self.buffer, []
        size = self.buffered_bytes
        self.delivered += self.size
        self.size = 0
        self.buffered_bytes = 0
        return chunks, size


class DirectRouter:
    """The local subscription index for direct events."""

    def __init__(self, interest: InterestSink | None = None) -> None:
        self.interest: InterestSink = interest or NoInterestSink()
        self.index: SubscriptionTrie[Subscriber] = SubscriptionTrie()
        self.subscribers: set[Subscriber] = set()
        # Counts of subscribers that have left; live ones keep their own.
        self.delivered_gone = 0
        self.discarded_gone = 0

    def add(self, subscriber: Subscriber) -> None:
        self.index.add(subscriber.pattern, subscriber)
        self.subscribers.add(subscriber)
        self.interest.subscribe(subscriber.pattern)

    def remove(self, subscriber: Subscriber) -> None:
        self.index.remove(subscriber.pattern, subscriber)
        self.subscribers.discard(subscriber)
        self.interest.unsubscribe(subscriber.pattern)
        self.delivered_gone += subscriber.delivered
        self.discarded_gone += subscriber.discarded

    def counts(self) -> tuple[int, int]:
        """(delivered, discarded) over every subscriber, past and present."""
        live = self.subscribers
        return (
            self.delivered_gone + sum(s.delivered for s in live),
            self.discarded_gone + sum(s.discarded for s in live),
        )

    def fan_out(self, events: Iterable[tuple[str, bytes]]) -> None:
        """Deliver (topic, encoded event) pairs to every matching subscriber."""
        match = self.index.match
        for topic, data in events:
            subscribers = match(topic)
            if subscribers:
                framed = framing.frame(data)
                for subscriber in subscribers:
                    subscriber.offer(framed)
