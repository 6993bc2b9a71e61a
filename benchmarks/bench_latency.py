"""Latency at a fixed publish rate (5,000 events/s for ~5 s), 100-byte payloads.

- direct publish -> delivery: the publisher writes `time.monotonic_ns()` into
  the first 8 bytes of each payload just before `publish_nowait`; the
  subscriber (another process: CLOCK_MONOTONIC is system-wide on Linux)
  subtracts it from its clock when the batch arrives;
- guaranteed publish -> publisher ack: from `publish_nowait` to the ack's
  future resolving (the event is durable in a queue), in the publisher.

The publisher keeps a schedule: event k is due at t0 + k / rate; after each
wake-up it publishes every event that is due, then sleeps until the next one
(the event loop's timers have ~1 ms resolution, so events leave in small
bursts of a few, each stamped when it is actually published). Each figure is
the median (by p99) of RUNS runs.

    .venv/bin/python benchmarks/bench_latency.py
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import bench_floor
from common import (
    PAYLOAD_BYTES,
    LinkedRegions,
    Node,
    Target,
    Workers,
    figure,
    interest_reached,
    load,
    median_row,
    percentile,
    profile,
    report_errors,
    run_async_worker,
    wait_for_quiet,
)

from plexus.client import Client

RUNS = 3
RATE = 5_000
FLOOR_RATES = (1_000, 5_000)
# Issue 14: direct latency within these multiples of the transport's floor.
P50_OVER_FLOOR = 1.25
P99_OVER_FLOOR = 1.5
SECONDS = 5.0
# Events before measuring starts (connection warm, caches filled), not counted.
WARMUP_EVENTS = 500
STAMP = struct.Struct("<q")
PADDING = b"x" * (PAYLOAD_BYTES - STAMP.size)
MIN_SLEEP_S = 0.001

DIRECT_PEERS = "NATS 2.9 p50/p99 0.37/0.69 ms (cross-region, 5,000/s)"
GUARANTEED_PEERS = "JetStream p50/p99 0.38/1.58 ms (cross-region delivery)"


async def paced(
    client: Client, topic: str, events: int, rate: int, guaranteed: bool
) -> tuple[list[int], list[int]]:
    """Publish `events` on a fixed schedule; publish times and (guaranteed) ack times, ns.

    An ack time is 0 until its ack arrives; wait for them (`client.flush()`)
    before reading the list.
    """
    interval_ns = 1e9 / rate
    publish = client.publish_nowait
    sent: list[int] = []
    acked = [0] * events if guaranteed else []
    t0 = time.monotonic_ns()
    k = 0
    while k < events:
        due = min(events, int((time.monotonic_ns() - t0) / interval_ns) + 1)
        while k < due:
            now = time.monotonic_ns()
            fut = publish(topic, STAMP.pack(now) + PADDING, guaranteed=guaranteed)
            sent.append(now)
            if guaranteed:
                fut.add_done_callback(lambda _f, k=k: acked.__setitem__(k, time.monotonic_ns()))
            k += 1
        delay = (t0 + k * interval_ns - time.monotonic_ns()) / 1e9
        await asyncio.sleep(max(delay, MIN_SLEEP_S))
    return sent, acked


def _summary(latencies_ns: list[int]) -> dict[str, float]:
    ms = [v / 1e6 for v in latencies_ns]
    return {
        "count": len(ms),
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else float("nan"),
    }


# ------------------------------------------------------------------ workers


@report_errors
def subscriber_worker(results: Any, target: Target, pattern: str, ready: Any, done: Any) -> None:
    async def main() -> dict[str, Any]:
        latencies: list[int] = []
        unpack = STAMP.unpack_from
        async with await target.connect() as client, client.subscribe(pattern) as sub:
            ready.set()
            while True:
                batch = await sub.next_batch(timeout=1.0)
                now = time.monotonic_ns()
                if not batch:
                    if done.is_set():
                        break
                    continue
                latencies += [now - unpack(e.payload)[0] for e in batch]
        return _summary(latencies[WARMUP_EVENTS:])

    results.put({"role": "subscriber", **run_async_worker(main())})


@report_errors
def publisher_worker(
    results: Any,
    target: Target,
    topic: str,
    guaranteed: bool,
    rate: int,
    ready: Any,
    go: Any,
    done: Any,
) -> None:
    async def main() -> dict[str, Any]:
        async with await target.connect() as client:
            await client.publish("warmup/x", b"x")
            await client.flush()
            ready.set()
            go.wait()
            events = WARMUP_EVENTS + int(rate * SECONDS)
            started = time.monotonic_ns()
            sent, acked = await paced(client, topic, events, rate, guaranteed)
            achieved = events * 1e9 / (time.monotonic_ns() - started)
            await client.flush()
            await asyncio.sleep(0.01)  # the last acks' done callbacks
            done.set()
            summary: dict[str, Any] = {"rate": achieved}
            if guaranteed:
                pairs = list(zip(sent, acked, strict=True))[WARMUP_EVENTS:]
                summary |= _summary([a - t for t, a in pairs if a])
                summary["unacked"] = sum(1 for _, a in pairs if not a)
            return summary

    results.put({"role": "publisher", **run_async_worker(main())})


# ------------------------------------------------------------------ runs


def direct_run(rate: int = RATE, secure: bool = False) -> dict[str, Any]:
    wait_for_quiet()
    load_before = load()
    with Node(secure=secure) as node, Workers() as workers:
        sub_ready, pub_ready, go, done = (workers.event() for _ in range(4))
        workers.start("subscriber", subscriber_worker, node.target, "lat/>", sub_ready, done)
        workers.start(
            "publisher", publisher_worker, node.target, "lat/x", False, rate, pub_ready, go, done
        )
        workers.wait(sub_ready, pub_ready)
        with profile("latency-direct", {"node": node.pid, **workers.pids}):
            go.set()
            roles = {r["role"]: r for r in workers.collect(2)}
    return {**roles["subscriber"], "rate": roles["publisher"]["rate"], "load": load_before}


def direct_link_run(rate: int) -> dict[str, Any]:
    """Direct publish in us -> subscriber in eu, one link between them."""
    wait_for_quiet()
    load_before = load()
    with LinkedRegions(("us", "eu")) as regions, Workers() as workers:
        us, eu = regions.targets["us"], regions.targets["eu"]
        sub_ready, pub_ready, go, done = (workers.event() for _ in range(4))
        workers.start("subscriber", subscriber_worker, eu, "lat/>", sub_ready, done)
        workers.wait(sub_ready)
        asyncio.run(interest_reached(us, "lat/x", "eu", 10.0))
        workers.start("publisher", publisher_worker, us, "lat/x", False, rate, pub_ready, go, done)
        workers.wait(pub_ready)
        pids = {"us": regions.pid("us"), "eu": regions.pid("eu"), **workers.pids}
        with profile("latency-direct-link", pids):
            go.set()
            roles = {r["role"]: r for r in workers.collect(2)}
    return {**roles["subscriber"], "rate": roles["publisher"]["rate"], "load": load_before}


def guaranteed_run(rate: int = RATE) -> dict[str, Any]:
    wait_for_quiet()
    load_before = load()
    with Node() as node, Workers() as workers:

        async def create() -> None:
            async with await node.target.connect() as client:
                await client.create_queue("lat", ["lat/>"])

        asyncio.run(create())
        pub_ready, go, done = (workers.event() for _ in range(3))
        workers.start(
            "publisher", publisher_worker, node.target, "lat/g", True, rate, pub_ready, go, done
        )
        workers.wait(pub_ready)
        with profile("latency-guaranteed", {"node": node.pid, **workers.pids}):
            go.set()
            (result,) = workers.collect(1)
    return {**result, "load": load_before}


def _guaranteed_rows(runs: list[dict[str, Any]], p99_target: float, peers: str) -> list[dict]:
    best = median_row(runs, "p99")
    common = {
        "events": best["count"],
        "rate_per_s": round(best["rate"]),
        "p99_runs": ", ".join(f"{r['p99']:.2f}" for r in runs),
        "load": ", ".join(r["load"] for r in runs),
    }
    label = "guaranteed publish → ack"
    return [
        figure("latency", f"{label} p50", best["p50"], "ms",
               higher_is_better=False, peers=peers, **common),
        figure("latency", f"{label} p99", best["p99"], "ms", target=p99_target,
               higher_is_better=False, **common),
        figure("latency", f"{label} max", best["max"], "ms", **common),
    ]  # fmt: skip


def _against_floor(where: str, hops: int, rate: int, runs: list[dict[str, Any]]) -> list[dict]:
    """Direct p50 and p99 through `hops` hops at `rate`, and their ratio to the transport's floor
    (bare grpc.aio streams through the same processes and hops, measured now)."""
    best = median_row(runs, "p99")
    floor = bench_floor.floor_run(hops, rate)
    detail = {
        "floor_p50_p99_ms": f"{floor['p50']:.3f}, {floor['p99']:.3f}",
        "p50_p99_runs": "; ".join(f"{r['p50']:.2f}, {r['p99']:.2f}" for r in runs),
        "load": ", ".join(r["load"] for r in runs),
    }
    label = f"direct {where}, {rate:,}/s"
    return [
        figure("latency", f"{label}, p50", best["p50"], "ms", higher_is_better=False,
               peers=DIRECT_PEERS if hops == 3 and rate == RATE else "", **detail),
        figure("latency", f"{label}, p99", best["p99"], "ms", higher_is_better=False, **detail),
        figure("latency", f"{label}, p50 / floor", best["p50"] / floor["p50"], "ratio",
               target=P50_OVER_FLOOR, higher_is_better=False, **detail),
        figure("latency", f"{label}, p99 / floor", best["p99"] / floor["p99"], "ratio",
               target=P99_OVER_FLOOR, higher_is_better=False, **detail),
    ]  # fmt: skip


def run(runs: int = RUNS) -> list[dict[str, Any]]:
    """Direct delivery latency in one node and across a link at 1,000 and 5,000 events/s,
    each beside the transport's floor; guaranteed ack latency at RATE events/s."""
    rows = []
    for rate in FLOOR_RATES:
        rows += _against_floor("in one node", 2, rate, [direct_run(rate) for _ in range(runs)])
        rows += _against_floor(
            "across a link", 3, rate, [direct_link_run(rate) for _ in range(runs)]
        )
    guaranteed = [guaranteed_run() for _ in range(runs)]
    return rows + _guaranteed_rows(guaranteed, 5.0, GUARANTEED_PEERS)


if __name__ == "__main__":
    from run_all import main

    main(["--only", "latency"])
