"""The SDK (plexus.Client) against an in-process node; a real process where it is killed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.server import Node
from plexus import (
    AlreadyExists,
    Client,
    InvalidArgument,
    InvalidPattern,
    InvalidTopic,
    NotFound,
    Unavailable,
)
from plexus.client import Event, Subscription
from plexus.client.framing import FLUSH, EventFramer
from plexus.client.subscription_stream import SubscriptionStream
from plexus.v1 import plexus_pb2 as pb
from tests.harness import Nodes, eventually, free_port

pytestmark = pytest.mark.timeout(60)
# A deadline for what must not hang, far above what it takes on a loaded machine.
GENEROUS_S = 30.0


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    await eventually(predicate, timeout, "the condition")


async def subscribed(client: Client, count: int = 1) -> None:
    """Wait until the node counts `count` subscriptions (as a second witness to ready())."""

    async def registered() -> bool:
        return (await client.node_info()).subscriptions >= count

    await wait_until(registered)


@pytest.fixture
async def client(inproc_node: Node) -> AsyncIterator[Client]:
    client = await Client.connect(inproc_node.address)
    try:
        yield client
    finally:
        await client.close()


async def test_connect_to_unreachable_node_raises_unavailable_naming_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match=address):
        # Gives up at its own timeout: a connect that hangs fails the outer deadline instead.
        async with asyncio.timeout(GENEROUS_S):
            await Client.connect(address, timeout=1.0)


async def test_connect_rejects_address_without_port() -> None:
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        await Client.connect("localhost")


async def test_node_info_names_the_region(client: Client) -> None:
    info = await client.node_info()
    assert info.region == "us"
    assert info.protocol_version == 1


async def test_direct_events_arrive_in_order(client: Client) -> None:
    async with client.subscribe("orders/>") as sub:
        await subscribed(client)
        for i in range(2000):
            await client.publish(f"orders/us/{i % 7}", f"event {i}".encode(), headers={"i": "x"})
        await client.flush()
        got: list[Event] = []
        async for event in sub:
            got.append(event)
            if len(got) == 2000:
                break
    assert [e.payload for e in got] == [f"event {i}".encode() for i in range(2000)]
    first = got[0]
    assert first.topic == "orders/us/0"
    assert first.headers == {"i": "x"}
    assert first.origin_region == "us"
    assert not first.guaranteed and first.id > 0 and first.publish_time_ms > 0
    assert [e.id for e in got] == sorted(e.id for e in got)


async def test_subscriber_gets_only_matching_topics(client: Client) -> None:
    async with client.subscribe("a/*/c") as sub:  # live once entered: no polling
        for topic in ("a/b/c", "a/b/d", "a/b/c/d", "x/b/c", "a/z/c"):
            await client.publish(topic, b"p")
        await client.flush()
        topics = [(await sub.__anext__()).topic, (await sub.__anext__()).topic]
        assert topics == ["a/b/c", "a/z/c"]
        assert await sub.next_batch(timeout=0.2) == []


async def test_next_batch_timeout_keeps_the_subscription(client: Client) -> None:
    async with client.subscribe("t/>") as sub:
        await subscribed(client)
        assert await sub.next_batch(timeout=0.05) == []
        await client.publish("t/1", b"after timeout")
        batch = await sub.next_batch(timeout=5.0)
        assert [e.payload for e in batch] == [b"after timeout"]


async def test_local_validation_raises_before_anything_is_sent(client: Client) -> None:
    with pytest.raises(InvalidTopic, match="level 2"):
        await client.publish("a//b", b"x")
    with pytest.raises(InvalidTopic):
        client.publish_nowait("a/*/b", b"x")
    with pytest.raises(InvalidTopic, match="250 bytes"):
        await client.publish("a" * 300, b"x")
    with pytest.raises(InvalidArgument, match="payload"):
        await client.publish("a/b", b"x" * (1024 * 1024 + 1))
    with pytest.raises(InvalidPattern):
        client.subscribe("a/>/b")
    with pytest.raises(InvalidPattern):
        await client.create_queue("q", ["a//b"])
    await client.flush()
    assert (await client.node_info()).direct_in == 0


async def test_guaranteed_publish_queue_consume_ack(client: Client) -> None:
    info = await client.create_queue("billing", ["orders/>"])
    assert info.name == "billing" and info.subscriptions == ("orders/>",) and info.depth == 0
    ids = [await client.publish(f"orders/{i}", b"g%d" % i, guaranteed=True) for i in range(5)]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert ids == sorted(ids)
    assert (await client.describe_queue("billing")).depth == 5

    async with client.consume("billing", prefetch=16) as consumer:
        got = []
        async for delivery in consumer:
            got.append(delivery)
            await delivery.ack()  # resolves once the ack is durable
            if len(got) == 5:
                break
    assert [d.payload for d in got] == [b"g%d" % i for i in range(5)]
    assert [d.id for d in got] == ids
    assert all(d.delivery_count == 1 and not d.redelivered and d.guaranteed for d in got)
    assert all(d.queue == "billing" for d in got)
    after = await client.describe_queue("billing")
    assert (after.depth, after.unacked) == (0, 0)


async def test_nack_redelivers_with_delivery_count_2(client: Client) -> None:
    await client.create_queue("retry", ["jobs/>"])
    await client.publish("jobs/1", b"work", guaranteed=True)
    async with client.consume("retry") as consumer:
        first = await consumer.__anext__()
        assert first.delivery_count == 1
        await first.nack()
        second = await consumer.__anext__()
        await second.ack()
    assert second.payload == b"work"
    assert second.delivery_count == 2
    assert second.redelivered


async def test_unacked_deliveries_come_back_after_consumer_closes(client: Client) -> None:
    await client.create_queue("comeback", ["c/>"])
    for i in range(3):
        await client.publish(f"c/{i}", b"x", guaranteed=True)
    async with client.consume("comeback") as consumer:
        batch = await consumer.next_batch(timeout=5.0)
        assert len(batch) == 3  # not acked
    async with client.consume("comeback") as consumer:
        again = []
        while len(again) < 3:
            again += await consumer.next_batch(timeout=5.0)
        for d in again:
            d.ack()
    assert all(d.redelivered for d in again)
    assert (await client.describe_queue("comeback")).depth == 0


async def test_credit_is_replenished_as_deliveries_are_acked(client: Client) -> None:
    await client.create_queue("credit", ["cr/>"])
    futures = [client.publish_nowait("cr/x", b"%d" % i, guaranteed=True) for i in range(500)]
    await asyncio.gather(*futures)
    seen = 0
    async with client.consume("credit", prefetch=10) as consumer:
        async for delivery in consumer:
            assert consumer.info is not None
            delivery.ack()
            seen += 1
            if seen == 500:
                break
    assert (await client.describe_queue("credit")).depth == 0


async def test_consume_unknown_queue_raises_not_found(client: Client) -> None:
    consumer = client.consume("nosuchq")
    with pytest.raises(NotFound, match="nosuchq"):
        await consumer.__anext__()
    await consumer.close()


async def test_queue_management(client: Client) -> None:
    await client.create_queue("q1", ["a/>", "b/*"], exclusive=True, max_depth=10)
    with pytest.raises(AlreadyExists, match="q1"):
        await client.create_queue("q1", ["a/>"])
    described = await client.describe_queue("q1")
    assert described.exclusive and described.max_depth == 10
    assert described.subscriptions == ("a/>", "b/*")
    assert "q1" in [q.name for q in await client.list_queues()]
    await client.delete_queue("q1")
    with pytest.raises(NotFound):
        await client.describe_queue("q1")
    with pytest.raises(NotFound):
        await client.delete_queue("q1")


async def test_full_queue_refuses_guaranteed_publish(client: Client) -> None:
    await client.create_queue("small", ["s/>"], max_depth=2)
    await client.publish("s/1", b"1", guaranteed=True)
    await client.publish("s/2", b"2", guaranteed=True)
    with pytest.raises(Exception, match="full") as caught:
        await client.publish("s/3", b"3", guaranteed=True)
    assert caught.type.__name__ == "QueueFull"
    # The stream stays usable after a refusal.
    assert await client.publish("other/4", b"4", guaranteed=True)


async def test_pipelined_guaranteed_publishes_resolve_in_order(client: Client) -> None:
    await client.create_queue("bulk", ["bulk/>"])
    futures = [client.publish_nowait("bulk/x", b"p" * 100, guaranteed=True) for i in range(20_000)]
    ids = await asyncio.gather(*futures)
    assert ids == sorted(ids) and len(set(ids)) == 20_000
    assert (await client.describe_queue("bulk")).depth == 20_000


async def test_flush_waits_until_the_node_handled_every_direct_event(client: Client) -> None:
    for i in range(5000):
        client.publish_nowait("f/x", b"%d" % i)
    await client.flush()
    assert (await client.node_info()).direct_in == 5000


async def test_without_reconnect_pending_guaranteed_publishes_fail_unavailable_when_node_dies(
    nodes: Nodes,
) -> None:
    node = nodes.start("us")
    async with await Client.connect(node.address, reconnect=False) as client:
        await client.create_queue("doomed", ["d/>"])
        futures = [client.publish_nowait("d/x", b"p" * 100, guaranteed=True) for _ in range(30_000)]
        # Kill once the stream is flowing: the first acks are in, most are not.
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        node.kill()
        async with asyncio.timeout(20):
            results = await asyncio.gather(*futures, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures, "expected some publishes to be in flight at the kill"
        assert all(isinstance(f, Unavailable) for f in failures), {repr(f) for f in failures}
        # The broken stream is reported once, then publishing needs the node again.
        with pytest.raises(Unavailable):
            await client.publish("d/x", b"p", guaranteed=True)


async def test_subscription_raises_unavailable_once_the_client_gives_up(nodes: Nodes) -> None:
    node = nodes.start("us")
    async with await Client.connect(node.address, max_reconnect_s=0.5) as client:
        sub = client.subscribe("x/>")
        await subscribed(client)
        node.kill()
        with pytest.raises(Unavailable):
            async with asyncio.timeout(20):
                await sub.__anext__()
        await sub.close()


def test_event_to_dict_uses_base64_for_binary_payloads() -> None:
    event = Event(pb.Event(topic="a/b", payload=b"\xff\x00", id=7, origin_region="us"))
    data = event.to_dict()
    assert data["payload"] == "/wA=" and data["encoding"] == "base64"
    assert data["id"] == "7" and data["region"] == "us"
    text = Event(pb.Event(topic="a/b", payload="héllo".encode())).to_dict()
    assert text["payload"] == "héllo" and text["encoding"] == "utf-8"


async def test_publishes_under_load_share_stream_writes(client: Client) -> None:
    await client.publish("w/x", b"first")  # opens the stream
    await client.flush()
    stream = client._stream
    assert stream is not None and stream._call is not None
    writes: list[int] = []
    write = stream._call.write

    async def counting_write(request: bytes) -> None:
        writes.append(len(pb.PublishRequest.FromString(request).events))
        await write(request)

    stream._call.write = counting_write  # type: ignore[method-assign]
    for i in range(10_000):
        client.publish_nowait("w/x", b"%d" % i)
    await client.flush()
    assert sum(writes) == 10_000 or sum(writes) == 10_001
    assert len(writes) <= 30, writes  # batches of up to 1000 events, not one write each


async def test_a_lone_publish_is_sent_at_once(client: Client) -> None:
    await client.create_queue("lone", ["lone/>"])
    client.publish_nowait("w/x", b"first")  # opens the stream
    await client.flush()
    stream = client._stream
    assert stream is not None
    writes: list[int] = []
    write = stream._call.write

    async def counting_write(request: bytes) -> None:
        writes.append(len(pb.PublishRequest.FromString(request).events))
        await write(request)

    stream._call.write = counting_write  # type: ignore[method-assign]

    async def one_by_one() -> None:
        for _ in range(20):
            await client.publish("lone/x", b"x", guaranteed=True)

    # Each publish goes out in a request of its own, waiting for nothing else
    # (the latency figure is in benchmarks/bench_latency.py).
    async with asyncio.timeout(GENEROUS_S):
        await one_by_one()
    assert writes == [1] * 20


async def test_node_refusing_a_pattern_is_raised_from_ready(client: Client) -> None:
    stream = SubscriptionStream(client._conn)
    sub = Subscription(stream, "a/>/b")  # skips local validation
    with pytest.raises(InvalidArgument, match="a/>/b"):
        await sub.ready()
    await sub.close()
    await stream.close()


@given(
    events=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=300),
            st.binary(max_size=400),
            st.booleans(),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
            st.integers(min_value=0, max_value=2**40),
        ),
        max_size=5,
    ),
    flush=st.booleans(),
)
def test_hand_framed_requests_match_the_generated_code(
    events: list[tuple[str, bytes, bool, dict[str, str], int]], flush: bool
) -> None:
    framer = EventFramer()
    expected = pb.PublishRequest(flush=flush)
    frames = []
    for topic, payload, guaranteed, headers, ttl_ms in events:
        mode = pb.GUARANTEED if guaranteed else pb.DIRECT
        expected.events.add(topic=topic, payload=payload, mode=mode, headers=headers, ttl_ms=ttl_ms)
        if headers or ttl_ms:
            frames.append(framer.frame_full(topic, payload, guaranteed, headers, ttl_ms))
        else:
            frames.append(framer.frame(topic, payload, guaranteed))
    data = b"".join(frames) + (FLUSH if flush else b"")
    assert pb.PublishRequest.FromString(data) == expected
    if not any(h or t for _, _, _, h, t in events):
        assert data == expected.SerializeToString()
