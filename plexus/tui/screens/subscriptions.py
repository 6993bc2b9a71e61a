"""`/` in the region view: the region's subscriptions, direct and queue, searched by the
node as the user types, at most SHOWN of them with how many matched in all."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Static

from plexus.errors import PlexusError
from plexus.tui.model import Mesh
from plexus.tui.screens.base import MeshScreen, one_line, refill

if TYPE_CHECKING:
    from plexus.client.info import SubscriptionInfo, SubscriptionsView
    from plexus.tui.app import TopApp

__all__ = ["SubscriptionsScreen"]

# The node searches; a screen shows this many rows at most, the first by pattern.
SHOWN = 200


class SubscriptionsScreen(MeshScreen):
    AUTO_FOCUS = "#search"
    CSS = """
    #search { height: 3; }
    #count { height: 1; background: $primary-background; }
    #subscriptions { height: 1fr; }
    #message { height: 1; }
    """
    BINDINGS: ClassVar = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("tab", "app.focus_next", "search ↔ list", show=False),
    ]

    app: TopApp

    def __init__(self, region: str) -> None:
        super().__init__()
        self.region_name = region
        self.contains = ""
        self.found: SubscriptionsView | None = None
        self._searching = False

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder=f"search the subscriptions of {self.region_name}: text in a pattern "
            "or queue name",
            id="search",
        )
        yield Static("", id="count")
        yield DataTable(id="subscriptions", cursor_type="row", zebra_stripes=True)
        yield Static("", id="message")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(
            "pattern", "held by", "delivered", "discarded", "buffer"
        )
        self.search()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.contains = event.value
        self.search()

    def show_mesh(self, mesh: Mesh, error: str) -> None:
        if not self._searching:  # a slow region must not pile requests up
            self.search()

    def search(self) -> None:
        """Ask the node for the subscriptions containing the text now in the search box;
        a newer search replaces one still running."""
        self._searching = True
        self.fetch(self._search(self.contains), group="search", exclusive=True)

    async def _search(self, contains: str) -> None:
        try:
            found = await self.app.source.subscriptions(self.region_name, contains, SHOWN)
        except PlexusError as exc:
            self.say(one_line(exc), error=True)
            return
        finally:
            self._searching = False
        self.found = found
        shown = len(found.subscriptions)
        matching = f" containing {escape(repr(contains))}" if contains else ""
        first = f", the first {shown} by pattern" if found.total > shown else ""
        self.query_one("#count", Static).update(
            f"{shown:,} of {found.total:,} subscriptions of "
            f"[b]{escape(self.region_name)}[/b]{matching}{first}"
        )
        self.say("")
        refill(
            self.query_one(DataTable),
            ((str(i), _cells(s)) for i, s in enumerate(found.subscriptions)),
        )


def _cells(s: SubscriptionInfo) -> tuple[str, ...]:
    if s.queue:  # the queue counts its own deliveries; see the region view
        return (s.pattern, f"queue {s.queue}", "-", "-", "-")
    return (
        s.pattern,
        f"client {s.client_id}",
        f"{s.delivered:,}",
        f"{s.discarded:,}",
        f"{s.buffered:,}/{s.buffer_events:,}",
    )
