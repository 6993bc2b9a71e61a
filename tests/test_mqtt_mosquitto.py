"""Debian's mosquitto clients (mosquitto_pub, mosquitto_sub) against the node's MQTT listener:
what users type. Missing clients fail the test naming the package (make mosquitto-clients)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node.mqtt.server import MqttFrontDoor
from node.server import Node
from plexus import Client
from plexus.certs import make_ca, make_node_cert
from tests.harness import eventually
from tests.inprocess import InProcessNodes
from tests.mqtt_devices import mosquitto_tool
from tests.signing import token

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tls(tmp_path: Path) -> Path:
    out = tmp_path / "tls"
    make_ca(out)
    make_node_cert(out, "us", ["127.0.0.1", "localhost"], out)
    return out


@pytest.fixture
async def node(inproc_nodes: InProcessNodes, tmp_path: Path, key: bytes, tls: Path) -> Node:
    """A node with TLS, a token key and its MQTT listener, as `plexus up` runs regions."""
    return await inproc_nodes.start(
        "us",
        auth_key=tmp_path / "signing.key",
        tls_cert=tls / "us.crt",
        tls_key=tls / "us.key",
        tls_ca=tls / "ca.crt",
        mqtt="127.0.0.1:0",
    )


@pytest.fixture
def door(node: Node) -> MqttFrontDoor:
    assert node.mqtt is not None
    return node.mqtt


@pytest.fixture
def auth(door: MqttFrontDoor, tls: Path, key: bytes) -> list[str]:
    """mosquitto's options for the door: address, CA and a token as the password."""
    secret = token(key, "mqtt-check", publish=[">"], subscribe=[">"])
    host, _, port = door.address.rpartition(":")
    return [
        "-h",
        host,
        "-p",
        port,
        "--cafile",
        str(tls / "ca.crt"),
        "-u",
        "mqtt-check",
        "-P",
        secret,
    ]


async def run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate(stdin)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def subscribed(door: MqttFrontDoor, client_id: str) -> None:
    def ready() -> bool:
        session = door.session_of(client_id)
        return session is not None and bool(session.patterns())

    await eventually(ready, 10, f"{client_id} subscribed")


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
@pytest.mark.parametrize("qos", ["0", "1", "2"])
async def test_mosquitto_pub_reaches_mosquitto_sub_over_tls(
    door: MqttFrontDoor, auth: list[str], qos: str, version: str
) -> None:
    sub = asyncio.create_task(
        run(
            mosquitto_tool("mosquitto_sub"),
            *auth,
            *("-V", version, "-i", "msub", "-t", "sensors/#", "-q", qos, "-C", "3", "-W", "20"),
        )
    )
    await subscribed(door, "msub")
    code, _, err = await run(
        mosquitto_tool("mosquitto_pub"),
        *auth,
        *("-V", version, "-t", "sensors/a", "-q", qos, "-l"),
        stdin=b"one\ntwo\nthree\n",
    )
    assert code == 0, err
    code, out, err = await sub
    assert code == 0, err
    assert out.split() == ["one", "two", "three"]


async def test_grpc_publishes_reach_mosquitto_sub_and_mosquitto_pub_reaches_grpc(
    door: MqttFrontDoor, auth: list[str], node: Node, key: bytes, tls: Path
) -> None:
    admin = token(key, "root", admin=True)
    async with await Client.connect(node.address, ca=tls / "ca.crt", token=admin) as client:
        sub = asyncio.create_task(
            run(
                mosquitto_tool("mosquitto_sub"),
                *auth,
                "-i",
                "msub",
                "-t",
                "orders/#",
                "-q",
                "1",
                "-C",
                "20",
                "-W",
                "20",
            )
        )
        await subscribed(door, "msub")
        for i in range(20):
            await client.publish(f"orders/us/{i}", b"v%d" % i, guaranteed=True)
        code, out, err = await sub
        assert code == 0, err
        assert out.split() == [f"v{i}" for i in range(20)]
        grpc_sub = client.subscribe("cmd/>")
        await grpc_sub.ready()
        code, _, err = await run(
            mosquitto_tool("mosquitto_pub"), *auth, "-t", "cmd/1", "-m", "hello", "-q", "1"
        )
        assert code == 0, err
        [event] = await grpc_sub.next_batch(timeout=5)
        assert (event.topic, event.payload) == ("cmd/1", b"hello")


async def test_a_mosquitto_persistent_session_catches_up(
    door: MqttFrontDoor, auth: list[str]
) -> None:
    sub = [mosquitto_tool("mosquitto_sub"), *auth, "-i", "dev-1", "-c", "-q", "1", "-t", "alerts/#"]
    code, _, err = await run(*sub, "-W", "1")
    assert code == 27, err  # timed out, as asked: the session stays
    code, _, err = await run(
        mosquitto_tool("mosquitto_pub"),
        *auth,
        *("-t", "alerts/x", "-q", "1", "-l"),
        stdin=b"a\nb\nc\n",
    )
    assert code == 0, err
    code, out, err = await run(*sub, "-C", "3", "-W", "20")
    assert code == 0, err
    assert out.split() == ["a", "b", "c"]


async def test_mosquitto_without_the_token_is_refused(door: MqttFrontDoor, auth: list[str]) -> None:
    without = auth[: auth.index("-u")]
    code, _, err = await run(mosquitto_tool("mosquitto_pub"), *without, "-t", "x", "-m", "y")
    assert code != 0
    assert "not authorised" in err.lower() or "not authorized" in err.lower(), err


async def test_a_retained_message_from_mosquitto_pub_reaches_a_later_mosquitto_sub(
    door: MqttFrontDoor, auth: list[str]
) -> None:
    code, _, err = await run(
        mosquitto_tool("mosquitto_pub"), *auth, "-t", "state/door", "-m", "open", "-q", "1", "-r"
    )
    assert code == 0, err
    code, out, err = await run(
        mosquitto_tool("mosquitto_sub"), *auth, "-t", "state/#", "-q", "1", "-C", "1", "-W", "10"
    )
    assert code == 0, err
    assert out == "open\n"
