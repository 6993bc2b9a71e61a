"""The node's memory: idle, and with one queue of 10,000 vs 1,000,000 events.

RSS is read from /proc/PID/status. It is split into anonymous memory (the
node's own heap: Python objects, buffers) and file-backed memory (pages of
the LMDB file mapped into the node, which the kernel may drop at any time).
The queue is filled with guaranteed 100-byte events and no consumer, with
`publish_nowait` in pipelines of PIPELINE events from this process; RSS is
read a moment after each step, once the node is idle again.

    .venv/bin/python benchmarks/bench_memory.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from common import PAYLOAD, Node, figure, load, profile, rss, wait_for_quiet

from plexus.client import Client

SMALL = 10_000
LARGE = 1_000_000
PIPELINE = 5_000
CHECKPOINTS = (SMALL, 100_000, 500_000, LARGE)
SETTLE_S = 1.0
IDLE_TARGET_MB = 80
# "Does not grow with the queue": anonymous RSS at LARGE may exceed the one at
# SMALL by at most this much (100x the events; a window is 4,096 entries).
GROWTH_ALLOWED_MB = 20


async def fill(client: Client, topic: str, events: int) -> None:
    """Publish `events` guaranteed events and wait until the last is durable."""
    publish = client.publish_nowait
    last = None
    for i in range(events):
        last = publish(topic, PAYLOAD, guaranteed=True)
        if i % PIPELINE == PIPELINE - 1:
            await asyncio.sleep(0)
            await client.drain()
    if last is not None:
        await last
    await client.flush(timeout=120)


async def measure(node: Node) -> dict[str, Any]:
    """Idle RSS, then RSS at each checkpoint of one queue's depth, and fill rates."""
    await asyncio.sleep(SETTLE_S)
    out: dict[str, Any] = {"idle": rss(node.pid), "points": []}
    async with await Client.connect(node.address) as client:
        await client.create_queue("mem", ["mem/>"], max_depth=2 * LARGE, max_bytes=4 << 30)
        depth, seconds = 0, 0.0
        for point in CHECKPOINTS:
            started = time.perf_counter()
            with profile(f"memory-fill-{point}", {"node": node.pid}):
                await fill(client, "mem/x", point - depth)
            if depth >= SMALL:
                seconds += time.perf_counter() - started
            depth = (await client.describe_queue("mem")).depth
            await asyncio.sleep(SETTLE_S)
            out["points"].append((depth, rss(node.pid)))
        out["rate"] = (depth - SMALL) / seconds
        out["storage_mb"] = (await client.node_info()).storage_used_bytes / (1 << 20)
    return out


def run() -> list[dict[str, Any]]:
    """Idle RSS, RSS by queue depth, anonymous growth from SMALL to LARGE."""
    wait_for_quiet()
    load_before = load()
    with Node() as node:
        m = asyncio.run(measure(node))
    idle = m["idle"]
    rows = [
        figure("memory", "idle node RSS", idle["rss"], "MiB", target=IDLE_TARGET_MB,
               higher_is_better=False, anon=idle["anon"], file=idle["file"], load=load_before),
    ]  # fmt: skip
    for depth, mem in m["points"]:
        rows.append(
            figure("memory", f"RSS, one queue of {depth:,}", mem["rss"], "MiB",
                   anon=mem["anon"], file=mem["file"], peak=mem["peak"])
        )  # fmt: skip
    (small_depth, small), (large_depth, large) = m["points"][0], m["points"][-1]
    rows.append(
        figure("memory", f"anon RSS growth, {small_depth:,} → {large_depth:,} events",
               large["anon"] - small["anon"], "MiB", target=GROWTH_ALLOWED_MB,
               higher_is_better=False, lmdb_used_mib=m["storage_mb"])
    )  # fmt: skip
    rows.append(
        figure("memory", f"fill {small_depth:,} → {large_depth:,}: guaranteed, no consumer",
               m["rate"], "events/s", pipeline=PIPELINE)
    )  # fmt: skip
    return rows


if __name__ == "__main__":
    from run_all import main

    main(["--only", "memory"])
