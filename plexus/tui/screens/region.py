"""One region in detail: Raft, rates, queues, outbound spools per link, discards."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from plexus.errors import PlexusError
from plexus.tui.model import RegionDetail
from plexus.tui.screens.base import MeshScreen, fmt_age, one_line
from plexus.tui.topology import LINK_MARKS, fmt_rate

if TYPE_CHECKING:
    from plexus.tui.app import TopApp

__all__ = ["RegionScreen"]

# Clients and subscriptions come from Admin.ListClients / Admin.ListSubscriptions, and
# purging from Broker.PurgeQueue, which are being added on another branch (issue 5):
# the panel and the keys c, / and p are where they get wired.
PENDING = (
    "clients · subscriptions (/ searches) · purge queue (p): "
    "waiting for Admin.ListClients, Admin.ListSubscriptions, Broker.PurgeQueue"
)


class RegionScreen(MeshScreen):
    CSS = """
    #summary { background: $primary-background; height: 2; }
    DataTable { height: auto; max-height: 9; margin-top: 1; }
    #pending { color: $text-muted; margin-top: 1; }
    #message { height: 1; }
    """
    BINDINGS: ClassVar = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("e", "events", "events"),
        Binding("c", "clients", "clients", show=False),
        Binding("slash", "search_subscriptions", "search subscriptions", show=False),
        Binding("p", "purge", "purge queue", show=False),
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
        yield Static(PENDING, id="pending")
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
            self.run_worker(self._load(), group="region")

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
        raft = f"raft {d.raft_role} term {d.raft_term}" if d.raft_role else "no raft"
        leader = f" (leader {escape(d.raft_leader)})" if d.raft_leader else ""
        self.query_one("#summary", Static).update(
            f"[green]●[/green] [b]{escape(d.name)}[/b] up · {escape(d.address)} · {raft}{leader}\n"
            f"in {fmt_rate(d.rate_in)}/s · out {fmt_rate(d.rate_out)}/s · "
            f"{d.subscriptions:,} subscriptions · discarded {d.discarded:,} · "
            f"up {fmt_age(d.uptime_ms)}"
        )
        queues = self.query_one("#queues", DataTable)
        queues.clear()
        for q in d.queues:
            queues.add_row(
                q.name,
                f"{q.depth:,}",
                str(q.consumers),
                fmt_rate(q.rate_in),
                fmt_rate(q.rate_out),
                fmt_age(q.oldest_age_ms),
                f"{q.dead:,}",
                key=q.name,
            )
        spools = self.query_one("#spools", DataTable)
        spools.clear()
        for s in d.spools:
            mark, _ = LINK_MARKS.get(s.state, ("?", ""))
            state = f"{mark} {s.state}" + (" (held)" if s.held_down else "")
            spools.add_row(
                s.peer,
                state,
                f"{s.depth:,}",
                fmt_age(s.oldest_age_ms),
                f"{s.direct_dropped:,}",
                s.reason or "-",
            )

    def action_events(self) -> None:
        from plexus.tui.screens.events import EventsScreen

        self.app.push_screen(EventsScreen(self.region_name))

    def action_clients(self) -> None:
        self.say("clients: needs Admin.ListClients, not in this node yet", error=True)

    def action_search_subscriptions(self) -> None:
        self.say("subscriptions: needs Admin.ListSubscriptions, not in this node yet", error=True)

    def action_purge(self) -> None:
        self.say("purge queue: needs Broker.PurgeQueue, not in this node yet", error=True)
