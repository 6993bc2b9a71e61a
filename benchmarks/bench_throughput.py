"""Throughput through a node with the Python SDK, 100-byte payloads.

- direct, 1 publisher -> 1 subscriber, publisher and subscriber in separate
  processes (and, labelled, both in one process);
- direct, 1 publisher -> 10 subscribers on the same pattern (deliveries/s);
- guaranteed publish (synced) -> queue -> consumer ack, in separate processes.

The node runs as its own process (a fresh one per run); clients are spawned
worker processes, so the measuring process stays idle. End-to-end rates are
events received (or acks confirmed) / (last receive - first publish), both
read from CLOCK_MONOTONIC, which all processes share on Linux. Each figure is
the median of RUNS runs.

    .venv/bin/python benchmarks/bench_throughput.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from common import (
    PAYLOAD,
    CpuMeter,
    LinkedRegions,
    Node,
    OwnCpu,
    Target,
    Workers,
    figure,
    load,
    median_row,
    profile,
    queue_reached,
    report_errors,
    run_async_worker,
    wait_for_quiet,
)

from plexus.client import Client

RUNS = 3
DIRECT_EVENTS = 500_000
FANOUT_EVENTS = 150_000
FANOUT_SUBSCRIBERS = 10
FANOUT_PROCESSES = 2
GUARANTEED_EVENTS = 100_000
CONSUMER_PREFETCH = 4096
SUBSCRIBER_BUFFER = 1_000_000
# A subscriber that has seen nothing for this long after the publisher finished stops.
IDLE_S = 2.0
# Publish loop: yield to the SDK's sender every this many events.
YIELD_EVERY = 1000

NATS = "NATS 2.9 ~126,000/s (Python client); RabbitMQ 3.10 ~9,700/s"
PERSISTED_PEERS = "JetStream ~26,000/s; RabbitMQ 3.10 ~4,100/s (persisted)"


# ------------------------------------------------------------------ client coroutines


async def publish_direct(client: Client, topic: str, events: int) -> dict[str, Any]:
    """Publish `events` direct events as fast as the SDK takes them, then flush.

    Returns first_pub and end_pub (monotonic ns) and cpu (% of a core).
    """
    publish, drain = client.publish_nowait, client.drain
    meter = OwnCpu()
    first = time.monotonic_ns()
    for i in range(events):
        publish(topic, PAYLOAD)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
            await drain()
    await client.flush()
    return {"first_pub": first, "end_pub": time.monotonic_ns(), "cpu": meter.percent()}


async def count_events(
    client: Client, pattern: str, subscriptions: int, expected: int, ready: Any, done: Any
) -> dict[str, Any]:
    """Receive on `subscriptions` subscriptions until each has `expected` events,
    or nothing came for IDLE_S after `done` (the publisher finished) was set."""
    subs = [
        client.subscribe(pattern, buffer_events=SUBSCRIBER_BUFFER) for _ in range(subscriptions)
    ]
    for sub in subs:
        await sub.ready()
    ready.set()
    firsts: list[int] = []
    lasts: list[int] = []
    counts: list[int] = []
    meter: list[OwnCpu] = []

    async def receive(sub: Any) -> None:
        received, first, last = 0, 0, 0
        next_batch = sub.next_batch
        while received < expected:
            batch = await next_batch(timeout=IDLE_S)
            if not batch:
                if done.is_set():
                    break
                continue
            last = time.monotonic_ns()
            if not first:
                first = last
                if not meter:
                    meter.append(OwnCpu())
            received += len(batch)
        counts.append(received)
        firsts.append(first)
        lasts.append(last)

    try:
        await asyncio.gather(*(receive(sub) for sub in subs))
        cpu = meter[0].percent() if meter else 0.0
    finally:
        for sub in subs:
            await sub.close()
    return {
        "received": sum(counts),
        "first_recv": min(firsts),
        "last_recv": max(lasts),
        "cpu": cpu,
    }


# ------------------------------------------------------------------ workers


@report_errors
def subscriber_worker(
    results: Any, target: Target, pattern: str, subs: int, expected: int, ready: Any, done: Any
) -> None:
    async def main() -> dict[str, Any]:
        async with await target.connect() as client:
            return await count_events(client, pattern, subs, expected, ready, done)

    results.put({"role": "subscriber", **run_async_worker(main())})


@report_errors
def publisher_worker(
    results: Any, target: Target, topic: str, events: int, ready: Any, go: Any, done: Any
) -> None:
    async def main() -> dict[str, Any]:
        async with await target.connect() as client:
            await client.publish("warmup/x", PAYLOAD)  # opens the publish stream
            await client.flush()
            ready.set()
            go.wait()
            published = await publish_direct(client, topic, events)
            done.set()
            return published

    results.put({"role": "publisher", **run_async_worker(main())})


@report_errors
def pub_sub_worker(results: Any, target: Target, topic: str, pattern: str, events: int) -> None:
    """Publisher and subscriber sharing one process (and one event loop)."""

    async def main() -> dict[str, Any]:
        import threading

        ready, done = threading.Event(), threading.Event()
        async with await target.connect() as pub, await target.connect() as sub:
            await pub.publish("warmup/x", PAYLOAD)
            await pub.flush()
            receiver = asyncio.ensure_future(count_events(sub, pattern, 1, events, ready, done))
            while not ready.is_set():
                await asyncio.sleep(0.01)
            meter = OwnCpu()
            published = await publish_direct(pub, topic, events)
            done.set()
            received = await receiver
            return {**published, **received, "cpu": meter.percent()}

    results.put({"role": "both", **run_async_worker(main())})


@report_errors
def guaranteed_publisher_worker(
    results: Any, target: Target, topic: str, events: int, ready: Any, go: Any
) -> None:
    async def main() -> dict[str, Any]:
        async with await target.connect() as client:
            await client.publish("warmup/x", PAYLOAD)
            await client.flush()
            ready.set()
            go.wait()
            publish, drain = client.publish_nowait, client.drain
            futures = []
            meter = OwnCpu()
            first = time.monotonic_ns()
            for i in range(events):
                futures.append(publish(topic, PAYLOAD, guaranteed=True))
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
                    await drain()
            # Acks resolve their futures before the node's `processed` count
            # moves on, so after flush every future is done (no gather: it
            # would cost a callback per event in this process).
            await client.flush(timeout=120)
            end = time.monotonic_ns()
            refused = sum(1 for f in futures if not f.done() or f.exception() is not None)
            cpu = meter.percent()
            return {"first_pub": first, "end_pub": end, "refused": refused, "cpu": cpu}

    results.put({"role": "publisher", **run_async_worker(main())})


@report_errors
def consumer_worker(
    results: Any, target: Target, queue: str, expected: int, ready: Any, mark_every: int = 0
) -> None:
    """Consume and ack `expected` events; with `mark_every`, also the time each further
    `mark_every` confirmations completed (`marks`, ns)."""

    async def main() -> dict[str, Any]:
        async with await target.connect() as client:
            consumer = client.consume(queue, prefetch=CONSUMER_PREFETCH)
            await consumer.start()
            ready.set()
            meter: OwnCpu | None = None
            received, confirmed, last_confirm = 0, 0, 0
            per_future: dict[asyncio.Future[None], int] = {}
            marks: list[int] = []
            next_mark = mark_every or expected + 1

            def on_confirm(fut: asyncio.Future[None]) -> None:
                nonlocal confirmed, last_confirm, next_mark
                if not fut.cancelled() and fut.exception() is None:
                    confirmed += per_future.pop(fut)
                    last_confirm = time.monotonic_ns()
                    while confirmed >= next_mark:
                        marks.append(last_confirm)
                        next_mark += mark_every

            try:
                while received < expected:
                    batch = await consumer.next_batch(timeout=30.0)
                    if not batch:
                        break
                    if meter is None:
                        meter = OwnCpu()
                    for delivery in batch:
                        fut = delivery.ack()
                        if fut not in per_future:
                            per_future[fut] = 0
                            fut.add_done_callback(on_confirm)
                        per_future[fut] += 1
                    received += len(batch)
                await consumer.drain(timeout=30.0)
                await asyncio.sleep(0)  # let the last done callbacks run
            finally:
                await consumer.close()
            cpu = meter.percent() if meter else 0.0
            return {
                "received": received,
                "confirmed": confirmed,
                "last_recv": last_confirm,
                "cpu": cpu,
                "marks": marks,
            }

    results.put({"role": "consumer", **run_async_worker(main())})


# ------------------------------------------------------------------ one run each


def _rate(count: int, first_ns: int, last_ns: int) -> float:
    return count * 1e9 / (last_ns - first_ns) if last_ns > first_ns else 0.0


def _by_role(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    roles: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        roles.setdefault(r["role"], []).append(r)
    return roles


def direct_run(
    events: int, subscribers: int, processes: int, label: str, secure: bool = False
) -> dict[str, Any]:
    """One direct run: a publisher process and `processes` subscriber processes
    (`secure`: TLS and tokens on)."""
    wait_for_quiet()
    load_before = load()
    with Node(secure=secure) as node, Workers() as workers:
        pub_ready, go, done = workers.event(), workers.event(), workers.event()
        readies = []
        for p in range(processes):
            subs = subscribers // processes + (1 if p < subscribers % processes else 0)
            ready = workers.event()
            readies.append(ready)
            workers.start(
                f"subscriber{p}",
                subscriber_worker,
                node.target,
                "bench/direct/>",
                subs,
                events,
                ready,
                done,
            )
        workers.start(
            "publisher",
            publisher_worker,
            node.target,
            "bench/direct/x",
            events,
            pub_ready,
            go,
            done,
        )
        workers.wait(*readies, pub_ready)
        with profile(label, {"node": node.pid, **workers.pids}):
            meter = CpuMeter(node.pid)
            go.set()
            roles = _by_role(workers.collect(processes + 1))
            node_cpu = meter.percent()
    pub = roles["publisher"][0]
    subs_results = roles["subscriber"]
    received = sum(r["received"] for r in subs_results)
    last = max(r["last_recv"] for r in subs_results)
    return {
        "received": received,
        "expected": events * subscribers,
        "end_to_end": _rate(received, pub["first_pub"], last),
        "publish_rate": _rate(events, pub["first_pub"], pub["end_pub"]),
        "node_cpu": node_cpu,
        "client_cpu": [r["cpu"] for r in [pub, *subs_results]],
        "load": load_before,
    }


def direct_same_process_run(events: int) -> dict[str, Any]:
    wait_for_quiet()
    load_before = load()
    with Node() as node, Workers() as workers:
        workers.start(
            "pubsub", pub_sub_worker, node.target, "bench/direct/x", "bench/direct/>", events
        )
        meter = CpuMeter(node.pid)
        (r,) = workers.collect(1)
        node_cpu = meter.percent()
    return {
        "received": r["received"],
        "expected": events,
        "end_to_end": _rate(r["received"], r["first_pub"], r["last_recv"]),
        "publish_rate": _rate(events, r["first_pub"], r["end_pub"]),
        "node_cpu": node_cpu,
        "client_cpu": [r["cpu"]],
        "load": load_before,
    }


def guaranteed_run(events: int, node_settings: str = "", secure: bool = False) -> dict[str, Any]:
    """Publisher and consumer on one node."""
    wait_for_quiet()
    load_before = load()
    with Node(node_settings, secure=secure) as node:
        return _guaranteed_between(node.target, node.target, {"node": node.pid}, events) | {
            "load": load_before
        }


def guaranteed_link_run(events: int) -> dict[str, Any]:
    """Publisher in us, the queue and its consumer in eu, one link between them."""
    wait_for_quiet()
    load_before = load()
    with LinkedRegions(("us", "eu")) as regions:
        us, eu = regions.targets["us"], regions.targets["eu"]
        pids = {"us": regions.pid("us"), "eu": regions.pid("eu")}
        return _guaranteed_between(us, eu, pids, events, across_link=True) | {"load": load_before}


def _guaranteed_between(
    publish_at: Target,
    queue_at: Target,
    node_pids: dict[str, int],
    events: int,
    across_link: bool = False,
) -> dict[str, Any]:
    """Guaranteed events from a publisher process at `publish_at` into a queue at `queue_at`,
    acked by a consumer process there; rates from the first publish to the last confirmed ack."""

    async def create() -> None:
        async with await queue_at.connect() as client:
            await client.create_queue("bench-g", ["bench/g/>"], max_depth=events * 2)
        if across_link:
            await queue_reached(publish_at, "bench/g/x", "bench-g", 10.0)

    asyncio.run(create())
    with Workers() as workers:
        consumer_ready, pub_ready, go = workers.event(), workers.event(), workers.event()
        workers.start("consumer", consumer_worker, queue_at, "bench-g", events, consumer_ready)
        workers.start(
            "publisher",
            guaranteed_publisher_worker,
            publish_at,
            "bench/g/x",
            events,
            pub_ready,
            go,
        )
        workers.wait(consumer_ready, pub_ready)
        label = "guaranteed-link" if across_link else "guaranteed"
        with profile(label, {**node_pids, **workers.pids}):
            meters = [CpuMeter(pid) for pid in node_pids.values()]
            go.set()
            roles = _by_role(workers.collect(2))
            cpu = [meter.percent() for meter in meters]
            # One node: a number (others compute with it); two: both, for the table.
            node_cpu = cpu[0] if len(cpu) == 1 else ", ".join(str(c) for c in cpu)
    pub, con = roles["publisher"][0], roles["consumer"][0]
    return {
        "received": con["confirmed"],
        "delivered": con["received"],
        "expected": events,
        "refused": pub["refused"],
        "end_to_end": _rate(con["confirmed"], pub["first_pub"], con["last_recv"]),
        "publish_rate": _rate(events, pub["first_pub"], pub["end_pub"]),
        "node_cpu": node_cpu,
        "client_cpu": [pub["cpu"], con["cpu"]],
    }


# ------------------------------------------------------------------ run()


def _row(
    measure: str, runs: list[dict[str, Any]], unit: str, target: float, peers: str, layout: str
) -> dict[str, Any]:
    best = median_row(runs, "end_to_end")
    return figure(
        "throughput",
        measure,
        best["end_to_end"],
        unit,
        target=target,
        peers=peers,
        received=f"{best['received']:,} of {best['expected']:,}",
        publish_per_s=round(best["publish_rate"]),
        node_cpu_pct=best["node_cpu"],
        client_cpu_pct=", ".join(str(c) for c in best["client_cpu"]),
        runs=best["runs"],
        load=", ".join(r["load"] for r in runs),
        clients=layout,
    )


def run(runs: int = RUNS) -> list[dict[str, Any]]:
    """Each throughput figure, the median of `runs` runs; one row per figure."""
    rows = []
    one = [direct_run(DIRECT_EVENTS, 1, 1, "direct-1to1") for _ in range(runs)]
    rows.append(
        _row("direct 1 pub → 1 sub", one, "events/s", 300_000, NATS, "pub and sub: 2 processes")
    )
    same = [direct_same_process_run(DIRECT_EVENTS) for _ in range(runs)]
    rows.append(
        _row("direct 1 pub → 1 sub (same process)", same, "events/s", 300_000, NATS,
             "pub and sub in 1 process")
    )  # fmt: skip
    fan = [
        direct_run(FANOUT_EVENTS, FANOUT_SUBSCRIBERS, FANOUT_PROCESSES, "direct-1to10")
        for _ in range(runs)
    ]
    rows.append(
        _row(
            f"direct 1 pub → {FANOUT_SUBSCRIBERS} subs",
            fan,
            "deliveries/s",
            600_000,
            "",
            f"pub: 1 process; {FANOUT_SUBSCRIBERS} subs over {FANOUT_PROCESSES} processes",
        )
    )
    guaranteed = [guaranteed_run(GUARANTEED_EVENTS) for _ in range(runs)]
    row = _row(
        "guaranteed pub → queue → ack",
        guaranteed,
        "events/s",
        100_000,
        PERSISTED_PEERS,
        f"publisher, consumer (prefetch {CONSUMER_PREFETCH}): 2 processes",
    )
    row["refused"] = median_row(guaranteed, "end_to_end")["refused"]
    rows.append(row)
    linked = [guaranteed_link_run(GUARANTEED_EVENTS) for _ in range(runs)]
    row = _row(
        "guaranteed pub in us → queue in eu → ack",
        linked,
        "events/s",
        60_000,
        "",
        f"publisher at us, consumer at eu (prefetch {CONSUMER_PREFETCH}): 2 processes",
    )
    row["refused"] = median_row(linked, "end_to_end")["refused"]
    rows.append(row)
    return rows


if __name__ == "__main__":
    from run_all import main

    main(["--only", "throughput"])
