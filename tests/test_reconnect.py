"""Clients ride through a kill -9 and restart of their node: real node processes.

Each stream kind (publish, subscribe, consume) keeps working after the node is
back, nothing guaranteed is lost or stored twice, and the application is told
of the break.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import pytest

from plexus import Client
from plexus.client.connection import ConnectionState, StateChange
from plexus.errors import Unavailable
from tests.harness import Nodes, eventually, wait_for

pytestmark = pytest.mark.slow


async def _restart_when(nodes: Nodes, node, ready) -> object:  # type: ignore[no-untyped-def]
    """kill -9 the node once `ready()` is true, then start it again on the same port."""
    await eventually(ready, 30, "traffic before the kill")
    node.kill()
    return await asyncio.to_thread(nodes.restart, node)


async def test_guaranteed_publisher_and_consumer_ride_through_a_node_restart(
    nodes: Nodes,
) -> None:
    node = nodes.start("us")
    total = 10_000
    changes: list[StateChange] = []
    async with (
        await Client.connect(node.address) as admin,
        await Client.connect(node.address, on_state=changes.append) as publisher,
        await Client.connect(node.address) as consumer_client,
    ):
        await admin.create_queue("orders", ["orders/>"])
        consumed: collections.Counter[str] = collections.Counter()
        ids: dict[str, set[int]] = collections.defaultdict(set)

        async def consume() -> None:
            async with consumer_client.consume("orders", prefetch=500) as consumer:
                while len(consumed) < total:
                    batch = await consumer.next_batch(timeout=1.0)
                    for delivery in batch:
                        consumed[delivery.topic] += 1
                        ids[delivery.topic].add(delivery.id)
                        delivery.ack()
                await consumer.drain(10)

        async def publish() -> list[int | None]:
            acked: list[int | None] = []
            for first in range(0, total, 100):  # 100 in flight at a time: paced by the acks,
                window = [  # so the kill lands mid-stream
                    publisher.publish_nowait(f"orders/{i}", b"x" * 100, guaranteed=True)
                    for i in range(first, first + 100)
                ]
                acked.extend(await asyncio.gather(*window))
            return acked

        consuming = asyncio.create_task(consume())
        publishing = asyncio.create_task(publish())
        await _restart_when(nodes, node, lambda: len(consumed) > 1_000)
        async with asyncio.timeout(120):
            acked = await publishing
        async with asyncio.timeout(120):
            await consuming

        assert len(acked) == total and all(isinstance(i, int) for i in acked)
        assert len(consumed) == total, f"{total - len(consumed)} events never consumed"
        stored_twice = [t for t, s in ids.items() if len(s) > 1]
        assert not stored_twice, f"{len(stored_twice)} events stored twice, e.g. {stored_twice[0]}"
        info = await admin.describe_queue("orders")
        assert info.depth == 0
        assert info.events_in <= total
        assert publisher.reconnects >= 1 and consumer_client.reconnects >= 1
        states = [c.state for c in changes]
        assert ConnectionState.DISCONNECTED in states and ConnectionState.RECONNECTED in states


async def test_subscription_is_made_again_after_a_node_restart(nodes: Nodes) -> None:
    node = nodes.start("us")
    async with await Client.connect(node.address) as client:
        sub = client.subscribe("live/>")
        await sub.ready()
        await client.publish("live/before", b"1")
        assert (await sub.next_batch(timeout=10))[0].topic == "live/before"
        node.kill()
        again = await asyncio.to_thread(nodes.restart, node)
        # The subscription is live again before anything new is handed over:
        # wait for it the way a user can, by publishing until one arrives.
        got: list[str] = []

        async def arrived() -> bool:
            await client.publish("live/after", b"2")
            got.extend(e.topic for e in await sub.next_batch(timeout=0.2))
            return bool(got)

        await eventually(arrived, 30, "an event on the subscription after the restart")
        assert got[0] == "live/after" and sub.reconnects == 1
        assert again.running
        await sub.close()


async def test_client_tries_each_address_and_reports_its_states(nodes: Nodes) -> None:
    first = nodes.start("us")
    second = nodes.start("eu")
    async with await Client.connect([first.address, second.address]) as client:
        states = client.states()
        assert client.address == first.address
        first.kill()
        with pytest.raises(Exception):  # noqa: B017 - the break surfaces from whichever call
            await client.node_info(timeout=5)
        seen = []
        async for change in states:
            seen.append(change)
            if change.state is ConnectionState.RECONNECTED:
                break
        assert [c.state for c in seen] == [
            ConnectionState.DISCONNECTED,
            ConnectionState.RECONNECTED,
        ]
        assert seen[-1].address == second.address
        assert (await client.node_info()).region == "eu"


async def test_a_resend_after_a_lost_ack_is_stored_once(nodes: Nodes) -> None:
    """Application keys: a client that crashed and publishes again with the same keys."""
    node = nodes.start("us")
    async with await Client.connect(node.address) as client:
        await client.create_queue("keyed", ["k/>"])
        first = [
            await client.publish(f"k/{i}", b"v", guaranteed=True, key=f"k-{i}") for i in range(5)
        ]
    async with await Client.connect(node.address) as again:
        second = [
            await again.publish(f"k/{i}", b"v", guaranteed=True, key=f"k-{i}") for i in range(5)
        ]
        assert second == first
        assert again.publish_stats()["duplicates"] == 5
        assert (await again.describe_queue("keyed")).depth == 5


def test_cli_publisher_consumer_and_subscriber_ride_through_a_node_restart(
    nodes: Nodes, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    node = nodes.start("us")
    cli = [sys.executable, "-m", "plexus.cli.main"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args, "--server", node.address], capture_output=True, text=True, timeout=60
        )

    def spawn(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*cli, *args, "--server", node.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    assert run("queue", "create", "cq", "--subscribe", "cq/>").returncode == 0
    total = 2_000
    sub = spawn("sub", "late/>", "--json", "--count", "1", "--timeout", "60")
    consumer = spawn("queue", "consume", "cq", "--json", "--timeout", "5")
    deadline = time.monotonic() + 30
    while "late/>" not in run("subscriptions", "--json").stdout:
        assert time.monotonic() < deadline, "the subscriber never subscribed"
    acks_file = tmp_path / "acks.jsonl"
    with acks_file.open("w") as acks_out:
        publisher = subprocess.Popen(
            [*cli, "pub", "cq/{seq}", "x", "--guaranteed", "--count", str(total),
             "--rate", "400", "--json", "--server", node.address],
            stdout=acks_out,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: acks_file.read_text().count("\n") >= 200, 30, "the publisher under way"
        )  # kill once well under way
        node.kill()
        node = nodes.restart(node)
        # Publish until the subscriber, back on the restarted node, takes one.
        deadline = time.monotonic() + 30
        while sub.poll() is None and time.monotonic() < deadline:
            run("pub", "late/1", "after")
        sub_out, sub_err = sub.communicate(timeout=30)
        _, pub_err = publisher.communicate(timeout=60)
        con_out, con_err = consumer.communicate(timeout=90)
    finally:
        for proc in (sub, consumer, publisher):
            proc.kill()
    assert sub.returncode == 0, sub_err
    assert json.loads(sub_out.splitlines()[0])["topic"] == "late/1"
    assert "lost node at" in sub_err and "reconnected to node at" in sub_err
    assert publisher.returncode == 0, pub_err
    assert "lost node at" in pub_err and "reconnected to node at" in pub_err
    acked = {json.loads(line)["topic"] for line in acks_file.read_text().splitlines()}
    assert len(acked) == total
    consumed: dict[str, set[str]] = {}
    for line in con_out.splitlines():
        event = json.loads(line)
        consumed.setdefault(event["topic"], set()).add(event["id"])
    assert len(consumed) == total, f"consumer got {len(consumed)} of {total}: {con_err[-300:]}"
    assert all(len(ids) == 1 for ids in consumed.values()), "an event was stored twice"


async def test_direct_publishes_fail_fast_while_disconnected_when_asked(nodes: Nodes) -> None:
    node = nodes.start("us")
    async with await Client.connect(node.address, direct_on_break="fail") as client:
        await client.publish("d/x", b"before")
        await client.flush()
        node.kill()
        await eventually(lambda: not client.connected, 20, "the client to notice the break")
        with pytest.raises(Unavailable, match="direct_on_break"):
            client.publish_nowait("d/x", b"during")
        assert client.publish_stats()["direct_dropped"] == 1
        await asyncio.to_thread(nodes.restart, node)
        await eventually(lambda: client.connected, 20, "the client to reconnect")
        await client.publish("d/x", b"after")
        await client.flush(timeout=10)
        assert (await client.node_info()).direct_in == 1
