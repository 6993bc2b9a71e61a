"""A client's subscriptions on one Subscriptions stream (issue 14): each is made and ended by a
message, answered by id, and keeps what a Subscribe stream had: its own events, buffer,
counts, permissions and limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from node.server import Node
from plexus import Client, NotPermitted
from plexus.client import subscription as subscription_module
from plexus.errors import FailedPrecondition, LimitReached, Timeout
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.harness import eventually
from tests.inprocess import InProcessNodes
from tests.signing import token

pytestmark = pytest.mark.timeout(60)


async def payloads(sub: object, count: int) -> list[bytes]:
    """The payloads of the next `count` events of `sub` (a Subscription)."""
    got: list[bytes] = []
    async with asyncio.timeout(5):
        while len(got) < count:
            got += [e.payload for e in await sub.next_batch()]  # type: ignore[attr-defined]
    return got


async def test_subscriptions_of_one_client_each_get_their_own_events_and_end_alone(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us")
    async with (
        await Client.connect(node.address) as client,
        await Client.connect(node.address) as publisher,
        client.subscribe("a/>") as a,
        client.subscribe("b/>") as b,
        client.subscribe("a/x") as ax,
    ):
        (held,) = [c for c in await publisher.clients() if c.subscriptions]
        assert sorted(held.subscriptions) == ["a/>", "a/x", "b/>"]
        await publisher.publish("a/x", b"1")
        await publisher.publish("b/y", b"2")
        await publisher.flush()
        assert await payloads(a, 1) == [b"1"]
        assert await payloads(b, 1) == [b"2"]
        assert await payloads(ax, 1) == [b"1"]

        await ax.close()

        async def two_left() -> bool:
            return (await publisher.node_info()).subscriptions == 2

        await eventually(two_left, 5, "the closed subscription to leave the node")
        await publisher.publish("a/x", b"3")
        await publisher.flush()
        assert await payloads(a, 1) == [b"3"]
        assert await ax.next_batch(timeout=0.05) == []
        listed = {s.pattern: s for s in (await publisher.subscriptions()).subscriptions}
        assert (listed["a/>"].delivered, listed["b/>"].delivered) == (2, 1)
        assert listed["a/>"].client_id == held.id


async def test_a_refused_subscription_raises_its_error_and_leaves_the_others_live(
    keyed_node: Node, key: bytes
) -> None:
    reader = token(key, "reader", subscribe=["orders/>"])
    async with (
        await Client.connect(keyed_node.address, token=reader) as client,
        await Client.connect(keyed_node.address, token=token(key, "root", admin=True)) as admin,
        client.subscribe("orders/>") as orders,
    ):
        with pytest.raises(NotPermitted) as refused:
            async with client.subscribe("payments/>"):
                pass
        assert (refused.value.permission, refused.value.target) == ("subscribe", "payments/>")
        await admin.publish("orders/1", b"still here")
        assert await payloads(orders, 1) == [b"still here"]


async def test_subscriptions_past_the_client_limit_raise_limit_reached(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us", max_subscriptions_per_client=2)
    async with (
        await Client.connect(node.address) as client,
        await Client.connect(node.address) as publisher,
        client.subscribe("s/1") as one,
        client.subscribe("s/2"),
    ):
        late = client.subscribe("s/3")
        with pytest.raises(LimitReached) as refused:
            await late.ready()
        assert (refused.value.limit, refused.value.value) == ("max_subscriptions_per_client", 2)
        with pytest.raises(LimitReached):
            await late.next_batch(timeout=1)
        await publisher.publish("s/1", b"one")
        assert await payloads(one, 1) == [b"one"]
        await one.close()

        # One closed makes room again (once the node has dropped it).
        async def made() -> bool:
            again = client.subscribe("s/3")
            try:
                await again.ready()
            except LimitReached:
                return False
            await again.close()
            return True

        await eventually(made, 5, "room for a subscription again")


async def requests_of(queue: asyncio.Queue[pb.SubscriptionsRequest | None]) -> AsyncIterator:
    while (request := await queue.get()) is not None:
        yield request


async def test_the_node_answers_each_subscription_by_id_and_tags_its_events(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us")
    async with await Client.connect(node.address) as publisher:
        channel = grpc.aio.insecure_channel(node.address)
        async with channel:
            requests: asyncio.Queue[pb.SubscriptionsRequest | None] = asyncio.Queue()
            call = rpc.BrokerStub(channel).Subscriptions(requests_of(requests))
            subscribe = [
                pb.SubscribeRequest(id=7, pattern="t/>"),
                pb.SubscribeRequest(id=9, pattern="t/9"),
            ]
            await requests.put(pb.SubscriptionsRequest(subscribe=subscribe))
            async with asyncio.timeout(5):
                answer = await call.read()
            assert list(answer.subscribed) == [7, 9]
            # An id in use is refused, naming it; the stream and its subscriptions stay.
            await requests.put(
                pb.SubscriptionsRequest(subscribe=[pb.SubscribeRequest(id=7, pattern="u/>")])
            )
            async with asyncio.timeout(5):
                answer = await call.read()
            (refusal,) = answer.refused
            assert refusal.subscription == 7 and "id 7 is in use" in refusal.error.message
            await publisher.publish("t/9", b"both")
            await publisher.flush()
            got: dict[int, list[bytes]] = {}
            async with asyncio.timeout(5):
                while sum(len(v) for v in got.values()) < 2:
                    for events in (await call.read()).events:
                        got.setdefault(events.subscription, []).extend(
                            e.payload for e in events.events
                        )
            assert got == {7: [b"both"], 9: [b"both"]}
            await requests.put(pb.SubscriptionsRequest(unsubscribe=[7]))

            async def one_left() -> bool:
                return (await publisher.node_info()).subscriptions == 1

            await eventually(one_left, 5, "subscription 7 to end")
            await publisher.publish("t/9", b"only nine")
            await publisher.flush()
            async with asyncio.timeout(5):
                (events,) = (await call.read()).events
            assert events.subscription == 9 and [e.payload for e in events.events] == [b"only nine"]
            await requests.put(None)


SLOW_EVENTS = 10_000


async def test_an_unread_subscription_is_bounded_in_the_client_and_the_node_counts_discards(
    inproc_nodes: InProcessNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscription_module, "MAX_BUFFERED_BYTES", 100_000)
    node = await inproc_nodes.start("us")
    async with (
        await Client.connect(node.address) as client,
        await Client.connect(node.address) as publisher,
        client.subscribe("slow/>", buffer_events=100) as slow,
    ):
        # In steps the node's writer keeps up with: only an unread client makes it discard.
        for i in range(SLOW_EVENTS):
            publisher.publish_nowait("slow/x", b"%0999d" % i)
            if i % 100 == 99:
                await publisher.flush()
                await asyncio.sleep(0)  # pacing, not a wait: one loop turn for the node's writer

        async def discarded() -> int:
            (listed,) = (await publisher.subscriptions(contains="slow")).subscriptions
            return listed.discarded

        await eventually(discarded, 5, "the node to discard for the unread subscription")
        # What the subscription then reads is what the node did not discard, oldest first.
        got: list[bytes] = []
        while batch := await slow.next_batch(timeout=0.5):
            got += [e.payload for e in batch]
        assert got[0] == b"%0999d" % 0
        assert len(got) + await discarded() == SLOW_EVENTS


async def test_ready_says_it_waits_for_a_reconnect_while_the_node_is_down(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us")
    async with await Client.connect(node.address) as client:
        await node.stop()
        sub = client.subscribe("x/>")
        with pytest.raises(Timeout) as waited:
            await sub.ready(timeout=0.5)
        assert f"reconnect to node at {node.address} for subscription 'x/>'" in str(waited.value)
        await sub.close()


async def test_a_node_without_the_subscriptions_stream_is_named_as_too_old() -> None:
    """An older node answers UNIMPLEMENTED: the subscription fails once, no reconnect loop."""

    async def node_info(_request: bytes, _context: object) -> bytes:
        return pb.NodeInfo(region="old").SerializeToString()

    server = grpc.aio.server()
    handlers = {"GetNodeInfo": grpc.unary_unary_rpc_method_handler(node_info)}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("plexus.v1.Broker", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with await Client.connect(f"127.0.0.1:{port}") as client:
            sub = client.subscribe("x/>")
            with pytest.raises(FailedPrecondition, match="upgrade the node"):
                await sub.ready(timeout=5)
            assert client.reconnects == 0
    finally:
        await server.stop(0)
