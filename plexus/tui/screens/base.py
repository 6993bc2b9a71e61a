"""What every screen of `plexus top` shares: it hears each refresh and shows one-line messages."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Awaitable, Iterable, Sequence

from rich.markup import escape
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.widgets.data_table import RowDoesNotExist

from plexus.tui.model import Mesh

# What refill last put in each table, row by row.
_shown: weakref.WeakKeyDictionary[DataTable[object], dict[str, tuple[object, ...]]] = (
    weakref.WeakKeyDictionary()
)

__all__ = ["MeshScreen", "fmt_age", "fmt_raft", "one_line", "refill", "selected_key"]


class MeshScreen(Screen[None]):
    def show_mesh(self, mesh: Mesh, error: str) -> None:
        """Called by the app after every refresh of the mesh."""

    def fetch(self, work: Awaitable[None], group: str, exclusive: bool = False) -> None:
        """Run a fetch-then-show worker. The screen may lose its widgets while the
        fetch waits (closed, or the app quitting): then there is nothing to show."""

        async def unless_gone() -> None:
            with contextlib.suppress(NoMatches):
                await work

        self.run_worker(unless_gone(), group=group, exclusive=exclusive)

    def say(self, text: str, error: bool = False) -> None:
        """Show one line in the screen's message line (red for an error)."""
        try:
            line = self.query_one("#message", Static)
        except NoMatches:
            return
        body = escape(one_line(text))
        line.update(f"[red]✖ {body}[/red]" if error else body)


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def fmt_raft(role: str, term: int) -> str:
    """A region's part in Raft: "raft leader term 4", "raft non-voter" (it follows the
    membership from a voter, with no term of its own), or "no raft"."""
    if not role:
        return "no raft"
    return f"raft {role}" if role == "non-voter" else f"raft {role} term {term}"


def fmt_age(ms: int) -> str:
    """An age in a few characters: -, 850ms, 12s, 3m, 2h."""
    if ms <= 0:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms // 1000}s"
    if ms < 3_600_000:
        return f"{ms // 60_000}m"
    return f"{ms // 3_600_000}h"


def selected_key(table: DataTable[object]) -> str | None:
    """The key of the row under the table's cursor (None when the table is empty)."""
    if not table.row_count:
        return None
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


def refill(table: DataTable[object], rows: Iterable[tuple[str, Sequence[object]]]) -> None:
    """Show these rows (key, cells), keeping the cursor on the same key: a refresh every
    second must not move the row the user picked. When the keys are the same as last
    time, in the same order, only the cells that changed are updated (rebuilding 20,000
    rows takes seconds)."""
    wanted = [(key, tuple(cells)) for key, cells in rows]
    shown = _shown.get(table)
    if (
        shown is not None
        and table.row_count == len(shown)
        and list(shown) == [k for k, _ in wanted]
    ):
        columns = list(table.columns)
        for key, cells in wanted:
            for column, old, new in zip(columns, shown[key], cells, strict=True):
                if old != new:
                    table.update_cell(key, column, new)
        _shown[table] = dict(wanted)
        return
    selected = selected_key(table)
    table.clear()
    for key, cells in wanted:
        table.add_row(*cells, key=key)
    _shown[table] = dict(wanted)
    # A row that is gone leaves the cursor on the first.
    if selected is not None:
        with contextlib.suppress(RowDoesNotExist):
            table.move_cursor(row=table.get_row_index(selected), animate=False)
