"""Rates from counters: events per second between two readings of a growing counter."""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["Rates"]


class Rates:
    """Remembers the last reading of each counter; `per_s` gives the rate since then.

    The first reading of a counter, and one that went down (the node restarted),
    give 0.0. Pure: the caller passes `now` (seconds, monotonic).
    """

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple[float, int]] = {}

    def per_s(self, key: Hashable, counter: int, now: float) -> float:
        last = self._last.get(key)
        self._last[key] = (now, counter)
        if last is None or counter < last[1] or now <= last[0]:
            return 0.0
        return (counter - last[1]) / (now - last[0])
