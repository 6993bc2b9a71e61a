"""`c` in the region view: the clients connected to the region, what streams each has
open, and its counts; refreshed with the mesh."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from plexus.errors import PlexusError
from plexus.tui.model import ClientRow, Mesh
from plexus.tui.screens.base import MeshScreen, fmt_age, one_line, refill

if TYPE_CHECKING:
    from plexus.tui.app import TopApp

__all__ = ["ClientsScreen"]

COLUMNS = ("id", "peer", "since", "streams", "published", "delivered", "discarded")


class ClientsScreen(MeshScreen):
    CSS = """
    #summary { background: $primary-background; height: 1; }
    #clients { height: 1fr; }
    #message { height: 1; color: $text-muted; }
    """
    BINDINGS: ClassVar = [Binding("escape", "app.pop_screen", "back")]

    app: TopApp

    def __init__(self, region: str) -> None:
        super().__init__()
        self.region_name = region
        self.clients: tuple[ClientRow, ...] | None = None
        self._loading = False

    def compose(self) -> ComposeResult:
        yield Static(f"clients of {escape(self.region_name)}", id="summary")
        yield DataTable(id="clients", cursor_type="row", zebra_stripes=True)
        yield Static("the counts run from when each client connected", id="message")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.load()

    def show_mesh(self, mesh: Mesh, error: str) -> None:
        self.load()

    def load(self) -> None:
        if not self._loading:  # a slow region must not pile requests up
            self._loading = True
            self.fetch(self._load(), group="clients")

    async def _load(self) -> None:
        name = escape(self.region_name)
        try:
            self.clients = clients = await self.app.source.clients(self.region_name)
        except PlexusError as exc:
            self.query_one("#summary", Static).update(
                f"clients of [b]{name}[/b] [red]○ down[/red]: {escape(one_line(exc))}"
            )
            return
        finally:
            self._loading = False
        count = f"{len(clients)} connected" if clients else "none with a stream open"
        self.query_one("#summary", Static).update(f"clients of [b]{name}[/b]: {count}")
        refill(self.query_one(DataTable), ((str(c.id), _cells(c)) for c in clients))


def _cells(c: ClientRow) -> tuple[str, ...]:
    # gRPC names a peer "ipv4:127.0.0.1:50312"; the address is what a reader looks for.
    peer = c.peer.split(":", 1)[1] if c.peer.startswith(("ipv4:", "ipv6:")) else c.peer
    streams = [f"{c.publishers} pub"] if c.publishers else []
    streams += [f"{c.subscriptions} sub"] if c.subscriptions else []
    streams += [f"consumes {', '.join(c.consuming)}"] if c.consuming else []
    return (
        str(c.id),
        peer,
        fmt_age(c.connected_ms),
        " · ".join(streams) or "-",
        f"{c.published:,}",
        f"{c.delivered:,}",
        f"{c.discarded:,}",
    )
