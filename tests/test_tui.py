"""`plexus top` driven headless by Textual's pilot against a real local cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable

from plexus.local import ops
from plexus.local.state import StateDir
from plexus.tui.app import TopApp
from plexus.tui.sources import local_cluster, one_node

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[StateDir]:
    state = StateDir(tmp_path / "state")
    try:
        ops.up(state, None)
        yield state
    finally:
        ops.down(state, purge=True)


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def shown(app: TopApp, pilot, predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the view never showed what was expected"
        await pilot.pause(0.05)


async def test_top_shows_every_region_and_link_of_the_local_cluster(cluster: StateDir):
    app = TopApp(local_cluster(cluster.path))
    async with app.run_test(size=(80, 24)) as pilot:
        regions = app.query_one("#regions", DataTable)
        links = app.query_one("#links", DataTable)
        await shown(app, pilot, lambda: regions.row_count == 3 and links.row_count == 3)
        await shown(app, pilot, lambda: all("✔ up" in row[1] for row in cells(links)))
        assert {row[0] for row in cells(regions)} == {"us", "eu", "ap"}
        assert any(row[3] == "leader" for row in cells(regions))
        await pilot.press("question_mark")
        assert app.help_shown
        await pilot.press("q")


async def test_top_through_one_node_and_a_lost_node_shows_an_error(cluster: StateDir):
    address = next(r.grpc for r in cluster.load().regions if r.name == "eu")
    app = TopApp(one_node(address))
    async with app.run_test(size=(80, 24)) as pilot:
        links = app.query_one("#links", DataTable)
        await shown(app, pilot, lambda: links.row_count == 2)
        ops.kill_region(cluster, "eu")
        await shown(app, pilot, lambda: "cannot read the mesh" in app.summary)
