"""What one client may do: its token's grants, checked with the topic index, never a regex.

Publish permission is a subscription trie of the token's publish patterns
(the same index routing uses) behind a bounded per-token cache of topics, so
the hot path is one dict lookup per event; a subscription is allowed when a
subscribe pattern covers it (federation/covering.py). Queues are named
exactly, or "*" for every queue. `admin` grants everything.
"""

from __future__ import annotations

from collections.abc import Iterable

from federation.covering import PatternSet
from plexus.errors import NotPermitted
from plexus.tokens import ANY_QUEUE, Grants
from plexus.topics import SubscriptionTrie

# Topics remembered per token (then the cache starts again).
PUBLISH_CACHE_TOPICS = 16_384
EVERY_TOPIC = ">"


class Access:
    """The checks for one identity. `name` is the token's name, shown in every refusal."""

    def __init__(self, name: str, grants: Grants) -> None:
        self.name = name
        self.admin = grants.admin
        # True: every topic may be published, so a publish needs no check per event.
        self.publishes_anywhere = grants.admin or EVERY_TOPIC in grants.publish
        self._publish = SubscriptionTrie[bool](cache_size=0)  # cached here, per topic
        for pattern in grants.publish:
            self._publish.add(pattern, True)
        self._published: dict[str, bool] = {}
        self._subscribe = PatternSet(grants.subscribe)
        self._queues = {
            "consume": frozenset(grants.consume),
            "create": frozenset(grants.create),
            "purge": frozenset(grants.purge),
        }

    def may_publish(self, topic: str) -> bool:
        allowed = self._published.get(topic)
        if allowed is None:
            allowed = self.publishes_anywhere or bool(self._publish.match(topic))
            if len(self._published) >= PUBLISH_CACHE_TOPICS:
                self._published.clear()
            self._published[topic] = allowed
        return allowed

    def publish_refusal(self, topic: str) -> NotPermitted:
        return NotPermitted(self.name, "publish", topic)

    def require_subscribe(self, patterns: Iterable[str]) -> None:
        if self.admin:
            return
        for pattern in patterns:
            if next(self._subscribe.covering(pattern), None) is None:
                raise NotPermitted(self.name, "subscribe", pattern)

    def require_queue(self, permission: str, queue: str) -> None:
        """`permission` is consume, create or purge."""
        if self.admin:
            return
        names = self._queues[permission]
        if queue not in names and ANY_QUEUE not in names:
            raise NotPermitted(self.name, permission, queue)

    def require_admin(self) -> None:
        if not self.admin:
            raise NotPermitted(self.name, "admin")


# A node without a token key runs open: every caller may do everything.
OPEN = Access("open", Grants(admin=True))
