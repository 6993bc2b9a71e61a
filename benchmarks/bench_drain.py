"""A deep queue drains as fast as a shallow one? (issue 14)

A queue is filled with guaranteed events while no consumer is attached (a
publisher process, as fast as the node acks), then one consumer process
(bench_throughput's, acking every delivery) drains it; the rate is deliveries
confirmed over the time from the consumer's stream being started (its process
already running) to the last confirmation.
With a short queue (SHORT events; the median of SHORT_RUNS runs, as one drains
in a fraction of a second) and once with a deep one (DEEP events, far more
than the node keeps in memory, so it reads them back from LMDB).

    .venv/bin/python benchmarks/bench_drain.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench_throughput import consumer_worker, guaranteed_publisher_worker
from common import Node, Workers, figure, wait_for_quiet

SHORT = 20_000
SHORT_RUNS = 5
DEEP = 1_000_000
QUEUE = "drain"
TOPIC = "drain/x"


def drain_run(events: int) -> dict[str, Any]:
    """Fill the queue with `events`, then time one consumer draining it."""
    wait_for_quiet()
    with Node() as node, Workers() as workers:

        async def create() -> None:
            async with await node.target.connect() as client:
                await client.create_queue(QUEUE, ["drain/>"])

        asyncio.run(create())
        ready, go = workers.event(), workers.event()
        workers.start(
            "publisher", guaranteed_publisher_worker, node.target, TOPIC, events, ready, go
        )
        workers.wait(ready)
        go.set()
        [filled] = workers.collect(1, timeout=600)
        consumer_ready = workers.event()
        workers.start("consumer", consumer_worker, node.target, QUEUE, events, consumer_ready)
        workers.wait(consumer_ready)  # started, not spawned: process start-up is not draining
        started = time.monotonic_ns()
        [drained] = workers.collect(1, timeout=600)
    seconds = (drained["last_recv"] - started) / 1e9
    return {
        "rate": drained["confirmed"] / seconds if seconds > 0 else 0.0,
        "confirmed": drained["confirmed"],
        "fill_rate": events * 1e9 / (filled["end_pub"] - filled["first_pub"]),
    }


def run() -> list[dict[str, Any]]:
    shorts = sorted((drain_run(SHORT) for _ in range(SHORT_RUNS)), key=lambda r: r["rate"])
    short = shorts[len(shorts) // 2] | {"runs": ", ".join(f"{r['rate']:,.0f}" for r in shorts)}
    deep = drain_run(DEEP)
    rows = []
    for label, result, events in (("short", short, SHORT), ("deep", deep, DEEP)):
        rows.append(
            figure(
                "drain",
                f"{label} queue ({events:,} events) drained by one consumer",
                result["rate"],
                "events/s",
                confirmed=f"{result['confirmed']:,}",
                filled_at_per_s=round(result["fill_rate"]),
                **({"runs": result["runs"]} if "runs" in result else {}),
            )
        )
    rows.append(
        figure(
            "drain",
            "deep queue's drain rate / short queue's",
            deep["rate"] / short["rate"] if short["rate"] else 0.0,
            "ratio",
            target=1.0,
        )
    )
    return rows


if __name__ == "__main__":
    from common import fmt_number

    for row in run():
        print(f"{row['measure']:<55} {fmt_number(row['value']):>10} {row['unit']}")
