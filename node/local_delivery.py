"""Delivery in this region of events that came over a link (federation's `LocalDelivery`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from federation.spools import LinkSpools
from node.direct import DirectRouter
from node.publishing import Publisher


class RelayedDelivery:
    """The mesh's `LocalDelivery`: events that reached this region over a link."""

    def __init__(self, router: DirectRouter) -> None:
        self.router = router
        self.publisher: Publisher | None = None
        self.spools: LinkSpools | None = None

    def deliver_direct(self, items: list[tuple[str, bytes]]) -> None:
        self.router.fan_out(items)

    def store_guaranteed(
        self, peer: str, events: list[Any], upto: int, done: Callable[[], None]
    ) -> None:
        assert self.publisher is not None and self.spools is not None
        link = self.spools.links[peer]
        store = self.spools.store

        def record(txn: Any) -> None:
            store.set_received(txn, link.link_id, upto)

        def landed() -> None:
            link.received_upto = upto
            done()

        self.publisher.store_relayed(events, upto, record, landed)
