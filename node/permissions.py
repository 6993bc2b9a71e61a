"""What one client may do: its token's grants, checked with the topic index, never a regex.

Publish permission is a subscription trie of the token's publish patterns
(the same index routing uses) behind a bounded per-token cache of topics, so
the hot path is one hash per event (a batch's topics as a set, included in the
topics known allowed); a subscription is allowed when a
subscribe pattern covers it (federation/covering.py). Queues are named
exactly, or "*" for every queue. `admin` grants everything.
"""

from __future__ import annotations

from collections.abc import Iterable

from federation.covering import PatternSet
from plexus.errors import NotPermitted
from plexus.tokens import ANY_QUEUE, Grants
from plexus.topics import SubscriptionTrie, validate_pattern

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
        # Topics known allowed, and known refused (bounded together).
        self._allowed: set[str] = set()
        self._refused: set[str] = set()
        self._subscribe = PatternSet(grants.subscribe)
        self._queues = {
            "consume": frozenset(grants.consume),
            "create": frozenset(grants.create),
            "purge": frozenset(grants.purge),
        }

    def may_publish_all(self, topics: set[str]) -> bool:
        """Whether every one of `topics` may be published: a set inclusion when all are known."""
        return topics <= self._allowed or all(self.may_publish(t) for t in topics)

    def may_publish(self, topic: str) -> bool:
        if topic in self._allowed:
            return True
        if topic in self._refused:
            return False
        allowed = self.publishes_anywhere or bool(self._publish.match(topic))
        if len(self._allowed) + len(self._refused) >= PUBLISH_CACHE_TOPICS:
            self._allowed.clear()
            self._refused.clear()
        (self._allowed if allowed else self._refused).add(topic)
        return allowed

    def publish_refusal(self, topic: str) -> NotPermitted:
        return NotPermitted(self.name, "publish", topic)

    def require_subscribe(self, patterns: Iterable[str]) -> None:
        if self.admin:
            return
        for pattern in patterns:
            validate_pattern(pattern)  # covering assumes a valid pattern
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
