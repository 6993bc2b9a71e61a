"""How commands print: fast plain or JSON lines for events, rich tables for people."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO, NamedTuple

from plexus.client.event import Event
from plexus.client.info import ClientInfo, NodeInfo, QueueInfo, SubscriptionsView

__all__ = [
    "Column",
    "EventPrinter",
    "print_clients",
    "print_json",
    "print_node_info",
    "print_queue",
    "print_queues",
    "print_subscriptions",
    "print_table",
]


class EventPrinter:
    """Writes events to stdout as `topic payload` lines or JSON lines, a batch per write."""

    def __init__(self, as_json: bool, out: BinaryIO | None = None) -> None:
        self.as_json = as_json
        self.out = out if out is not None else sys.stdout.buffer

    def write(self, events: Iterable[Event]) -> None:
        if self.as_json:
            dumps = json.dumps
            data = "".join([dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in events])
            self.out.write(data.encode("utf-8"))
        else:
            self.out.write(
                b"".join(
                    [
                        e.message.topic.encode("utf-8", "surrogateescape")
                        + b" "
                        + e.message.payload
                        + b"\n"
                        for e in events
                    ]
                )
            )
        self.out.flush()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def age(ms: int) -> str:
    """A duration for people: -, 850 ms, 12.5 s, 3.0 min."""
    if ms <= 0:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


def _limit(value: int) -> str:
    return str(value) if value else "node default"


class Column(NamedTuple):
    name: str
    right: bool = False  # numbers: aligned right


def print_table(title: str, columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> None:
    """A listing as plain aligned text: a title, a header, a rule, one line per row.

    Linear in the rows and cheap per cell (rich's Table measures, pads and wraps
    every cell: ~5 ms a row, 40 s for 10,000 queues), so listings of any length
    print at once. Cells are plain text, never markup; none is wrapped.
    """
    body = [list(row) for row in rows]
    widths = [_width(c.name) for c in columns]
    for row in body:
        for i, cell in enumerate(row):
            width = _width(cell)
            if width > widths[i]:
                widths[i] = width
    last = len(columns) - 1

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, column) in enumerate(zip(cells, columns, strict=True)):
            pad = " " * (widths[i] - _width(cell))
            if column.right:
                out.append(pad + cell)
            else:
                out.append(cell if i == last else cell + pad)
        return "  ".join(out).rstrip()

    lines = [title, line([c.name for c in columns]), "  ".join("-" * w for w in widths)]
    lines.extend(line(row) for row in body)
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _width(text: str) -> int:
    """Terminal cells `text` takes (wide characters take two)."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


QUEUE_COLUMNS = (
    Column("queue"),
    Column("subscriptions"),
    *(Column(n, right=True) for n in ("depth", "bytes", "consumers", "unacked")),
    *(Column(n, right=True) for n in ("in", "out", "oldest")),
)


def print_queues(queues: list[QueueInfo]) -> None:
    rows = (
        (
            f"{q.name} (exclusive)" if q.exclusive else q.name,
            ", ".join(q.subscriptions) or "-",
            str(q.depth),
            _size(q.bytes),
            str(q.consumers),
            str(q.unacked),
            str(q.events_in),
            str(q.events_out),
            age(q.oldest_age_ms),
        )
        for q in queues
    )
    print_table(_plural(len(queues), "queue"), QUEUE_COLUMNS, rows)


def print_queue(q: QueueInfo) -> None:
    from rich.table import Table

    table = Table(title=f"queue {q.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("subscriptions", ", ".join(q.subscriptions) or "-"),
        ("exclusive", "yes" if q.exclusive else "no"),
        ("depth", f"{q.depth} (max {_limit(q.max_depth)})"),
        ("bytes", f"{_size(q.bytes)} (max {_limit(q.max_bytes)})"),
        ("max deliveries", _limit(q.max_deliveries)),
        ("consumers", str(q.consumers)),
        ("unacked", str(q.unacked)),
        ("events in / out", f"{q.events_in} / {q.events_out}"),
        ("oldest event", age(q.oldest_age_ms)),
        ("dead-message queue", q.dead_message_queue or "-"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    _console().print(table)


def print_node_info(info: NodeInfo) -> None:
    from rich.table import Table

    table = Table(title=f"node {info.region}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("region", info.region),
        ("version", f"{info.version} (protocol {info.protocol_version})"),
        ("listening on", info.listen_address),
        ("data dir", info.data_dir),
        ("uptime", age(info.uptime_ms)),
        ("subscriptions", str(info.subscriptions)),
        ("queues", str(info.queues)),
        ("direct in / out", f"{info.direct_in} / {info.direct_out}"),
        ("guaranteed in / out", f"{info.guaranteed_in} / {info.guaranteed_out}"),
        ("discarded", str(info.discarded)),
        ("storage", f"{_size(info.storage_used_bytes)} of {_size(info.storage_map_bytes)} map"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    _console().print(table)


def _streams(c: ClientInfo) -> str:
    kinds = (
        (c.publishers, "pub"),
        (len(c.subscriptions), "sub"),
        (len(c.consuming), "consume"),
    )
    return ", ".join(f"{count} {kind}" for count, kind in kinds if count) or "-"


CLIENT_COLUMNS = (
    Column("id", right=True),
    Column("client"),
    Column("since", right=True),
    Column("streams"),
    *(Column(n, right=True) for n in ("published", "delivered", "discarded")),
    Column("limits"),
)


def _client(c: ClientInfo) -> str:
    """Its name and address, or its address alone (the table stays within 80 columns)."""
    peer = c.peer.removeprefix("ipv4:").removeprefix("ipv6:")
    return f"{c.name} ({peer})" if c.name else peer


def print_clients(clients: list[ClientInfo]) -> None:
    now_ms = time.time_ns() // 1_000_000
    rows = (
        (
            str(c.id),
            _client(c),
            age(now_ms - c.connected_since_ms),
            _streams(c),
            str(c.events_published),
            str(c.events_delivered),
            str(c.events_discarded),
            ", ".join(f"{limit} {n}" for limit, n in c.limits_hit.items()) or "-",
        )
        for c in clients
    )
    print_table(_plural(len(clients), "client"), CLIENT_COLUMNS, rows)


SUBSCRIPTION_COLUMNS = (
    Column("pattern"),
    Column("holder"),
    *(Column(n, right=True) for n in ("delivered", "discarded", "buffered")),
)


def print_subscriptions(view: SubscriptionsView, contains: str) -> None:
    title = f"{len(view.subscriptions)} of {view.total} subscriptions"
    rows = (
        (
            s.pattern,
            f"client {s.client_id}",
            str(s.delivered),
            str(s.discarded),
            f"{s.buffered}/{s.buffer_events}",
        )
        if s.direct
        else (s.pattern, f"queue {s.queue}", "-", "-", "-")
        for s in view.subscriptions
    )
    title += f" containing {contains!r}" if contains else ""
    print_table(title, SUBSCRIPTION_COLUMNS, rows)
