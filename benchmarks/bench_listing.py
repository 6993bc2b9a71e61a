"""Listings with 10,000 items (issue 10): `plexus queue list` end to end, and each
listing's rendering alone.

- end to end: a node (in this process) with 10,000 queues (20,000 with their
  dead-message queues), the real CLI as a subprocess, `queue list` and
  `queue list --json`, wall time of the whole command (Python start-up included);
- rendering alone: `print_queues`, `print_clients`, `print_subscriptions` and
  `plexus status`'s queue table with 10,000 rows, written to /dev/null; and, for
  comparison, rich's Table (what the listings used before) with 1,000 queues.

    .venv/bin/python benchmarks/bench_listing.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import figure

from node.config import METRICS_OFF, NodeConfig
from node.server import Node
from plexus.cli import output
from plexus.cli.cluster import print_status
from plexus.client import Client
from plexus.client.info import ClientInfo, QueueInfo, SubscriptionInfo, SubscriptionsView

ROWS = 10_000
RICH_ROWS = 1_000
CONCURRENCY = 200
PLEXUS = [sys.executable, "-m", "plexus.cli.main"]


@contextlib.contextmanager
def _to_devnull() -> Iterator[None]:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _timed(fn: Callable[[], Any]) -> float:
    with _to_devnull():
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started


def _queue(i: int) -> QueueInfo:
    return QueueInfo(
        name=f"q{i:05d}",
        subscriptions=(f"orders/{i}/>",),
        exclusive=False,
        max_depth=0,
        max_bytes=0,
        max_deliveries=0,
        depth=i,
        bytes=i * 100,
        consumers=i % 3,
        unacked=0,
        dead_message_queue=f"q{i:05d}.dmq",
        events_in=i,
        events_out=i,
        oldest_age_ms=i,
    )


def _rich_queues(queues: list[QueueInfo]) -> None:
    """The listing as it was: a rich Table sized to its content."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(queues)} queues")
    for column in ("queue", "subscriptions", "depth", "bytes", "consumers", "unacked"):
        table.add_column(column)
    for q in queues:
        cells = (q.name, ", ".join(q.subscriptions), q.depth, q.bytes, q.consumers, q.unacked)
        table.add_row(*map(str, cells))
    Console(highlight=False).print(table)


def rendering() -> list[dict[str, Any]]:
    queues = [_queue(i) for i in range(ROWS)]
    now_ms = time.time_ns() // 1_000_000
    clients = [
        ClientInfo(
            id=i,
            peer=f"ipv4:127.0.0.1:{10000 + i}",
            connected_since_ms=now_ms - i,
            publishers=1,
            subscriptions=(f"orders/{i}/>",),
            consuming=(),
            events_published=i,
            events_delivered=i,
            events_discarded=0,
            limits_hit={},
        )
        for i in range(ROWS)
    ]
    subscriptions = tuple(
        SubscriptionInfo(
            pattern=f"orders/{i}/>",
            queue="" if i % 2 else f"q{i:05d}",
            client_id=i,
            delivered=i,
            discarded=0,
            buffered=0,
            buffer_events=10_000,
        )
        for i in range(ROWS)
    )
    view = SubscriptionsView(subscriptions=subscriptions, total=ROWS)
    status = {
        "cluster": "bench",
        "regions": [],
        "links": [],
        "queues": [
            {"region": "us", "name": q.name, "depth": q.depth, "consumers": q.consumers}
            for q in queues
        ],
    }
    cases = {
        "print_queues": lambda: output.print_queues(queues),
        "print_clients": lambda: output.print_clients(clients),
        "print_subscriptions": lambda: output.print_subscriptions(view, ""),
        "plexus status, queue table": lambda: print_status(status),
    }
    rows = [
        figure("listing", f"{name}, {ROWS:,} rows", _timed(fn) * 1000, "ms")
        for name, fn in cases.items()
    ]
    rich_s = _timed(lambda: _rich_queues(queues[:RICH_ROWS]))
    rows.append(figure("listing", f"before: rich Table, {RICH_ROWS:,} queues", rich_s * 1000, "ms"))
    return rows


async def _cli_s(address: str, *args: str) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *PLEXUS, *args, "--server", address, stdout=asyncio.subprocess.DEVNULL
    )
    code = await proc.wait()
    assert code == 0, f"plexus {' '.join(args)} exited with {code}"
    return time.perf_counter() - started


async def end_to_end() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = NodeConfig(name="us", listen="127.0.0.1:0", data=Path(tmp), metrics=METRICS_OFF)
        async with Node(config) as node:
            async with await Client.connect(node.address) as client:
                for start in range(0, ROWS, CONCURRENCY):
                    names = range(start, min(ROWS, start + CONCURRENCY))
                    await asyncio.gather(
                        *(client.create_queue(f"q{i:05d}", [f"orders/{i}/>"]) for i in names)
                    )
                call_started = time.perf_counter()
                listed = await client.list_queues()
                call_s = time.perf_counter() - call_started
            table_s = await _cli_s(node.address, "queue", "list")
            json_s = await _cli_s(node.address, "queue", "list", "--json")
            info_s = await _cli_s(node.address, "info")
    detail = {"queues": len(listed)}
    return [
        figure("listing", "ListQueues call (SDK), 10,000 queues", call_s * 1000, "ms", **detail),
        figure("listing", "plexus queue list, 10,000 queues", table_s, "s", **detail),
        figure("listing", "plexus queue list --json, 10,000 queues", json_s, "s", **detail),
        figure("listing", "plexus info (start-up, for scale)", info_s, "s"),
    ]


def run() -> list[dict[str, Any]]:
    return rendering() + asyncio.run(end_to_end())


if __name__ == "__main__":
    for row in run():
        print(row)
