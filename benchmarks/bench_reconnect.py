"""Clients across a node restart, and what idempotent publishing costs.

- Reconnect: a client with a subscription, a queue consumer and a guaranteed
  publisher at 1,000 events/s, in this process (the node is its own process),
  while the node is killed (-9) and started again on the same port and data.
  Measured from the moment the restarted node prints that it listens: the
  client's `reconnected` state, the subscription's first event, the consumer's
  first delivery, and the last guaranteed publish in flight at the kill acked.
- De-duplication: guaranteed pub → queue → ack (bench_throughput's run) with
  the node's de-duplication window on (the default; the SDK always sends
  producer sequences) and off (`dedup_window_events = 0`).

    .venv/bin/python benchmarks/bench_reconnect.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench_throughput import GUARANTEED_EVENTS, guaranteed_run
from common import PAYLOAD, Node, figure, load, wait_for_quiet

from plexus import Client
from plexus.client.connection import ConnectionState, StateChange

RESTARTS = 5
PUBLISH_RATE = 1_000
DEDUP_RUNS = 3


async def _one_restart(node: Node) -> dict[str, float]:
    reconnected: list[float] = []

    def on_state(change: StateChange) -> None:
        if change.state is ConnectionState.RECONNECTED:
            reconnected.append(time.monotonic())

    async with await Client.connect(node.address, on_state=on_state) as client:
        if not any(q.name == "bench-r" for q in await client.list_queues()):
            await client.create_queue("bench-r", ["bench/r/>"])
        sub = client.subscribe("bench/d/>")
        await sub.ready()
        consumer = client.consume("bench-r", prefetch=1000)
        await consumer.start()
        firsts: dict[str, float] = {}
        back_at = 0.0
        stop = asyncio.Event()
        futures: list[asyncio.Future[int | None]] = []

        async def publish() -> None:
            while not stop.is_set():
                client.publish_nowait("bench/d/x", PAYLOAD)
                futures.append(client.publish_nowait("bench/r/x", PAYLOAD, guaranteed=True))
                await asyncio.sleep(1 / PUBLISH_RATE)
            await asyncio.gather(*futures)

        async def watch_sub() -> None:
            while True:
                events = await sub.next_batch()
                if back_at and events and "sub" not in firsts:
                    firsts["sub"] = time.monotonic()

        async def watch_consumer() -> None:
            while True:
                deliveries = await consumer.next_batch()
                for d in deliveries:
                    d.ack()
                if back_at and deliveries and "consumer" not in firsts:
                    firsts["consumer"] = time.monotonic()

        tasks = [asyncio.create_task(f()) for f in (watch_sub, watch_consumer)]
        publishing = asyncio.create_task(publish())
        await asyncio.sleep(1.0)
        node.kill()
        in_flight = [f for f in futures if not f.done()]
        await asyncio.to_thread(node.start)
        back_at = time.monotonic()
        await asyncio.gather(*in_flight)
        acked_at = time.monotonic()
        deadline = time.monotonic() + 30
        while len(firsts) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        await publishing
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await consumer.close()
        await sub.close()
        stats = client.publish_stats()
    ms = 1000.0
    return {
        "reconnected": (reconnected[-1] - back_at) * ms if reconnected else float("nan"),
        "subscription": (firsts.get("sub", float("nan")) - back_at) * ms,
        "consumer": (firsts.get("consumer", float("nan")) - back_at) * ms,
        "in_flight_acked": (acked_at - back_at) * ms,
        "in_flight": len(in_flight),
        "resent": stats["resent"],
        "duplicates": stats["duplicates"],
    }


def reconnect_rows() -> list[dict[str, Any]]:
    wait_for_quiet()
    load_before = load()
    runs = []
    with Node() as node:
        for _ in range(RESTARTS):
            runs.append(asyncio.run(_one_restart(node)))
    rows = []
    for key, measure in (
        ("reconnected", "node back → client reconnected"),
        ("subscription", "node back → subscription's first event"),
        ("consumer", "node back → consumer's first delivery"),
        ("in_flight_acked", "node back → guaranteed events in flight at the kill acked"),
    ):
        values = [r[key] for r in runs]
        rows.append(
            figure(
                "reconnect",
                measure,
                round(statistics.median(values), 1),
                "ms (median)",
                higher_is_better=False,
                max_ms=round(max(values), 1),
                restarts=len(runs),
                load=load_before,
            )
        )
    rows[-1]["in_flight"] = round(statistics.median(r["in_flight"] for r in runs))
    rows[-1]["resent"] = round(statistics.median(r["resent"] for r in runs))
    rows[-1]["duplicates"] = round(statistics.median(r["duplicates"] for r in runs))
    return rows


def dedup_rows() -> list[dict[str, Any]]:
    on, off = [], []
    for _ in range(DEDUP_RUNS):  # alternated, so a busy moment of the machine hits both
        on.append(guaranteed_run(GUARANTEED_EVENTS))
        off.append(guaranteed_run(GUARANTEED_EVENTS, "dedup_window_events = 0"))
    rows = []
    cpu_per_event = {}
    for label, runs in (("on", on), ("off", off)):
        rates = sorted(r["end_to_end"] for r in runs)
        # The node's CPU per event is steadier than the rate on a shared machine.
        cpu_per_event[label] = statistics.median(
            r["node_cpu"] / 100 / r["end_to_end"] * 1e6 for r in runs if r["end_to_end"]
        )
        rows.append(
            figure(
                "reconnect",
                f"guaranteed pub → queue → ack, de-duplication {label}",
                rates[len(rates) // 2],
                "events/s",
                node_cpu_us_per_event=round(cpu_per_event[label], 1),
                runs=", ".join(f"{r:,.0f}" for r in rates),
            )
        )
    on_rate, off_rate = rows[0]["value"], rows[1]["value"]
    rows.append(
        figure(
            "reconnect",
            "de-duplication cost on the guaranteed rate",
            round(100 * (off_rate - on_rate) / off_rate, 1) if off_rate else float("nan"),
            "% slower",
            higher_is_better=False,
            node_cpu_cost_pct=round(100 * (cpu_per_event["on"] / cpu_per_event["off"] - 1), 1),
        )
    )
    return rows


def run() -> list[dict[str, Any]]:
    return reconnect_rows() + dedup_rows()


if __name__ == "__main__":
    from run_all import main

    main(["--only", "reconnect"])
