"""The node's MQTT listener with real clients (paho-mqtt) against an in-process node:
QoS 0/1/2 both ways, 3.1.1 and 5.0, tokens as passwords, TLS, gRPC on the other side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.mqtt.server import MqttFrontDoor
from node.server import Node
from plexus import Client
from plexus.tokens import Grants, generate_key, new_claims, sign
from tests.inprocess import InProcessNodes
from tests.mqtt_devices import V5, V311, Device

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    pem = generate_key()
    (tmp_path / "signing.key").write_bytes(pem)
    return pem


def token(key: bytes, name: str, **grants: object) -> str:
    return sign(new_claims(name, Grants(**grants), None), key)  # type: ignore[arg-type]


@pytest.fixture
async def node(inproc_nodes: InProcessNodes, tmp_path: Path, key: bytes) -> Node:
    return await inproc_nodes.start("us", auth_key=tmp_path / "signing.key")


@pytest.fixture
async def door(node: Node) -> AsyncIterator[MqttFrontDoor]:
    assert node.gateway is not None
    front = MqttFrontDoor(node.gateway, "127.0.0.1:0", None, "us")
    await front.start()
    try:
        yield front
    finally:
        await front.stop()


@pytest.fixture
async def devices() -> AsyncIterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        device.stop()


@pytest.fixture
def device(door: MqttFrontDoor, key: bytes, devices: list[Device]):  # type: ignore[no-untyped-def]
    """Make a connected-to-be device with a token of `grants` (admin when none)."""

    def make(client_id: str = "", version: int = V311, grants: dict | None = None, **kw):  # type: ignore[no-untyped-def,type-arg]
        secret = token(key, client_id or "device", **(grants or {"admin": True}))
        made = Device(door.address, client_id, version=version, password=secret, **kw)
        devices.append(made)
        return made

    return make


@pytest.mark.parametrize("version", [V311, V5])
async def test_qos0_and_qos1_go_from_one_device_to_another(device, version: int) -> None:  # type: ignore[no-untyped-def]
    sub = device("sub", version)
    pub = device("pub", version)
    assert await sub.connect() == 0 and await pub.connect() == 0
    assert await sub.subscribe("sensors/#", 1) == [1]
    await pub.publish("sensors/a", b"zero", 0)
    assert await pub.publish("sensors/b/c", b"one", 1) == 0
    got = await sub.receive(2)
    assert {(m.topic, m.payload, m.qos) for m in got} == {
        ("sensors/a", b"zero", 0),
        ("sensors/b/c", b"one", 1),
    }


async def test_mqtt_and_grpc_reach_each_other(device, node: Node, key: bytes) -> None:  # type: ignore[no-untyped-def]
    sub = device("screen")
    assert await sub.connect() == 0
    await sub.subscribe("news/#", 1)
    admin = token(key, "root", admin=True)
    async with await Client.connect(node.address, token=admin) as client:
        await client.publish("news/today", b"direct")
        await client.publish("news/kept", b"guaranteed", guaranteed=True)
        got = await sub.receive(2)
        assert {(m.topic, m.payload, m.qos) for m in got} == {
            ("news/today", b"direct", 0),
            ("news/kept", b"guaranteed", 1),
        }
        grpc_sub = client.subscribe("cmd/>")
        await grpc_sub.ready()
        pub = device("pub")
        await pub.connect()
        assert await pub.publish("cmd/1", b"go", 1) == 0
        [event] = await grpc_sub.next_batch(timeout=5)
        assert (event.topic, event.payload) == ("cmd/1", b"go")


async def test_a_bad_token_is_refused_in_connack(door: MqttFrontDoor, devices) -> None:  # type: ignore[no-untyped-def]
    bad = Device(door.address, "x", password="not-a-token")
    devices.append(bad)
    # paho reports 3.1.1's return code 4 as the v5 reason 0x86, bad user name or password.
    assert await bad.connect() == 0x86
    none = Device(door.address, "y", version=V5)
    devices.append(none)
    assert await none.connect() == 0x87  # v5: not authorized
