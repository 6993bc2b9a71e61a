"""Changing a queue's subscriptions while it lives (a persistent MQTT session following its
client's SUBSCRIBE and UNSUBSCRIBE): what it holds stays, new events follow the new
patterns, here and from other regions, and a restart keeps them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from federation.cluster_file import load_cluster_file, region_spec
from node.gateway import Gateway, GatewayConsumer
from node.permissions import OPEN, Access
from node.server import Node
from plexus import Client, InvalidArgument, InvalidPattern, NotPermitted, QueueNotFound
from plexus.v1 import plexus_pb2 as pb
from tests.harness import Cluster, eventually
from tests.inprocess import InProcessNodes, node_config
from tests.signing import token

pytestmark = pytest.mark.timeout(60)
PEER = "test:127.0.0.1:1"
SESSION = "mqtt.c.device-1"


def gateway_of(node: Node) -> Gateway:
    assert node.gateway is not None
    return node.gateway


def guaranteed(topic: str, payload: bytes) -> pb.Event:
    return pb.Event(topic=topic, payload=payload, mode=pb.DeliveryMode.GUARANTEED)


async def publish(gateway: Gateway, *events: pb.Event) -> None:
    results = await gateway.publish(OPEN, list(events), peer=PEER)
    assert [r.error for r in results] == [None] * len(events)


async def take(consumer: GatewayConsumer, count: int) -> list[pb.Event]:
    """`count` deliveries, acked; fails past the deadline."""
    got: list[pb.Event] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            await consumer.wake.wait()
            consumer.wake.clear()
            got += consumer.take()
    consumer.ack([e.delivery_tag for e in got])
    return got


def payloads(events: list[pb.Event]) -> list[bytes]:
    return [e.payload for e in events]


async def test_a_queue_keeps_its_backlog_and_follows_its_new_subscriptions(
    inproc_nodes: InProcessNodes,
) -> None:
    gateway = gateway_of(await inproc_nodes.start("us"))
    await gateway.ensure_queue(OPEN, pb.QueueConfig(name=SESSION, subscriptions=["old/>"]))
    await publish(gateway, guaranteed("old/1", b"queued before"))

    queue = await gateway.set_queue_subscriptions(OPEN, SESSION, ["new/>", "also/x", "new/>"])

    assert queue.subscriptions == ("also/x", "new/>")
    again = await gateway.set_queue_subscriptions(OPEN, SESSION, ["new/>", "also/x"])
    assert again is queue and list(queue.config.subscriptions) == ["new/>", "also/x"]
    await publish(gateway, guaranteed("old/2", b"old pattern"), guaranteed("new/1", b"new"))
    with gateway.consume(OPEN, SESSION, 10, peer=PEER) as consumer:
        assert payloads(await take(consumer, 2)) == [b"queued before", b"new"]
    await eventually(lambda: queue.depth == 0, 5, "the acks to land")


async def test_new_subscriptions_and_the_backlog_hold_after_a_restart(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us")
    gateway = gateway_of(node)
    await gateway.ensure_queue(OPEN, pb.QueueConfig(name=SESSION, subscriptions=["old/>"]))
    await publish(gateway, guaranteed("old/1", b"queued before"))
    await gateway.set_queue_subscriptions(OPEN, SESSION, ["new/>"])

    gateway = gateway_of(await inproc_nodes.restart(node))

    assert list(gateway.queues.get(SESSION).config.subscriptions) == ["new/>"]
    await publish(gateway, guaranteed("old/2", b"old pattern"), guaranteed("new/1", b"new"))
    with gateway.consume(OPEN, SESSION, 10, peer=PEER) as consumer:
        assert payloads(await take(consumer, 2)) == [b"queued before", b"new"]


async def test_a_subscription_change_shows_in_the_queue_listing(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us")
    gateway = gateway_of(node)
    await gateway.ensure_queue(OPEN, pb.QueueConfig(name=SESSION, subscriptions=["old/>"]))
    await gateway.set_queue_subscriptions(OPEN, SESSION, [])
    await gateway.set_queue_subscriptions(OPEN, SESSION, ["b/*", "a/>"])
    async with await Client.connect(node.address) as client:
        info = await client.describe_queue(SESSION)
    assert info.subscriptions == ("b/*", "a/>")


async def test_bad_subscription_changes_are_refused_naming_what_is_wrong_and_change_nothing(
    inproc_nodes: InProcessNodes,
) -> None:
    gateway = gateway_of(await inproc_nodes.start("us"))
    await gateway.ensure_queue(OPEN, pb.QueueConfig(name=SESSION, subscriptions=["old/>"]))

    with pytest.raises(InvalidPattern, match="'bad//pattern'"):
        await gateway.set_queue_subscriptions(OPEN, SESSION, ["ok/>", "bad//pattern"])
    with pytest.raises(InvalidArgument, match="at most 1000 subscriptions"):
        await gateway.set_queue_subscriptions(OPEN, SESSION, [f"t/{i}" for i in range(1001)])
    with pytest.raises(QueueNotFound, match="'nobody'"):
        await gateway.set_queue_subscriptions(OPEN, "nobody", ["a/>"])

    assert gateway.queues.get(SESSION).subscriptions == ("old/>",)
    assert [q.name for q in gateway.queues.match("ok/1")] == []


def access_of(gateway: Gateway, key: bytes, name: str, **grants: object) -> Access:
    return gateway.identify(token(key, name, **grants))


async def test_changing_a_queue_needs_create_on_it_and_subscribe_on_each_pattern_deleting_admin(
    inproc_nodes: InProcessNodes, tmp_path: Path, key: bytes
) -> None:
    node = await inproc_nodes.start("us", auth_key=tmp_path / "signing.key")
    gateway = gateway_of(node)
    device = access_of(gateway, key, "device", subscribe=["dev/>"], create=[SESSION])
    stranger = access_of(gateway, key, "stranger", subscribe=[">"], create=["other"])
    await gateway.ensure_queue(device, pb.QueueConfig(name=SESSION, subscriptions=["dev/a"]))

    with pytest.raises(NotPermitted, match=r"device.*subscribe.*'secret/>'"):
        await gateway.set_queue_subscriptions(device, SESSION, ["dev/b", "secret/>"])
    with pytest.raises(NotPermitted, match=r"stranger.*create.*mqtt.c.device-1"):
        await gateway.set_queue_subscriptions(stranger, SESSION, ["dev/b"])
    with pytest.raises(NotPermitted, match=r"device.*admin"):
        await gateway.delete_queue(device, SESSION)  # as gRPC's DeleteQueue
    assert gateway.queues.get(SESSION).subscriptions == ("dev/a",)

    await gateway.set_queue_subscriptions(device, SESSION, ["dev/b"])
    assert gateway.queues.get(SESSION).subscriptions == ("dev/b",)
    await gateway.delete_queue(access_of(gateway, key, "root", admin=True), SESSION)
    with pytest.raises(QueueNotFound):
        gateway.queues.get(SESSION)
    assert [q.name for q in gateway.queues.match("dev/b")] == []


async def test_a_deleted_session_queue_is_gone_after_a_restart(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us")
    gateway = gateway_of(node)
    await gateway.ensure_queue(OPEN, pb.QueueConfig(name=SESSION, subscriptions=["a/>"]))
    await publish(gateway, guaranteed("a/1", b"x"))
    await gateway.delete_queue(OPEN, SESSION)
    gateway = gateway_of(await inproc_nodes.restart(node))
    with pytest.raises(QueueNotFound):
        gateway.queues.get(SESSION)


async def test_an_eu_queue_whose_subscriptions_changed_gets_us_events_on_the_new_pattern(
    tmp_path: Path,
) -> None:
    """us is a real node process; eu runs in-process (the gateway is an in-process API)
    from the same cluster file, and restarts on its data."""
    cluster = Cluster(tmp_path / "cluster", ["eu", "us"], [("eu", "us")])
    topology = load_cluster_file(cluster.file)
    spec = region_spec(topology, "eu")
    config = node_config("eu", spec.data, listen=spec.grpc)
    cluster.start("us")
    eu: Node | None = None
    try:
        eu = Node(config, topology)
        await eu.start()
        gateway = gateway_of(eu)
        await gateway.ensure_queue(OPEN, pb.QueueConfig(name=SESSION, subscriptions=["old/>"]))
        async with await Client.connect(cluster.address("us")) as us:
            await _wait_for_interest(us, "old/>")
            await us.publish("old/1", b"before", guaranteed=True)
            with gateway.consume(OPEN, SESSION, 10, peer=PEER) as consumer:
                assert payloads(await take(consumer, 1)) == [b"before"]

            await gateway.set_queue_subscriptions(OPEN, SESSION, ["new/>"])
            await _wait_for_interest(us, "new/>", gone="old/>")
            await us.publish("old/2", b"old pattern", guaranteed=True)
            await us.publish("new/1", b"new pattern", guaranteed=True)
            with gateway.consume(OPEN, SESSION, 10, peer=PEER) as consumer:
                assert payloads(await take(consumer, 1)) == [b"new pattern"]

            await eu.stop()
            eu = Node(config, topology)
            await eu.start()
            gateway = gateway_of(eu)
            assert gateway.queues.get(SESSION).subscriptions == ("new/>",)
            await _wait_for_interest(us, "new/>", gone="old/>")
            await us.publish("old/3", b"old pattern", guaranteed=True)
            await us.publish("new/2", b"after restart", guaranteed=True)
            with gateway.consume(OPEN, SESSION, 10, peer=PEER) as consumer:
                assert payloads(await take(consumer, 1)) == [b"after restart"]
                assert consumer.take() == []
    finally:
        if eu is not None:
            await eu.stop()
        cluster.close()


async def _wait_for_interest(us: Client, pattern: str, gone: str | None = None) -> None:
    """Until us routes `pattern` (and no longer `gone`) to eu."""

    async def known() -> bool:
        view = await us.list_links()
        patterns = {p for i in view.interest if i.region == "eu" for p in i.patterns}
        return pattern in patterns and gone not in patterns

    await eventually(known, 15, f"us to learn eu's interest in {pattern}")
