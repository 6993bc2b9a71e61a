"""A live tail of the events matching a pattern at one region, sampled when they come fast."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Input, RichLog, Select, Static

from plexus.errors import PlexusError
from plexus.tui.model import Mesh
from plexus.tui.screens.base import MeshScreen, one_line
from plexus.tui.tail import Sampler, event_line

if TYPE_CHECKING:
    from plexus.tui.app import TopApp

__all__ = ["EventsScreen"]

LINES_PER_S = 20
LOG_LINES = 1000
# The node holds at most this many events for the tail; past it, it discards them for
# us (and says how many), which is how a fast stream gets sampled without backlog.
TAIL_BUFFER_EVENTS = 1000
STATUS_EVERY_S = 0.25


class EventsScreen(MeshScreen):
    AUTO_FOCUS = "#pattern"
    CSS = """
    #controls { height: 3; }
    #region { width: 22; }
    #pattern { width: 1fr; }
    #log { height: 1fr; border: round $primary; }
    #message { height: 1; }
    """
    BINDINGS: ClassVar = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("enter", "start", "tail (in the pattern)", show=False),
        Binding("tab", "app.focus_next", "region ↔ pattern", show=False),
    ]

    app: TopApp

    def __init__(self, region: str | None) -> None:
        super().__init__()
        self.region_name = region
        self.pattern = ""
        self.sampler = Sampler(LINES_PER_S)
        self.tailing: tuple[str, str] | None = None
        self._names: list[str] = []

    def compose(self) -> ComposeResult:
        names = self._names = [r.name for r in self.app.mesh.regions]
        with Horizontal(id="controls"):
            yield Select(
                [(n, n) for n in names],
                value=self.region_name if self.region_name in names else Select.NULL,
                prompt="region",
                id="region",
            )
            yield Input(placeholder="pattern, e.g. orders/>  (enter starts the tail)", id="pattern")
        yield RichLog(max_lines=LOG_LINES, id="log")
        yield Static("type a pattern and press enter", id="message")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(STATUS_EVERY_S, self._status)

    def show_mesh(self, mesh: Mesh, error: str) -> None:
        select = self.query_one("#region", Select)
        names = [r.name for r in mesh.regions]
        if names != self._names:
            self._names = names
            select.set_options([(n, n) for n in names])
            if self.region_name in names:
                select.value = self.region_name

    def on_select_changed(self, event: Select.Changed) -> None:
        self.region_name = event.value if isinstance(event.value, str) else None
        if self.pattern:
            self._start()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.pattern = event.value.strip()
        self._start()

    def _start(self) -> None:
        if not self.region_name:
            self.say("pick a region first (tab, then enter)", error=True)
            return
        if not self.pattern:
            self.say("type a pattern, e.g. orders/> or '>' for everything", error=True)
            return
        self.sampler = Sampler(LINES_PER_S)
        self.query_one("#log", RichLog).clear()
        self.fetch(self._tail(self.region_name, self.pattern), group="tail", exclusive=True)

    async def _tail(self, region: str, pattern: str) -> None:
        log = self.query_one("#log", RichLog)
        try:
            client = await self.app.source.client(region)
            sub = client.subscribe(pattern, buffer_events=TAIL_BUFFER_EVENTS)
        except PlexusError as exc:
            self.say(one_line(exc), error=True)
            return
        self.tailing = (region, pattern)
        try:
            await sub.ready()
            self._status()
            async for batch in sub.batches():
                now = time.monotonic()
                lost = sum(e.discarded_before for e in batch)
                for i in self.sampler.offer(len(batch), lost, now):
                    e = batch[i]
                    log.write(
                        event_line(
                            e.publish_time_ms, e.origin_region, e.topic, e.payload, e.guaranteed
                        )
                    )
                pause = self.sampler.pause_s(now)
                if pause:
                    await asyncio.sleep(pause)  # pacing: the node discards the surplus for us
            self.say(f"the tail at {region} ended: the node went away", error=True)
        except PlexusError as exc:
            self.say(one_line(exc), error=True)
        finally:
            self.tailing = None
            await sub.close()

    def _status(self) -> None:
        if self.tailing is None:
            return
        region, pattern = self.tailing
        s = self.sampler
        sampled = f" · showing 1 in {s.one_in:,}, {s.skipped:,} skipped" if s.skipped else ""
        self.query_one("#message", Static).update(
            f"tailing {escape(pattern)!r} at {escape(region)}: {s.seen:,} events, "
            f"{s.rate:,.0f}/s{sampled}"
        )
