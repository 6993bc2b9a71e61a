"""MQTT across regions: us is a real node process, eu runs in-process (the MQTT front
door is an in-process API until `node run --mqtt` wires it) from the same cluster file."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.cluster_file import load_cluster_file, region_spec
from node.mqtt.server import MqttFrontDoor
from node.server import Node
from plexus import Client
from tests.harness import Cluster, eventually
from tests.inprocess import node_config
from tests.mqtt_devices import V5, Device

pytestmark = pytest.mark.timeout(90)


async def eu_knows(us: Client, pattern: str) -> None:
    async def known() -> bool:
        view = await us.list_links()
        return any(pattern in i.patterns for i in view.interest if i.region == "eu")

    await eventually(known, 15, f"us to learn eu's interest in {pattern}")


async def test_mqtt_in_eu_and_grpc_in_us_reach_each_other_and_an_away_session_catches_up(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path / "cluster", ["eu", "us"], [("eu", "us")])
    topology = load_cluster_file(cluster.file)
    spec = region_spec(topology, "eu")
    cluster.start("us")
    eu: Node | None = None
    front: MqttFrontDoor | None = None
    devices: list[Device] = []
    try:
        eu = Node(node_config("eu", spec.data, listen=spec.grpc), topology)
        await eu.start()
        assert eu.gateway is not None
        front = MqttFrontDoor(eu.gateway, "127.0.0.1:0", None, "eu")
        address = await front.start()
        async with await Client.connect(cluster.address("us")) as us:
            # gRPC publish in us -> MQTT subscriber in eu.
            screen = Device(address, "screen")
            devices.append(screen)
            await screen.connect()
            await screen.subscribe("sensors/#", 1)
            await eu_knows(us, "sensors/>")
            for i in range(20):
                await us.publish(f"sensors/us/{i}", b"v%d" % i, guaranteed=True)
            got = await screen.receive(20)
            assert sorted(m.payload for m in got) == sorted(b"v%d" % i for i in range(20))

            # MQTT publish in eu -> gRPC subscriber in us.
            async with us.subscribe("cmd/>") as sub:
                await sub.ready()
                sender = Device(address, "sender", version=V5)
                devices.append(sender)
                await sender.connect()

                # Publish until one crosses: that is when us's interest reached eu.
                async def crossed() -> bool:
                    assert await sender.publish("cmd/eu/1", b"hello from eu", 1) == 0
                    return bool(await sub.next_batch(timeout=0.2))

                await eventually(crossed, 15, "an MQTT publish in eu to reach us")

            # A persistent session in eu gets what us published while it was away.
            phone = Device(address, "dev-eu-1", version=V5, clean=False, session_expiry=3600)
            devices.append(phone)
            await phone.connect()
            await phone.subscribe("alerts/#", 1)
            await phone.disconnect()
            await eu_knows(us, "alerts/>")
            for i in range(50):
                await us.publish(f"alerts/us/{i}", b"a%d" % i, guaranteed=True)
            back = Device(address, "dev-eu-1", version=V5, clean=False, session_expiry=3600)
            devices.append(back)
            await back.connect()
            assert back.session_present
            caught_up = await back.receive(50, timeout=20)
            assert sorted(m.payload for m in caught_up) == sorted(b"a%d" % i for i in range(50))
    finally:
        for device in devices:
            device.stop()
        if front is not None:
            await front.stop()
        if eu is not None:
            await eu.stop()
        cluster.close()
