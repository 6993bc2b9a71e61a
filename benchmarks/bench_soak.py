"""Soak: one node under mixed load for minutes, its memory and publish latency.

The node (its own process) holds 10,000 queues. Worker processes, all through
the SDK:

- 900 direct subscriptions that read and 100 that never read (their buffers
  stay full: the node must bound them), on 100 topics;
- a direct publisher at 2,000 events/s over those topics;
- a guaranteed publisher at 500 events/s into one consumed queue, and a
  trickle of 20 events/s into the 10,000 idle queues (they grow on disk);
- a consumer of the busy queue;
- a prober: guaranteed publishes at 50/s, each timed to its ack, and direct
  events to its own subscription, each timed to delivery;
- churn: a client connects, subscribes, publishes a little and leaves, 5 times
  a second.

The benchmark samples the node's RSS every 5 s and reports its maximum and
last value against the bound (400 MB), with the prober's p50/p99.

    make soak                                          # 10 minutes
    .venv/bin/python benchmarks/bench_soak.py --seconds 60   # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import struct
import time
from typing import Any

from common import (
    PAYLOAD,
    Node,
    Workers,
    figure,
    load,
    percentile,
    report_errors,
    rss,
    run_async_worker,
    wait_for_quiet,
)

from plexus.client import Client

# How long the load runs: PLEXUS_SOAK_S, else 10 minutes.
SECONDS = float(os.environ.get("PLEXUS_SOAK_S", "600"))
QUEUES = 10_000
TOPICS = 100
READING_SUBSCRIPTIONS = 900
IDLE_SUBSCRIPTIONS = 100
DIRECT_RATE = 2_000
GUARANTEED_RATE = 500
TRICKLE_RATE = 20
PROBE_RATE = 50
CHURN_PER_S = 5
RSS_BOUND_MB = 400
SAMPLE_S = 5.0
STAMP = struct.Struct("<q")


async def _paced(rate: float, until: float, step: Any) -> None:
    """Call `step(k)` at `rate` per second until `until` (monotonic)."""
    start = time.monotonic()
    k = 0
    while time.monotonic() < until:
        due = start + k / rate
        ahead = due - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
        await step(k)
        k += 1


@report_errors
def subscribers_worker(results: Any, address: str, count: int, read: bool, ready: Any) -> None:
    async def main() -> dict[str, Any]:
        async with await Client.connect(address) as client:
            subs = [client.subscribe(f"soak/d/{i % TOPICS}") for i in range(count)]
            for sub in subs:
                await sub.ready()
            ready.set()
            received = 0
            if not read:
                await asyncio.sleep(SECONDS * 10)  # hold the subscriptions, never read
            while True:
                batches = await asyncio.gather(*(s.next_batch(timeout=1.0) for s in subs))
                received += sum(len(b) for b in batches)

    run_async_worker(main())
    results.put({"role": "subscribers"})


@report_errors
def load_worker(results: Any, address: str, seconds: float, go: Any) -> None:
    async def main() -> dict[str, Any]:
        async with await Client.connect(address) as client:
            go.wait()
            until = time.monotonic() + seconds

            async def direct(k: int) -> None:
                client.publish_nowait(f"soak/d/{k % TOPICS}", PAYLOAD)
                if k % 200 == 0:
                    await client.drain()

            async def guaranteed(k: int) -> None:
                client.publish_nowait("soak/busy/x", PAYLOAD, guaranteed=True)
                if k % 100 == 0:
                    await client.drain()

            async def trickle(k: int) -> None:
                topic = f"soak/q/{random.randrange(QUEUES)}/x"
                client.publish_nowait(topic, PAYLOAD, guaranteed=True)

            await asyncio.gather(
                _paced(DIRECT_RATE, until, direct),
                _paced(GUARANTEED_RATE, until, guaranteed),
                _paced(TRICKLE_RATE, until, trickle),
            )
            await client.flush(timeout=60)
        return {"role": "load"}

    results.put(run_async_worker(main()))


@report_errors
def consumer_worker(results: Any, address: str, seconds: float, go: Any) -> None:
    async def main() -> dict[str, Any]:
        consumed = 0
        client = await Client.connect(address)
        async with client, client.consume("soak-busy", prefetch=500) as consumer:
            go.wait()
            until = time.monotonic() + seconds + 5
            while time.monotonic() < until:
                batch = await consumer.next_batch(timeout=1.0)
                for delivery in batch:
                    delivery.ack()
                consumed += len(batch)
        return {"role": "consumer", "consumed": consumed}

    results.put(run_async_worker(main()))


@report_errors
def prober_worker(results: Any, address: str, seconds: float, go: Any) -> None:
    async def main() -> dict[str, Any]:
        acks: list[float] = []
        deliveries: list[float] = []
        async with await Client.connect(address) as client:
            sub = client.subscribe("soak/probe")
            await sub.ready()

            async def receive() -> None:
                while True:
                    for event in await sub.next_batch():
                        sent = STAMP.unpack_from(event.payload)[0]
                        deliveries.append((time.monotonic_ns() - sent) / 1e6)

            receiving = asyncio.create_task(receive())
            go.wait()
            until = time.monotonic() + seconds

            async def probe(k: int) -> None:
                stamp = STAMP.pack(time.monotonic_ns())
                await client.publish("soak/probe", stamp + PAYLOAD[STAMP.size :])
                started = time.monotonic()
                await client.publish("soak/busy/probe", PAYLOAD, guaranteed=True, timeout=30)
                acks.append((time.monotonic() - started) * 1000)

            await _paced(PROBE_RATE, until, probe)
            receiving.cancel()
        return {"role": "prober", "acks": acks, "deliveries": deliveries}

    results.put(run_async_worker(main()))


@report_errors
def churn_worker(results: Any, address: str, seconds: float, go: Any) -> None:
    async def main() -> dict[str, Any]:
        go.wait()
        until = time.monotonic() + seconds
        sessions = 0

        async def one(k: int) -> None:
            nonlocal sessions
            async with await Client.connect(address) as client:
                sub = client.subscribe(f"soak/churn/{k}")
                await sub.ready()
                await client.publish(f"soak/churn/{k}", PAYLOAD)
                await sub.next_batch(timeout=1.0)
                await sub.close()
            sessions += 1

        await _paced(CHURN_PER_S, until, one)
        return {"role": "churn", "sessions": sessions}

    results.put(run_async_worker(main()))


async def _setup(address: str) -> None:
    async with await Client.connect(address) as client:
        await client.create_queue("soak-busy", ["soak/busy/>"])
        for first in range(0, QUEUES, 200):
            await asyncio.gather(
                *(
                    client.create_queue(f"soak-{i}", [f"soak/q/{i}/>"])
                    for i in range(first, min(first + 200, QUEUES))
                )
            )


def run(seconds: float | None = None) -> list[dict[str, Any]]:
    seconds = seconds or SECONDS
    wait_for_quiet()
    load_before = load()
    samples: list[float] = []
    with Node() as node, Workers() as workers:
        asyncio.run(_setup(node.address))
        ready = [workers.event() for _ in range(3)]
        go = workers.event()
        per = READING_SUBSCRIPTIONS // 2
        workers.start("subs-a", subscribers_worker, node.address, per, True, ready[0])
        workers.start("subs-b", subscribers_worker, node.address, per, True, ready[1])
        workers.start("idle", subscribers_worker, node.address, IDLE_SUBSCRIPTIONS, False, ready[2])
        workers.wait(*ready, timeout=120)
        for role, target in (
            ("load", load_worker),
            ("consumer", consumer_worker),
            ("prober", prober_worker),
            ("churn", churn_worker),
        ):
            workers.start(role, target, node.address, seconds, go)
        rss_before = rss(node.pid)["rss"]
        go.set()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(SAMPLE_S)
            samples.append(rss(node.pid)["rss"])
        done = {r["role"]: r for r in workers.collect(4, timeout=120)}
    probe = done["prober"]
    peak = max(samples)
    return [
        figure(
            "soak",
            f"node RSS over {seconds / 60:g} min of mixed load (max)",
            round(peak),
            "MB",
            target=RSS_BOUND_MB,
            higher_is_better=False,
            last_mb=round(samples[-1]),
            at_start_mb=round(rss_before),
            load=load_before,
        ),
        figure(
            "soak",
            "guaranteed publish → ack under it, p99",
            round(percentile(probe["acks"], 99), 2),
            "ms",
            p50_ms=round(percentile(probe["acks"], 50), 2),
            probes=len(probe["acks"]),
        ),
        figure(
            "soak",
            "direct publish → delivery under it, p99",
            round(percentile(probe["deliveries"], 99), 2),
            "ms",
            p50_ms=round(percentile(probe["deliveries"], 50), 2),
            consumed=done["consumer"]["consumed"],
            churn_sessions=done["churn"]["sessions"],
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS)
    os.environ["PLEXUS_SOAK_S"] = str(parser.parse_args().seconds)
    from run_all import main

    main(["--only", "soak"])
