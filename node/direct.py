"""Direct delivery: subscribers with bounded buffers, fed from the subscription index.

A publisher never waits on a subscriber: fan-out appends pre-framed bytes to
each matching subscriber's buffer and wakes its sender. A full buffer
discards the new event for that subscriber only, counts it, and the next
event it does receive says how many it lost.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable

from node import framing
from plexus.topics import SubscriptionTrie

_ids = itertools.count(1)


class Subscriber:
    """One Subscribe stream: a bounded buffer of framed events and its wake-up."""

    __slots__ = (
        "buffer",
        "capacity",
        "delivered",
        "discarded",
        "id",
        "pattern",
        "pending_discards",
        "wake",
    )

    def __init__(self, pattern: str, capacity: int) -> None:
        self.id = next(_ids)
        self.pattern = pattern
        self.capacity = capacity
        self.buffer: list[bytes] = []
        self.wake = asyncio.Event()
        self.discarded = 0
        self.pending_discards = 0
        self.delivered = 0

    def offer(self, body: bytes, framed: bytes) -> bool:
        """Buffer one event; False (and counted) when the buffer is full."""
        if len(self.buffer) >= self.capacity:
            self.discarded += 1
            self.pending_discards += 1
            return False
        if self.pending_discards:
            framed = framing.frame(framing.with_discards(body, self.pending_discards))
            self.pending_discards = 0
        self.buffer.append(framed)
        return True

    def take(self) -> bytes:
        """Everything buffered, as one encoded EventBatch."""
        frames, self.buffer = self.buffer, []
        self.delivered += len(frames)
        return b"".join(frames)


class DirectRouter:
    """The local subscription index for direct events."""

    def __init__(self) -> None:
        self.index: SubscriptionTrie[Subscriber] = SubscriptionTrie()
        self.delivered = 0
        self.discarded = 0

    def add(self, subscriber: Subscriber) -> None:
        self.index.add(subscriber.pattern, subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        self.index.remove(subscriber.pattern, subscriber)

    def fan_out(self, events: Iterable[tuple[str, bytes, bytes]]) -> None:
        """Deliver (topic, body, framed) triples to every matching subscriber."""
        match = self.index.match
        woken: set[Subscriber] = set()
        delivered = discarded = 0
        for topic, body, framed in events:
            for subscriber in match(topic):
                if subscriber.offer(body, framed):
                    delivered += 1
                    woken.add(subscriber)
                else:
                    discarded += 1
        for subscriber in woken:
            subscriber.wake.set()
        self.delivered += delivered
        self.discarded += discarded
