"""A deep queue drains as fast as a shallow one? (issue 14)

A queue is filled with guaranteed events while no consumer is attached (a
publisher process, as fast as the node acks), then one consumer process
(bench_throughput's, acking every delivery) drains it, timed from the
consumer's stream being started (its process already running) to the last
confirmation. A short queue (SHORT events) is drained SHORT_RUNS times: its
rate is the median run's. A deep one (DEEP events, far more than the node keeps
in memory, so it reads them back from LMDB) is drained once, timed every
SHORT events: its rate is the median of those slices, each measured like a
short run, so a burst of load from elsewhere on the machine weighs on both
figures alike. The whole drain's mean, its slowest slice, its first and last
tenths and the node's CPU time per event (deep and short; noise moves it less
than a rate) are in the row's detail, where anything depth costs would show.

    .venv/bin/python benchmarks/bench_drain.py
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

from bench_throughput import consumer_worker, guaranteed_publisher_worker
from common import Node, Workers, cpu_seconds, figure, wait_for_quiet

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
        workers.start(
            "consumer", consumer_worker, node.target, QUEUE, events, consumer_ready, SHORT
        )
        workers.wait(consumer_ready)  # started, not spawned: process start-up is not draining
        cpu_before = cpu_seconds(node.pid)
        started = time.monotonic_ns()
        [drained] = workers.collect(1, timeout=600)
        node_cpu = cpu_seconds(node.pid) - cpu_before
    seconds = (drained["last_recv"] - started) / 1e9
    marks = [started, *drained["marks"]]
    return {
        "rate": drained["confirmed"] / seconds if seconds > 0 else 0.0,
        "slices": [SHORT * 1e9 / (b - a) for a, b in itertools.pairwise(marks)],
        "confirmed": drained["confirmed"],
        "node_cpu_us": node_cpu / events * 1e6,
        "fill_rate": events * 1e9 / (filled["end_pub"] - filled["first_pub"]),
    }


def run() -> list[dict[str, Any]]:
    shorts = sorted((drain_run(SHORT) for _ in range(SHORT_RUNS)), key=lambda r: r["rate"])
    short = shorts[len(shorts) // 2]
    deep = drain_run(DEEP)
    slices = deep["slices"]
    tenth = max(1, len(slices) // 10)
    deep_rate = statistics.median(slices)
    return [
        figure(
            "drain",
            f"short queue ({SHORT:,} events) drained by one consumer",
            short["rate"],
            "events/s",
            runs=", ".join(f"{r['rate']:,.0f}" for r in shorts),
            node_cpu_us_per_event=round(short["node_cpu_us"], 2),
            filled_at_per_s=round(short["fill_rate"]),
        ),
        figure(
            "drain",
            f"deep queue ({DEEP:,} events) drained by one consumer, per {SHORT:,}",
            deep_rate,
            "events/s",
            whole_drain_per_s=round(deep["rate"]),
            slowest_slice_per_s=round(min(slices)),
            first_last_tenth_per_s=(
                f"{statistics.mean(slices[:tenth]):,.0f}, {statistics.mean(slices[-tenth:]):,.0f}"
            ),
            node_cpu_us_per_event=round(deep["node_cpu_us"], 2),
            confirmed=f"{deep['confirmed']:,}",
            filled_at_per_s=round(deep["fill_rate"]),
        ),
        figure(
            "drain",
            "deep queue's drain rate / short queue's",
            deep_rate / short["rate"] if short["rate"] else 0.0,
            "ratio",
            target=1.0,
            whole_drain_ratio=round(deep["rate"] / short["rate"], 2) if short["rate"] else 0.0,
            node_cpu_ratio=round(deep["node_cpu_us"] / short["node_cpu_us"], 2),
        ),
    ]


if __name__ == "__main__":
    from common import fmt_number

    for row in run():
        print(f"{row['measure']:<55} {fmt_number(row['value']):>10} {row['unit']}")
