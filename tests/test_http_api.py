"""The HTTP front door (node/http_api/) with real clients: httpx and curl publish to an
in-process node, gRPC clients and queues receive; refusals are JSON naming what was
wrong, with the gRPC reason codes; TLS with the node's certificate."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
from pathlib import Path

import httpx
import pytest

from federation.transport import server_ssl_context
from node.grpc_server import PortInUse
from node.http_api import HttpFrontDoor
from node.server import Node
from plexus import Client
from plexus.certs import make_ca, make_node_cert
from plexus.errors import InvalidArgument
from plexus.tokens import generate_key
from tests.harness import eventually
from tests.http_calls import bearer, error_of
from tests.inprocess import InProcessNodes
from tests.signing import token

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ("tests.http_fixtures",)  # its fixtures: key, http_node, front_door, http


async def test_health_answers_with_the_region_and_needs_no_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/health")
    assert response.status_code == 200
    assert response.json() == {"region": "us", "status": "ok"}


async def test_a_direct_post_reaches_a_grpc_subscriber_with_its_headers(
    http_node: Node, http: httpx.AsyncClient, key: bytes
) -> None:
    async with (
        await Client.connect(http_node.address, token=token(key, "root", admin=True)) as client,
        client.subscribe("sensors/>") as sub,
    ):
        await sub.ready()
        response = await http.post(
            "/v1/events/sensors/hall/temp",
            content=b'{"c": 21.5}',
            headers={
                **bearer(token(key, "device", publish=["sensors/>"])),
                "Content-Type": "application/json",
                "Plexus-Header-Unit": "celsius",
            },
        )
        assert (response.status_code, response.json()) == (202, {"status": "routed"})
        [event] = await sub.next_batch(timeout=5)
    assert (event.topic, event.payload) == ("sensors/hall/temp", b'{"c": 21.5}')
    assert dict(event.headers) == {"unit": "celsius", "content-type": "application/json"}


async def test_a_guaranteed_post_is_in_the_queue_when_answered_and_a_key_is_stored_once(
    http_node: Node, http: httpx.AsyncClient, key: bytes
) -> None:
    writer = bearer(token(key, "writer", publish=["orders/>"]))
    root = token(key, "root", admin=True)
    async with await Client.connect(http_node.address, token=root) as client:
        await client.create_queue("billing", ["orders/>"])
        response = await http.post(
            "/v1/events/orders/us/1?guaranteed=true&ttl_ms=60000", content=b"one", headers=writer
        )
        answer = response.json()
        assert (response.status_code, answer["status"], answer["duplicate"]) == (
            200,
            "durable",
            False,
        )
        assert int(answer["id"]) > 0
        assert (await client.describe_queue("billing")).depth == 1
        answers = []
        for _ in range(2):  # the same key twice: acked both times, stored once
            response = await http.post(
                "/v1/events/orders/us/2?guaranteed=true",
                content=b"two",
                headers={**writer, "Idempotency-Key": "order-2"},
            )
            assert response.status_code == 200
            answers.append(response.json())
        assert [a["duplicate"] for a in answers] == [False, True]
        assert answers[0]["id"] == answers[1]["id"]
        assert (await client.describe_queue("billing")).depth == 2


async def test_a_topic_not_permitted_is_403_naming_the_topic_and_token(
    http: httpx.AsyncClient, key: bytes
) -> None:
    response = await http.post(
        "/v1/events/admin/x",
        content=b"no",
        headers=bearer(token(key, "device", publish=["sensors/>"])),
    )
    assert response.status_code == 403
    error = error_of(response)
    assert (error["code"], error["reason"]) == ("PERMISSION_DENIED", "NOT_PERMITTED")
    assert error["fields"] == {"token": "device", "permission": "publish", "target": "admin/x"}


async def test_a_missing_or_forged_token_is_401_saying_which(
    http: httpx.AsyncClient, key: bytes
) -> None:
    missing = await http.post("/v1/events/a/b", content=b"x")
    forged = await http.post("/v1/events/a/b", content=b"x", headers=bearer("e30.e30.e30"))
    other_key = await http.get(
        "/v1/events",
        params={"pattern": "a/>", "token": token(generate_key(), "intruder", admin=True)},
    )
    for response, reason in ((missing, "missing"), (forged, "malformed"), (other_key, "forged")):
        assert response.status_code == 401, response.text
        error = error_of(response)
        assert error["code"] == "UNAUTHENTICATED"
        assert error["fields"]["reason"].startswith(reason)


async def test_a_bad_topic_or_query_value_is_400_naming_it(
    http: httpx.AsyncClient, key: bytes
) -> None:
    root = bearer(token(key, "root", admin=True))
    bad_topic = await http.post("/v1/events/a/*/c", content=b"x", headers=root)
    assert bad_topic.status_code == 400
    assert error_of(bad_topic)["reason"] == "INVALID_TOPIC"
    assert error_of(bad_topic)["fields"]["topic"] == "a/*/c"
    for query, named in (
        ("ttl_ms=soon", "ttl_ms"),
        ("guaranteed=maybe", "guaranteed"),
        ("guaranted=true", "guaranted"),
        ("key=k1", "guaranteed=true"),
    ):
        response = await http.post(f"/v1/events/a/b?{query}", content=b"x", headers=root)
        assert response.status_code == 400, query
        assert named in error_of(response)["message"], (query, response.text)


async def test_an_unknown_route_or_method_is_a_json_error(http: httpx.AsyncClient) -> None:
    missing = await http.get("/v2/nothing")
    assert (missing.status_code, error_of(missing)["code"]) == (404, "NOT_FOUND")
    assert "/v2/nothing" in error_of(missing)["message"]
    wrong_method = await http.delete("/v1/health")
    assert (wrong_method.status_code, error_of(wrong_method)["code"]) == (405, "INVALID_ARGUMENT")


async def test_a_body_over_max_payload_bytes_is_413_naming_the_limit(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start("us", max_payload_bytes=1000)
    assert node.gateway is not None
    door = HttpFrontDoor(node.gateway, "127.0.0.1:0", None, "us")
    await door.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{door.address}") as http:
            response = await http.post("/v1/events/big/one", content=b"x" * 1001)
            assert response.status_code == 413
            error = error_of(response)
            assert error["code"] == "INVALID_ARGUMENT"
            assert (
                "max_payload_bytes = 1000" in error["message"] and "1001 bytes" in error["message"]
            )

            async def chunks():  # no Content-Length: refused while reading
                for _ in range(3):
                    yield b"x" * 600

            streamed = await http.post("/v1/events/big/two", content=chunks())
            assert streamed.status_code == 413
            assert "max_payload_bytes = 1000" in error_of(streamed)["message"]
            assert (await http.post("/v1/events/small/one", content=b"x" * 100)).status_code == 202
    finally:
        await door.stop()


async def test_requests_racing_to_a_listener_that_never_served_are_all_answered(
    http_node: Node,
) -> None:
    # The first connection loads the HTTP server; those behind it wait, none is lost.
    assert http_node.gateway is not None
    door = HttpFrontDoor(http_node.gateway, "127.0.0.1:0", None, "us")
    await door.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{door.address}") as http:
            answers = await asyncio.gather(*(http.get("/v1/health") for _ in range(5)))
        assert [a.json()["status"] for a in answers] == ["ok"] * 5
    finally:
        await door.stop()


async def test_a_listener_stopped_before_any_request_frees_its_port(http_node: Node) -> None:
    assert http_node.gateway is not None
    door = HttpFrontDoor(http_node.gateway, "127.0.0.1:0", None, "us")
    address = await door.start()
    await door.stop()
    again = HttpFrontDoor(http_node.gateway, address, None, "us")
    assert await again.start() == address
    await again.stop()


async def test_a_taken_or_malformed_address_is_refused_naming_it(http_node: Node) -> None:
    assert http_node.gateway is not None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(PortInUse, match=address):
            await HttpFrontDoor(http_node.gateway, address, None, "us").start()
    with pytest.raises(InvalidArgument, match="'localhost:http'"):
        await HttpFrontDoor(http_node.gateway, "localhost:http", None, "us").start()


async def test_https_with_the_node_certificate_verifies_with_the_cluster_ca(
    inproc_nodes: InProcessNodes, tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    make_ca(tls)
    make_node_cert(tls, "us", ["127.0.0.1", "localhost"], tls)
    node = await inproc_nodes.start(
        "us", tls_cert=tls / "us.crt", tls_key=tls / "us.key", tls_ca=tls / "ca.crt"
    )
    assert node.gateway is not None
    door = HttpFrontDoor(
        node.gateway, "127.0.0.1:0", server_ssl_context(tls / "us.crt", tls / "us.key"), "us"
    )
    await door.start()
    try:
        verifying = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        async with httpx.AsyncClient(verify=verifying) as https:
            response = await https.get(f"https://{door.address}/v1/health")
            assert response.json() == {"region": "us", "status": "ok"}
        async with httpx.AsyncClient() as untrusting:  # the system CAs do not know ours
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(f"https://{door.address}/v1/health")
    finally:
        await door.stop()


async def test_curl_publishes_and_streams(
    http_node: Node, front_door: HttpFrontDoor, key: bytes
) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is missing: install Debian's package curl (apt-get install curl)"
    root = token(key, "root", admin=True)
    base = f"http://{front_door.address}"
    stream = await asyncio.create_subprocess_exec(
        curl, "-sN", "-H", f"Authorization: Bearer {root}", f"{base}/v1/events?pattern=c/>",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert stream.stdout is not None
        # The stream is live once its first bytes (the headers) have been read by curl:
        # curl prints nothing until an event, so wait for the subscription to be listed.
        async with await Client.connect(http_node.address, token=root) as client:

            async def listed() -> bool:
                return any("c/>" in c.subscriptions for c in await client.clients())

            await eventually(listed, 10, "curl's SSE subscription to be listed")
        publish = await asyncio.create_subprocess_exec(
            curl, "-sS", "-X", "POST", "-H", f"Authorization: Bearer {root}",
            "--data-binary", "from curl", f"{base}/v1/events/c/1?guaranteed=true",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await publish.communicate()
        assert b'"durable"' in out
        async with asyncio.timeout(10):
            line = await stream.stdout.readline()
        assert b'"topic":"c/1"' in line and b'"payload":"from curl"' in line
    finally:
        stream.kill()
        await stream.wait()


async def test_a_batch_publishes_one_result_per_line_in_order(
    http_node: Node, http: httpx.AsyncClient, key: bytes
) -> None:
    lines = [
        {"topic": "b/1", "payload": "one"},
        {"topic": "b/2", "payload": "dHdv", "encoding": "base64", "guaranteed": True},
        {"topic": "secret/3", "payload": "no"},
    ]
    body = "\n".join(json.dumps(line) for line in lines)
    writer = bearer(token(key, "writer", publish=["b/>"]))
    async with await Client.connect(http_node.address, token=token(key, "root", admin=True)) as c:
        await c.create_queue("batch", ["b/>"])
        response = await http.post("/v1/events", content=body, headers=writer)
        assert response.status_code == 200
        first, second, third = response.json()["results"]
        assert first == {"status": "routed"}
        assert (second["status"], second["duplicate"]) == ("durable", False)
        assert third["error"]["reason"] == "NOT_PERMITTED"
        assert (await c.describe_queue("batch")).depth == 1
    bad = await http.post("/v1/events", content='{"topic": "b/1"}\n{"topic": 5}', headers=writer)
    assert bad.status_code == 400 and error_of(bad)["message"].startswith("line 2: ")


async def test_a_bug_in_a_handler_is_logged_and_answered_500_without_a_traceback(
    http_node: Node, http: httpx.AsyncClient, key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert http_node.gateway is not None

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    http_node.gateway.publish = broken  # type: ignore[method-assign]
    response = await http.post(
        "/v1/events/a/b", content=b"x", headers=bearer(token(key, "root", admin=True))
    )
    assert response.status_code == 500
    assert error_of(response)["reason"] == "INTERNAL"
    assert "Traceback" not in response.text and "a bug" not in response.text
    assert "bug in the HTTP front door: POST /v1/events/a/b" in caplog.text
    assert "RuntimeError: a bug" in caplog.text
