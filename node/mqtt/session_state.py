"""What a persistent MQTT session keeps between connections: its subscriptions, and the
QoS 2 packet ids it received and has not seen released.

The front door holds a `SessionState` per client id while the node runs; the
session's durable queue holds its Plexus patterns, from which the filters come
back after a restart (`of_patterns`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from plexus.mqtt_topics import to_mqtt_topic, to_plexus_patterns

__all__ = ["SessionState", "filters_of_patterns"]


def filters_of_patterns(patterns: Iterable[str]) -> list[str]:
    """The MQTT topic filters whose Plexus patterns are `patterns` (`to_plexus_patterns`
    backwards; `a` and `a/>` give `a/#`): how a persistent session's subscriptions come
    back from its queue after a node restart."""
    filters = []
    for pattern in patterns:
        levels = pattern.split("/")
        filters.append(
            "/".join(
                "+"
                if level == "*"
                else "#"
                if level == ">"
                else to_mqtt_topic(level)
                if level != "%"
                else ""
                for level in levels
            )
        )
    covered = {f[:-2] for f in filters if f.endswith("/#")}
    return list(dict.fromkeys(f for f in filters if f not in covered))


@dataclass(slots=True)
class SessionState:
    """What a persistent session keeps across connections (the front door holds it while
    the node runs; the subscriptions also live in the session's durable queue)."""

    filters: dict[str, int] = field(default_factory=dict)  # topic filter -> granted QoS
    # The Plexus patterns each filter receives with (those of its patterns the token allows).
    patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    awaiting_release: set[int] = field(default_factory=set)  # inbound QoS 2 ids before PUBREL

    @classmethod
    def of_patterns(cls, patterns: Iterable[str]) -> SessionState:
        """The subscriptions a session's queue holds, back as QoS 1 filters (after a restart)."""
        held = set(patterns)
        state = cls()
        for topic_filter in filters_of_patterns(held):
            state.filters[topic_filter] = 1
            state.patterns[topic_filter] = tuple(
                p for p in to_plexus_patterns(topic_filter) if p in held
            )
        return state
