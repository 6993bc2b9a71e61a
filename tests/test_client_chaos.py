"""A drill: regions are killed (-9) and restarted at random moments while SDK clients run.

Two linked regions; a guaranteed publisher in `us`; a consumer of a queue in
`us` and one of a queue in `eu` fed across the link. Whatever the kills hit,
every publish is acked, and each queue hands over each event exactly once
(one event id per topic), ending empty.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
from pathlib import Path

import pytest

from plexus import Client
from tests.harness import Cluster, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EVENTS = 4_000
WINDOW = 50
KILLS = 4


async def _consume_all(address: str, queue: str, got: dict[str, set[int]]) -> None:
    async with await Client.connect(address) as client, client.consume(queue) as consumer:
        while len(got) < EVENTS:
            for delivery in await consumer.next_batch(timeout=1.0):
                got[delivery.topic].add(delivery.id)
                delivery.ack()
        await consumer.drain(10)


# Each seed is one sequence of kills (~25 s). make test runs one; PLEXUS_CHAOS_SEEDS=7,11,23
# runs more (all three passed when the drill found the interest and reference bugs).
SEEDS = [int(s) for s in os.environ.get("PLEXUS_CHAOS_SEEDS", "7").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
async def test_clients_lose_nothing_and_store_nothing_twice_while_regions_die(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    cluster = Cluster(tmp_path, ["eu", "us"], [("eu", "us")])
    cluster.start()
    try:
        async with await Client.connect(cluster.address("us")) as us:
            await us.create_queue("local", ["orders/>"])
        async with await Client.connect(cluster.address("eu")) as eu:
            await eu.create_queue("far", ["orders/>"])

            async def eu_interest_reached_us() -> bool:
                explained = await eu.explain("orders/0")
                return any(r["region"] == "eu" and r["queues"] for r in explained)

            await eventually(eu_interest_reached_us, 20, "eu's queue known")
        async with await Client.connect(cluster.address("us")) as us:

            async def us_routes_to_eu() -> bool:
                return any(
                    r["region"] == "eu" and r["queues"] and r["reachable"]
                    for r in await us.explain("orders/0")
                )

            await eventually(us_routes_to_eu, 20, "us routing orders/> to eu's queue")

        local: dict[str, set[int]] = collections.defaultdict(set)
        far: dict[str, set[int]] = collections.defaultdict(set)
        consumers = [
            asyncio.create_task(_consume_all(cluster.address("us"), "local", local)),
            asyncio.create_task(_consume_all(cluster.address("eu"), "far", far)),
        ]

        acked: list[int | None] = []

        async def publish() -> None:
            async with await Client.connect(cluster.address("us")) as client:
                for first in range(0, EVENTS, WINDOW):  # paced by the acks, WINDOW in flight
                    window = [
                        client.publish_nowait(f"orders/{i}", b"%d" % i, guaranteed=True)
                        for i in range(first, first + WINDOW)
                    ]
                    acked.extend(await asyncio.gather(*window))

        publishing = asyncio.create_task(publish())
        # Each kill lands at a random point of the publisher's progress.
        moments = sorted(rng.sample(range(WINDOW, EVENTS - WINDOW, WINDOW), KILLS))
        for moment in moments:
            await eventually(lambda m=moment: len(acked) >= m, 60, f"{moment} events acked")
            region = rng.choice(["us", "eu"])
            cluster.kill(region)
            await asyncio.to_thread(cluster.restart, region)
        async with asyncio.timeout(120):
            await publishing
        done, _ = await asyncio.wait(consumers, timeout=60)
        if len(done) < len(consumers):
            depths = {}
            for region, queue in (("us", "local"), ("eu", "far")):
                async with await Client.connect(cluster.address(region)) as c:
                    info = await c.describe_queue(queue)
                    depths[queue] = (info.depth, info.unacked, info.consumers, info.events_in)
            raise AssertionError(
                f"consumed local {len(local)}, far {len(far)} of {EVENTS}; queues {depths}"
            )

        assert all(isinstance(event_id, int) for event_id in acked)
        for name, got in (("local", local), ("far", far)):
            assert len(got) == EVENTS, f"{name}: {EVENTS - len(got)} events never consumed"
            twice = [topic for topic, ids in got.items() if len(ids) > 1]
            assert not twice, f"{name}: {len(twice)} events stored twice, e.g. {twice[0]}"
        async with await Client.connect(cluster.address("us")) as us:
            assert (await us.describe_queue("local")).depth == 0
        async with await Client.connect(cluster.address("eu")) as eu:
            assert (await eu.describe_queue("far")).depth == 0
    finally:
        cluster.close()
