"""One region in detail: Raft, rates, metrics address, queues, outbound spools per link,
discards; from here its clients (c), its subscriptions (/), and purging a queue (p)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from plexus.errors import PlexusError
from plexus.tui.model import QueueRow, RegionDetail, SpoolRow
from plexus.tui.screens.base import (
    MeshScreen,
    fmt_age,
    fmt_raft,
    one_line,
    refill,
    selected_key,
)
from plexus.tui.topology import LINK_MARKS, fmt_rate

if TYPE_CHECKING:
    from plexus.tui.app import TopApp

__all__ = ["RegionScreen"]


class RegionScreen(MeshScreen):
    CSS = """
    #summary { background: $primary-background; height: 3; }
    DataTable { height: auto; max-height: 9; margin-top: 1; }
    #message { height: 1; }
    """
    BINDINGS: ClassVar = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("e", "events", "events", show=False),
        Binding("c", "clients", "clients"),
        Binding("slash", "subscriptions", "subscriptions"),
        Binding("p", "purge", "purge queue"),
    ]

    app: TopApp

    def __init__(self, region: str) -> None:
        super().__init__()
        self.region_name = region
        self.detail: RegionDetail | None = None
        self._loading = False

    def compose(self) -> ComposeResult:
        yield Static(f"region {escape(self.region_name)}", id="summary")
        yield DataTable(id="queues", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="spools", cursor_type="row")
        yield Static("", id="message")
        yield Footer()

    def on_mount(self) -> None:
        queues = self.query_one("#queues", DataTable)
        queues.add_columns("queue", "depth", "consumers", "in/s", "out/s", "oldest", "dead")
        spools = self.query_one("#spools", DataTable)
        spools.add_columns("spool to", "link", "depth", "oldest", "dropped", "reason")
        self.load()

    def show_mesh(self, mesh: object, error: str) -> None:
        self.load()  # refreshes with the mesh, about once a second

    def load(self) -> None:
        if not self._loading:
            self._loading = True
            self.fetch(self._load(), group="region")

    async def _load(self) -> None:
        try:
            self.detail = await self.app.source.region(self.region_name)
        except PlexusError as exc:
            self.query_one("#summary", Static).update(
                f"[b]{escape(self.region_name)}[/b] [red]○ down[/red]: {escape(one_line(exc))}"
            )
            return
        finally:
            self._loading = False
        self._show(self.detail)

    def _show(self, d: RegionDetail) -> None:
        raft = fmt_raft(d.raft_role, d.raft_term)
        leader = f" (leader {escape(d.raft_leader)})" if d.raft_leader else ""
        metrics = f"http://{escape(d.metrics_address)}/metrics" if d.metrics_address else "none"
        self.query_one("#summary", Static).update(
            f"[green]●[/green] [b]{escape(d.name)}[/b] up · {escape(d.address)} · {raft}{leader}\n"
            f"in {fmt_rate(d.rate_in)}/s · out {fmt_rate(d.rate_out)}/s · "
            f"{d.subscriptions:,} direct subscriptions · discarded {d.discarded:,} · "
            f"up {fmt_age(d.uptime_ms)}\n"
            f"metrics {metrics} · version {escape(d.version)}"
        )
        refill(self.query_one("#queues", DataTable), ((q.name, _queue_cells(q)) for q in d.queues))
        refill(self.query_one("#spools", DataTable), ((s.peer, _spool_cells(s)) for s in d.spools))

    def action_events(self) -> None:
        from plexus.tui.screens.events import EventsScreen

        self.app.push_screen(EventsScreen(self.region_name))

    def action_clients(self) -> None:
        from plexus.tui.screens.clients import ClientsScreen

        self.app.push_screen(ClientsScreen(self.region_name))

    def action_subscriptions(self) -> None:
        from plexus.tui.screens.subscriptions import SubscriptionsScreen

        self.app.push_screen(SubscriptionsScreen(self.region_name))

    def action_purge(self) -> None:
        """Purge the queue under the cursor of the queues table, once confirmed."""
        queue = selected_key(self.query_one("#queues", DataTable))
        queues = self.detail.queues if self.detail else ()
        row = next((q for q in queues if q.name == queue), None)
        if row is None:
            self.say(f"region {self.region_name} has no queue to purge", error=True)
            return
        self.app.purge_queue(self.region_name, row.name, row.depth)


def _queue_cells(q: QueueRow) -> tuple[str, ...]:
    return (
        q.name,
        f"{q.depth:,}",
        str(q.consumers),
        fmt_rate(q.rate_in),
        fmt_rate(q.rate_out),
        fmt_age(q.oldest_age_ms),
        f"{q.dead:,}",
    )


def _spool_cells(s: SpoolRow) -> tuple[str, ...]:
    mark, _ = LINK_MARKS.get(s.state, ("?", ""))
    return (
        s.peer,
        f"{mark} {s.state}" + (" (held)" if s.held_down else ""),
        f"{s.depth:,}",
        fmt_age(s.oldest_age_ms),
        f"{s.direct_dropped:,}",
        s.reason or "-",
    )
