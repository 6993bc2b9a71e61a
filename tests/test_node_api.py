"""The Broker API of an in-process node, over gRPC: behaviour and every bad input."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from node.server import Node
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.inprocess import InProcessNodes

_names = itertools.count()


@pytest.fixture
async def node(inproc_nodes: InProcessNodes) -> Node:
    return await inproc_nodes.start("us", max_payload_bytes=4096)


@pytest.fixture
async def stub(node: Node) -> AsyncIterator[rpc.BrokerStub]:
    async with grpc.aio.insecure_channel(node.address) as channel:
        yield rpc.BrokerStub(channel)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


async def create(stub: rpc.BrokerStub, name: str, *patterns: str, **config) -> pb.QueueInfo:
    limits = pb.QueueLimits(**{k: v for k, v in config.items() if k.startswith("max_")})
    return await stub.CreateQueue(
        pb.CreateQueueRequest(
            config=pb.QueueConfig(
                name=name,
                subscriptions=patterns,
                exclusive=config.get("exclusive", False),
                limits=limits,
            )
        )
    )


async def publish(stub: rpc.BrokerStub, *events: pb.Event) -> list[pb.PublishAck]:
    """Publish in one request, flush, and return the acks (guaranteed and refusals)."""

    async def requests() -> AsyncIterator[pb.PublishRequest]:
        yield pb.PublishRequest(events=events, flush=True)
        await done.wait()

    done = asyncio.Event()
    acks: list[pb.PublishAck] = []
    async for response in stub.Publish(requests()):
        for ack in response.acks:  # a run acks `count` consecutive events
            acks.extend(
                pb.PublishAck(index=ack.index + k, id=ack.id + k, error=ack.error)
                if ack.HasField("error")
                else pb.PublishAck(index=ack.index + k, id=ack.id + k)
                for k in range(max(1, ack.count))
            )
        if response.processed >= len(events):
            done.set()
            break
    return sorted(acks, key=lambda a: a.index)


def guaranteed(topic: str, payload: bytes = b"x", **fields) -> pb.Event:
    return pb.Event(topic=topic, payload=payload, mode=pb.GUARANTEED, **fields)


class Reader:
    """Reads a response stream in one task: a cancelled read would cancel the call."""

    def __init__(self, call) -> None:
        self.call = call
        self.responses: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.responses.put_nowait(response)
        except BaseException as exc:
            self.responses.put_nowait(exc)

    async def read(self, timeout: float = 5.0):
        async with asyncio.timeout(timeout):
            response = await self.responses.get()
        if isinstance(response, BaseException):
            raise response
        return response

    def close(self) -> None:
        self.call.cancel()
        self.task.cancel()


async def subscribe(stub: rpc.BrokerStub, pattern: str, probe: str, **options) -> Reader:
    """A live subscription: returns once a probe event on `probe` came through it."""
    sub = Reader(stub.Subscribe(pb.SubscribeRequest(pattern=pattern, **options)))
    while True:
        await publish(stub, pb.Event(topic=probe, payload=b"probe"))
        try:
            await sub.read(0.2)
        except TimeoutError:
            continue
        while not sub.responses.empty():  # probes that arrived late
            await sub.read()
        return sub


class Consumer:
    """A Consume stream driven by a test."""

    def __init__(self, stub: rpc.BrokerStub, queue: str, credits: int) -> None:
        self.requests: asyncio.Queue[pb.ConsumeRequest] = asyncio.Queue()
        self.requests.put_nowait(
            pb.ConsumeRequest(start=pb.ConsumeStart(queue=queue, credits=credits))
        )
        self.reader = Reader(stub.Consume(self._send()))

    async def _send(self) -> AsyncIterator[pb.ConsumeRequest]:
        while True:
            yield await self.requests.get()

    async def next(self, kind: str = "events", timeout: float = 5.0) -> pb.ConsumeResponse:
        while True:
            response = await self.reader.read(timeout)
            if response.WhichOneof("action") == kind:
                return response

    async def events(self, count: int) -> list[pb.Event]:
        got: list[pb.Event] = []
        while len(got) < count:
            got.extend((await self.next()).events.events)
        return got

    def send(self, **action) -> None:
        self.requests.put_nowait(pb.ConsumeRequest(**action))

    async def ack(self, events: list[pb.Event]) -> None:
        self.send(ack=pb.Tags(tags=[e.delivery_tag for e in events]))
        confirmed: list[int] = []
        while len(confirmed) < len(events):
            confirmed.extend((await self.next("confirmed")).confirmed.tags)

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await self.next(timeout=seconds)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.reader.close()


# ------------------------------------------------------------------ direct


async def test_subscriber_gets_direct_events_in_order_with_node_fields(stub):
    sub = await subscribe(stub, "dir/*/created", "dir/probe/created")
    events = [pb.Event(topic=f"dir/r{i % 3}/created", payload=b"%d" % i) for i in range(500)]
    events.append(pb.Event(topic="dir/other/deleted", payload=b"no"))
    assert await publish(stub, *events) == []
    got: list[pb.Event] = []
    while len(got) < 500:
        got.extend((await sub.read()).events)
    assert [e.payload for e in got] == [b"%d" % i for i in range(500)]
    assert all(e.origin_region == "us" and e.id for e in got)
    assert [e.id for e in got] == sorted(e.id for e in got)
    sub.close()


async def test_slow_subscriber_loses_events_counted_and_flagged(stub):
    sub = await subscribe(stub, "slow/>", "slow/probe", buffer_events=10)
    # 20,000 events arrive in one burst, faster than any stream drains: the buffer (10) overflows.
    await publish(stub, *[pb.Event(topic="slow/x", payload=b"%d" % i) for i in range(20_000)])
    await publish(stub, pb.Event(topic="slow/last", payload=b"last"))
    got: list[pb.Event] = []
    while not got or got[-1].payload != b"last":
        got.extend((await sub.read()).events)
    assert len(got) < 20_001
    assert sum(e.discarded_before for e in got) == 20_001 - len(got)
    assert any(e.discarded_before for e in got)
    sub.close()


# ------------------------------------------------------------------ queues


async def test_guaranteed_event_is_acked_queued_consumed_and_acked(stub):
    name = unique("q")
    info = await create(stub, name, f"{name}/>")
    assert info.dead_message_queue == f"{name}.dmq"
    acks = await publish(stub, guaranteed(f"{name}/a", b"one"), guaranteed(f"{name}/b", b"two"))
    assert [a.index for a in acks] == [0, 1] and all(a.id for a in acks)
    assert (await stub.DescribeQueue(pb.DescribeQueueRequest(name=name))).depth == 2

    consumer = Consumer(stub, name, credits=10)
    events = await consumer.events(2)
    assert [e.payload for e in events] == [b"one", b"two"]
    assert [e.id for e in events] == [a.id for a in acks]
    assert all(e.delivery_count == 1 and not e.redelivered and e.queue == name for e in events)
    await consumer.ack(events)
    info = await stub.DescribeQueue(pb.DescribeQueueRequest(name=name))
    assert (info.depth, info.unacked, info.consumers, info.events_out) == (0, 0, 1, 2)
    consumer.close()


async def test_queue_receives_only_events_published_after_it_was_created(stub):
    name = unique("late")
    await publish(stub, guaranteed(f"{name}/before"))
    await create(stub, name, f"{name}/>")
    await publish(stub, guaranteed(f"{name}/after"))
    consumer = Consumer(stub, name, credits=10)
    assert [e.topic for e in await consumer.events(1)] == [f"{name}/after"]
    assert await consumer.nothing_within(0.3)
    consumer.close()


async def test_nack_redelivers_with_count_then_max_deliveries_moves_to_dead_message_queue(stub):
    name = unique("nack")
    await create(stub, name, f"{name}/>", max_deliveries=2)
    await publish(stub, guaranteed(f"{name}/x", b"poison"))
    consumer = Consumer(stub, name, credits=10)
    first = (await consumer.events(1))[0]
    consumer.send(nack=pb.Tags(tags=[first.delivery_tag]))
    second = (await consumer.events(1))[0]
    assert (second.payload, second.delivery_count, second.redelivered) == (b"poison", 2, True)
    consumer.send(nack=pb.Tags(tags=[second.delivery_tag]))
    assert await consumer.nothing_within(0.3)
    dead = Consumer(stub, f"{name}.dmq", credits=10)
    assert [e.payload for e in await dead.events(1)] == [b"poison"]
    consumer.close()
    dead.close()


async def test_expired_event_moves_to_dead_message_queue(stub):
    name = unique("ttl")
    await create(stub, name, f"{name}/>")
    await publish(
        stub, guaranteed(f"{name}/x", b"stale", ttl_ms=50), guaranteed(f"{name}/y", b"fresh")
    )
    dead = Consumer(stub, f"{name}.dmq", credits=10)
    assert [e.payload for e in await dead.events(1)] == [b"stale"]
    consumer = Consumer(stub, name, credits=10)
    assert [e.payload for e in await consumer.events(1)] == [b"fresh"]
    consumer.close()
    dead.close()


async def test_consumer_disconnect_redelivers_to_the_next_consumer(stub):
    name = unique("drop")
    await create(stub, name, f"{name}/>")
    await publish(stub, *[guaranteed(f"{name}/x", b"%d" % i) for i in range(3)])
    first = Consumer(stub, name, credits=10)
    assert len(await first.events(3)) == 3
    first.close()
    second = Consumer(stub, name, credits=10)
    again = await second.events(3)
    assert [e.payload for e in again] == [b"0", b"1", b"2"]
    assert all(e.redelivered and e.delivery_count == 2 for e in again)
    second.close()


async def test_non_exclusive_queue_round_robins_and_credit_limits_delivery(stub):
    name = unique("rr")
    await create(stub, name, f"{name}/>")
    a, b = Consumer(stub, name, credits=2), Consumer(stub, name, credits=2)
    await a.next("started")
    await b.next("started")
    await publish(stub, *[guaranteed(f"{name}/x", b"%d" % i) for i in range(6)])
    got_a, got_b = await a.events(2), await b.events(2)
    assert len(got_a) == 2 and len(got_b) == 2
    assert {e.payload for e in got_a + got_b} == {b"0", b"1", b"2", b"3"}
    assert await a.nothing_within(0.2)
    a.send(credit=5)
    assert {e.payload for e in await a.events(2)} == {b"4", b"5"}
    a.close()
    b.close()


async def test_exclusive_queue_delivers_to_first_consumer_then_fails_over(stub):
    name = unique("ex")
    await create(stub, name, f"{name}/>", exclusive=True)
    first = Consumer(stub, name, credits=100)
    await first.next("started")
    second = Consumer(stub, name, credits=100)
    await second.next("started")
    await publish(stub, *[guaranteed(f"{name}/x", b"%d" % i) for i in range(4)])
    assert len(await first.events(4)) == 4
    assert await second.nothing_within(0.2)
    first.close()
    assert [e.payload for e in await second.events(4)] == [b"0", b"1", b"2", b"3"]
    second.close()


async def test_full_queue_refuses_publish_with_resource_exhausted_and_keeps_the_rest(stub):
    name = unique("full")
    await create(stub, name, f"{name}/>", max_depth=3)
    acks = await publish(stub, *[guaranteed(f"{name}/x", b"%d" % i) for i in range(5)])
    assert [a.HasField("error") for a in acks] == [False, False, False, True, True]
    assert acks[3].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert name in acks[3].error.message and "max depth 3" in acks[3].error.message
    small = unique("bytes")
    # Bytes count the whole event (payload, topic, the node's fields): room for the first only.
    await create(stub, small, f"{small}/>", max_bytes=50)
    acks = await publish(
        stub, guaranteed(f"{small}/x", b"12345678"), guaranteed(f"{small}/x", b"123")
    )
    assert not acks[0].HasField("error") and "max bytes 50" in acks[1].error.message


async def test_list_describe_delete_queues(stub):
    name = unique("life")
    await create(stub, name, f"{name}/>")
    names = [q.config.name for q in (await stub.ListQueues(pb.ListQueuesRequest())).queues]
    assert name in names and f"{name}.dmq" in names
    await stub.DeleteQueue(pb.DeleteQueueRequest(name=name))
    names = [q.config.name for q in (await stub.ListQueues(pb.ListQueuesRequest())).queues]
    assert name not in names and f"{name}.dmq" not in names


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("topic", "says"),
    [
        ("a//b", "level 2: empty level"),
        ("a/*/b", "wildcard"),
        ("", "empty"),
        ("/".join(["x" * 20] * 14), "250 bytes"),
    ],
)
async def test_invalid_topic_is_refused_per_event_and_the_stream_goes_on(stub, topic, says):
    acks = await publish(stub, pb.Event(topic=topic), guaranteed("ok/after"))
    assert acks[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert says in acks[0].error.message
    assert not acks[1].HasField("error")


async def test_oversize_payload_is_refused(stub):
    acks = await publish(stub, pb.Event(topic="big/x", payload=b"x" * 5000))
    assert acks[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "5000 bytes" in acks[0].error.message and "4096" in acks[0].error.message


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("a/>/b", "'>' is only allowed as the last level"),
        ("", "empty"),
        ("a/b*c", "'*' may only end a level"),
    ],
)
async def test_invalid_subscription_pattern_is_refused(stub, pattern, says):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await Reader(stub.Subscribe(pb.SubscribeRequest(pattern=pattern))).read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in err.value.details()


async def test_queue_management_bad_inputs_name_the_problem(stub):
    name = unique("dup")
    await create(stub, name, "a/>")
    cases = [
        (create(stub, name, "a/>"), grpc.StatusCode.ALREADY_EXISTS, "already exists"),
        (create(stub, unique("p"), "a/>/c"), grpc.StatusCode.INVALID_ARGUMENT, "'a/>/c'"),
        (create(stub, "bad name!", "a"), grpc.StatusCode.INVALID_ARGUMENT, "queue name"),
        (create(stub, "x.dmq", "a"), grpc.StatusCode.INVALID_ARGUMENT, "reserved"),
        (
            stub.DescribeQueue(pb.DescribeQueueRequest(name="nosuch")),
            grpc.StatusCode.NOT_FOUND,
            "'nosuch'",
        ),
        (
            stub.DeleteQueue(pb.DeleteQueueRequest(name="nosuch")),
            grpc.StatusCode.NOT_FOUND,
            "'nosuch'",
        ),
    ]
    for call, code, says in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == code and says in err.value.details()


async def test_consume_bad_inputs(stub):
    unknown = Consumer(stub, "nosuchq", credits=1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await unknown.next("started")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "nosuchq" in err.value.details()

    async def ack_first() -> AsyncIterator[pb.ConsumeRequest]:
        yield pb.ConsumeRequest(ack=pb.Tags(tags=[1]))

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Consume(ack_first()).read()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "first message" in err.value.details()


async def test_consumer_of_a_deleted_queue_is_told(stub):
    name = unique("gone")
    await create(stub, name, f"{name}/>")
    consumer = Consumer(stub, name, credits=1)
    await consumer.next("started")
    await stub.DeleteQueue(pb.DeleteQueueRequest(name=name))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await consumer.next()
    assert "deleted" in err.value.details()


# ------------------------------------------------------------------ node


async def test_health_reflection_and_node_info(node: Node, stub):
    async with grpc.aio.insecure_channel(node.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="plexus.v1.Broker"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for answer in reflect.ServerReflectionInfo(ask()):
            names = {s.name for s in answer.list_services_response.service}
            assert "plexus.v1.Broker" in names
            break
    info = await stub.GetNodeInfo(pb.NodeInfoRequest())
    assert (info.region, info.listen_address, info.protocol_version) == ("us", node.address, 1)


async def test_restart_keeps_queues_and_their_events(inproc_nodes: InProcessNodes):
    node = await inproc_nodes.start("eu")
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = rpc.BrokerStub(channel)
        await create(stub, "keep", "k/>")
        await publish(stub, *[guaranteed("k/x", b"%d" % i) for i in range(100)])
    node = await inproc_nodes.restart(node)
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = rpc.BrokerStub(channel)
        assert (await stub.DescribeQueue(pb.DescribeQueueRequest(name="keep"))).depth == 100
        consumer = Consumer(stub, "keep", credits=1000)
        got = await consumer.events(100)
        assert [e.payload for e in got] == [b"%d" % i for i in range(100)]
        consumer.close()


async def test_delivery_fields_a_publisher_forges_are_not_passed_on(stub):
    sub = await subscribe(stub, "forge/>", "forge/probe")
    forged = pb.Event(
        topic="forge/x",
        payload=b"f",
        id=1,
        origin_region="mars",
        delivery_count=9,
        redelivered=True,
        discarded_before=7,
        queue="q",
    )
    await publish(stub, forged)
    (event,) = (await sub.read()).events
    assert (event.origin_region, event.delivery_count, event.redelivered) == ("us", 0, False)
    assert (event.discarded_before, event.queue) == (0, "") and event.id != 1
    sub.close()
