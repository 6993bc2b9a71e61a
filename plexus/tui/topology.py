"""The topology drawing: regions and the links between them, as a pure function of a Mesh.

The layout follows the shape of the graph: a chain snakes across rows, a ring
and any other sparse graph sit on an ellipse, a hub sits in the middle of its
spokes. Each link carries its state as a mark at its middle (and a solid or
dotted line) and its events per second each way as arrows pointing the way the
events flow on screen. A dense mesh, or one too crowded for the space, is shown
as an adjacency matrix instead: row region → column region, state and rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

from rich.text import Text

from plexus.tui.canvas import Canvas, line_points
from plexus.tui.model import LinkState, Mesh, RegionState

__all__ = ["LINK_MARKS", "REGION_MARKS", "Layout", "choose_layout", "draw", "fmt_rate"]

# Colour never carries meaning alone: each state has its own mark too.
LINK_MARKS = {"up": ("●", "green"), "connecting": ("◌", "yellow"), "down": ("○", "red")}
REGION_MARKS = {True: ("●", "green"), False: ("○", "red")}
SELECTED = "reverse bold"
# Chain layout: columns between region labels, and rows between rows of regions.
CHAIN_GAP = 9
CHAIN_ROW_STEP = 4
# A link shorter than this cannot show its mark with a stroke on each side.
MIN_LINK_CELLS = 3
# Past this many links per region a drawing turns into a thicket: use the matrix.
SPARSE_LINKS_PER_REGION = 1.5


class Layout(Enum):
    CHAIN = "chain"
    RING = "ring"
    HUB = "hub-and-spoke"
    CIRCLE = "circle"
    MATRIX = "matrix"


Link = tuple[str, str]


def choose_layout(names: Sequence[str], links: Sequence[Link]) -> Layout:
    """The layout that reads best for this graph's shape."""
    n = len(names)
    degree = {name: 0 for name in names}
    for a, b in links:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    connected = _connected(names, links)
    if n <= 2 or (connected and len(links) == n - 1 and max(degree.values()) <= 2):
        return Layout.CHAIN
    if connected and len(links) == n and all(d == 2 for d in degree.values()):
        return Layout.RING
    if len(links) == n - 1 and max(degree.values()) == n - 1:
        return Layout.HUB
    if len(links) <= SPARSE_LINKS_PER_REGION * n:
        return Layout.CIRCLE
    return Layout.MATRIX


def draw(
    mesh: Mesh,
    width: int,
    height: int,
    *,
    layout: Layout | None = None,
    selected_region: str | None = None,
    selected_link: Link | None = None,
) -> Text:
    """The mesh drawn in `width` x `height` cells (the matrix when a drawing would not fit)."""
    names = [r.name for r in mesh.regions]
    if not names:
        return Text("no regions")
    layout = layout or choose_layout(names, [link.key for link in mesh.links])
    if layout is not Layout.MATRIX:
        positions = _positions(layout, mesh, width, height)
        if positions is not None:
            canvas = _drawing(mesh, positions, width, height, selected_region, selected_link)
            if canvas is not None:
                return canvas.text()
    return matrix(mesh, width, selected_region, selected_link)


# ------------------------------------------------------------------ positions


def _positions(
    layout: Layout, mesh: Mesh, width: int, height: int
) -> dict[str, tuple[int, int]] | None:
    names = [r.name for r in mesh.regions]
    links = [link.key for link in mesh.links]
    label = max(len(_label(r)) for r in mesh.regions)
    if layout is Layout.CHAIN:
        return _snake(_walk(names, links), label, width, height)
    if layout is Layout.RING:
        return _ellipse(_walk(names, links), label, width, height)
    if layout is Layout.HUB:
        hub = max(names, key=lambda n: sum(n in link for link in links))
        return _ellipse([n for n in names if n != hub], label, width, height, centre=hub)
    return _ellipse(names, label, width, height)


def _walk(names: list[str], links: list[Link]) -> list[str]:
    """The regions in path order, from an end of the chain (or anywhere on a ring)."""
    if not links:
        return names
    neighbours: dict[str, list[str]] = {n: [] for n in names}
    for a, b in links:
        neighbours[a].append(b)
        neighbours[b].append(a)
    start = next((n for n in names if len(neighbours[n]) == 1), names[0])
    order, seen = [start], {start}
    while True:
        nxt = next((n for n in neighbours[order[-1]] if n not in seen), None)
        if nxt is None:
            break
        order.append(nxt)
        seen.add(nxt)
    return order + [n for n in names if n not in seen]


def _snake(
    order: list[str], label: int, width: int, height: int
) -> dict[str, tuple[int, int]] | None:
    """Rows left to right, then right to left, so neighbours on the chain sit side by side."""
    cell = label + CHAIN_GAP
    per_row = max(1, min(len(order), (width - label) // cell + 1))
    rows = math.ceil(len(order) / per_row)
    step = CHAIN_ROW_STEP
    while step > 2 and (rows - 1) * step + 1 > height:
        step -= 1
    if (rows - 1) * step + 1 > height:
        return None
    x0 = (width - (per_row - 1) * cell) // 2
    y0 = (height - ((rows - 1) * step + 1)) // 2
    positions = {}
    for i, name in enumerate(order):
        row, col = divmod(i, per_row)
        if row % 2:
            col = per_row - 1 - col
        positions[name] = (x0 + col * cell, y0 + row * step)
    return positions


def _ellipse(
    order: list[str], label: int, width: int, height: int, centre: str | None = None
) -> dict[str, tuple[int, int]] | None:
    """Clockwise from the top on an ellipse stretched to fill the space (labels inside);
    `centre`, if given, sits at the ellipse's centre."""
    if height < 5 or width < 2 * label + 4:
        return None
    unit = {
        name: (
            math.cos(-math.pi / 2 + 2 * math.pi * i / len(order)),
            math.sin(-math.pi / 2 + 2 * math.pi * i / len(order)),
        )
        for i, name in enumerate(order)
    }
    if centre is not None:
        unit[centre] = (0.0, 0.0)
    xs, ys = [u for u, _ in unit.values()], [v for _, v in unit.values()]
    left, right = label / 2 + 1, width - label / 2 - 2
    top, bottom = 0, height - 1

    def fit(value: float, low: float, high: float, lo: float, hi: float) -> int:
        share = (value - low) / (high - low) if high > low else 0.5
        # Rounded half up, with slack: sin(150°) must land where sin(30°) does.
        return math.floor(lo + share * (hi - lo) + 0.5 + 1e-9)

    return {
        name: (fit(u, min(xs), max(xs), left, right), fit(v, min(ys), max(ys), top, bottom))
        for name, (u, v) in unit.items()
    }


# ------------------------------------------------------------------ the drawing


def _label(region: RegionState) -> str:
    return f"{REGION_MARKS[region.up][0]} {region.name}"


def _drawing(
    mesh: Mesh,
    positions: dict[str, tuple[int, int]],
    width: int,
    height: int,
    selected_region: str | None,
    selected_link: Link | None,
) -> Canvas | None:
    """Labels first (so lines stop at them), then lines, marks and rates; None if crowded."""
    canvas = Canvas(width, height)
    spans: dict[str, tuple[int, int, int]] = {}
    for region in mesh.regions:
        x, y = positions[region.name]
        text = _label(region)
        left = min(max(0, x - len(text) // 2), width - len(text))
        # A label needs a free cell on each side, or names run together: too crowded.
        pad_left, pad_right = max(0, left - 1), min(width, left + len(text) + 1)
        if not canvas.unprotected(pad_left, y, pad_right - pad_left):
            return None
        mark, colour = REGION_MARKS[region.up]
        style = SELECTED if region.name == selected_region else ""
        canvas.put(left, y, mark, f"{colour} {style}".strip())
        canvas.put(left + 1, y, text[1:], style or "bold")
        spans[region.name] = (left, left + len(text), y)
    for link in mesh.links:
        if not _draw_link(canvas, link, positions, spans, selected_link):
            return None
    return canvas


def _draw_link(
    canvas: Canvas,
    link: LinkState,
    positions: dict[str, tuple[int, int]],
    spans: dict[str, tuple[int, int, int]],
    selected_link: Link | None,
) -> bool:
    """Draw the link; False when it is too short to show its mark between two cells."""
    (xa, ya), (xb, yb) = positions[link.a], positions[link.b]
    cells = [
        (x, y, stroke)
        for x, y, stroke in line_points(xa, ya, xb, yb)
        if not any(y == sy and left - 1 <= x <= right for left, right, sy in spans.values())
    ]
    if len(cells) < MIN_LINK_CELLS:
        return False
    mark, colour = LINK_MARKS.get(link.state, ("?", ""))
    selected = selected_link is not None and set(selected_link) == {link.a, link.b}
    style = f"{colour} {SELECTED}" if selected else colour
    for x, y, stroke in cells:
        canvas.put(x, y, stroke if link.state == "up" else "·", style, protect=False)
    mx, my, _ = cells[len(cells) // 2]
    canvas.put(mx, my, mark, style)
    _place(canvas, _rates_label(link, xa, ya, xb, yb), mx, my, xb - xa, yb - ya, style)
    return True


def _rates_label(link: LinkState, xa: int, ya: int, xb: int, yb: int) -> str:
    """Rates with arrows pointing the way the events flow on screen; or the state's word."""
    if link.state != "up":
        return "held down" if link.held_down else link.state
    a_first = (xa, ya) <= (xb, yb) if abs(xb - xa) >= 2 * abs(yb - ya) else ya <= yb
    forward, back = (link.rate_ab, link.rate_ba) if a_first else (link.rate_ba, link.rate_ab)
    if abs(xb - xa) >= 2 * abs(yb - ya):
        return f"→{fmt_rate(forward)} ←{fmt_rate(back)}"
    return f"↓{fmt_rate(forward)} ↑{fmt_rate(back)}"


def _place(canvas: Canvas, text: str, mx: int, my: int, dx: int, dy: int, style: str) -> None:
    """Beside the link's mark: above or below a level line, to the side of a steep one."""
    n = len(text)
    beside = [(mx + 2, my), (mx - n - 1, my)]
    over = [(mx - n // 2, my - 1), (mx - n // 2, my + 1)]
    candidates = over + beside if abs(dx) >= 2 * abs(dy) else beside + over
    for fits in (canvas.blank, canvas.unprotected):
        for x, y in candidates:
            # A free cell on each side too, so a label never runs into a name.
            if fits(x, y, n) and canvas.unprotected(max(0, x - 1), y, n + 2 - (x == 0)):
                canvas.put(x, y, text, style)
                return


# ------------------------------------------------------------------ the matrix


def matrix(
    mesh: Mesh, width: int, selected_region: str | None = None, selected_link: Link | None = None
) -> Text:
    """Row region → column region: the link's mark and events per second that way."""
    names = [r.name for r in mesh.regions]
    head = max(len(n) for n in names) + 3
    cell = max(7, min(9, max(len(n) for n in names) + 2))  # mark, space, rate, space
    if head + cell * len(names) > width:
        cell = max(3, (width - head) // max(1, len(names)))
    out = Text(no_wrap=True, overflow="crop")
    out.append(" " * head)
    for name in names:
        out.append(name[: cell - 1].rjust(cell - 1) + " ", "bold")
    for region in mesh.regions:
        out.append("\n")
        mark, colour = REGION_MARKS[region.up]
        style = SELECTED if region.name == selected_region else "bold"
        out.append(mark, colour)
        out.append(" " + region.name.ljust(head - 2), style)
        for other in names:
            out.append(_matrix_cell(mesh, region.name, other, cell, selected_link))
    return out


def _matrix_cell(mesh: Mesh, row: str, col: str, cell: int, selected_link: Link | None) -> Text:
    if row == col:
        return Text("·".rjust(cell - 1) + " ", "dim")
    link = mesh.link(row, col)
    if link is None:
        return Text(" " * cell)
    mark, colour = LINK_MARKS.get(link.state, ("?", ""))
    rate = fmt_rate(link.rate_from(row)) if link.state == "up" else ""
    # The mark at the left of the cell, the rate right-aligned: columns line up.
    body = mark + (rate.rjust(cell - 2) if cell - 2 >= len(rate) else " " * (cell - 2))
    selected = selected_link is not None and set(selected_link) == {row, col}
    return Text(body + " ", f"{colour} {SELECTED}" if selected else colour)


# ------------------------------------------------------------------ helpers


def fmt_rate(per_s: float) -> str:
    """Events per second in at most 4 characters: 0, 12, 950, 1.2k, 34k, 1.5M."""
    if per_s <= 0:
        return "0"
    if per_s < 1:
        return "<1"
    if per_s < 1000:
        return f"{per_s:.0f}"
    if per_s < 9950:
        return f"{per_s / 1000:.1f}k"
    if per_s < 999_500:
        return f"{per_s / 1000:.0f}k"
    return f"{per_s / 1e6:.1f}M"


def _connected(names: Sequence[str], links: Sequence[Link]) -> bool:
    if not names:
        return True
    neighbours: dict[str, set[str]] = {n: set() for n in names}
    for a, b in links:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    seen, todo = {names[0]}, [names[0]]
    while todo:
        for nxt in neighbours[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen >= set(names)
