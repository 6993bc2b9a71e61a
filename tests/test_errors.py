"""Errors applications can program against: each class raised by a real node, and the wire form.

A node answers with a gRPC status whose details (`grpc-status-details-bin`)
carry a google.rpc.ErrorInfo (reason, domain "plexus", fields); a refused event
in a publish stream carries the same reason and fields. The SDK raises the
specific class with its fields, and any gRPC client can read the reason.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from federation.link import LinkSession
from federation.link_protocol import CloseReason
from federation.status import guard, trailing_metadata
from node.publishing import _refusal
from plexus import Client
from plexus.client.channel import error_from_ack, stream_broke, translate_rpc_error
from plexus.errors import (
    REASONS,
    AlreadyExists,
    ClientClosed,
    ConfigError,
    DataDirLocked,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    InvalidPattern,
    InvalidTopic,
    LimitReached,
    NotFound,
    NotPermitted,
    PermissionDenied,
    PlexusError,
    QueueExists,
    QueueFull,
    QueueNotFound,
    ResourceExhausted,
    SpoolFull,
    StorageFull,
    Timeout,
    Unauthenticated,
    Unavailable,
    error_from_metadata,
    error_from_status,
    reason_of,
)
from plexus.v1 import link_pb2 as lpb
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.harness import NodeProcess, eventually, link_held_down, open_link_protocol

pytestmark = pytest.mark.timeout(60)

DEADLINE_S = 10.0

# One instance of every class in the reason table, with fields set.
SAMPLES: dict[type[PlexusError], PlexusError] = {
    PlexusError: PlexusError("something went wrong"),
    InvalidArgument: InvalidArgument("payload of 9 bytes is over the node's limit of 8 bytes"),
    InvalidTopic: InvalidTopic("a//b", "empty level", level=1),
    InvalidPattern: InvalidPattern("a/>/b", "'>' must be the last level", level=1),
    ConfigError: ConfigError("node.toml", ["line 3: [node] name: missing", "line 4: bad port"]),
    NotFound: NotFound("no region named 'sa' in the cluster"),
    QueueNotFound: QueueNotFound("billing"),
    AlreadyExists: AlreadyExists("link eu-us already exists"),
    QueueExists: QueueExists("billing"),
    ResourceExhausted: ResourceExhausted("too much"),
    QueueFull: QueueFull("billing", "max depth", 10),
    StorageFull: StorageFull("/data/us", "no space left on the device"),
    SpoolFull: SpoolFull("eu", 1 << 20),
    LimitReached: LimitReached("max_subscriptions_per_client", 4096),
    FailedPrecondition: FailedPrecondition("region 'us' is leaving the cluster"),
    DataDirLocked: DataDirLocked("/data/us", 4242),
    PermissionDenied: PermissionDenied("region 'sa' does not know the cluster secret"),
    NotPermitted: NotPermitted("limited", "publish", "payments/us/1"),
    Unauthenticated: Unauthenticated("revoked", "limited"),
    Unavailable: Unavailable("no Raft voter answers"),
    InternalError: InternalError("us"),
}


def fields_of(err: PlexusError) -> dict[str, Any]:
    return {name: getattr(err, name) for name in type(err).wire_fields}


# ---------------------------------------------------------------- pure: the tables


def test_every_class_in_the_reason_table_has_a_sample() -> None:
    assert set(SAMPLES) == set(REASONS.values())


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda cls: cls.__name__)
def test_every_class_round_trips_through_status_details(cls: type[PlexusError]) -> None:
    sent = SAMPLES[cls]
    metadata = trailing_metadata(sent)
    received = error_from_metadata(sent.status_code, str(sent), metadata)
    assert type(received) is cls
    assert str(received) == str(sent)
    assert fields_of(received) == fields_of(sent)
    assert received.retriable == sent.retriable


@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda cls: cls.__name__)
def test_every_class_round_trips_through_a_publish_refusal(cls: type[PlexusError]) -> None:
    sent = SAMPLES[cls]
    ack = pb.PublishAck.FromString(_refusal(7, sent).SerializeToString())
    assert ack.index == 7 and ack.error.reason == reason_of(sent)
    received = error_from_ack(ack.error)
    assert type(received) is cls and str(received) == str(sent)
    assert fields_of(received) == fields_of(sent)


def test_an_unknown_reason_falls_back_to_the_status_code_class() -> None:
    err = error_from_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "tank is full", "TANK_FULL", {"tank": "a"}
    )
    assert type(err) is ResourceExhausted and str(err) == "tank is full" and err.retriable


def test_a_reason_that_does_not_match_its_status_code_is_not_trusted() -> None:
    err = error_from_status(grpc.StatusCode.NOT_FOUND, "gone", "QUEUE_FULL", {"name": "q"})
    assert type(err) is NotFound


def test_a_missing_or_malformed_field_reads_as_none() -> None:
    err = error_from_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "full", "QUEUE_FULL", {"name": "q", "value": "x"}
    )
    assert isinstance(err, QueueFull)
    assert (err.name, err.limit, err.value) == ("q", None, None)


def test_client_state_errors_say_whether_to_retry() -> None:
    closed = ClientClosed("client for node at 127.0.0.1:1")
    assert not closed.retriable and "closed" in str(closed)
    late = Timeout("call to node at 127.0.0.1:1", 0.5)
    assert late.retriable and "0.5 s" in str(late) and not isinstance(late, Unavailable)


# ---------------------------------------------------------------- a real node, through the SDK


@pytest.fixture
async def client(node: NodeProcess) -> AsyncIterator[Client]:
    client = await Client.connect(node.address)
    try:
        yield client
    finally:
        await client.close()


async def test_unknown_queue_raises_queue_not_found_naming_it(client: Client) -> None:
    for call in (client.describe_queue, client.purge_queue, client.delete_queue):
        with pytest.raises(QueueNotFound) as caught:
            await call("nowhere")
        assert caught.value.name == "nowhere" and "nowhere" in str(caught.value)


async def test_consuming_an_unknown_queue_raises_queue_not_found(client: Client) -> None:
    consumer = client.consume("nowhere")
    with pytest.raises(QueueNotFound) as caught:
        await consumer.start()
    assert caught.value.name == "nowhere"
    await consumer.close()


async def test_creating_a_queue_twice_raises_queue_exists(client: Client) -> None:
    await client.create_queue("billing", ["orders/>"])
    with pytest.raises(QueueExists) as caught:
        await client.create_queue("billing", ["orders/>"])
    assert caught.value.name == "billing" and isinstance(caught.value, AlreadyExists)


async def test_full_queue_by_depth_refuses_a_guaranteed_publish_with_queue_full(
    client: Client,
) -> None:
    await client.create_queue("small", ["s/>"], max_depth=1)
    await client.publish("s/1", b"1", guaranteed=True)
    with pytest.raises(QueueFull) as caught:
        await client.publish("s/2", b"2", guaranteed=True)
    full = caught.value
    assert (full.name, full.limit, full.value) == ("small", "max depth", 1)
    assert full.retriable
    # The stream stays usable after a refusal.
    assert await client.publish("other/3", b"3", guaranteed=True)


async def test_full_queue_by_bytes_refuses_a_guaranteed_publish_with_queue_full(
    client: Client,
) -> None:
    # Room for one event counted whole (payload, topic and the node's fields), not two.
    await client.create_queue("narrow", ["n/>"], max_bytes=50)
    await client.publish("n/1", b"12345678", guaranteed=True)
    with pytest.raises(QueueFull) as caught:
        await client.publish("n/2", b"12345678", guaranteed=True)
    assert (caught.value.name, caught.value.limit, caught.value.value) == (
        "narrow",
        "max bytes",
        50,
    )


async def test_a_stream_past_its_deadline_raises_timeout(node: NodeProcess) -> None:
    # A subscription to a topic nobody publishes cannot end before its deadline.
    async with grpc.aio.insecure_channel(node.address) as channel:
        call = rpc.BrokerStub(channel).Subscribe(
            pb.SubscribeRequest(pattern="quiet/>"), timeout=0.2
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    err = stream_broke(caught.value, node.address, "subscription 'quiet/>'")
    assert isinstance(err, Timeout) and not isinstance(err, Unavailable)
    assert node.address in str(err) and err.retriable


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


async def test_a_node_that_never_answers_raises_timeout_not_unavailable(
    silent_address: str,
) -> None:
    with pytest.raises(Timeout) as caught:
        await Client.connect(silent_address, timeout=0.3)
    assert "cannot reach" not in str(caught.value)


async def test_a_call_on_a_closed_client_raises_client_closed(node: NodeProcess) -> None:
    client = await Client.connect(node.address)
    await client.close()
    with pytest.raises(ClientClosed) as caught:
        await client.list_queues()
    assert not caught.value.retriable


async def test_a_full_link_spool_refuses_a_guaranteed_publish_with_spool_full(
    tmp_path: Path,
) -> None:
    quota = 1 << 20  # the smallest quota a cluster file allows
    async with link_held_down(tmp_path, quota) as (_eu, us):
        payload = b"p" * 10_000
        with pytest.raises(SpoolFull) as caught:
            for _ in range(quota // len(payload) + 10):
                await us.publish("far/x", payload, guaranteed=True)
    full = caught.value
    assert (full.peer, full.quota_bytes) == ("eu", quota) and full.retriable


# ---------------------------------------------------------------- a real node, raw gRPC


@pytest.fixture
def channel(node: NodeProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(node.address) as channel:
        yield channel


def error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """What any gRPC client reads: the ErrorInfo in grpc-status-details-bin."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "no grpc-status-details-bin in the trailers"
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    return info


def test_a_raw_grpc_client_reads_the_reason_from_the_status_details(
    channel: grpc.Channel,
) -> None:
    stub = rpc.BrokerStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.DescribeQueue(pb.DescribeQueueRequest(name="nowhere"), timeout=DEADLINE_S)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    info = error_info(caught.value)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "QUEUE_NOT_FOUND",
        "plexus",
        {"name": "nowhere"},
    )


def test_the_admin_service_sends_details_too(channel: grpc.Channel, node: NodeProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        rpc.AdminStub(channel).SetLink(pb.SetLinkRequest(peer="eu", up=False), timeout=DEADLINE_S)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert error_info(caught.value).reason == "NOT_FOUND"
    assert isinstance(translate_rpc_error(caught.value, node.address), NotFound)


def test_node_refuses_an_invalid_queue_pattern_with_invalid_pattern(
    channel: grpc.Channel, node: NodeProcess
) -> None:
    config = pb.QueueConfig(name="q", subscriptions=["a/>/b"])
    with pytest.raises(grpc.RpcError) as caught:
        rpc.BrokerStub(channel).CreateQueue(
            pb.CreateQueueRequest(config=config), timeout=DEADLINE_S
        )
    assert error_info(caught.value).reason == "INVALID_PATTERN"
    err = translate_rpc_error(caught.value, node.address)
    assert isinstance(err, InvalidPattern) and err.pattern == "a/>/b" and err.level == 1


def test_node_refuses_an_invalid_subscription_pattern_with_invalid_pattern(
    channel: grpc.Channel, node: NodeProcess
) -> None:
    stream = rpc.BrokerStub(channel).Subscribe(
        pb.SubscribeRequest(pattern="a/b>"), timeout=DEADLINE_S
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    err = translate_rpc_error(caught.value, node.address)
    assert isinstance(err, InvalidPattern) and err.pattern == "a/b>"


def test_node_refuses_an_invalid_topic_per_event_with_invalid_topic(
    channel: grpc.Channel,
) -> None:
    events = [
        pb.Event(topic="ok/1", payload=b"1"),
        pb.Event(topic="a//b", payload=b"2", mode=pb.GUARANTEED),
    ]
    responses = rpc.BrokerStub(channel).Publish(
        iter([pb.PublishRequest(events=events, flush=True)]), timeout=DEADLINE_S
    )
    acks = [ack for response in responses for ack in response.acks]
    refused = [ack for ack in acks if ack.HasField("error")]
    assert [ack.index for ack in refused] == [1]
    assert refused[0].error.reason == "INVALID_TOPIC"
    err = error_from_ack(refused[0].error)
    assert isinstance(err, InvalidTopic)
    assert (err.topic, err.level) == ("a//b", 1) and "empty" in err.reason


def test_a_request_that_does_not_parse_is_the_peers_error(channel: grpc.Channel) -> None:
    create = channel.unary_unary("/plexus.v1.Broker/CreateQueue")
    with pytest.raises(grpc.RpcError) as caught:
        create(b"\xff\xff\xff", timeout=DEADLINE_S)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed CreateQueueRequest" in (caught.value.details() or "")
    assert error_info(caught.value).reason == "INVALID_ARGUMENT"


# ---------------------------------------------------------------- bugs are the node's own


async def test_a_bug_in_a_servicer_is_logged_and_answered_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def buggy(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return {}["missing"]  # a KeyError: a bug, not the caller's fault

    async def refusing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise QueueNotFound("nowhere")

    handler = grpc.method_handlers_generic_handler(
        "test.Buggy",
        {
            "Call": grpc.unary_unary_rpc_method_handler(guard("us", "serving Call", buggy)),
            "Refuse": grpc.unary_unary_rpc_method_handler(guard("us", "serving Refuse", refusing)),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with (
                caplog.at_level(logging.ERROR, logger="federation.status"),
                pytest.raises(grpc.aio.AioRpcError) as caught,
            ):
                await channel.unary_unary("/test.Buggy/Call")(b"", timeout=DEADLINE_S)
            assert caught.value.code() is grpc.StatusCode.INTERNAL
            assert caught.value.details() == "internal error in node us, see its log"
            bug = translate_rpc_error(caught.value, "here")
            assert isinstance(bug, InternalError) and bug.region == "us"
            logged = [r for r in caplog.records if r.name == "federation.status"]
            assert logged and "serving Call" in logged[0].getMessage()
            assert logged[0].exc_info and logged[0].exc_info[0] is KeyError
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Buggy/Refuse")(b"", timeout=DEADLINE_S)
            assert isinstance(translate_rpc_error(caught.value, "here"), QueueNotFound)
    finally:
        await server.stop(None)


class _Mesh:
    """Just enough of a Mesh for one accepted link session; `received` is set per test."""

    def __init__(self, received: Any) -> None:
        self.received = received

    def link_opened(self, link: Any) -> None:
        pass

    def link_closed(self, link: Any, reason: str) -> None:
        pass

    def resync(self, link: Any) -> None:
        pass


class _Spools:
    links: dict[str, Any] = {}


async def _refusal_after(frame: lpb.LinkFrame, received: Any) -> tuple[LinkSession, lpb.Refusal]:
    """Run an open link session, feed it `frame`, return the refusal it sent its peer."""
    protocol = open_link_protocol(None)
    session = LinkSession(_Mesh(received), protocol, {}, _Spools())  # type: ignore[arg-type]
    inbox: asyncio.Queue[lpb.LinkFrame] = asyncio.Queue()
    sent: list[lpb.LinkFrame] = []
    await inbox.put(frame)

    async def write(frame: lpb.LinkFrame) -> None:
        sent.append(frame)

    async with asyncio.timeout(DEADLINE_S):
        await session.run(inbox.get, write)
    await eventually(lambda: any(f.HasField("refusal") for f in sent), DEADLINE_S, "refusal")
    return session, next(f.refusal for f in sent if f.HasField("refusal"))


async def test_a_bug_handling_a_link_frame_is_not_called_the_peers_bad_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def buggy(link: Any, frame: lpb.LinkFrame) -> None:
        raise KeyError("a bug")

    with caplog.at_level(logging.ERROR, logger="federation.link"):
        session, refusal = await _refusal_after(
            lpb.LinkFrame(interest_request=lpb.InterestRequest()), buggy
        )
    assert session.close_reason is CloseReason.INTERNAL_ERROR
    assert refusal.reason == "INTERNAL_ERROR"
    assert refusal.detail == "internal error in node us, see its log"
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


async def test_a_link_frame_with_bad_content_is_still_the_peers_bad_frame() -> None:
    def refusing(link: Any, frame: lpb.LinkFrame) -> None:
        raise InvalidPattern("a/>/b", "'>' must be the last level", 1)

    session, refusal = await _refusal_after(
        lpb.LinkFrame(interest_request=lpb.InterestRequest()), refusing
    )
    assert session.close_reason is CloseReason.BAD_FRAME and refusal.reason == "BAD_FRAME"
