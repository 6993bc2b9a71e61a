"""`plexus top` driven headless by Textual's pilot against a real local cluster."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import DataTable, RichLog, Static

from plexus.client import Client
from plexus.local import ops
from plexus.local.state import StateDir
from plexus.tui.actions import Actions
from plexus.tui.app import TopApp
from plexus.tui.screens.base import refill, selected_key
from plexus.tui.screens.clients import ClientsScreen
from plexus.tui.screens.events import EventsScreen
from plexus.tui.screens.help import HelpScreen
from plexus.tui.screens.region import RegionScreen
from plexus.tui.screens.subscriptions import SubscriptionsScreen
from plexus.tui.screens.topology import TopologyScreen, TopologyView
from plexus.tui.sources import LiveSource
from tests.harness import eventually

pytestmark = pytest.mark.timeout(120)

SIZE = (80, 24)
UI_TIMEOUT_S = 20.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[StateDir]:
    state = StateDir(tmp_path / "state")
    # A failed up stops what it started and says why: only a cluster that came up is taken down
    # (a down here would hide up's error behind "no local cluster").
    ops.up(state, None)
    try:
        yield state
    finally:
        ops.down(state, purge=True)


def local_app(state: StateDir) -> TopApp:
    source = LiveSource(state=state)
    return TopApp(source, Actions(source), refresh_s=0.25)


def text_of(widget: Any) -> str:
    rendered = widget.render()
    return rendered.plain if hasattr(rendered, "plain") else str(rendered)


def message(app: TopApp) -> str:
    return text_of(app.screen.query_one("#message", Static))


async def plexus_status(state: StateDir) -> dict[str, Any]:
    """What `plexus status --json` prints, run as a user would."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plexus.cli.main", "status", "--json", "--state-dir",
        str(state.path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def link_in_status(state: StateDir, a: str, b: str) -> dict[str, Any] | None:
    status = await plexus_status(state)
    return next((k for k in status["links"] if set(k["regions"]) == {a, b}), None)


async def all_up(app: TopApp, regions: int, links: int) -> None:
    await eventually(
        lambda: (
            len(app.mesh.regions) == regions
            and all(r.up for r in app.mesh.regions)
            and len(app.mesh.links) == links
            and all(k.state == "up" for k in app.mesh.links)
        ),
        UI_TIMEOUT_S,
        f"{regions} regions and {links} links up in the UI",
    )


async def select(pilot: Pilot[None], *, region: str | None = None, link: set[str] | None = None):
    screen = pilot.app.screen
    assert isinstance(screen, TopologyScreen)
    view = screen.query_one(TopologyView)
    for _ in range(20):
        if region is not None and view.selected_region != region:
            await pilot.press("right")
        elif link is not None and set(view.selected_link or ()) != link:
            await pilot.press("down")
        else:
            return
    raise AssertionError(f"could not select {region or link}")


async def test_top_draws_every_region_and_link_of_the_local_cluster(cluster: StateDir):
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await all_up(app, regions=3, links=3)
        await pilot.pause()
        drawing = text_of(app.screen.query_one(TopologyView))
        for name in ("us", "eu", "ap"):
            assert f"● {name}" in drawing
        assert drawing.count("●") == 3 + 3  # a mark per region and per link
        assert drawing.count("→0 ←0") + drawing.count("↓0 ↑0") == 3  # each link's rates
        assert any(r.raft_role == "leader" for r in app.mesh.regions)
        # Measured once the refreshed screen has painted: wait for it, not a pause.
        await eventually(lambda: app.refresh_times, UI_TIMEOUT_S, "a refresh measured")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("m")
        matrix = text_of(app.screen.query_one(TopologyView))
        assert matrix.split("\n")[0].split() == ["us", "eu", "ap"]


async def test_a_link_taken_down_in_top_is_down_in_plexus_status_and_comes_back(
    cluster: StateDir,
):
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await all_up(app, regions=3, links=3)
        await select(pilot, link={"us", "eu"})
        await pilot.press("d")
        await pilot.press("y")
        await eventually(
            lambda: (app.mesh.link("us", "eu") or app.mesh.links[0]).state == "down",
            UI_TIMEOUT_S,
            "the link down in the UI",
        )
        link = await link_in_status(cluster, "us", "eu")
        assert link is not None and link["state"] == "down" and link["held_down"]
        await pilot.press("u")
        await pilot.press("y")

        async def up_in_status() -> bool:
            link = await link_in_status(cluster, "us", "eu")
            return link is not None and link["state"] == "up"

        await eventually(up_in_status, UI_TIMEOUT_S, "the link up again in plexus status")


async def test_a_region_removed_in_top_leaves_the_cluster(cluster: StateDir):
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await all_up(app, regions=3, links=3)
        await select(pilot, region="ap")
        await pilot.press("x")
        await pilot.press("y")
        await all_up(app, regions=2, links=1)
        status = await plexus_status(cluster)
        assert [r["name"] for r in status["regions"]] == ["us", "eu"]
        assert "region ap removed" in message(app)


async def test_a_link_removed_and_added_in_top_changes_the_cluster(cluster: StateDir):
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await all_up(app, regions=3, links=3)
        await select(pilot, link={"eu", "ap"})
        await pilot.press("minus")
        await pilot.press("y")
        await all_up(app, regions=3, links=2)
        assert await link_in_status(cluster, "eu", "ap") is None
        await pilot.press("plus")
        await pilot.press("ctrl+a", "ctrl+k", *"eu ap", "enter")
        await pilot.press("y")
        await all_up(app, regions=3, links=3)
        link = await link_in_status(cluster, "eu", "ap")
        assert link is not None and link["state"] == "up"


async def test_a_mistake_in_an_action_is_one_line_not_a_crash(cluster: StateDir):
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await all_up(app, regions=3, links=3)
        await pilot.press("plus")
        await pilot.press("ctrl+a", "ctrl+k", *"us nowhere", "enter")
        await pilot.press("y")
        await eventually(lambda: "✖" in message(app), UI_TIMEOUT_S, "an error line")
        assert "nowhere" in message(app) and "\n" not in message(app)
        await pilot.press("a")
        await pilot.press(*"bad/name", "enter")
        await eventually(lambda: "invalid region name" in message(app), 5, "a bad name refused")
        assert isinstance(app.screen, TopologyScreen)


async def test_a_lost_region_shows_down_and_the_view_reconnects(cluster: StateDir):
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await all_up(app, regions=3, links=3)
        await asyncio.to_thread(ops.kill_region, cluster, "eu")
        await eventually(
            lambda: (
                not app.mesh.region("eu").up
                and "○ eu" in text_of(app.screen.query_one(TopologyView))
            ),  # type: ignore[union-attr]
            UI_TIMEOUT_S,
            "eu down in the UI",
        )
        assert app.mesh.region("us").up  # type: ignore[union-attr]
        await asyncio.to_thread(ops.start_region, cluster, "eu")
        await all_up(app, regions=3, links=3)
        await pilot.pause()


async def test_top_through_one_node_sees_the_whole_mesh(cluster: StateDir):
    eu = cluster.load().region("eu").grpc
    source = LiveSource(entry=eu, ca=str(cluster.ca_cert), token=cluster.client_token())
    app = TopApp(source, Actions(source), refresh_s=0.25)
    async with app.run_test(size=SIZE) as pilot:
        await all_up(app, regions=3, links=3)
        await asyncio.to_thread(ops.kill_region, cluster, "eu")
        await eventually(
            lambda: not app.mesh.region("eu").up and app.mesh.region("us").up,  # type: ignore[union-attr]
            UI_TIMEOUT_S,
            "eu down, the others still seen through the membership",
        )
        await pilot.pause()


async def open_region(app: TopApp, pilot: Pilot[None], name: str) -> RegionScreen:
    await all_up(app, regions=3, links=3)
    await select(pilot, region=name)
    await pilot.press("enter")
    screen = app.screen
    assert isinstance(screen, RegionScreen)
    await eventually(lambda: screen.detail is not None, UI_TIMEOUT_S, "the region's detail")
    return screen


async def queue_with_events(state: StateDir, region: str, name: str, events: int) -> None:
    address = state.load().region(region).grpc
    async with await Client.connect(
        address, ca=state.ca_cert, token=state.client_token()
    ) as client:
        await client.create_queue(name, ["orders/>"])
        for i in range(events):
            await client.publish(f"orders/{i}", b"x", guaranteed=True)


async def test_the_region_view_shows_its_queues_spools_and_metrics_address(cluster: StateDir):
    eu = cluster.load().region("eu")
    await queue_with_events(cluster, "eu", "billing", 5)
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_region(app, pilot, "eu")
        assert screen.detail is not None
        assert [(q.name, q.depth) for q in screen.detail.queues] == [("billing", 5)]
        assert sorted(s.peer for s in screen.detail.spools) == ["ap", "us"]
        assert eu.metrics and screen.detail.metrics_address == eu.metrics
        assert f"metrics http://{eu.metrics}/metrics" in text_of(screen.query_one("#summary"))
        await pilot.press("escape")
        assert isinstance(app.screen, TopologyScreen)


async def test_a_queue_purged_in_top_is_empty_through_the_sdk(cluster: StateDir):
    eu = cluster.load().region("eu").grpc
    await queue_with_events(cluster, "eu", "billing", 5)
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_region(app, pilot, "eu")
        await pilot.press("p")
        assert "Purge queue billing at eu (5 queued)?" in text_of(app.screen.query_one("#question"))
        await pilot.press("y")
        await eventually(
            lambda: "queue billing at eu purged: 5 events dropped" in message(app),
            UI_TIMEOUT_S,
            "the purge reported",
        )
        async with await Client.connect(
            eu, ca=cluster.ca_cert, token=cluster.client_token()
        ) as client:
            assert (await client.describe_queue("billing")).depth == 0
        await eventually(
            lambda: screen.detail is not None and screen.detail.queues[0].depth == 0,
            UI_TIMEOUT_S,
            "depth 0 in the region view",
        )


async def test_a_purge_not_confirmed_leaves_the_queue_alone(cluster: StateDir):
    eu = cluster.load().region("eu").grpc
    await queue_with_events(cluster, "eu", "billing", 3)
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await open_region(app, pilot, "eu")
        await pilot.press("p", "n")
        await eventually(lambda: message(app) == "cancelled", UI_TIMEOUT_S, "cancelled")
        async with await Client.connect(
            eu, ca=cluster.ca_cert, token=cluster.client_token()
        ) as client:
            assert (await client.describe_queue("billing")).depth == 3
        await pilot.press("escape", "right", "enter")  # ap: no queue to purge
        await eventually(lambda: app.screen.detail is not None, UI_TIMEOUT_S, "ap's detail")
        await pilot.press("p")
        assert "region ap has no queue to purge" in message(app)


async def test_the_subscription_search_finds_a_test_clients_subscription(cluster: StateDir):
    eu = cluster.load().region("eu").grpc
    async with await Client.connect(eu, ca=cluster.ca_cert, token=cluster.client_token()) as client:
        await client.create_queue("billing", [f"orders/q{i}/>" for i in range(30)])
        async with client.subscribe("orders/eu/created") as sub:
            await sub.ready()
            app = local_app(cluster)
            async with app.run_test(size=SIZE) as pilot:
                await open_region(app, pilot, "eu")
                await pilot.press("slash")
                screen = app.screen
                assert isinstance(screen, SubscriptionsScreen)
                await eventually(
                    lambda: screen.found is not None and screen.found.total == 31,
                    UI_TIMEOUT_S,
                    "every subscription before a search",
                )
                await pilot.press(*"eu/cr")
                # "eu/c" already finds one: wait for the answer to the whole text.
                await eventually(
                    lambda: text_of(screen.query_one("#count")).startswith(
                        "1 of 1 subscriptions of eu containing 'eu/cr'"
                    ),
                    UI_TIMEOUT_S,
                    "the search for 'eu/cr' narrowed to one",
                )
                [found] = screen.found.subscriptions
                assert found.pattern == "orders/eu/created" and found.queue == ""
                table = screen.query_one("#subscriptions", DataTable)
                assert table.get_row_at(0)[:2] == ["orders/eu/created", f"client {found.client_id}"]


async def test_the_client_list_shows_a_connected_test_client(cluster: StateDir):
    eu = cluster.load().region("eu").grpc
    async with await Client.connect(eu, ca=cluster.ca_cert, token=cluster.client_token()) as client:
        orders, audit = client.subscribe("orders/>"), client.subscribe("audit/>")
        async with orders, audit:
            await asyncio.gather(orders.ready(), audit.ready())
            [listed] = await client.clients()
            app = local_app(cluster)
            async with app.run_test(size=SIZE) as pilot:
                await open_region(app, pilot, "eu")
                await pilot.press("c")
                screen = app.screen
                assert isinstance(screen, ClientsScreen)
                await eventually(
                    lambda: screen.clients and screen.clients[0].subscriptions == 2,
                    UI_TIMEOUT_S,
                    "the test client with its two subscriptions",
                )
                [row] = screen.clients
                assert row.id == listed.id and row.peer == listed.peer
                cells = screen.query_one("#clients", DataTable).get_row_at(0)
                assert cells[0] == str(listed.id) and listed.peer.endswith(cells[1])
                assert cells[3] == "2 sub"
                await pilot.press("escape")
                assert isinstance(app.screen, RegionScreen)


async def test_links_without_interest_carry_the_links_and_no_patterns(cluster: StateDir):
    record = cluster.load()
    async with await Client.connect(
        record.region("eu").grpc, ca=cluster.ca_cert, token=cluster.client_token()
    ) as client:
        await client.create_queue("billing", ["orders/>"])
    async with await Client.connect(
        record.region("us").grpc, ca=cluster.ca_cert, token=cluster.client_token()
    ) as client:

        async def learned() -> bool:
            view = await client.list_links()
            return any("orders/>" in i.patterns for i in view.interest)

        await eventually(learned, UI_TIMEOUT_S, "us to learn eu's interest")
        full, bare = await client.list_links(), await client.list_links(interest=False)
        assert bare.interest == () and bare.region == "us"
        assert [k.peer for k in bare.links] == [k.peer for k in full.links] == ["ap", "eu"]


async def test_the_events_view_tails_events_from_the_picked_region(cluster: StateDir):
    record = cluster.load()
    app = local_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await all_up(app, regions=3, links=3)
        await select(pilot, region="eu")
        await pilot.press("e")
        screen = app.screen
        assert isinstance(screen, EventsScreen)
        await pilot.press(*"orders/>", "enter")
        await eventually(lambda: screen.tailing is not None, UI_TIMEOUT_S, "the tail to start")
        log = screen.query_one("#log", RichLog)
        async with await Client.connect(
            record.region("us").grpc, ca=cluster.ca_cert, token=cluster.client_token()
        ) as client:

            async def published_and_shown() -> bool:
                await client.publish("orders/us/1", b'{"id": 1}')
                return len(log.lines) > 0

            await eventually(published_and_shown, UI_TIMEOUT_S, "an event from us in the tail")
        assert "orders/us/1" in log.lines[0].text and " us " in log.lines[0].text


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--server", "127.0.0.1:1", "--region", "us"], ["--server or --region"]),
        (["--server", "no-port"], ["no-port"]),
        (["--region", "us"], ["no local cluster"]),
        ([], ["no local cluster", "plexus up"]),
    ],
)
def test_top_refuses_bad_arguments_in_one_line(tmp_path: Path, args: list[str], needles: list[str]):
    from click.testing import CliRunner

    from plexus.cli.main import cli

    result = CliRunner().invoke(cli, ["top", "--state-dir", str(tmp_path / "none"), *args])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code in (1, 2) and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


class _OneTable(App[None]):
    def compose(self) -> ComposeResult:
        yield DataTable()


async def test_a_refresh_updates_rows_in_place_keeping_the_cursor_and_rebuilds_on_new_order() -> (
    None
):
    app = _OneTable()
    async with app.run_test() as pilot:
        table: DataTable[object] = app.query_one(DataTable)
        table.add_columns("queue", "depth")
        refill(table, [(f"q{i}", (f"q{i}", "0")) for i in range(1000)])
        table.move_cursor(row=500, animate=False)
        refill(table, [(f"q{i}", (f"q{i}", str(i))) for i in range(1000)])
        await pilot.pause()
        assert table.get_row("q7") == ["q7", "7"] and selected_key(table) == "q500"
        refill(table, [("new", ("new", "1")), *((f"q{i}", (f"q{i}", "2")) for i in range(999))])
        assert table.get_row_at(0) == ["new", "1"] and table.row_count == 1000
        assert selected_key(table) == "q500"  # the same queue, one row further down
