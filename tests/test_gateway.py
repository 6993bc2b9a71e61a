"""The in-process broker API of the MQTT and HTTP front doors (node/gateway.py), on an
in-process node with a token key: what it publishes, gRPC clients receive, and back;
the same permissions as gRPC."""

from __future__ import annotations

import asyncio

import pytest

from node.gateway import Gateway, Published
from node.server import Node
from plexus import Client, NotPermitted, QueueFull, Unauthenticated
from plexus.v1 import plexus_pb2 as pb
from tests.signing import token

pytestmark = pytest.mark.timeout(60)
PEER = "test:127.0.0.1:1"


@pytest.fixture
async def node(keyed_node: Node) -> Node:
    return keyed_node


def gateway_of(node: Node) -> Gateway:
    assert node.gateway is not None
    return node.gateway


def event(topic: str, payload: bytes, guaranteed: bool = False) -> pb.Event:
    mode = pb.DeliveryMode.GUARANTEED if guaranteed else pb.DeliveryMode.DIRECT
    return pb.Event(topic=topic, payload=payload, mode=mode)


async def test_a_gateway_publish_reaches_a_grpc_subscriber_and_queue(
    node: Node, key: bytes
) -> None:
    gateway = gateway_of(node)
    access = gateway.identify(token(key, "device", publish=["sensors/>"]))
    admin = token(key, "root", admin=True)
    async with await Client.connect(node.address, token=admin) as client:
        await client.create_queue("readings", ["sensors/>"])
        sub = client.subscribe("sensors/>")
        await sub.ready()
        results = await gateway.publish(
            access,
            [event("sensors/1", b"direct"), event("sensors/2", b"kept", guaranteed=True)],
            peer=PEER,
        )
        direct, kept = results
        assert direct == Published()  # routed: direct events are not acknowledged
        assert kept.error is None and kept.id and not kept.duplicate
        got = await sub.next_batch(timeout=5)
        while len(got) < 2:
            got += await sub.next_batch(timeout=5)
        assert [(e.topic, e.payload) for e in got] == [
            ("sensors/1", b"direct"),
            ("sensors/2", b"kept"),
        ]
        assert got[1].id == kept.id
        # Durable once the call returned: the queue holds the guaranteed one.
        assert (await client.describe_queue("readings")).depth == 1


async def test_a_gateway_publish_is_refused_per_event_naming_the_topic(
    node: Node, key: bytes
) -> None:
    gateway = gateway_of(node)
    access = gateway.identify(token(key, "device", publish=["sensors/>"]))
    results = await gateway.publish(
        access, [event("sensors/1", b"ok"), event("admin/x", b"no")], peer=PEER
    )
    assert results[0].error is None
    refusal = results[1].error
    assert isinstance(refusal, NotPermitted)
    assert "admin/x" in str(refusal) and "device" in str(refusal)


async def test_a_full_queue_refuses_a_guaranteed_gateway_publish(node: Node, key: bytes) -> None:
    gateway = gateway_of(node)
    root = gateway.identify(token(key, "root", admin=True))
    await gateway.ensure_queue(
        root,
        pb.QueueConfig(name="tiny", subscriptions=["t/>"], limits=pb.QueueLimits(max_depth=1)),
    )
    first, second = await gateway.publish(
        root, [event("t/1", b"a", guaranteed=True), event("t/2", b"b", guaranteed=True)], peer=PEER
    )
    assert first.error is None and isinstance(second.error, QueueFull)


async def test_a_resent_key_is_acknowledged_as_a_duplicate_of_the_first_copy(
    node: Node, key: bytes
) -> None:
    gateway = gateway_of(node)
    root = gateway.identify(token(key, "root", admin=True))
    await gateway.ensure_queue(root, pb.QueueConfig(name="orders", subscriptions=["o/>"]))
    [first] = await gateway.publish(
        root, [event("o/1", b"a", guaranteed=True)], peer=PEER, keys=["k1"]
    )
    [again] = await gateway.publish(
        root, [event("o/1", b"a", guaranteed=True)], peer=PEER, keys=["k1"]
    )
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.id == first.id


async def test_a_missing_token_is_unauthenticated(node: Node) -> None:
    with pytest.raises(Unauthenticated, match="missing"):
        gateway_of(node).identify(None)


async def test_a_gateway_subscription_gets_grpc_publishes_and_is_listed(
    node: Node, key: bytes
) -> None:
    gateway = gateway_of(node)
    access = gateway.identify(token(key, "screen", subscribe=["news/>"]))
    with pytest.raises(NotPermitted), gateway.subscribe(access, "secret/>", peer=PEER):
        pass
    admin = token(key, "root", admin=True)
    with gateway.subscribe(access, "news/>", peer=PEER, name="screen-1") as subscription:
        async with await Client.connect(node.address, token=admin) as client:
            assert any(c.name == "screen-1" for c in await client.clients())
            await client.publish("news/today", b"hello")
            async with asyncio.timeout(5):
                await subscription.wake.wait()
            subscription.wake.clear()
            [got] = subscription.take()
    assert (got.topic, got.payload, got.origin_region) == ("news/today", b"hello", "us")


async def test_a_gateway_consumer_gets_deliveries_and_what_it_did_not_ack_comes_back(
    node: Node, key: bytes
) -> None:
    gateway = gateway_of(node)
    access = gateway.identify(token(key, "worker", subscribe=["jobs/>"], consume=["jobs"]))
    with pytest.raises(NotPermitted, match="create"):
        await gateway.ensure_queue(access, pb.QueueConfig(name="jobs", subscriptions=["jobs/>"]))
    root = gateway.identify(token(key, "root", admin=True))
    await gateway.ensure_queue(root, pb.QueueConfig(name="jobs", subscriptions=["jobs/>"]))
    await gateway.publish(
        root, [event(f"jobs/{i}", b"%d" % i, guaranteed=True) for i in range(3)], peer=PEER
    )

    async def take(consumer, count):  # type: ignore[no-untyped-def]
        got: list[pb.Event] = []
        async with asyncio.timeout(5):
            while len(got) < count:
                await consumer.wake.wait()
                consumer.wake.clear()
                got += consumer.take()
        return got

    with gateway.consume(access, "jobs", 10, peer=PEER) as consumer:
        first = await take(consumer, 3)
        assert [e.payload for e in first] == [b"0", b"1", b"2"]
        consumer.ack([first[0].delivery_tag])
    with gateway.consume(access, "jobs", 10, peer=PEER) as consumer:
        again = await take(consumer, 2)
    assert [e.payload for e in again] == [b"1", b"2"]
    assert all(e.redelivered and e.delivery_count == 2 for e in again)
