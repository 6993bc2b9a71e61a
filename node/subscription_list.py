"""The node's subscriptions for Admin.ListSubscriptions: searched, sorted, capped.

A node may hold tens of thousands of subscriptions and a UI searches them as
the user types, so the answer carries at most `limit` of them and the count
that matched; picking the first `limit` by pattern is a heap pass, not a sort
of everything.
"""

from __future__ import annotations

import heapq
from operator import attrgetter, itemgetter

from node.direct import DirectRouter
from node.queues import QueueTable
from plexus.v1 import plexus_pb2 as pb

DEFAULT_LIMIT = 200
MAX_LIMIT = 10_000

_by_pattern = attrgetter("pattern")
_first = itemgetter(0)


class SubscriptionList:
    """Direct subscriptions (from the router) and queue subscriptions (from the queues)."""

    def __init__(self, router: DirectRouter, queues: QueueTable) -> None:
        self.router = router
        self.queues = queues

    def find(self, contains: str, limit: int) -> pb.ListSubscriptionsResponse:
        """Those whose pattern or queue name contains `contains`, at most `limit` (0: 200)."""
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        direct = self.router.subscribers
        if contains:
            direct = {s for s in direct if contains in s.pattern}
        queued = [
            (pattern, queue.name)
            for queue in self.queues.by_name.values()
            for pattern in queue.config.subscriptions
            if contains in pattern or contains in queue.name
        ]
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
            for pattern, name in heapq.nsmallest(limit, queued, key=_first)
        )
        rows.sort(key=lambda r: (r.pattern, r.queue, r.client_id))
        return pb.ListSubscriptionsResponse(
            subscriptions=rows[:limit], total=len(direct) + len(queued)
        )
