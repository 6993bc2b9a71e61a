"""Each bad event is refused alone, naming its index and field; the rest of its batch proceeds.

Batches are built as raw bytes (a bad event is one the protobuf runtime would
not even let an SDK build: a topic or header that is not UTF-8) and sent over
a real gRPC Publish stream to an in-process node.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from node.framing import varint
from node.publish_parts import split_request
from node.publishing import MAX_TTL_MS
from node.server import Node
from plexus import Client
from plexus.v1 import plexus_pb2 as pb
from tests.inprocess import InProcessNodes

WAIT_S = 20.0
MAX_PAYLOAD_BYTES = 1_000
QUEUE = "orders"


def _field(number: int, body: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(body)) + body


def _event(topic: bytes = b"orders/1", *, headers: dict[bytes, bytes] | None = None,
           ttl_ms: int = 0, payload: bytes = b"x", mode: int = 1) -> bytes:  # fmt: skip
    """A guaranteed event, encoded by hand so that any bytes can go in its text fields."""
    body = _field(1, topic) + _field(2, payload)
    for key, value in (headers or {}).items():
        body += _field(3, _field(1, key) + _field(2, value))
    body += b"\x20" + varint(mode)  # mode = GUARANTEED unless told
    if ttl_ms:
        body += b"\x28" + varint(ttl_ms)
    return body


@dataclass(frozen=True)
class Kind:
    name: str
    make: Callable[[int], bytes]
    # What the refusal's message must name (None: a good event).
    names: str | None


KINDS = (
    Kind("good", lambda i: _event(b"orders/%d" % i), None),
    Kind("good, with headers", lambda i: _event(headers={b"k": b"v%d" % i}), None),
    Kind("good, long ttl", lambda i: _event(ttl_ms=MAX_TTL_MS), None),
    Kind("topic not UTF-8", lambda i: _event(b"orders/\xff%d" % i), "topic is not valid UTF-8"),
    Kind("header name not UTF-8", lambda i: _event(headers={b"\xc3(": b"v"}), "header name"),
    Kind("header value not UTF-8", lambda i: _event(headers={b"k": b"\xe2\x82"}), "header 'k'"),
    Kind("ttl over the maximum", lambda i: _event(ttl_ms=MAX_TTL_MS + 1), "ttl_ms"),
    Kind("ttl of 2^64-1", lambda i: _event(ttl_ms=2**64 - 1), "ttl_ms"),
    Kind("mode out of range", lambda i: _event(mode=7), "mode 7 is not a delivery mode"),
    Kind("topic grammar", lambda i: _event(b"orders//%d" % i), "topic"),
    Kind("wildcard in topic", lambda i: _event(b"orders/*"), "topic"),
    Kind("payload too big", lambda i: _event(payload=b"p" * (MAX_PAYLOAD_BYTES + 1)), "payload"),
)


def _request(events: list[bytes], keys: list[bytes] | None = None) -> bytes:
    raw = b"".join(_field(1, e) for e in events)
    for key in keys or ():
        raw += _field(5, key)
    return raw + b"\x10\x01"  # flush: the node answers `processed` once all are handled


class RawPublisher:
    """One Publish stream carrying hand-made bytes; collects the acks by stream index."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        method = channel.stream_stream(
            "/plexus.v1.Broker/Publish", response_deserializer=pb.PublishResponse.FromString
        )
        self.call = method(timeout=WAIT_S)
        self.sent = 0
        self.acked: dict[int, int] = {}  # index -> id
        self.refused: dict[int, pb.Error] = {}

    async def close(self) -> grpc.StatusCode:
        """Half-close the stream, read what is left, and return its status."""
        await self.call.done_writing()
        while await self.call.read() is not grpc.aio.EOF:
            pass
        return await self.call.code()

    async def send(self, raw: bytes, count: int) -> None:
        """Send one request of `count` events and read until every event is answered."""
        await self.call.write(raw)
        self.sent += count
        while len(self.acked) + len(self.refused) < self.sent:
            response = await self.call.read()
            assert response is not grpc.aio.EOF, "the Publish stream ended"
            for ack in response.acks:
                if ack.HasField("error"):
                    self.refused[ack.index] = ack.error
                else:
                    for k in range(ack.count or 1):
                        self.acked[ack.index + k] = ack.id + k


async def _node(inproc_nodes: InProcessNodes) -> Node:
    node = await inproc_nodes.start(max_payload_bytes=MAX_PAYLOAD_BYTES)
    async with await Client.connect(node.address) as client:
        await client.create_queue(QUEUE, ["orders/>"])
    return node


async def test_batches_mixing_good_and_bad_events_refuse_each_bad_one_alone(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await _node(inproc_nodes)
    rng = random.Random(10)
    expected: dict[int, str | None] = {}
    async with grpc.aio.insecure_channel(node.address) as channel:
        publisher = RawPublisher(channel)
        for _batch in range(60):
            kinds = [rng.choice(KINDS) for _ in range(rng.randint(1, 12))]
            for offset, kind in enumerate(kinds):
                expected[publisher.sent + offset] = kind.names
            events = [kind.make(publisher.sent + i) for i, kind in enumerate(kinds)]
            await publisher.send(_request(events), len(events))
        # Every kind at least once, and the stream is still open for a last good batch.
        for kind in KINDS:
            expected[publisher.sent] = kind.names
            await publisher.send(_request([kind.make(0)]), 1)
        assert await publisher.close() == grpc.StatusCode.OK

    good = {i for i, names in expected.items() if names is None}
    assert set(publisher.acked) == good
    assert set(publisher.refused) == set(expected) - good
    for index, error in publisher.refused.items():
        names = expected[index]
        assert names is not None
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (index, error)
        assert names in error.message, (index, names, error.message)
        assert error.message.startswith(f"event {index}: "), error.message
    async with await Client.connect(node.address) as client:
        assert (await client.describe_queue(QUEUE)).depth == len(good)


async def test_a_key_that_is_not_utf8_refuses_only_its_event(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await _node(inproc_nodes)
    async with grpc.aio.insecure_channel(node.address) as channel:
        publisher = RawPublisher(channel)
        raw = _request([_event(), _event(), _event()], keys=[b"a", b"\xff", b"c"])
        await publisher.send(raw, 3)
        assert await publisher.close() == grpc.StatusCode.OK
    assert sorted(publisher.acked) == [0, 2]
    assert publisher.refused[1].message == "event 1: key is not valid UTF-8"


async def test_bytes_that_are_no_request_at_all_end_the_stream_as_invalid_argument(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await _node(inproc_nodes)
    async with grpc.aio.insecure_channel(node.address) as channel:
        publisher = RawPublisher(channel)
        await publisher.call.write(b"\x0a\x7f\x01")  # an event of 127 bytes, cut after one
        assert await publisher.call.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed PublishRequest" in await publisher.call.details()


def test_split_request_keeps_every_part_of_a_request() -> None:
    good = pb.Event(topic="a/b", payload=b"p", mode=pb.GUARANTEED)
    raw = (
        _field(1, good.SerializeToString())
        + _field(1, _event(b"\xff"))
        + b"\x10\x01"
        + _field(3, b"producer")
        + _field(4, varint(7) + varint(300))
        + _field(5, b"k1")
        + _field(5, b"\xfe")
    )
    parts = split_request(raw)
    assert parts.events[0] == good
    assert parts.events[1] == "topic is not valid UTF-8"
    assert (parts.flush, parts.producer, parts.sequences) == (True, b"producer", [7, 300])
    assert parts.keys == ["k1", None]
    assert parts.problem(0) is None and parts.problem(1) == "topic is not valid UTF-8"
    assert parts.request(0, 1) == pb.PublishRequest(
        events=[good], producer=b"producer", sequences=[7], keys=["k1"]
    )
