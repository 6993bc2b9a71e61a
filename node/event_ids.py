"""Event ids: unique within a region and time-ordered (see plexus.v1.Event.id)."""

from __future__ import annotations

# The low bits count events within one millisecond; the high bits are the time.
ID_SEQUENCE_BITS = 22


class EventIds:
    """Hands out ids: milliseconds in the high bits, a counter below, never repeating."""

    def __init__(self) -> None:
        self._last = 0

    def take(self, count: int, at_ms: int) -> int:
        """Reserve `count` consecutive ids; returns the first."""
        first = max(self._last + 1, at_ms << ID_SEQUENCE_BITS)
        self._last = first + count - 1
        return first


def publish_ms(event_id: int) -> int:
    """The publish time, Unix milliseconds, carried by an event id."""
    return event_id >> ID_SEQUENCE_BITS
