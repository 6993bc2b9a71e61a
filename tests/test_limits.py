"""Bounds (issue 10): buffers bounded in bytes, headers counted, per-client and per-node limits.

Each test asserts the clear error and that nothing already acknowledged was lost.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from node.clients import FD_RESERVE, NOFILE_MAX, ClientRegistry, client_connection_limit
from node.delivery import Entry, QueueDelivery
from node.publishing import refusal as refused_ack
from node.server import Node
from plexus.errors import (
    InvalidArgument,
    LimitReached,
    PlexusError,
    QueueFull,
    SpoolFull,
    StorageFull,
    error_from_metadata,
    error_from_status,
    status_of,
)
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.harness import Nodes, eventually, link_held_down
from tests.inprocess import InProcessNodes, node_config
from tests.test_federation import consume_all
from tests.test_metrics import metrics_address, scrape, value
from tests.test_node_api import Consumer, create, guaranteed, publish

pytestmark = pytest.mark.timeout(120)

BIG_EVENT_BYTES = 256 << 10
DEADLINE_S = 10.0


def rss_bytes(pid: int) -> int:
    """The resident set of process `pid` (VmRSS in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def limit_hits(node: Node, limit: str) -> float | None:
    text = await asyncio.to_thread(scrape, await metrics_address(node))
    return value(text, "plexus_limit_hits_total", limit=limit)


async def publish_stream(stub: rpc.BrokerStub, batches: list[list[pb.Event]]) -> None:
    """Publish `batches` on one stream, the last one flushed, and wait until all are processed."""
    total = sum(len(b) for b in batches)

    async def requests() -> AsyncIterator[pb.PublishRequest]:
        for i, batch in enumerate(batches):
            yield pb.PublishRequest(events=batch, flush=i == len(batches) - 1)
        await done.wait()

    done = asyncio.Event()
    async for response in stub.Publish(requests()):
        if response.processed >= total:
            done.set()
            break


# ------------------------------------------------------------------ errors


def test_limit_reached_round_trips_with_its_limit_and_value() -> None:
    err = LimitReached("max_subscriptions_per_client", 4096)
    assert err.status_code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.retriable
    assert "max_subscriptions_per_client" in str(err) and "4096" in str(err)
    status = status_of(err)
    back = error_from_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, status.message, err.reason_code, err.fields()
    )
    assert isinstance(back, LimitReached)
    assert (back.limit, back.value) == ("max_subscriptions_per_client", 4096)
    details = (("grpc-status-details-bin", status.SerializeToString()),)
    again = error_from_metadata(grpc.StatusCode.RESOURCE_EXHAUSTED, status.message, details)
    assert isinstance(again, LimitReached) and again.value == 4096


# ------------------------------------------------------------------ direct: bytes


async def test_a_subscriber_that_never_reads_keeps_the_node_rss_bounded_and_discards_counted(
    nodes: Nodes,
) -> None:
    node = nodes.start("us")
    assert node.proc is not None
    pid = node.proc.pid
    per_batch, batches = 32, 48  # 1,536 events of 256 KiB: 384 MiB offered to the subscriber
    total = per_batch * batches
    async with grpc.aio.insecure_channel(node.address) as sub_channel:
        # Asks for a million events of buffer: the node still bounds it in bytes.
        call = rpc.BrokerStub(sub_channel).Subscribe(
            pb.SubscribeRequest(pattern="big/>", buffer_events=1_000_000)
        )
        await call.initial_metadata()  # live: the node is holding it, and nobody reads
        async with grpc.aio.insecure_channel(node.address) as channel:
            stub = rpc.BrokerStub(channel)
            before = rss_bytes(pid)
            payload = b"x" * BIG_EVENT_BYTES
            event = pb.Event(topic="big/one", payload=payload)
            await publish_stream(stub, [[event] * per_batch for _ in range(batches)])
            info = await stub.GetNodeInfo(pb.NodeInfoRequest())
            after = rss_bytes(pid)
            # Unbounded, the subscriber alone would hold 384 MiB; bounded, 8 MiB plus what
            # gRPC and the allocator hold (measured: ~115 MiB here; 450 MiB unbounded).
            assert after - before < 200 << 20, (before, after)
            assert info.direct_in >= total
            assert info.discarded >= total - 200
            assert info.discarded + info.direct_out <= info.direct_in
            admin = rpc.AdminStub(channel)
            clients = (await admin.ListClients(pb.ListClientsRequest())).clients
            holder = [c for c in clients if list(c.subscriptions) == ["big/>"]]
            assert holder and holder[0].events_discarded >= total - 200
        call.cancel()


# ------------------------------------------------------------------ headers counted


@pytest.fixture
async def stub(
    inproc_node_settings: dict, inproc_nodes: InProcessNodes
) -> AsyncIterator[rpc.BrokerStub]:
    node = await inproc_nodes.start("us", **inproc_node_settings)
    async with grpc.aio.insecure_channel(node.address, options=CHANNEL_OPTIONS) as channel:
        yield rpc.BrokerStub(channel)


CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 64 << 20),)


@pytest.fixture
def inproc_node_settings() -> dict:
    return {}


@pytest.mark.parametrize(
    "inproc_node_settings",
    [{"max_payload_bytes": 32 << 20, "max_header_bytes": 24 << 20}],
)
async def test_headers_count_in_a_queues_bytes_and_a_20_mib_header_is_refused_queue_full(
    stub: rpc.BrokerStub,
) -> None:
    await create(stub, "small", "small/>", max_bytes=1 << 20)
    header = {"h": "x" * (100 << 10)}
    acks = await publish(stub, *[guaranteed("small/x", b"1", headers=header) for _ in range(12)])
    stored = [a for a in acks if not a.HasField("error")]
    refused = [a for a in acks if a.HasField("error")]
    # 100 KiB of headers with a one-byte payload: about ten fit in 1 MiB, not a million.
    assert 8 <= len(stored) <= 10 and refused
    assert refused[0].error.reason == "QUEUE_FULL" and "max bytes" in refused[0].error.message
    info = await stub.DescribeQueue(pb.DescribeQueueRequest(name="small"))
    assert info.depth == len(stored) and info.bytes >= len(stored) * (100 << 10)
    huge = await publish(stub, guaranteed("small/y", b"1", headers={"h": "x" * (20 << 20)}))
    assert huge[0].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert huge[0].error.reason == "QUEUE_FULL"
    assert dict(huge[0].error.fields) == {
        "name": "small",
        "limit": "max bytes",
        "value": str(1 << 20),
    }
    # Nothing acked was lost.
    consumer = Consumer(stub, "small", credits=100)
    try:
        got = await consumer.events(len(stored))
        assert sorted(e.id for e in got) == sorted(a.id for a in stored)
        assert all(len(e.headers["h"]) == 100 << 10 for e in got)
    finally:
        consumer.close()


async def test_too_many_headers_or_header_bytes_refuse_that_event_alone(
    stub: rpc.BrokerStub,
) -> None:
    await create(stub, "q", "h/>")
    events = [
        guaranteed("h/ok", b"0", headers={"a": "1"}),
        guaranteed("h/many", b"1", headers={f"k{i}": "v" for i in range(65)}),
        guaranteed("h/ok", b"2"),
        guaranteed("h/heavy", b"3", headers={"big": "x" * (16 << 10)}),
        pb.Event(topic="h/direct", payload=b"4", headers={f"k{i}": "" for i in range(1000)}),
        guaranteed("h/ok", b"5", headers={f"k{i}": "v" for i in range(64)}),
    ]
    acks = await publish(stub, *events)
    errors = {a.index: a.error for a in acks if a.HasField("error")}
    assert sorted(errors) == [1, 3, 4]
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert all(e.code == invalid and e.reason == "INVALID_ARGUMENT" for e in errors.values())
    assert (
        "event 1: 65 headers on 'h/many'" in errors[1].message
        and "max_headers = 64" in errors[1].message
    )
    assert errors[3].message.startswith("event 3: ") and "'h/heavy'" in errors[3].message
    assert "max_header_bytes = 16384" in errors[3].message
    assert "event 4" in errors[4].message and "1000 headers" in errors[4].message
    stored = [a for a in acks if not a.HasField("error")]
    assert len(stored) == 3
    consumer = Consumer(stub, "q", credits=10)
    try:
        got = await consumer.events(3)
        assert [e.payload for e in got] == [b"0", b"2", b"5"]
    finally:
        consumer.close()


async def test_the_payload_limit_counts_the_whole_event(inproc_nodes: InProcessNodes) -> None:
    node = await inproc_nodes.start("us", max_payload_bytes=4096)
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = rpc.BrokerStub(channel)
        # A 4,000-byte payload fits; with 2 KiB of headers the event does not.
        acks = await publish(
            stub,
            pb.Event(topic="p/x", payload=b"x" * 4000),
            pb.Event(topic="p/x", payload=b"x" * 4000, headers={"h": "y" * 2048}),
        )
        errors = {a.index: a.error for a in acks if a.HasField("error")}
        assert list(errors) == [1]
        assert "max_payload_bytes = 4096" in errors[1].message
        assert "payload of 4000 bytes" in errors[1].message


# ------------------------------------------------------------------ per client, per node

OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


async def refusal(call: grpc.aio.Call) -> PlexusError:
    """The error a call ended with, as the SDK rebuilds it from the status details."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:  # type: ignore[attr-defined]
            pass
    exc = caught.value
    return error_from_metadata(exc.code(), exc.details() or "", exc.trailing_metadata())


async def live(stub: rpc.BrokerStub, pattern: str) -> grpc.aio.UnaryStreamCall:
    call = stub.Subscribe(pb.SubscribeRequest(pattern=pattern))
    await call.initial_metadata()  # the node sends headers once the subscription is live
    return call


async def test_subscriptions_per_client_are_limited_and_the_live_ones_keep_receiving(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us", max_subscriptions_per_client=3, metrics="127.0.0.1:0")
    async with grpc.aio.insecure_channel(node.address, options=OWN_CONNECTION) as channel:
        stub = rpc.BrokerStub(channel)
        calls = [await live(stub, f"s/{i}") for i in range(3)]
        err = await refusal(stub.Subscribe(pb.SubscribeRequest(pattern="s/3")))
        assert isinstance(err, LimitReached)
        assert (err.limit, err.value) == ("max_subscriptions_per_client", 3)
        assert "max_subscriptions_per_client = 3" in str(err)
        # The refusal shows for the client (plexus clients) and in the node's metrics.
        (held,) = (await rpc.AdminStub(channel).ListClients(pb.ListClientsRequest())).clients
        assert dict(held.limits_hit) == {"max_subscriptions_per_client": 1}
        assert await limit_hits(node, "max_subscriptions_per_client") == 1
        # Those already made still get their events, and one closed makes room again.
        await publish(stub, *[pb.Event(topic=f"s/{i}", payload=b"%d" % i) for i in range(3)])
        for i, call in enumerate(calls):
            async with asyncio.timeout(5):
                batch = await call.read()
            assert [e.payload for e in batch.events] == [b"%d" % i]
        calls[0].cancel()
        admin = rpc.AdminStub(channel)

        async def room_again() -> bool:
            clients = (await admin.ListClients(pb.ListClientsRequest())).clients
            return sum(len(c.subscriptions) for c in clients) == 2

        await eventually(room_again, 5, "the cancelled subscription to close")
        calls.append(await live(stub, "s/3"))
        for call in calls:
            call.cancel()


async def test_streams_per_client_are_limited(inproc_nodes: InProcessNodes) -> None:
    node = await inproc_nodes.start("us", max_streams_per_client=2)
    async with grpc.aio.insecure_channel(node.address, options=OWN_CONNECTION) as channel:
        stub = rpc.BrokerStub(channel)
        calls = [await live(stub, "a/>"), await live(stub, "b/>")]

        async def one_event() -> AsyncIterator[pb.PublishRequest]:
            yield pb.PublishRequest(events=[pb.Event(topic="a/x")], flush=True)

        err = await refusal(stub.Publish(one_event()))
        assert isinstance(err, LimitReached)
        assert (err.limit, err.value) == ("max_streams_per_client", 2)
        for call in calls:
            call.cancel()


async def test_client_connections_are_limited_and_admin_calls_still_answer(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us", max_client_connections=2)
    channels = [grpc.aio.insecure_channel(node.address, options=OWN_CONNECTION) for _ in range(3)]
    try:
        held = [await live(rpc.BrokerStub(c), "c/>") for c in channels[:2]]
        late = rpc.BrokerStub(channels[2])
        err = await refusal(late.Subscribe(pb.SubscribeRequest(pattern="c/>")))
        assert isinstance(err, LimitReached)
        assert (err.limit, err.value) == ("max_client_connections", 2)
        # Unary calls are not client streams: the reserve keeps admin and info working.
        assert (await late.GetNodeInfo(pb.NodeInfoRequest())).subscriptions == 2
        clients = (await rpc.AdminStub(channels[2]).ListClients(pb.ListClientsRequest())).clients
        assert len(clients) == 2
        # Nothing lost for the connections already in.
        await publish(rpc.BrokerStub(channels[0]), pb.Event(topic="c/1", payload=b"hi"))
        for call in held:
            async with asyncio.timeout(5):
                batch = await call.read()
            assert [e.payload for e in batch.events] == [b"hi"]
            call.cancel()
    finally:
        for c in channels:
            await c.close()


async def test_queues_per_node_are_limited_and_existing_queues_keep_their_events(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us", max_queues=2, metrics="127.0.0.1:0")
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = rpc.BrokerStub(channel)
        await create(stub, "q0", "q/>")
        await create(stub, "q1", "r/>")
        acks = await publish(stub, guaranteed("q/x", b"kept"))
        assert not acks[0].HasField("error")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(stub, "q2", "s/>")
        exc = caught.value
        err = error_from_metadata(exc.code(), exc.details() or "", exc.trailing_metadata())
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert isinstance(err, LimitReached) and (err.limit, err.value) == ("max_queues", 2)
        assert await limit_hits(node, "max_queues") == 1
        info = await stub.DescribeQueue(pb.DescribeQueueRequest(name="q0"))
        assert info.depth == 1
        await stub.DeleteQueue(pb.DeleteQueueRequest(name="q1"))
        await create(stub, "q2", "s/>")
        consumer = Consumer(stub, "q0", credits=10)
        try:
            assert [e.payload for e in await consumer.events(1)] == [b"kept"]
        finally:
            consumer.close()


def test_the_node_raises_its_open_file_limit_and_keeps_a_reserve(nodes: Nodes) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(soft, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        node = nodes.start("us")  # inherits the low soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert node.proc is not None
    limits = Path(f"/proc/{node.proc.pid}/limits").read_text().splitlines()
    row = next(line for line in limits if line.startswith("Max open files")).split()
    wanted = NOFILE_MAX if hard == resource.RLIM_INFINITY else min(hard, NOFILE_MAX)
    assert int(row[3]) == wanted, row
    config = node_config("us", Path("/nonexistent"))
    assert client_connection_limit(config, 1024) == 1024 - FD_RESERVE
    fixed = node_config("us", Path("/nonexistent"), max_client_connections=10)
    assert client_connection_limit(fixed, 1024) == 10


# ------------------------------------------------------------------ link spool quota


async def test_headers_count_in_a_link_spool_quota_and_what_was_acked_arrives(
    tmp_path: Path,
) -> None:
    quota = 1 << 20  # the smallest quota a cluster file allows
    async with link_held_down(tmp_path, quota) as (eu, us):
        header = {"h": "x" * (10 << 10)}  # 10 KiB of headers, a one-byte payload
        acked: list[int] = []
        with pytest.raises(SpoolFull) as caught:
            for _ in range(3 * quota // (10 << 10)):
                event_id = await us.publish("far/x", b"1", headers=header, guaranteed=True)
                assert event_id is not None
                acked.append(event_id)
        full = caught.value
        assert (full.peer, full.quota_bytes) == ("eu", quota)
        # About a hundred events of 10 KiB fill 1 MiB (counting payloads: a million).
        assert 90 <= len(acked) <= quota // (10 << 10)
        await us.set_link("eu", up=True)
        got = await consume_all(eu, "far", expected=len(acked))
        assert sorted(d.event.id for d in got) == sorted(acked)


# ------------------------------------------------------------------ consumer prefetch


async def test_a_consumer_holds_at_most_its_inflight_bytes_unacked_whatever_its_credits(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us", consumer_inflight_bytes=100 << 10)
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = rpc.BrokerStub(channel)
        await create(stub, "wide", "w/>")
        events = [guaranteed("w/x", b"%02d" % i + b"x" * (30 << 10)) for i in range(20)]
        acks = await publish(stub, *events)
        assert not any(a.HasField("error") for a in acks)
        consumer = Consumer(stub, "wide", credits=1000)
        try:
            # 30 KiB each: the fourth passes 100 KiB, then nothing until acks.
            first = await consumer.events(4)
            assert await consumer.nothing_within(0.3)
            info = await stub.DescribeQueue(pb.DescribeQueueRequest(name="wide"))
            assert info.unacked == 4
            got = list(first)
            consumer.send(ack=pb.Tags(tags=[e.delivery_tag for e in first]))
            while len(got) < 20:  # each ack makes room for more (events() skips confirmations)
                batch = await consumer.events(1)
                got.extend(batch)
                consumer.send(ack=pb.Tags(tags=[e.delivery_tag for e in batch]))
            assert [e.payload[:2] for e in got] == [b"%02d" % i for i in range(20)]
        finally:
            consumer.close()


def test_delivery_core_bounds_each_consumers_unacked_bytes_and_always_lets_one_through() -> None:
    delivery = QueueDelivery(exclusive=False, max_deliveries=0, max_inflight_bytes=100)
    delivery.add_consumer(1, credits=50)
    delivery.push([Entry(seq, size=40) for seq in range(1, 6)] + [Entry(6, size=500)])
    assert [e.seq for _c, es in delivery.pull(0).deliveries for e in es] == [1, 2, 3]
    assert delivery.blocked_by_bytes(1) and delivery.pull(0).deliveries == []
    assert [e.seq for e in delivery.ack(1, [1, 2])] == [1, 2]
    assert not delivery.blocked_by_bytes(1)
    assert [e.seq for _c, es in delivery.pull(0).deliveries for e in es] == [4, 5]
    delivery.ack(1, [3, 4, 5])
    # An entry bigger than the bound still goes, alone.
    assert [e.seq for _c, es in delivery.pull(0).deliveries for e in es] == [6]
    assert delivery.inflight_bytes[1] == 500
    delivery.nack(1, [6])
    assert delivery.inflight_bytes[1] == 0


def test_a_publish_stream_stops_reading_past_its_pending_bytes() -> None:
    from node.service import MAX_PENDING_BYTES_PER_STREAM, _PublishStream

    stream = _PublishStream(context=None, on_refusals=print)  # type: ignore[arg-type]
    stream.pending, stream.pending_bytes = 10, MAX_PENDING_BYTES_PER_STREAM
    assert stream.full  # ten big events are enough to wait for their commits
    stream.settled(1, 1 << 20)
    assert not stream.full and stream.room.is_set()


def test_publishes_refused_by_a_limit_count_by_its_name_for_the_client_and_the_node() -> None:
    registry = ClientRegistry()
    with registry.publishing("ipv4:127.0.0.1:1") as client:
        registry.refused_events(
            client,
            [
                pb.PublishAck(index=0, id=1),
                refused_ack(1, QueueFull("orders", "max depth", 10)),
                refused_ack(2, QueueFull("orders", "max bytes", 1 << 20)),
                refused_ack(3, SpoolFull("eu", 1 << 30)),
                refused_ack(4, StorageFull("/data", "no space left on device")),
                refused_ack(5, InvalidArgument("event 5: bad topic")),  # not a limit
            ],
        )
        (info,) = registry.infos()
    limits = {"queue_max_depth", "queue_max_bytes", "link_spool_quota", "storage_space"}
    assert dict(info.limits_hit) == dict.fromkeys(limits, 1)
    assert dict(registry.limits_hit) == dict.fromkeys(limits, 1)  # outlives the client
