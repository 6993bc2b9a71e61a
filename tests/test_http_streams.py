"""Streams of the HTTP front door with real clients: server-sent events read with httpx, a
WebSocket with aiohttp's client; gRPC publishes reach them in order, their publishes
reach gRPC; revocation and the node stopping end them; a slow reader loses events,
counted, never unbounded memory."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import httpx
import pytest

from node.http_api import HttpFrontDoor
from node.server import Node
from plexus import Client
from tests.harness import eventually
from tests.http_calls import bearer, error_of, sse_messages
from tests.inprocess import InProcessNodes
from tests.signing import token

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ("tests.http_fixtures",)  # its fixtures: key, http_node, front_door, http


async def test_sse_gets_grpc_publishes_in_order_from_the_moment_it_is_answered(
    http_node: Node, http: httpx.AsyncClient, key: bytes
) -> None:
    reader = token(key, "screen", subscribe=["news/>"])
    async with (
        await Client.connect(http_node.address, token=token(key, "root", admin=True)) as client,
        http.stream(
            "GET", "/v1/events", params={"pattern": "news/>"}, headers=bearer(reader)
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        # No wait: the subscription was live before the headers were sent.
        for i in range(50):
            await client.publish(f"news/{i}", b"%d" % i, headers={"n": str(i)})
        await client.publish("news/bytes", b"\xff\x00")
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            async for kind, data in sse_messages(response):
                assert kind == "message"
                got.append(data)
                if len(got) == 51:
                    break
    assert [e["payload"] for e in got[:50]] == [str(i) for i in range(50)]
    assert got[7]["topic"] == "news/7" and got[7]["headers"] == {"n": "7"}
    assert got[7]["origin_region"] == "us" and got[7]["encoding"] == "utf-8"
    assert abs(got[7]["published_ms"] - time.time() * 1000) < 60_000
    assert int(got[8]["id"]) > int(got[7]["id"])
    assert (got[50]["encoding"], base64.b64decode(got[50]["payload"])) == ("base64", b"\xff\x00")


async def test_sse_of_a_pattern_not_permitted_is_403_before_any_stream(
    http: httpx.AsyncClient, key: bytes
) -> None:
    reader = token(key, "screen", subscribe=["news/>"])
    response = await http.get(
        "/v1/events", params={"pattern": ["news/>", "secret/>"], "token": reader}
    )
    assert response.status_code == 403
    assert error_of(response)["fields"]["target"] == "secret/>"
    bad = await http.get("/v1/events", params={"pattern": "a/>/b", "token": reader})
    assert (bad.status_code, error_of(bad)["reason"]) == (400, "INVALID_PATTERN")
    missing = await http.get("/v1/events", params={"token": reader})
    assert missing.status_code == 400 and "'pattern'" in error_of(missing)["message"]


async def test_revoking_the_token_ends_an_open_sse_stream_saying_so(
    http_node: Node, http: httpx.AsyncClient, key: bytes
) -> None:
    async with await Client.connect(
        http_node.address, token=token(key, "root", admin=True)
    ) as admin:
        made = await admin.create_token("viewer", subscribe=["s/>"])
        async with http.stream(
            "GET", "/v1/events", params={"pattern": "s/>", "access_token": made["token"]}
        ) as response:
            assert response.status_code == 200
            await admin.publish("s/1", b"before")
            messages = sse_messages(response)
            async with asyncio.timeout(10):
                assert (await anext(messages))[1]["payload"] == "before"
                await admin.revoke_token("viewer")
                kind, data = await anext(messages)
                assert kind == "error"
                assert data["error"]["code"] == "UNAUTHENTICATED"
                assert data["error"]["fields"]["reason"] == "revoked"
                with pytest.raises(StopAsyncIteration):
                    await anext(messages)  # the node ended the stream


async def test_an_sse_stream_and_a_websocket_end_when_their_token_expires(
    front_door: HttpFrontDoor, http: httpx.AsyncClient, key: bytes
) -> None:
    brief = token(key, "brief", expires_in_s=2, subscribe=["e/>"])
    async with (
        http.stream("GET", "/v1/events", params={"pattern": "e/>"}, headers=bearer(brief)) as sse,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://{front_door.address}/v1/ws", headers=bearer(brief)) as ws,
    ):
        assert sse.status_code == 200
        async with asyncio.timeout(10):  # well before the 15 s keep-alive
            [(kind, data)] = [m async for m in sse_messages(sse)]
            last = await ws.receive_json()
            closed = await ws.receive()
    assert (kind, data["error"]["fields"]["reason"]) == ("error", "expired")
    assert last["error"]["fields"]["reason"] == "expired"
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_stopping_the_front_door_ends_open_streams_at_once(
    http_node: Node, key: bytes
) -> None:
    assert http_node.gateway is not None
    door = HttpFrontDoor(http_node.gateway, "127.0.0.1:0", None, "us")
    await door.start()
    root = token(key, "root", admin=True)
    async with (
        httpx.AsyncClient(base_url=f"http://{door.address}") as http,
        http.stream("GET", "/v1/events", params={"pattern": "a/>", "token": root}) as sse,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://{door.address}/v1/ws", headers=bearer(root)) as ws,
    ):
        assert sse.status_code == 200
        started = time.monotonic()
        stopping = asyncio.create_task(door.stop())
        async with asyncio.timeout(5):
            [(kind, data)] = [m async for m in sse_messages(sse)]
            assert (kind, data["error"]["code"]) == ("error", "UNAVAILABLE")
            last = await ws.receive_json()
            assert last["error"]["code"] == "UNAVAILABLE"
            closed = await ws.receive()
            await stopping
        assert time.monotonic() - started < 1.5
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY


async def test_a_slow_sse_reader_loses_events_counted_in_the_next_one(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us", subscriber_buffer_events=10)
    assert node.gateway is not None
    door = HttpFrontDoor(node.gateway, "127.0.0.1:0", None, "us")
    await door.start()
    try:
        async with (
            await Client.connect(node.address) as client,
            httpx.AsyncClient(base_url=f"http://{door.address}", timeout=20) as http,
            http.stream("GET", "/v1/events", params={"pattern": "flood/>"}) as response,
        ):
            # Far more than the socket buffers hold, while the client reads nothing.
            payload = b"x" * 50_000
            for i in range(400):
                await client.publish(f"flood/{i}", payload)
            markers = 0

            async def mark() -> None:
                # The last events may be the ones dropped: a later one must say so.
                nonlocal markers
                while True:
                    await client.publish(f"flood/mark/{markers}", b"")
                    markers += 1
                    await asyncio.sleep(0.05)  # the markers' pace, not a wait

            seen = discarded = 0
            async with asyncio.TaskGroup() as tasks:
                marking = tasks.create_task(mark())
                async with asyncio.timeout(20):
                    async for _kind, data in sse_messages(response):
                        seen += 1
                        discarded += data.get("discarded_before", 0)
                        if data["topic"].startswith("flood/mark/"):
                            last_mark = int(data["topic"].rsplit("/", 1)[1])
                            break
                marking.cancel()
            assert discarded > 0
            # Every event published up to the mark was delivered or counted as discarded.
            assert seen + discarded == 400 + last_mark + 1
    finally:
        await door.stop()


# ------------------------------------------------------------------ WebSocket


async def _answer(ws: aiohttp.ClientWebSocketResponse, request_id: str) -> dict[str, Any]:
    """The ack or error of request `request_id` (events in between are skipped)."""
    while True:
        message = await ws.receive_json()
        if message.get("id") == request_id:
            return dict(message)


async def test_a_websocket_subscribes_and_publishes_both_ways_with_acks(
    http_node: Node, front_door: HttpFrontDoor, key: bytes
) -> None:
    device = token(key, "device", publish=["up/>"], subscribe=["down/>"])
    root = token(key, "root", admin=True)
    url = f"http://{front_door.address}/v1/ws?token={device}"
    async with (
        await Client.connect(http_node.address, token=root) as client,
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as ws,
        client.subscribe("up/>") as up,
    ):
        await client.create_queue("uplink", ["up/>"])
        await up.ready()
        async with asyncio.timeout(10):
            await ws.send_json({"type": "subscribe", "id": "s1", "pattern": "down/>"})
            assert await _answer(ws, "s1") == {"type": "ack", "id": "s1"}
            await client.publish("down/1", b"to the device")
            event = await ws.receive_json()
            assert event["type"] == "event" and event["pattern"] == "down/>"
            assert (event["event"]["topic"], event["event"]["payload"]) == (
                "down/1",
                "to the device",
            )

            await ws.send_json(
                {
                    "type": "publish",
                    "id": "p1",
                    "topic": "up/1",
                    "payload": base64.b64encode(b"\x01\x02").decode(),
                    "encoding": "base64",
                    "headers": {"k": "v"},
                    "guaranteed": True,
                }
            )
            ack = await _answer(ws, "p1")
            assert (ack["type"], ack["id"], ack["duplicate"]) == ("ack", "p1", False)
            # Acked means durable: the queue holds it now.
            assert (await client.describe_queue("uplink")).depth == 1
            [got] = await up.next_batch(timeout=5)
            assert (got.topic, got.payload, dict(got.headers)) == ("up/1", b"\x01\x02", {"k": "v"})

            await ws.send_json({"type": "publish", "id": "p2", "topic": "down/x", "payload": ""})
            refused = await _answer(ws, "p2")
            assert refused["type"] == "error"
            assert refused["error"]["reason"] == "NOT_PERMITTED"
            assert refused["error"]["fields"]["target"] == "down/x"
            await ws.send_json({"type": "subscribe", "id": "s2", "pattern": "up/>"})
            assert (await _answer(ws, "s2"))["error"]["code"] == "PERMISSION_DENIED"
            await ws.send_str("not json")
            assert "not JSON" in (await ws.receive_json())["error"]["message"]

            await ws.send_json({"type": "unsubscribe", "id": "u1", "pattern": "down/>"})
            assert await _answer(ws, "u1") == {"type": "ack", "id": "u1"}
            await client.publish("down/2", b"after")
            await ws.send_json({"type": "unsubscribe", "id": "u2", "pattern": "down/>"})
            # The next message is the answer: down/2 was not delivered.
            assert (await ws.receive_json())["error"]["code"] == "NOT_FOUND"


async def test_a_websocket_without_a_token_is_refused_401_before_the_upgrade(
    front_door: HttpFrontDoor,
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"http://{front_door.address}/v1/ws")
    assert refused.value.status == 401


async def test_revoking_the_token_closes_a_websocket_with_policy_violation(
    http_node: Node, front_door: HttpFrontDoor, key: bytes
) -> None:
    async with (
        await Client.connect(http_node.address, token=token(key, "root", admin=True)) as admin,
        aiohttp.ClientSession() as session,
    ):
        made = await admin.create_token("panel", subscribe=["p/>"])
        async with session.ws_connect(
            f"http://{front_door.address}/v1/ws", headers=bearer(made["token"])
        ) as ws:
            async with asyncio.timeout(10):  # no subscription: the revocation still ends it
                await admin.revoke_token("panel")
                last = json.loads((await ws.receive()).data)
                assert last["error"]["fields"]["reason"] == "revoked"
                closed = await ws.receive()
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_streams_past_the_client_limits_are_refused_429_naming_the_limit(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us", max_client_connections=2, max_subscriptions_per_client=2)
    assert node.gateway is not None
    door = HttpFrontDoor(node.gateway, "127.0.0.1:0", None, "us")
    await door.start()
    base = f"http://{door.address}"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{base}/v1/ws") as ws,
            httpx.AsyncClient(base_url=base) as first,
            httpx.AsyncClient(base_url=base) as second,
        ):
            async with asyncio.timeout(10):
                for i in range(3):
                    await ws.send_json({"type": "subscribe", "id": i, "pattern": f"t/{i}"})
                answers = [await _answer(ws, i) for i in range(3)]
            assert [a["type"] for a in answers] == ["ack", "ack", "error"]
            assert answers[2]["error"]["fields"] == {
                "limit": "max_subscriptions_per_client",
                "value": "2",
            }
            params = {"pattern": ["a/>", "b/>", "c/>"]}
            too_many = await first.get("/v1/events", params=params)
            assert (too_many.status_code, error_of(too_many)["reason"]) == (429, "LIMIT_REACHED")
            async with first.stream("GET", "/v1/events", params={"pattern": "a/>"}) as open_:
                assert open_.status_code == 200  # the WebSocket and this: two connections
                third = await second.get("/v1/events", params={"pattern": "b/>"})
                assert third.status_code == 429
                assert error_of(third)["fields"]["limit"] == "max_client_connections"
    finally:
        await door.stop()


async def test_a_client_that_hangs_up_leaves_no_subscription_behind(
    http_node: Node, front_door: HttpFrontDoor, key: bytes
) -> None:
    root = token(key, "root", admin=True)
    base = f"http://{front_door.address}"

    async def listed(pattern: str) -> bool:
        return any(pattern in c.subscriptions for c in await admin.clients())

    async with await Client.connect(http_node.address, token=root) as admin:
        async with (
            httpx.AsyncClient(base_url=base) as http,
            http.stream("GET", "/v1/events", params={"pattern": "gone/sse", "token": root}),
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{base}/v1/ws?token={root}") as ws,
        ):
            await ws.send_json({"type": "subscribe", "id": 1, "pattern": "gone/ws"})
            assert (await ws.receive_json())["type"] == "ack"
            assert await listed("gone/sse") and await listed("gone/ws")
        await eventually(
            lambda: _none_listed(admin), timeout=5, what="the HTTP subscriptions to go"
        )


async def _none_listed(admin: Client) -> bool:
    return not any(s.startswith("gone/") for c in await admin.clients() for s in c.subscriptions)


async def test_a_websocket_message_over_the_payload_limit_closes_it_as_too_big(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us", max_payload_bytes=1000)
    assert node.gateway is not None
    door = HttpFrontDoor(node.gateway, "127.0.0.1:0", None, "us")
    await door.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://{door.address}/v1/ws") as ws,
        ):
            await ws.send_json({"type": "publish", "id": 1, "topic": "a", "payload": "x" * 900})
            async with asyncio.timeout(10):
                assert await _answer(ws, 1) == {"type": "ack", "id": 1}
                await ws.send_str("x" * 200_000)
                closed = await ws.receive()
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    finally:
        await door.stop()
