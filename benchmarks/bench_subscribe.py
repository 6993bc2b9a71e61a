"""A new subscription's first event: how soon after `subscribe` events start to arrive (issue 14).

A publisher process publishes direct events on `new/x` at RATE/s throughout
(paced like bench_latency's); a subscriber process then opens SUBSCRIPTIONS
subscriptions one after another, each `client.subscribe("new/>")` followed by
waiting for its first event, and takes the time from the call to that event
as a user's code sees it (and, as a detail, to `subscribe` returning live).
At RATE/s an event is due every 1 / RATE s, which bounds what the figure can
show from below (0.1 ms here).

In one node, and across a link (subscriber in eu, publisher in us: the new
interest travels to us before us sends eu anything).

    .venv/bin/python benchmarks/bench_subscribe.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench_latency import paced
from common import (
    LinkedRegions,
    Node,
    Target,
    Workers,
    figure,
    percentile,
    report_errors,
    run_async_worker,
    wait_for_quiet,
)

RATE = 10_000
SUBSCRIPTIONS = 50
PUBLISH_S = 30.0  # longer than the subscriptions take; the publisher is stopped after
TARGETS_MS = {"in one node": 1.5, "across a link": 3.0}
PEERS = {
    "in one node": "NATS 1.19 ms, JetStream 1.94 ms, Mosquitto 0.91 ms (issue 14)",
    "across a link": "NATS 2.27 ms, JetStream 2.40 ms, Mosquitto 1.01 ms (issue 14)",
}


@report_errors
def publisher_worker(results: Any, target: Target, ready: Any, done: Any) -> None:
    async def main() -> dict[str, Any]:
        async with await target.connect() as client:
            ready.set()
            publishing = asyncio.create_task(
                paced(client, "new/x", int(RATE * PUBLISH_S), RATE, False)
            )
            while not done.is_set():
                await asyncio.sleep(0.05)
            publishing.cancel()
        return {"role": "publisher"}

    results.put(run_async_worker(main()))


@report_errors
def subscriber_worker(results: Any, target: Target, go: Any) -> None:
    async def main() -> dict[str, Any]:
        waits_ms: list[float] = []
        live_ms: list[float] = []
        async with await target.connect() as client:
            go.wait()
            for _ in range(SUBSCRIPTIONS):
                started = time.perf_counter()
                async with client.subscribe("new/>") as sub:
                    live = time.perf_counter()  # the node answered: it is in the index
                    batch = await sub.next_batch(timeout=10.0)
                    arrived = time.perf_counter()
                if not batch:
                    raise RuntimeError("a new subscription got no event within 10 s")
                waits_ms.append((arrived - started) * 1000)
                live_ms.append((live - started) * 1000)
                await asyncio.sleep(0.02)  # the previous subscription is gone everywhere
        return {
            "role": "subscriber",
            "p50": percentile(waits_ms, 50),
            "p99": percentile(waits_ms, 99),
            "max": max(waits_ms),
            "live_p50": percentile(live_ms, 50),
        }

    results.put(run_async_worker(main()))


def _measure(publish_at: Target, subscribe_at: Target) -> dict[str, Any]:
    with Workers() as workers:
        ready, go, done = workers.event(), workers.event(), workers.event()
        workers.start("publisher", publisher_worker, publish_at, ready, done)
        workers.wait(ready)
        workers.start("subscriber", subscriber_worker, subscribe_at, go)
        go.set()
        (result,) = workers.collect(1, timeout=120)
        done.set()
        workers.collect(1, timeout=10)
    return result


def run() -> list[dict[str, Any]]:
    wait_for_quiet()
    with Node() as node:
        results = {"in one node": _measure(node.target, node.target)}
    wait_for_quiet()
    with LinkedRegions(("us", "eu")) as regions:
        results["across a link"] = _measure(regions.targets["us"], regions.targets["eu"])
    return [
        figure(
            "subscribe",
            f"new subscription -> first event, {where}, p50",
            result["p50"],
            "ms",
            target=TARGETS_MS[where],
            higher_is_better=False,
            peers=PEERS[where],
            p99_ms=round(result["p99"], 3),
            max_ms=round(result["max"], 3),
            live_p50_ms=round(result["live_p50"], 3),
            subscriptions=SUBSCRIPTIONS,
            publish_rate=RATE,
        )
        for where, result in results.items()
    ]


if __name__ == "__main__":
    from common import fmt_number

    for row in run():
        print(
            f"{row['measure']:<60} {fmt_number(row['value']):>8} ms  p99 {row['p99_ms']} ms"
            f"  live p50 {row['live_p50_ms']} ms"
        )
