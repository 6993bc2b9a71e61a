"""A character canvas: text with a style per cell, lines between points, and cells that
labels protect from being drawn over. Pure: no terminal needed."""

from __future__ import annotations

from rich.text import Text

__all__ = ["Canvas", "line_points"]


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._chars = [[" "] * width for _ in range(height)]
        self._styles = [[""] * width for _ in range(height)]
        self._protected = [[False] * width for _ in range(height)]

    def inside(self, x: int, y: int) -> bool:
        return 0 <= x < self.width and 0 <= y < self.height

    def protected(self, x: int, y: int) -> bool:
        return self.inside(x, y) and self._protected[y][x]

    def blank(self, x: int, y: int, length: int) -> bool:
        """True when `length` cells from (x, y) are inside and empty."""
        return all(self.inside(x + i, y) and self._chars[y][x + i] == " " for i in range(length))

    def unprotected(self, x: int, y: int, length: int) -> bool:
        """True when `length` cells from (x, y) are inside and hold no label."""
        return all(self.inside(x + i, y) and not self._protected[y][x + i] for i in range(length))

    def put(self, x: int, y: int, text: str, style: str = "", protect: bool = True) -> None:
        """Write `text` from (x, y); cells outside are cut, protected cells are kept."""
        for i, char in enumerate(text):
            if self.inside(x + i, y) and not self._protected[y][x + i]:
                self._chars[y][x + i] = char
                self._styles[y][x + i] = style
                self._protected[y][x + i] = protect

    def text(self) -> Text:
        """The canvas as rich Text, one line per row, trailing blanks trimmed."""
        out = Text(no_wrap=True, overflow="crop")
        for y in range(self.height):
            row, styles = self._chars[y], self._styles[y]
            end = len("".join(row).rstrip())
            start = 0
            while start < end:
                stop = start
                while stop < end and styles[stop] == styles[start]:
                    stop += 1
                out.append("".join(row[start:stop]), styles[start] or None)
                start = stop
            if y < self.height - 1:
                out.append("\n")
        return out


def line_points(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int, str]]:
    """Bresenham's cells from (x0, y0) to (x1, y1), each with the stroke for its step."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    x, y = x0, y0
    points: list[tuple[int, int, str]] = []
    while (x, y) != (x1, y1):
        e2 = 2 * err
        step_x = step_y = 0
        if e2 >= dy:
            err += dy
            x += sx
            step_x = sx
        if e2 <= dx:
            err += dx
            y += sy
            step_y = sy
        points.append((x, y, _stroke(step_x, step_y)))
    return points


def _stroke(step_x: int, step_y: int) -> str:
    if step_y == 0:
        return "─"
    if step_x == 0:
        return "│"
    return "╲" if step_x == step_y else "╱"  # noqa: RUF001 - a line's stroke, not a slash
