"""The main screen: the drawing of the mesh, the selected region and link, and actions."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Footer, Static

from plexus.tui.model import EMPTY_MESH, LinkState, Mesh, RegionState
from plexus.tui.screens.base import MeshScreen, fmt_raft
from plexus.tui.topology import LINK_MARKS, REGION_MARKS, Layout, draw, fmt_rate

if TYPE_CHECKING:
    from plexus.tui.app import TopApp

__all__ = ["TopologyScreen", "TopologyView"]

# Both the drawing and the matrix (for dense meshes) read with this one line.
LEGEND = "● up ◌ connecting ○ down ··· not up · →←↓↑ events/s that way · matrix: row→col"


class TopologyView(Widget):
    """The drawing, redrawn for its own size whenever the data or the selection changes."""

    def __init__(self) -> None:
        super().__init__(id="topology")
        self.mesh = EMPTY_MESH
        self.layout_choice: Layout | None = None  # None: by the shape
        self.selected_region: str | None = None
        self.selected_link: tuple[str, str] | None = None

    def render(self) -> Text:
        return draw(
            self.mesh,
            self.size.width,
            self.size.height,
            layout=self.layout_choice,
            selected_region=self.selected_region,
            selected_link=self.selected_link,
        )


class TopologyScreen(MeshScreen):
    CSS = """
    #summary { background: $primary-background; text-style: bold; }
    #topology { height: 1fr; }
    #selection { height: 2; }
    #message { height: 1; color: $text-muted; }
    """
    BINDINGS: ClassVar = [
        Binding("left", "select_region(-1)", "previous region", show=False),
        Binding("right", "select_region(1)", "next region", show=False),
        Binding("up", "select_link(-1)", "previous link", show=False),
        Binding("down", "select_link(1)", "next link", show=False),
        Binding("enter", "open_region", "region view"),
        Binding("e", "events", "events"),
        Binding("m", "toggle_matrix", "matrix ↔ drawing"),
        Binding("a", "add_region", "add region", show=False),
        Binding("x", "remove_region", "remove region", show=False),
        Binding("plus", "add_link", "add link", show=False),
        Binding("minus", "remove_link", "remove link", show=False),
        Binding("d", "link_down", "link down", show=False),
        Binding("u", "link_up", "link up", show=False),
    ]

    app: TopApp

    def compose(self) -> ComposeResult:
        yield Static("plexus top", id="summary")
        yield TopologyView()
        yield Static("", id="selection")
        yield Static(LEGEND, id="message")
        yield Footer()

    @property
    def view(self) -> TopologyView:
        return self.query_one(TopologyView)

    def on_mount(self) -> None:
        self.show_mesh(self.app.mesh, self.app.error)

    # ------------------------------------------------------------ data

    def show_mesh(self, mesh: Mesh, error: str) -> None:
        view = self.view
        view.mesh = mesh
        names = [r.name for r in mesh.regions]
        if view.selected_region not in names:
            view.selected_region = names[0] if names else None
        keys = [set(link.key) for link in mesh.links]
        if view.selected_link is None or set(view.selected_link) not in keys:
            view.selected_link = mesh.links[0].key if mesh.links else None
        view.refresh()
        up = sum(link.state == "up" for link in mesh.links)
        running = sum(r.up for r in mesh.regions)
        summary = (
            f"cluster {escape(mesh.cluster or '?')} · {running}/{len(mesh.regions)} regions up · "
            f"{up}/{len(mesh.links)} links up · leader {mesh.leader or '-'}"
        )
        if error:
            summary += f"  [red]✖ {escape(error)}[/red]"
        self.query_one("#summary", Static).update(summary)
        self._show_selection()

    def _show_selection(self) -> None:
        view, mesh = self.view, self.view.mesh
        region = mesh.region(view.selected_region) if view.selected_region else None
        link = mesh.link(*view.selected_link) if view.selected_link else None
        lines = [_region_line(region), _link_line(link)]
        self.query_one("#selection", Static).update("\n".join(lines))

    # ------------------------------------------------------------ selection

    def action_select_region(self, step: int) -> None:
        names = [r.name for r in self.view.mesh.regions]
        if names:
            current = self.view.selected_region
            i = names.index(current) if current in names else -step
            self.view.selected_region = names[(i + step) % len(names)]
            self.view.refresh()
            self._show_selection()

    def action_select_link(self, step: int) -> None:
        keys = [link.key for link in self.view.mesh.links]
        if keys:
            current = self.view.selected_link
            i = keys.index(current) if current in keys else -step
            self.view.selected_link = keys[(i + step) % len(keys)]
            self.view.refresh()
            self._show_selection()

    def action_toggle_matrix(self) -> None:
        view = self.view
        view.layout_choice = None if view.layout_choice is Layout.MATRIX else Layout.MATRIX
        view.refresh()

    # ------------------------------------------------------------ other screens

    def action_open_region(self) -> None:
        if self.view.selected_region:
            from plexus.tui.screens.region import RegionScreen

            self.app.push_screen(RegionScreen(self.view.selected_region))

    def action_events(self) -> None:
        from plexus.tui.screens.events import EventsScreen

        self.app.push_screen(EventsScreen(self.view.selected_region))

    # ------------------------------------------------------------ actions

    def action_add_region(self) -> None:
        self.app.add_region()

    def action_remove_region(self) -> None:
        if self.view.selected_region:
            self.app.remove_region(self.view.selected_region)

    def action_add_link(self) -> None:
        self.app.add_link(self.view.selected_region)

    def action_remove_link(self) -> None:
        if self.view.selected_link:
            self.app.remove_link(*self.view.selected_link)

    def action_link_down(self) -> None:
        if self.view.selected_link:
            self.app.link_down(*self.view.selected_link)

    def action_link_up(self) -> None:
        if self.view.selected_link:
            self.app.link_up(*self.view.selected_link)


def _region_line(region: RegionState | None) -> str:
    if region is None:
        return "no region"
    mark, colour = REGION_MARKS[region.up]
    if not region.up:
        why = f": {escape(region.error)}" if region.error else ""
        return f"[{colour}]{mark}[/{colour}] [b]{escape(region.name)}[/b] down{why}"
    raft = fmt_raft(region.raft_role, region.raft_term)
    return (
        f"[{colour}]{mark}[/{colour}] [b]{escape(region.name)}[/b] up · {raft} · "
        f"{escape(region.address)}"
    )


def _link_line(link: LinkState | None) -> str:
    if link is None:
        return "no link"
    mark, colour = LINK_MARKS.get(link.state, ("?", ""))
    state = f"[{colour}]{mark} {link.state}[/{colour}]" + (" (held down)" if link.held_down else "")
    a, b = escape(link.a), escape(link.b)
    return (
        f"link [b]{a}—{b}[/b] {state} · {a}→{b} {fmt_rate(link.rate_ab)}/s · "
        f"{b}→{a} {fmt_rate(link.rate_ba)}/s · spooled {link.spool_depth:,}"
    )
