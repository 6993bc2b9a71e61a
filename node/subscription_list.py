"""The node's subscriptions for Admin.ListSubscriptions: searched, sorted, capped.

A node may hold tens of thousands of subscriptions and a UI searches them as
the user types, so the answer carries at most `limit` of them and the count
that matched. The first `limit` direct ones by pattern come from one heap pass,
and each queue keeps its patterns sorted, so nothing sorts everything.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection
from itertools import islice, repeat
from operator import attrgetter

from node.direct import DirectRouter, Subscriber
from node.queues import QueueTable
from plexus.v1 import plexus_pb2 as pb

DEFAULT_LIMIT = 200
MAX_LIMIT = 10_000

_by_pattern = attrgetter("pattern")


class SubscriptionList:
    """Direct subscriptions (from the router) and queue subscriptions (from the queues)."""

    def __init__(self, router: DirectRouter, queues: QueueTable) -> None:
        self.router = router
        self.queues = queues

    def find(self, contains: str, limit: int) -> pb.ListSubscriptionsResponse:
        """Those whose pattern or queue name contains `contains`, at most `limit` (0: 200)."""
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        direct: Collection[Subscriber] = self.router.subscribers
        if contains:
            direct = [s for s in direct if contains in s.pattern]
        total = len(direct)
        per_queue = []
        for queue in self.queues.by_name.values():
            patterns = queue.subscriptions
            if contains not in queue.name:
                patterns = tuple(p for p in patterns if contains in p)
            total += len(patterns)
            per_queue.append(zip(patterns[:limit], repeat(queue.name)))
        rows = [
            pb.SubscriptionInfo(
                pattern=s.pattern,
                client_id=s.client_id,
                delivered=s.delivered,
                discarded=s.discarded,
                buffered=s.size,
                buffer_events=s.capacity,
            )
            for s in heapq.nsmallest(limit, direct, key=_by_pattern)
        ]
        rows += (
            pb.SubscriptionInfo(pattern=pattern, queue=name)
            for pattern, name in islice(heapq.merge(*per_queue), limit)
        )
        rows.sort(key=lambda r: (r.pattern, r.queue, r.client_id))
        return pb.ListSubscriptionsResponse(subscriptions=rows[:limit], total=total)
