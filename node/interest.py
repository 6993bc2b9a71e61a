"""How the node tells the mesh about its local interest (subscriptions and queue subscriptions)."""

from __future__ import annotations

from typing import Protocol


class InterestSink(Protocol):
    def subscribe(self, pattern: str) -> None: ...

    def unsubscribe(self, pattern: str) -> None: ...


class NoInterestSink:
    """A node outside any cluster: nobody to tell."""

    def subscribe(self, pattern: str) -> None:
        pass

    def unsubscribe(self, pattern: str) -> None:
        pass
