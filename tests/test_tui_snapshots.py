"""Snapshots of the main screens of `plexus top` (pytest-textual-snapshot).

The views are fed a fixed snapshot of a mesh at the outermost edge, the data
source, so the pictures are the same on every run. After a deliberate change:
`.venv/bin/pytest tests/test_tui_snapshots.py --snapshot-update`, then look at
the SVGs under tests/__snapshots__/.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from plexus.client.info import SubscriptionInfo, SubscriptionsView
from plexus.errors import Unavailable
from plexus.tui.app import TopApp
from plexus.tui.model import (
    ClientRow,
    LinkState,
    Mesh,
    QueueRow,
    RegionDetail,
    RegionState,
    SpoolRow,
)
from tests.harness import eventually

pytestmark = pytest.mark.timeout(60)

SIZE = (80, 24)


class FixedSource:
    """Always the same mesh and region details; no node behind it."""

    title = "fixed"

    def __init__(self, mesh: Mesh, details: dict[str, RegionDetail] | None = None) -> None:
        self._mesh, self._details = mesh, details or {}

    async def mesh(self) -> Mesh:
        return self._mesh

    async def region(self, name: str) -> RegionDetail:
        if name not in self._details:
            raise Unavailable(f"no detail of region {name} in this snapshot")
        return self._details[name]

    async def clients(self, region: str) -> tuple[ClientRow, ...]:
        return CLIENTS

    async def subscriptions(self, region: str, contains: str, limit: int) -> SubscriptionsView:
        found = [s for s in SUBSCRIPTIONS if contains in s.pattern or contains in s.queue]
        return SubscriptionsView(tuple(found[:limit]), total=len(found))

    async def client(self, region: str) -> Any:
        raise Unavailable("a fixed snapshot has no nodes")

    async def close(self) -> None:
        pass


def regions(*names: str, down: tuple[str, ...] = ()) -> tuple[RegionState, ...]:
    return tuple(
        RegionState(
            name,
            f"127.0.0.1:{7000 + i}",
            name not in down,
            raft_role="leader" if i == 0 else "follower",
            raft_term=3,
            error="cannot reach node at 127.0.0.1:7002: connection refused" if name in down else "",
        )
        for i, name in enumerate(names)
    )


DEFAULT = Mesh(
    "local",
    regions("us", "eu", "ap"),
    (
        LinkState("us", "eu", "up", rate_ab=1520.0, rate_ba=48.0),
        LinkState("us", "ap", "up", rate_ab=730.0, rate_ba=0.0),
        LinkState("eu", "ap", "connecting"),
    ),
)
TWELVE = [f"r{i:02d}" for i in range(12)]
HUB = Mesh(
    "hub-and-spoke-12",
    regions(*TWELVE, down=("r07",)),
    tuple(
        LinkState("r00", r, "down" if r == "r07" else "up", rate_ab=100.0 * i, rate_ba=7.0 * i)
        for i, r in enumerate(TWELVE[1:], 1)
    ),
)
FULL = Mesh(
    "full-mesh-12",
    regions(*TWELVE),
    tuple(
        LinkState(a, b, "up", rate_ab=float(10 * i + j), rate_ba=float(i * j))
        for i, a in enumerate(TWELVE)
        for j, b in enumerate(TWELVE)
        if i < j
    ),
)
EU = RegionDetail(
    name="eu",
    address="127.0.0.1:7001",
    version="0.1.0",
    uptime_ms=3_723_000,
    metrics_address="127.0.0.1:9101",
    raft_role="follower",
    raft_term=3,
    raft_leader="us",
    subscriptions=42,
    rate_in=1568.0,
    rate_out=2210.0,
    discarded=17,
    queues=(
        QueueRow("billing", 12_400, 2, 512, 1500.0, 1480.0, 2_300, 3),
        QueueRow("audit", 0, 1, 0, 0.0, 0.0, 0, 0),
    ),
    spools=(
        SpoolRow("us", "up", 0, 0, 0, False, ""),
        SpoolRow("ap", "connecting", 3_100, 45_000, 12, False, "peer closed the stream"),
    ),
)

CLIENTS = (
    ClientRow(1, "ipv4:127.0.0.1:50312", 3_600_000, 2, 1, (), 1_204_000, 310, 0),
    ClientRow(4, "ipv4:127.0.0.1:50340", 95_000, 0, 2, (), 0, 88_310, 17),
    ClientRow(7, "ipv6:[::1]:50402", 4_000, 0, 0, ("billing",), 0, 12_033, 0),
)
SUBSCRIPTIONS = tuple(
    sorted(
        [
            SubscriptionInfo("orders/>", "", 4, 88_000, 17, 12, 1000),
            SubscriptionInfo("orders/eu/*", "", 4, 310, 0, 0, 1000),
            SubscriptionInfo("orders/>", "billing", 0, 0, 0, 0, 0),
            SubscriptionInfo("audit/>", "audit", 0, 0, 0, 0, 0),
        ]
        + [SubscriptionInfo(f"sensors/s{i:03d}/>", "", 9, i, 0, 0, 100) for i in range(300)],
        key=lambda s: (s.pattern, s.queue, s.client_id),
    )
)


async def loaded(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, TopApp)
    await eventually(lambda: app.refreshes > 0, 10, "the first refresh")


def test_topology_of_the_default_cluster(snap_compare: Any) -> None:
    assert snap_compare(TopApp(FixedSource(DEFAULT)), terminal_size=SIZE, run_before=loaded)


def test_topology_of_twelve_regions_hub_and_spoke_with_one_down(snap_compare: Any) -> None:
    app = TopApp(FixedSource(HUB))
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded, press=["right", "down"])


def test_topology_of_a_twelve_region_full_mesh_is_a_matrix(snap_compare: Any) -> None:
    assert snap_compare(TopApp(FixedSource(FULL)), terminal_size=SIZE, run_before=loaded)


async def region_eu(pilot: Pilot[None]) -> None:
    await loaded(pilot)
    await pilot.press("right", "enter")
    await eventually(lambda: getattr(pilot.app.screen, "detail", None) is not None, 10, "detail")


def test_region_view(snap_compare: Any) -> None:
    app = TopApp(FixedSource(DEFAULT, {"eu": EU}))
    assert snap_compare(app, terminal_size=SIZE, run_before=region_eu)


def test_clients_of_a_region(snap_compare: Any) -> None:
    app = TopApp(FixedSource(DEFAULT, {"eu": EU}))

    async def opened(pilot: Pilot[None]) -> None:
        await region_eu(pilot)
        await pilot.press("c")
        await eventually(lambda: getattr(app.screen, "clients", None), 10, "the clients")

    assert snap_compare(app, terminal_size=SIZE, run_before=opened)


def test_subscriptions_searched_show_how_many_matched(snap_compare: Any) -> None:
    app = TopApp(FixedSource(DEFAULT, {"eu": EU}))

    async def searched(pilot: Pilot[None]) -> None:
        await region_eu(pilot)
        await pilot.press("slash", *"sensors")
        await eventually(
            lambda: getattr(getattr(app.screen, "found", None), "total", 0) == 300, 10, "search"
        )

    assert snap_compare(app, terminal_size=SIZE, run_before=searched)


def test_purging_a_queue_asks_for_confirmation(snap_compare: Any) -> None:
    app = TopApp(FixedSource(DEFAULT, {"eu": EU}))
    assert snap_compare(app, terminal_size=SIZE, run_before=region_eu, press=["p"])


def test_help_lists_every_key(snap_compare: Any) -> None:
    app = TopApp(FixedSource(DEFAULT))
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded, press=["question_mark"])


def test_a_drill_asks_for_confirmation(snap_compare: Any) -> None:
    app = TopApp(FixedSource(DEFAULT))
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded, press=["d"])
