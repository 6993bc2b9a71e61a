"""`plexus top` (issue 5): time per refresh on a 12-region local cluster with 10,000
subscriptions spread over the regions.

A refresh is what the UI does once a second: ask every region for its links
(without the interest) and membership, concurrently over one open client per
region, build the mesh, and draw it. Measured four ways, each over REFRESHES
refreshes:

- the whole refresh inside the real app (Textual, headless, 80x24): from the
  start of the fetch until the screen has been drawn with the result;
- the fetch alone (`LiveSource.mesh()`);
- the drawing alone (`topology.draw` at 80x24 and 200x50);
- the region view's fetch of the hub (`LiveSource.region("r00")`: node info,
  queues, links, membership), what an open region view adds to each refresh.

The subscriptions are queue subscriptions (10 queues per region, distinct
patterns), so every region's interest holds all 10,000 patterns: what a
refresh must not carry.

    .venv/bin/python benchmarks/bench_tui.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cluster import TWELVE, local_cluster, targets, twelve_regions
from common import Target, figure, load, wait_for_quiet

from plexus.local.state import StateDir
from plexus.tui.actions import Actions
from plexus.tui.app import REFRESH_S, TopApp
from plexus.tui.sources import LiveSource
from plexus.tui.topology import draw

SUBSCRIPTIONS = 10_000
QUEUES_PER_REGION = 10
REFRESHES = 15
INTEREST_TIMEOUT_S = 60.0


async def subscribe(at: dict[str, Target]) -> None:
    """10,000 distinct queue subscriptions over the regions; wait until every region knows."""
    per_queue = SUBSCRIPTIONS // (len(at) * QUEUES_PER_REGION)
    extra = SUBSCRIPTIONS - per_queue * len(at) * QUEUES_PER_REGION
    total = 0
    for name, target in at.items():
        async with await target.connect() as client:
            for q in range(QUEUES_PER_REGION):
                n = per_queue + (1 if extra > 0 else 0)
                extra -= 1
                patterns = [f"bench/{name}/q{q}/s{i}/>" for i in range(n)]
                await client.create_queue(f"q{q}", patterns)
                total += n
    assert total == SUBSCRIPTIONS
    deadline = time.monotonic() + INTEREST_TIMEOUT_S
    async with await next(iter(at.values())).connect() as client:
        while True:
            view = await client.list_links()
            if sum(len(i.patterns) for i in view.interest) >= SUBSCRIPTIONS:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the 10,000 subscriptions did not reach every region")
            await asyncio.sleep(0.1)


async def measure(state: StateDir) -> dict[str, list[float]]:
    source = LiveSource(state=state)
    fetch = []
    for _ in range(REFRESHES):
        started = time.perf_counter()
        mesh = await source.mesh()
        fetch.append(time.perf_counter() - started)
    assert all(r.up for r in mesh.regions) and len(mesh.regions) == len(TWELVE)
    region = []
    for _ in range(REFRESHES + 1):  # the first also starts the rates
        started = time.perf_counter()
        await source.region(TWELVE[0])
        region.append(time.perf_counter() - started)
    drawing = []
    for width, height in ((80, 19), (200, 50)):
        for _ in range(REFRESHES):
            started = time.perf_counter()
            draw(mesh, width, height, selected_region=TWELVE[0])
            drawing.append(time.perf_counter() - started)
    await source.close()

    source = LiveSource(state=state)
    app = TopApp(source, Actions(source), refresh_s=REFRESH_S)
    async with app.run_test(size=(80, 24)) as pilot:
        deadline = time.monotonic() + 60
        while app.refreshes < REFRESHES + 1:  # the first one also connects
            assert time.monotonic() < deadline, "the app stopped refreshing"
            await pilot.pause(0.05)
        whole = list(app.refresh_times)[1 : REFRESHES + 1]
    return {"whole": whole, "fetch": fetch[1:], "draw": drawing, "region": region[1:]}


def ms(values: list[float], q: float = 0.5) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="plexus-bench-tui-") as tmp:
        config = twelve_regions("hub-and-spoke", Path(tmp))
        with local_cluster(config) as (state, result):
            asyncio.run(subscribe(targets(state, result)))
            wait_for_quiet()
            loads = [load()]
            times = asyncio.run(measure(state))
            loads.append(load())
    whole = times["whole"]
    return [
        figure(
            "tui", "plexus top refresh (fetch + render), 12 regions, 10,000 subscriptions",
            ms(whole), "ms", target=100.0, higher_is_better=False,
            p95_ms=ms(whole, 0.95), max_ms=round(max(whole) * 1000, 2),
            refreshes=len(whole), mean_ms=round(statistics.mean(whole) * 1000, 2),
            load=", ".join(loads),
        ),
        figure("tui", "fetch alone (every region, concurrently)", ms(times["fetch"]), "ms",
               p95_ms=ms(times["fetch"], 0.95)),
        figure("tui", "drawing alone (80x19 and 200x50)", ms(times["draw"]), "ms",
               p95_ms=ms(times["draw"], 0.95)),
        figure("tui", "region view fetch (the hub)", ms(times["region"]), "ms",
               p95_ms=ms(times["region"], 0.95)),
    ]  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    for row in run():
        print(row)
