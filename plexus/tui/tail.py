"""Sampling a live tail: at most so many lines a second, however fast events come.

Pure: the caller passes batch sizes and `now`. Past the budget the events are
counted, not shown, and the next window shows one in N evenly (N from the rate
of the window before). `pause_s` tells the reader how long to stop reading once
a window's budget is spent, so the node discards the surplus for this
subscriber (its bounded buffer) and the UI never falls behind; those discards
come back as `discarded_before` on the next event and count as skipped.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["Sampler", "event_line"]

PAYLOAD_CHARS = 60


class Sampler:
    def __init__(self, lines_per_s: int = 20, window_s: float = 1.0) -> None:
        self.budget = lines_per_s
        self.window_s = window_s
        self.seen = 0  # events that reached us, plus those the node discarded for us
        self.shown = 0
        self.rate = 0.0  # events per second in the last full window
        self._start: float | None = None
        self._seen_w = self._shown_w = 0
        self._stride = 1
        self._countdown = 0

    @property
    def skipped(self) -> int:
        return self.seen - self.shown

    @property
    def one_in(self) -> int:
        """Shown is one in this many events (1: every event is shown)."""
        return self._stride

    def offer(self, count: int, lost: int, now: float) -> list[int]:
        """Indices of the `count` events of a batch to show; `lost` were discarded before it."""
        self._roll(now)
        self.seen += count + lost
        self._seen_w += count + lost
        picked = []
        for i in range(count):
            self._countdown -= 1
            if self._countdown <= 0 and self._shown_w < self.budget:
                picked.append(i)
                self._shown_w += 1
                self._countdown = self._stride
        self.shown += len(picked)
        return picked

    def pause_s(self, now: float) -> float:
        """How long to stop reading: until the window ends once its budget is spent."""
        if self._start is None or self._shown_w < self.budget:
            return 0.0
        return max(0.0, self._start + self.window_s - now)

    def _roll(self, now: float) -> None:
        if self._start is None:
            self._start = now
        elapsed = now - self._start
        if elapsed < self.window_s:
            return
        self.rate = self._seen_w / elapsed
        self._stride = max(1, math.ceil(self.rate * self.window_s / self.budget))
        self._start, self._seen_w, self._shown_w = now, 0, 0


def event_line(
    publish_time_ms: int, origin: str, topic: str, payload: bytes, guaranteed: bool
) -> str:
    """One line per event: publish time, origin region, mode, topic, the payload's start."""
    when = datetime.fromtimestamp(publish_time_ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    text = payload[:PAYLOAD_CHARS].decode("utf-8", "replace")
    text = text.replace("\n", " ") + ("…" if len(payload) > PAYLOAD_CHARS else "")
    mode = "G" if guaranteed else "D"
    return f"{when} {origin:<6} {mode} {topic}  {text}"
