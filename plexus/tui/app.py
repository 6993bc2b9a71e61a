"""`plexus top`: a live view of the mesh in the terminal (Textual).

The app refreshes the mesh about once a second in a worker (one refresh at a
time, never on the UI's critical path) and hands it to every open screen. The
screens: topology (the main one), region (enter), its clients (c) and
subscriptions (/), events (e), help (?).
Actions ask for confirmation, run in a worker, and report one line.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches

from plexus.errors import PlexusError
from plexus.tui.model import EMPTY_MESH, Mesh
from plexus.tui.screens.base import MeshScreen, one_line
from plexus.tui.screens.dialogs import Ask, Confirm
from plexus.tui.screens.help import HelpScreen
from plexus.tui.screens.topology import TopologyScreen

if TYPE_CHECKING:
    from plexus.tui.actions import Actions
    from plexus.tui.sources import Source

__all__ = ["TopApp"]

REFRESH_S = 1.0
REFRESH_TIMES_KEPT = 100


class TopApp(App[None]):
    TITLE = "plexus top"
    BINDINGS: ClassVar = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("r", "refresh", "refresh now", show=False),
    ]

    def __init__(
        self, source: Source, actions: Actions | None = None, refresh_s: float = REFRESH_S
    ) -> None:
        super().__init__()
        self.source = source
        self.actions = actions
        self.refresh_s = refresh_s
        self.mesh: Mesh = EMPTY_MESH
        self.error = ""
        self.refreshes = 0
        # Seconds per refresh, fetch until the screen has been drawn with it.
        self.refresh_times: deque[float] = deque(maxlen=REFRESH_TIMES_KEPT)
        self._loading = False

    def on_mount(self) -> None:
        self.push_screen(TopologyScreen())
        self.set_interval(self.refresh_s, self.action_refresh)
        self.action_refresh()

    async def on_unmount(self) -> None:
        await self.source.close()

    # ------------------------------------------------------------ refresh

    def action_refresh(self) -> None:
        if not self._loading:  # a slow region must not pile refreshes up
            self._loading = True
            self.run_worker(self._load(), group="mesh")

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            mesh, error = await self.source.mesh(), ""
        except PlexusError as exc:
            # Nothing answers: keep the last picture, every region down.
            mesh = replace(
                self.mesh, regions=tuple(replace(r, up=False) for r in self.mesh.regions)
            )
            error = f"cannot read the mesh: {one_line(exc)}"
        finally:
            self._loading = False
        self.mesh, self.error = mesh, error
        for screen in self.screen_stack:
            # A screen still mounting reads self.mesh itself once it is ready;
            # one whose widgets are already gone (the app quitting) has no use for it.
            if isinstance(screen, MeshScreen) and screen.is_mounted:
                with contextlib.suppress(NoMatches):
                    screen.show_mesh(mesh, error)
        self.call_after_refresh(self._refreshed, started)

    def _refreshed(self, started: float) -> None:
        self.refresh_times.append(time.perf_counter() - started)
        self.refreshes += 1

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # ------------------------------------------------------------ actions

    def say(self, text: str, error: bool = False) -> None:
        if isinstance(self.screen, MeshScreen):
            self.screen.say(text, error)

    @work(group="action")
    async def add_region(self) -> None:
        answer = await self.push_screen_wait(
            Ask("New region: its name, then the regions to link it to", "sa us eu", "")
        )
        if not answer or not answer.split():
            return
        from plexus.tui.actions import parse_region_name

        try:
            name, *links = [parse_region_name(word) for word in answer.split()]
        except PlexusError as exc:
            self.say(str(exc), error=True)
            return
        linked = f" linked to {', '.join(links)}" if links else " with no link"
        await self._act(f"Add region {name}{linked}?", lambda a: a.add_region(name, links))

    @work(group="action")
    async def remove_region(self, name: str) -> None:
        await self._act(
            f"Remove region {name}? It drains its spools, stops and leaves the cluster.",
            lambda a: a.remove_region(name),
        )

    @work(group="action")
    async def add_link(self, near: str | None) -> None:
        answer = await self.push_screen_wait(Ask("New link: two regions", "us ap", near or ""))
        if answer is None:
            return
        words = answer.split()
        if len(words) != 2:
            self.say(f"a link joins two regions: give two names, not {answer!r}", error=True)
            return
        a, b = words
        await self._act(f"Add link {a}-{b}?", lambda acts: acts.add_link(a, b))

    @work(group="action")
    async def remove_link(self, a: str, b: str) -> None:
        await self._act(f"Remove link {a}-{b}?", lambda acts: acts.remove_link(a, b))

    @work(group="action")
    async def link_down(self, a: str, b: str) -> None:
        await self._act(
            f"Take link {a}-{b} down (drill)? It stays down until u.",
            lambda acts: acts.link_down(a, b),
        )

    @work(group="action")
    async def link_up(self, a: str, b: str) -> None:
        await self._act(f"Bring link {a}-{b} back up?", lambda acts: acts.link_up(a, b))

    @work(group="action")
    async def purge_queue(self, region: str, queue: str, depth: int) -> None:
        await self._act(
            f"Purge queue {queue} at {region} ({depth:,} queued)? The queued events are "
            "dropped for good; deliveries in flight stay with their consumers.",
            lambda acts: acts.purge_queue(region, queue),
        )

    async def _act(self, question: str, do: Callable[[Actions], Awaitable[str]]) -> None:
        """Confirm, do, and say how it went in one line; refresh right after."""
        if not await self.push_screen_wait(Confirm(question)):
            self.say("cancelled")
            return
        if self.actions is None:
            self.say("this view is read-only: it has no live mesh to act on", error=True)
            return
        self.say(f"{question.split('?')[0]} …")
        try:
            self.say(await do(self.actions))
        except PlexusError as exc:
            self.say(str(exc), error=True)
        self.action_refresh()
