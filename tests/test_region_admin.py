"""What `plexus top`'s region view reads and does: purging a queue, the clients connected,
the subscriptions searched, discards per subscription. Against an in-process node; a
node process where a test kills it."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.server import Node
from plexus.client import Client, ClientInfo, Consumer, Delivery, Subscription, SubscriptionInfo
from plexus.errors import InvalidArgument, NotFound
from storage.environment import Environment
from storage.spool import Spool
from tests.harness import Nodes, eventually
from tests.inprocess import InProcessNodes

pytestmark = pytest.mark.timeout(120)

PLEXUS = [sys.executable, "-m", "plexus.cli.main"]
WAIT_S = 15.0


# ------------------------------------------------------------------ helpers


@pytest.fixture
async def node(inproc_node: Node) -> Node:
    """The region's node, in-process (tests that kill it start processes with `nodes`)."""
    return inproc_node


@pytest.fixture
async def client(node: Node) -> AsyncIterator[Client]:
    async with await Client.connect(node.address) as connected:
        yield connected


async def publish(client: Client, topics: list[str], payload: bytes = b"x") -> None:
    """Publish guaranteed events, all acked by the node when this returns."""
    for n, topic in enumerate(topics, 1):
        client.publish_nowait(topic, payload, guaranteed=True)
        if n % 1000 == 0:
            await client.drain()
    await client.flush()


async def take(consumer: Consumer, count: int) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} deliveries"
        got += await consumer.next_batch(timeout=1.0)
    assert len(got) == count
    return got


async def receive(subscription: Subscription, count: int) -> int:
    received = 0
    deadline = time.monotonic() + WAIT_S
    while received < count:
        assert time.monotonic() < deadline, f"{received} of {count} events"
        received += len(await subscription.next_batch(timeout=1.0))
    return received


def stored(data_dir: Path) -> tuple[int, int]:
    """(events, queue entries) in a stopped node's LMDB environment."""
    env = Environment(data_dir)
    try:
        spool = Spool(env)
        with env.reading() as txn:
            return txn.stat(spool.events)["entries"], txn.stat(spool.entries)["entries"]
    finally:
        env.close()


def plexus(
    node: Node, *args: str, stdin: str = "", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PLEXUS, *args, "--server", node.address],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------ purge


async def test_purge_drops_queued_events_keeps_deliveries_in_flight_and_survives_kill_9(
    nodes: Nodes,
) -> None:
    node = nodes.start("us")
    async with await Client.connect(node.address) as client:
        await client.create_queue("billing", ["orders/>"])
        await publish(client, [f"orders/{n}" for n in range(50)], b"x" * 100)
        consumer = client.consume("billing", prefetch=5)
        await consumer.start()
        held = await take(consumer, 5)
        before = await client.describe_queue("billing")

        assert await client.purge_queue("billing") == 45
        info = await client.describe_queue("billing")
        assert (info.depth, info.unacked) == (5, 5)
        assert 0 < info.bytes < before.bytes / 5
        # Deliveries in flight are still the consumer's to ack.
        await asyncio.gather(held[0].ack(), held[1].ack())
        assert (await client.describe_queue("billing")).depth == 3
        await consumer.close()
    node.kill()

    node = nodes.restart(node)
    async with await Client.connect(node.address) as client:
        assert (await client.describe_queue("billing")).depth == 3
        async with client.consume("billing") as consumer:
            again = await take(consumer, 3)
            assert sorted(d.id for d in again) == sorted(d.id for d in held[2:])
            await asyncio.gather(*(d.ack() for d in again))
        assert (await client.describe_queue("billing")).depth == 0
    assert node.stop() == 0
    assert stored(node.data_dir) == (0, 0)


async def test_purge_of_a_queue_deeper_than_memory_frees_its_events_but_not_shared_ones(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us")
    async with await Client.connect(node.address) as client:
        await client.create_queue("billing", ["orders/>"])
        await client.create_queue("audit", ["orders/audited"])
        # Past the queue's in-memory window and more than one purge page.
        await publish(client, [f"orders/{n % 100}" for n in range(12_000)])
        await publish(client, ["orders/audited"] * 10)
        assert (await client.describe_queue("billing")).depth == 12_010

        assert await client.purge_queue("billing") == 12_010
        assert (await client.describe_queue("billing")).depth == 0
        assert (await client.describe_queue("audit")).depth == 10
        # Nothing purged comes back: the next delivery is the next event published.
        await publish(client, ["orders/after"])
        async with client.consume("billing") as consumer:
            (first,) = await take(consumer, 1)
            assert first.topic == "orders/after"
            await first.ack()
    await node.stop()
    assert stored(node.config.data) == (10, 10)  # audit's, stored once for both queues


@pytest.mark.slow
async def test_purge_while_publishing_and_consuming_leaves_memory_and_disk_agreeing(
    nodes: Nodes,
) -> None:
    node = nodes.start("us")
    async with await Client.connect(node.address) as client:
        await client.create_queue("billing", ["orders/>"])
        await publish(client, [f"orders/{n % 10}" for n in range(12_000)])
        publishing = asyncio.Event()
        stop = asyncio.Event()

        async def keep_publishing() -> None:
            async with await Client.connect(node.address) as publisher:
                while not stop.is_set():
                    await publish(publisher, ["orders/during"] * 200)
                    publishing.set()

        async def keep_consuming() -> None:
            async with client.consume("billing", prefetch=100) as consumer:
                while not stop.is_set():
                    for delivery in await consumer.next_batch(timeout=0.1):
                        delivery.ack()

        tasks = [asyncio.create_task(keep_publishing()), asyncio.create_task(keep_consuming())]
        await publishing.wait()
        purged = await client.purge_queue("billing")
        stop.set()
        await asyncio.gather(*tasks)
        assert purged > 0
        depth = (await client.describe_queue("billing")).depth
    node.kill()

    node = nodes.restart(node)
    async with await Client.connect(node.address) as client:
        # What the node counted in memory is what its disk holds after a crash.
        assert (await client.describe_queue("billing")).depth == depth
        async with client.consume("billing", prefetch=1000) as consumer:
            left = await take(consumer, depth) if depth else []
            assert len({d.id for d in left}) == depth
            await asyncio.gather(*(d.ack() for d in left))
        assert (await client.describe_queue("billing")).depth == 0
    assert node.stop() == 0
    assert stored(node.data_dir) == (0, 0)


async def test_purge_of_an_unknown_queue_is_not_found_naming_it(client: Client) -> None:
    with pytest.raises(NotFound, match="no queue named 'nope'"):
        await client.purge_queue("nope")


# ------------------------------------------------------------------ clients


async def test_clients_lists_each_connection_with_its_streams_and_counts_until_it_leaves(
    node: Node, client: Client
) -> None:
    await client.create_queue("billing", ["orders/>"])
    assert await client.clients() == []  # unary calls alone do not make a client

    publisher = await Client.connect(node.address)
    reader = await Client.connect(node.address)
    subscription = reader.subscribe("orders/>")
    await subscription.ready()
    consumer = reader.consume("billing", prefetch=10)
    await consumer.start()
    await publish(publisher, [f"orders/{n}" for n in range(7)])
    assert await receive(subscription, 7) == 7
    await take(consumer, 7)

    def by_peer(clients: list[ClientInfo]) -> dict[bool, ClientInfo]:
        return {bool(c.publishers): c for c in clients}

    async def counted() -> bool:
        clients = await client.clients()
        return len(clients) == 2 and by_peer(clients)[False].events_delivered == 14

    await eventually(counted, WAIT_S, "both clients with their deliveries counted")
    clients = await client.clients()
    sending, receiving = by_peer(clients)[True], by_peer(clients)[False]
    assert (sending.publishers, sending.subscriptions, sending.consuming) == (1, (), ())
    assert sending.events_published == 7
    assert receiving.subscriptions == ("orders/>",)
    assert receiving.consuming == ("billing",)
    assert (receiving.events_published, receiving.events_discarded) == (0, 0)
    assert sending.peer != receiving.peer
    assert all(c.peer.startswith("ipv4:127.0.0.1:") for c in clients)
    assert sending.id != receiving.id
    now_ms = time.time_ns() // 1_000_000
    assert all(now_ms - WAIT_S * 1000 < c.connected_since_ms <= now_ms for c in clients)

    await subscription.close()
    await consumer.close()
    await reader.close()

    async def only_the_publisher() -> bool:
        return [c.id for c in await client.clients()] == [sending.id]

    await eventually(only_the_publisher, WAIT_S, "the reader gone from the clients")
    await publisher.close()

    async def none_left() -> bool:
        return await client.clients() == []

    await eventually(none_left, WAIT_S, "no client left")


# ------------------------------------------------------------------ subscriptions


@pytest.mark.slow
async def test_subscriptions_search_10000_by_text_with_limit_and_total(
    node: Node, client: Client
) -> None:
    # 5,000 direct subscriptions from 5 connections, 5,000 of 5 queues.
    direct = [f"sensors/{n}/temp" for n in range(5_000)]
    queued = {f"q{q}": [f"orders/{q}/{n}" for n in range(1_000)] for q in range(5)}
    for name, patterns in queued.items():
        await client.create_queue(name, patterns)
    holders = [await Client.connect(node.address) for _ in range(5)]
    subscriptions: list[Subscription] = []
    try:
        for start in range(0, len(direct), 500):
            holder = holders[start // 1_000]
            more = [holder.subscribe(p) for p in direct[start : start + 500]]
            await asyncio.gather(*(s.ready(timeout=WAIT_S) for s in more))
            subscriptions += more

        everything = await client.subscriptions()
        assert everything.total == 10_000
        rows = [(s.pattern, s.queue) for s in everything.subscriptions]
        every_row = [(p, "") for p in direct] + [(p, q) for q, ps in queued.items() for p in ps]
        assert rows == sorted(every_row)[:200]

        # By text in the pattern: the direct ones, each with its client.
        found = await client.subscriptions(contains="sensors/42", limit=5)
        matching = sorted(p for p in direct if "sensors/42" in p)
        assert found.total == len(matching) == 111
        assert [s.pattern for s in found.subscriptions] == matching[:5]
        holder_ids = {c.id for c in await client.clients()}
        assert all(s.direct and s.client_id in holder_ids for s in found.subscriptions)
        # By text in the queue name: all of that queue's.
        found = await client.subscriptions(contains="q3", limit=10_000)
        assert found.total == 1_000
        assert {s.queue for s in found.subscriptions} == {"q3"}
        assert (await client.subscriptions(contains="nothing-like-it")).total == 0
    finally:
        for subscription in subscriptions:
            await subscription.close()
        for holder in holders:
            await holder.close()


async def test_subscriptions_limit_out_of_range_is_refused_by_the_sdk(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="limit must be from 1 to 10000, got 0"):
        await client.subscriptions(limit=0)
    with pytest.raises(InvalidArgument, match="got 10001"):
        await client.subscriptions(limit=10_001)


async def test_a_slow_subscriber_discards_are_counted_on_its_subscription_and_client(
    node: Node, client: Client
) -> None:
    slow_client = await Client.connect(node.address)
    fast_client = await Client.connect(node.address)
    slow = slow_client.subscribe("metrics/>", buffer_events=10)  # never read
    fast = fast_client.subscribe("metrics/>")
    await asyncio.gather(slow.ready(), fast.ready())
    try:
        published = 0

        async def slow_subscription() -> SubscriptionInfo:
            view = await client.subscriptions(contains="metrics")
            return next(s for s in view.subscriptions if s.buffer_events == 10)

        # Publish until the slow one's stream and buffer are full and it discards.
        while not (await slow_subscription()).discarded:
            assert published < 200_000, "the slow subscriber never discarded"
            for _ in range(500):
                client.publish_nowait("metrics/cpu", b"x" * 4096)
            await client.flush()
            published += 500
            assert await receive(fast, 500) == 500

        async def all_accounted() -> bool:
            s = await slow_subscription()
            return s.delivered + s.discarded + s.buffered == published

        await eventually(all_accounted, WAIT_S, "slow subscriber's events all accounted for")
        s = await slow_subscription()
        view = await client.subscriptions(contains="metrics")
        quick = next(q for q in view.subscriptions if q.buffer_events != 10)
        assert (quick.delivered, quick.discarded) == (published, 0)
        clients = {c.id: c for c in await client.clients()}
        assert clients[s.client_id].events_discarded == s.discarded
        assert clients[quick.client_id].events_discarded == 0
        assert s.client_id != quick.client_id
    finally:
        await slow.close()
        await fast.close()
        await slow_client.close()
        await fast_client.close()


# ------------------------------------------------------------------ CLI


async def test_cli_purge_with_yes_prints_the_count_and_json_for_scripts(
    node: Node, client: Client
) -> None:
    await client.create_queue("billing", ["orders/>"])
    await publish(client, [f"orders/{n}" for n in range(3)])
    proc = await asyncio.to_thread(plexus, node, "queue", "purge", "billing", "--yes")
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        "purged 3 events from queue billing\n",
        "",
    )
    assert (await client.describe_queue("billing")).depth == 0
    proc = await asyncio.to_thread(plexus, node, "queue", "purge", "billing", "-y", "--json")
    assert json.loads(proc.stdout) == {"queue": "billing", "purged": 0}


async def test_cli_purge_asks_on_a_terminal_and_purges_only_on_yes(
    node: Node, client: Client
) -> None:
    await client.create_queue("billing", ["orders/>"])
    await publish(client, [f"orders/{n}" for n in range(4)])

    def answer(reply: str) -> str:
        """Run `plexus queue purge billing` on a pseudo-terminal, answering `reply`."""
        main, side = pty.openpty()
        proc = subprocess.Popen(
            [*PLEXUS, "queue", "purge", "billing", "--server", node.address],
            stdin=side,
            stdout=side,
            stderr=side,
        )
        os.close(side)
        seen = b""
        try:
            while b"[y/N]" not in seen:
                chunk = os.read(main, 1024)
                assert chunk, seen
                seen += chunk
            os.write(main, reply.encode() + b"\n")
            while True:
                try:
                    chunk = os.read(main, 1024)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                seen += chunk
            assert proc.wait(WAIT_S) == 0, seen
        finally:
            proc.kill()
            proc.wait()
            os.close(main)
        return seen.decode()

    said = await asyncio.to_thread(answer, "n")
    assert "dropping its 4 queued events?" in said and "queue billing not purged" in said
    assert (await client.describe_queue("billing")).depth == 4
    said = await asyncio.to_thread(answer, "y")
    assert "purged 4 events from queue billing" in said
    assert (await client.describe_queue("billing")).depth == 0


async def test_cli_bad_inputs_get_one_line_errors(node: Node, client: Client) -> None:
    await client.create_queue("billing", ["orders/>"])
    no_terminal = await asyncio.to_thread(plexus, node, "queue", "purge", "billing")
    assert_one_line_error(no_terminal, "'billing'", "stdin is not a terminal", "--yes")
    assert_one_line_error(
        await asyncio.to_thread(plexus, node, "queue", "purge", "nope", "--yes"),
        "no queue named 'nope'",
    )
    for limit in ("0", "many"):
        assert_one_line_error(
            await asyncio.to_thread(plexus, node, "subscriptions", "--limit", limit), "--limit"
        )
    assert_one_line_error(
        await asyncio.to_thread(plexus, node, "subscriptions", "--limit", "20000"),
        "limit must be from 1 to 10000",
    )
    assert_one_line_error(
        await asyncio.to_thread(
            subprocess.run,
            [*PLEXUS, "clients", "--server", "nowhere"],
            capture_output=True,
            text=True,
            timeout=30,
        ),
        "nowhere",
    )


async def test_cli_clients_and_subscriptions_show_a_subscriber(node: Node, client: Client) -> None:
    await client.create_queue("billing", ["orders/>"])
    subscription = client.subscribe("orders/eu/>")
    await subscription.ready()
    try:
        proc = await asyncio.to_thread(plexus, node, "clients", "--json")
        assert proc.returncode == 0, proc.stderr
        (listed,) = json.loads(proc.stdout)
        assert listed["subscriptions"] == ["orders/eu/>"]
        assert listed["peer"].startswith("ipv4:127.0.0.1:")

        proc = await asyncio.to_thread(
            plexus, node, "subscriptions", "--contains", "orders", "--limit", "1", "--json"
        )
        assert proc.returncode == 0, proc.stderr
        view = json.loads(proc.stdout)
        assert view["total"] == 2
        assert view["subscriptions"] == [
            {
                "pattern": "orders/>",
                "queue": "billing",
                "client_id": 0,
                "delivered": 0,
                "discarded": 0,
                "buffered": 0,
                "buffer_events": 0,
            }
        ]

        table = await asyncio.to_thread(plexus, node, "subscriptions")
        assert table.returncode == 0, table.stderr
        assert "2 of 2 subscriptions" in table.stdout
        assert f"client {listed['id']}" in table.stdout and "queue billing" in table.stdout
        table = await asyncio.to_thread(plexus, node, "clients")
        assert table.returncode == 0, table.stderr
        assert "1 client" in table.stdout and "1 sub" in table.stdout
        assert max(len(line) for line in table.stdout.splitlines()) <= 80
    finally:
        await subscription.close()
