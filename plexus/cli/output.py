"""How commands print: fast plain or JSON lines for events, rich tables for people."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from typing import Any, BinaryIO

from plexus.client.event import Event
from plexus.client.info import ClientInfo, NodeInfo, QueueInfo, SubscriptionsView

__all__ = [
    "EventPrinter",
    "print_clients",
    "print_json",
    "print_node_info",
    "print_queue",
    "print_queues",
    "print_subscriptions",
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


def print_queues(queues: list[QueueInfo]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(queues)} queue{'s' if len(queues) != 1 else ''}")
    for column in ("queue", "subscriptions", "depth", "bytes", "consumers", "unacked"):
        table.add_column(
            column, justify="left" if column in ("queue", "subscriptions") else "right"
        )
    table.add_column("in", justify="right")
    table.add_column("out", justify="right")
    table.add_column("oldest", justify="right")
    for q in queues:
        name = f"{q.name} [dim](exclusive)[/dim]" if q.exclusive else q.name
        table.add_row(
            name,
            ", ".join(q.subscriptions) or "-",
            str(q.depth),
            _size(q.bytes),
            str(q.consumers),
            str(q.unacked),
            str(q.events_in),
            str(q.events_out),
            age(q.oldest_age_ms),
        )
    _console().print(table)


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


def print_clients(clients: list[ClientInfo]) -> None:
    from rich import box
    from rich.table import Table

    now_ms = time.time_ns() // 1_000_000
    title = f"{len(clients)} client{'s' if len(clients) != 1 else ''}"
    # Light rules and one space of padding: seven columns fit 80 characters.
    table = Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False
    )
    table.add_column("id", justify="right")
    table.add_column("peer", no_wrap=True)
    table.add_column("since", justify="right")
    table.add_column("streams")
    for column in ("published", "delivered", "discarded"):
        table.add_column(column, justify="right")
    for c in clients:
        table.add_row(
            str(c.id),
            c.peer.removeprefix("ipv4:").removeprefix("ipv6:"),
            age(now_ms - c.connected_since_ms),
            _streams(c),
            str(c.events_published),
            str(c.events_delivered),
            str(c.events_discarded),
        )
    _console().print(table)


def print_subscriptions(view: SubscriptionsView, contains: str) -> None:
    from rich.table import Table

    title = f"{len(view.subscriptions)} of {view.total} subscriptions"
    table = Table(title=title + (f" containing {contains!r}" if contains else ""))
    table.add_column("pattern")
    table.add_column("holder")
    for column in ("delivered", "discarded", "buffered"):
        table.add_column(column, justify="right")
    for s in view.subscriptions:
        if s.direct:
            counts = (str(s.delivered), str(s.discarded), f"{s.buffered}/{s.buffer_events}")
            table.add_row(s.pattern, f"client {s.client_id}", *counts)
        else:
            table.add_row(s.pattern, f"queue {s.queue}", "-", "-", "-")
    _console().print(table)
