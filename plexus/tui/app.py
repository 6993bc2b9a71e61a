"""`plexus top`: a live view of the mesh in the terminal (Textual).

This first screen shows the regions (address, running or down, Raft role) and
the links (state, events per second each way, spool depth), refreshed about
once a second from the same admin API `plexus status` reads. A region that
cannot be reached shows as down; the view keeps trying.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Header, Static

REFRESH_S = 1.0
# A symbol as well as a colour, so a state reads without colour too.
STATE_MARKS = {"up": "✔ up", "connecting": "… connecting", "down": "✖ down"}
RUNNING_MARKS = {"running": "✔ running", "stopped": "✖ down"}

Snapshot = dict[str, Any]
Source = Callable[[], Awaitable[Snapshot]]

HELP = (
    "plexus top — regions and links of the mesh, refreshed every second.\n"
    "q quit · ? this help · r refresh now. A region that does not answer shows as down."
)


class TopApp(App[None]):
    TITLE = "plexus top"
    CSS = "DataTable { height: auto; max-height: 50%; } #help { padding: 0 1; }"
    BINDINGS: ClassVar = [
        Binding("q", "quit", "quit"),
        Binding("r", "refresh", "refresh"),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.snapshot: Snapshot = {"regions": [], "links": []}
        self.error = ""
        self.summary = ""
        self.help_shown = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Static("", id="summary")
            yield DataTable(id="regions", cursor_type="row")
            yield DataTable(id="links", cursor_type="row")
            yield Static("", id="help")
        yield Footer()

    def on_mount(self) -> None:
        regions = self.query_one("#regions", DataTable)
        regions.add_columns("region", "address", "state", "raft")
        links = self.query_one("#links", DataTable)
        links.add_columns("link", "state", "events/s →", "events/s ←", "spooled")
        self.set_interval(REFRESH_S, self.action_refresh)
        self.action_refresh()

    def action_refresh(self) -> None:
        self.run_worker(self._load(), exclusive=True, group="refresh")

    def action_help(self) -> None:
        self.help_shown = not self.help_shown
        self.query_one("#help", Static).update(HELP if self.help_shown else "")

    async def _load(self) -> None:
        try:
            self.snapshot = await asyncio.wait_for(self.source(), REFRESH_S * 3)
            self.error = ""
        except Exception as exc:  # a lost node shows as an error line, not a crash
            self.error = f"cannot read the mesh: {exc}"
        self._show()

    def _show(self) -> None:
        snap = self.snapshot
        regions = self.query_one("#regions", DataTable)
        regions.clear()
        for region in snap.get("regions", []):
            raft = region.get("raft") or {}
            regions.add_row(
                region["name"],
                region.get("address", ""),
                RUNNING_MARKS.get(region.get("state", ""), region.get("state", "")),
                raft.get("role", "") or "-",
            )
        links = self.query_one("#links", DataTable)
        links.clear()
        for link in snap.get("links", []):
            a, b = link["regions"]
            links.add_row(
                f"{a} — {b}",
                STATE_MARKS.get(link.get("state", ""), link.get("state", "")),
                f"{link.get('rate_ab', 0):,.0f}",
                f"{link.get('rate_ba', 0):,.0f}",
                str(link.get("spool_depth", 0)),
            )
        up = sum(1 for link in snap.get("links", []) if link.get("state") == "up")
        summary = (
            f"cluster {snap.get('cluster', '?')}: {len(snap.get('regions', []))} regions, "
            f"{up} of {len(snap.get('links', []))} links up"
        )
        self.summary = summary + (f"   {self.error}" if self.error else "")
        self.query_one("#summary", Static).update(
            summary + (f"   [red]{self.error}[/red]" if self.error else "")
        )
