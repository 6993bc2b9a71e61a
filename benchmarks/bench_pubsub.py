"""SDK throughput: direct 1 publisher -> 1 subscriber, guaranteed publish -> queue -> ack.

Starts its own node (subprocess, temp dir, free port), drives it with
`plexus.Client` in this process, 100-byte payloads. `run()` returns one dict
per measurement; running the module prints a table.

    python benchmarks/bench_pubsub.py [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plexus.client import Client
from plexus.demo import DemoNode

PAYLOAD = b"x" * 100
DIRECT_EVENTS = 500_000
GUARANTEED_EVENTS = 200_000


async def direct_1_to_1(client: Client, events: int) -> dict:
    async with client.subscribe("bench/direct/>", buffer_events=1_000_000) as sub:
        while (await client.node_info()).subscriptions < 1:
            await asyncio.sleep(0.01)
        received = 0
        discarded = 0

        async def receive() -> None:
            nonlocal received, discarded
            while received + discarded < events:
                batch = await sub.next_batch(timeout=5.0)
                if not batch:
                    return
                received += len(batch)
                for event in batch:
                    discarded += event.message.discarded_before

        receiver = asyncio.ensure_future(receive())
        started = time.perf_counter()
        publish = client.publish_nowait
        for i in range(events):
            publish("bench/direct/x", PAYLOAD)
            if i % 1000 == 999:
                await asyncio.sleep(0)
                await client.drain()
        await client.flush()
        published_s = time.perf_counter() - started
        await receiver
        elapsed = time.perf_counter() - started
    return {
        "benchmark": "direct 1 pub -> 1 sub",
        "events": events,
        "received": received,
        "discarded": discarded,
        "publish_per_s": events / published_s,
        "end_to_end_per_s": received / elapsed,
    }


async def guaranteed_to_queue(client: Client, events: int) -> dict:
    await client.create_queue("bench-g", ["bench/g/>"])
    consumed = 0

    async def consume() -> None:
        nonlocal consumed
        async with client.consume("bench-g", prefetch=2000) as consumer:
            while consumed < events:
                batch = await consumer.next_batch(timeout=10.0)
                if not batch:
                    return
                for delivery in batch:
                    delivery.ack()
                consumed += len(batch)
            await consumer.drain(timeout=30.0)

    consumer_task = asyncio.ensure_future(consume())
    started = time.perf_counter()
    publish = client.publish_nowait
    last = None
    for i in range(events):
        last = publish("bench/g/x", PAYLOAD, guaranteed=True)
        if i % 1000 == 999:
            await asyncio.sleep(0)
            await client.drain()
    await last
    await client.flush()
    published_s = time.perf_counter() - started
    await consumer_task
    elapsed = time.perf_counter() - started
    return {
        "benchmark": "guaranteed pub -> queue -> ack",
        "events": events,
        "received": consumed,
        "discarded": 0,
        "publish_per_s": events / published_s,
        "end_to_end_per_s": consumed / elapsed,
    }


async def _run(address: str, direct_events: int, guaranteed_events: int) -> list[dict]:
    results = []
    async with await Client.connect(address) as client:
        results.append(await direct_1_to_1(client, direct_events))
    async with await Client.connect(address) as client:
        results.append(await guaranteed_to_queue(client, guaranteed_events))
    return results


def run(
    direct_events: int = DIRECT_EVENTS, guaranteed_events: int = GUARANTEED_EVENTS
) -> list[dict]:
    """Start a node, measure, stop it; one dict per benchmark."""
    gc.freeze()  # as the CLI does: full collections skip what is loaded
    with tempfile.TemporaryDirectory(prefix="plexus-bench-") as tmp, DemoNode(Path(tmp)) as node:
        return asyncio.run(_run(node.address, direct_events, guaranteed_events))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help="events per benchmark")
    args = parser.parse_args()
    results = run(args.events or DIRECT_EVENTS, args.events or GUARANTEED_EVENTS)
    print(f"# {platform.python_implementation()} {platform.python_version()}, 100-byte payloads")
    print(f"{'benchmark':34} {'events':>9} {'received':>9} {'publish/s':>11} {'end-to-end/s':>13}")
    for r in results:
        print(
            f"{r['benchmark']:34} {r['events']:>9} {r['received']:>9} "
            f"{r['publish_per_s']:>11,.0f} {r['end_to_end_per_s']:>13,.0f}"
        )


if __name__ == "__main__":
    main()
