"""`?`: every key of every screen, read from the screens' own bindings."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HelpScreen", "key_table"]

KEY_NAMES = {
    "question_mark": "?",
    "left": "←",
    "right": "→",
    "up": "↑",
    "down": "↓",
    "plus": "+",
    "minus": "-",
    "slash": "/",
    "escape": "esc",
}


def key_table(title: str, bindings: list[Binding]) -> str:
    """`title` then one line per binding: its keys and what it does."""
    lines = [f"[b]{title}[/b]"]
    for binding in bindings:
        keys = "/".join(KEY_NAMES.get(k, k) for k in binding.key.split(","))
        lines.append(f" {keys:<7} {binding.description}")
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help { width: 78; height: auto; border: thick $accent; background: $surface; }
    #help Horizontal { height: auto; }
    #help Static { width: 1fr; }
    """
    BINDINGS: ClassVar = [Binding("escape,question_mark,q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        from plexus.tui.app import TopApp
        from plexus.tui.screens.events import EventsScreen
        from plexus.tui.screens.region import RegionScreen
        from plexus.tui.screens.topology import TopologyScreen

        with Vertical(id="help"):
            with Horizontal():
                yield Static(
                    key_table("everywhere", TopApp.BINDINGS)
                    + "\n\n"
                    + key_table("topology", TopologyScreen.BINDINGS)
                )
                yield Static(
                    key_table("region (enter)", RegionScreen.BINDINGS)
                    + "\n\n"
                    + key_table("events (e)", EventsScreen.BINDINGS)
                    + "\n\nActions ask to confirm (y/n).\nA region that does not answer"
                    "\nshows as ○ down; the view keeps\ntrying and reconnects."
                )
            yield Static("[dim]esc or ? closes this help[/dim]")
