"""The node's MQTT listener with real clients (paho-mqtt) against an in-process node:
QoS 0/1/2 both ways, 3.1.1 and 5.0, tokens as passwords, TLS, gRPC on the other side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.mqtt.codec import Decoder, encode
from node.mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
    ProtocolVersion,
    Puback,
    Publish,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
)
from node.mqtt.server import MqttFrontDoor
from node.server import Node
from plexus import Client
from tests.harness import eventually
from tests.inprocess import InProcessNodes
from tests.mqtt_devices import V5, V311, Device
from tests.signing import token

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def node(inproc_nodes: InProcessNodes, tmp_path: Path, key: bytes) -> Node:
    """A node with a token key and its MQTT listener, as `node run --mqtt` makes it."""
    return await inproc_nodes.start("us", auth_key=tmp_path / "signing.key", mqtt="127.0.0.1:0")


@pytest.fixture
def door(node: Node) -> MqttFrontDoor:
    assert node.mqtt is not None
    return node.mqtt


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


@pytest.mark.parametrize("version", [V311, V5])
async def test_a_subscription_the_token_does_not_allow_is_refused_in_suback(
    device, version: int
) -> None:  # type: ignore[no-untyped-def]
    screen = device("screen", version, grants={"subscribe": ["news/>"]})
    assert await screen.connect() == 0
    # paho gives 3.1.1's refusal 0x80 as it is; v5 names the reason: not authorized.
    assert await screen.subscribe("secret/#", 1) == [0x80 if version == V311 else 0x87]
    assert await screen.subscribe("news/#", 1) == [1]


async def test_a_v5_publish_the_token_does_not_allow_gets_puback_not_authorized(device) -> None:  # type: ignore[no-untyped-def]
    sensor = device("sensor", V5, grants={"publish": ["sensors/>"]})
    assert await sensor.connect() == 0
    assert await sensor.publish("admin/x", b"no", 1) == 0x87
    assert await sensor.publish("sensors/1", b"yes", 1) == 0


async def test_a_3_1_1_publish_the_token_does_not_allow_ends_the_connection(device) -> None:  # type: ignore[no-untyped-def]
    sensor = device("sensor", V311, grants={"publish": ["sensors/>"]})
    assert await sensor.connect() == 0
    sensor.client.publish("admin/x", b"no", 1)
    await sensor.wait_disconnected()


async def test_qos2_is_published_once_and_completes(device) -> None:  # type: ignore[no-untyped-def]
    sub = device("sub", V5)
    pub = device("pub", V5)
    await sub.connect()
    await pub.connect()
    assert await sub.subscribe("q2/#", 2) == [2]
    assert await pub.publish("q2/a", b"exactly", 2) == 0  # PUBCOMP came back
    [got] = await sub.receive(1)
    # The mesh delivers guaranteed events at least once: QoS 1 to a QoS 2 subscriber.
    assert (got.topic, got.payload, got.qos) == ("q2/a", b"exactly", 1)
    assert await sub.nothing_more()


async def test_mqtt_topics_with_empty_levels_and_dollar_rule(
    device, node: Node, key: bytes
) -> None:  # type: ignore[no-untyped-def]
    sub = device("sub", V5)
    await sub.connect()
    await sub.subscribe("#", 0)
    await sub.subscribe("$sys/#", 0)
    pub = device("pub", V5)
    await pub.connect()
    await pub.publish("/a//b", b"empty levels", 1)
    await pub.publish("$sys/x", b"dollar", 1)
    got = await sub.receive(2)
    # `#` does not match `$sys/x`: only its own `$sys/#` brought it, once.
    assert sorted((m.topic, m.payload) for m in got) == [
        ("$sys/x", b"dollar"),
        ("/a//b", b"empty levels"),
    ]
    assert await sub.nothing_more()


async def test_a_will_is_published_when_a_device_vanishes_not_when_it_says_goodbye(device) -> None:  # type: ignore[no-untyped-def]
    watcher = device("watcher")
    await watcher.connect()
    await watcher.subscribe("status/#", 1)
    polite = device("polite", will=("status/polite", b"gone", 1))
    await polite.connect()
    await polite.disconnect()
    rude = device("rude", will=("status/rude", b"gone", 1))
    await rude.connect()
    rude.drop()
    [got] = await watcher.receive(1)
    assert (got.topic, got.payload) == ("status/rude", b"gone")
    assert await watcher.nothing_more()


async def test_a_second_connection_with_the_same_client_id_takes_over(device) -> None:  # type: ignore[no-untyped-def]
    first = device("same", V5)
    await first.connect()
    second = device("same", V5)
    assert await second.connect() == 0
    assert await first.wait_disconnected() == 0x8E  # session taken over


async def test_a_silent_device_is_dropped_after_one_and_a_half_keepalives(device) -> None:  # type: ignore[no-untyped-def]
    watcher = device("watcher")
    await watcher.connect()
    await watcher.subscribe("status/#", 1)
    silent = device("silent", keepalive=1, will=("status/silent", b"timed out", 0))
    await silent.connect()
    silent.client.loop_stop()  # no more PINGREQ: the node must notice within 1.5 s
    [got] = await watcher.receive(1, timeout=5)
    assert (got.topic, got.payload) == ("status/silent", b"timed out")


async def test_mqtt_over_tls_with_the_cluster_ca(
    inproc_nodes: InProcessNodes, tmp_path: Path, devices: list[Device]
) -> None:
    from federation.transport import server_ssl_context
    from plexus.certs import make_ca, make_node_cert

    tls = tmp_path / "tls"
    make_ca(tls)
    make_node_cert(tls, "us", ["127.0.0.1", "localhost"], tls)
    node = await inproc_nodes.start("us")
    assert node.gateway is not None
    context = server_ssl_context(tls / "us.crt", tls / "us.key")
    front = MqttFrontDoor(node.gateway, "127.0.0.1:0", context, "us")
    address = await front.start()
    try:
        secure = Device(address, "secure", ca=tls / "ca.crt")
        devices.append(secure)
        assert await secure.connect() == 0
        await secure.subscribe("t/#", 1)
        await secure.publish("t/1", b"over tls", 1)
        [got] = await secure.receive(1)
        assert got.payload == b"over tls"
    finally:
        await front.stop()


async def test_a_taken_port_is_refused_naming_the_address(door: MqttFrontDoor, node: Node) -> None:
    from plexus.errors import PlexusError

    assert node.gateway is not None
    again = MqttFrontDoor(node.gateway, door.address)
    with pytest.raises(PlexusError, match=door.address):
        await again.start()


@pytest.mark.parametrize("version", [V311, V5])
async def test_a_persistent_session_gets_what_was_published_while_it_was_away(
    device, version: int
) -> None:  # type: ignore[no-untyped-def]
    persistent = {"clean": False} if version == V311 else {"clean": False, "session_expiry": 3600}
    phone = device("phone", version, **persistent)
    assert await phone.connect() == 0
    assert await phone.subscribe("alerts/#", 1) == [1]
    await phone.disconnect()
    pub = device("pub", version)
    await pub.connect()
    for i in range(5):
        assert await pub.publish(f"alerts/{i}", b"%d" % i, 1) == 0
    await pub.publish("alerts/direct", b"not kept", 0)
    back = device("phone", version, **persistent)
    assert await back.connect() == 0
    assert back.session_present
    got = await back.receive(5)
    assert sorted(m.payload for m in got) == [b"0", b"1", b"2", b"3", b"4"]
    assert all(m.qos == 1 for m in got)
    assert await back.nothing_more()


async def test_a_persistent_session_gets_unacked_messages_again_with_dup(device) -> None:  # type: ignore[no-untyped-def]
    phone = device("phone", clean=False, auto_ack=False)
    await phone.connect()
    await phone.subscribe("alerts/#", 1)
    pub = device("pub")
    await pub.connect()
    await pub.publish("alerts/1", b"unacked", 1)
    [first] = await phone.receive(1)
    assert not first.dup
    phone.drop()  # never acked
    back = device("phone", clean=False)
    await back.connect()
    [again] = await back.receive(1)
    assert (again.payload, again.dup) == (b"unacked", True)


async def test_a_clean_session_ends_the_persistent_one_before_it(device, node: Node) -> None:  # type: ignore[no-untyped-def]
    phone = device("phone", clean=False)
    await phone.connect()
    await phone.subscribe("alerts/#", 1)
    await phone.disconnect()
    clean = device("phone", clean=True)
    await clean.connect()
    assert not clean.session_present
    assert not any(q.config.name.startswith("mqtt.") for q in node.gateway.queues.by_name.values())  # type: ignore[union-attr]


async def test_a_persistent_session_survives_a_node_restart(
    inproc_nodes: InProcessNodes, tmp_path: Path, key: bytes, devices: list[Device]
) -> None:
    node = await inproc_nodes.start("us", auth_key=tmp_path / "signing.key")
    secret = token(key, "phone", admin=True)
    assert node.gateway is not None
    front = MqttFrontDoor(node.gateway, "127.0.0.1:0")
    address = await front.start()
    phone = Device(address, "phone", clean=False, password=secret)
    devices.append(phone)
    await phone.connect()
    await phone.subscribe("alerts/#", 1)
    await phone.disconnect()
    pub = Device(address, "pub", password=secret)
    devices.append(pub)
    await pub.connect()
    await pub.publish("alerts/1", b"before restart", 1)
    await pub.disconnect()
    await front.stop()
    node = await inproc_nodes.restart(node)
    assert node.gateway is not None
    front = MqttFrontDoor(node.gateway, address)
    await front.start()
    try:
        back = Device(address, "phone", clean=False, password=secret)
        devices.append(back)
        await back.connect()
        assert back.session_present
        [got] = await back.receive(1)
        assert (got.topic, got.payload) == ("alerts/1", b"before restart")
        # Its subscription came back too: what is published now arrives without SUBSCRIBE.
        pub = Device(address, "pub", password=secret)
        devices.append(pub)
        await pub.connect()
        await pub.publish("alerts/2", b"after restart", 1)
        [got] = await back.receive(1)
        assert got.payload == b"after restart"
    finally:
        await front.stop()


async def raw_connect(address: str, version: ProtocolVersion, secret: str):  # type: ignore[no-untyped-def]
    """A bare socket after a CONNECT with `secret` as the password, and its decoder."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    hello = Connect("raw", protocol_level=version, username="raw", password=secret.encode())
    writer.write(encode(hello, version))
    decoder = Decoder(server=False, version=version)
    [connack] = decoder.feed(await reader.read(1024))
    assert connack.reason == ReasonCode.SUCCESS  # type: ignore[union-attr]
    return reader, writer, decoder


async def test_a_packet_larger_than_the_node_takes_ends_the_connection_saying_so(
    door: MqttFrontDoor, key: bytes
) -> None:
    reader, writer, decoder = await raw_connect(
        door.address, ProtocolVersion.V5, token(key, "raw", admin=True)
    )
    too_big = door.limits.maximum_packet_bytes + 1
    writer.write(encode(Publish("t", b"x" * too_big), ProtocolVersion.V5))
    data = await reader.read()  # until the node closes
    writer.close()
    [disconnect] = decoder.feed(data)
    assert isinstance(disconnect, Disconnect) and disconnect.reason == ReasonCode.PACKET_TOO_LARGE


async def test_garbage_ends_the_connection_and_the_node_serves_others(
    door: MqttFrontDoor, key: bytes, device
) -> None:  # type: ignore[no-untyped-def]
    reader, writer, _ = await raw_connect(
        door.address, ProtocolVersion.V3_1_1, token(key, "raw", admin=True)
    )
    writer.write(b"\xff\xff\xff\xff\xff")
    assert await reader.read() == b""  # 3.1.1: cut, nothing to say
    writer.close()
    fine = device("fine")
    assert await fine.connect() == 0


async def test_stopping_the_listener_disconnects_v5_clients_saying_why(
    node: Node, key: bytes, devices: list[Device]
) -> None:
    assert node.gateway is not None
    front = MqttFrontDoor(node.gateway, "127.0.0.1:0")
    address = await front.start()
    client = Device(address, "c", version=V5, password=token(key, "c", admin=True))
    devices.append(client)
    await client.connect()
    async with asyncio.timeout(2):
        await front.stop()
    assert await client.wait_disconnected() == 0x8B  # server shutting down


@pytest.mark.parametrize("version", [V311, V5])
async def test_a_retained_message_is_given_to_later_subscribers_until_cleared(
    device, version: int
) -> None:  # type: ignore[no-untyped-def]
    pub = device("pub", version)
    await pub.connect()
    await pub.publish("state/window", b"shut", 0, retain=True)
    # Acked in order: once this PUBACK is in, the QoS 0 one before it is kept too.
    assert await pub.publish("state/door", b"open", 1, retain=True) == 0
    late = device("late", version)
    await late.connect()
    await late.subscribe("state/#", 1)
    got = await late.receive(2)
    assert sorted((m.topic, m.payload, m.retain) for m in got) == [
        ("state/door", b"open", True),
        ("state/window", b"shut", True),
    ]
    await pub.publish("state/door", b"", 1, retain=True)  # clears it (and reaches `late`)
    [cleared] = await late.receive(1)
    assert (cleared.payload, cleared.retain) == (b"", False)
    later = device("later", version)
    await later.connect()
    await later.subscribe("state/#", 1)
    [only] = await later.receive(1)
    assert only.topic == "state/window"
    assert await later.nothing_more()


async def test_a_delayed_will_waits_and_a_return_within_the_delay_cancels_it(device) -> None:  # type: ignore[no-untyped-def]
    watcher = device("watcher")
    await watcher.connect()
    await watcher.subscribe("status/#", 1)
    back_soon = device("back-soon", V5, will=("status/back-soon", b"gone", 1), will_delay=1)
    await back_soon.connect()
    back_soon.drop()
    again = device("back-soon", V5)
    await again.connect()
    gone = device("gone", V5, will=("status/gone", b"gone", 1), will_delay=1)
    await gone.connect()
    gone.drop()
    [got] = await watcher.receive(1, timeout=5)
    assert got.topic == "status/gone"  # not status/back-soon: it came back in time
    assert await watcher.nothing_more(within=1.0)


async def test_a_v5_session_ends_after_its_expiry_interval_away(device, node: Node) -> None:  # type: ignore[no-untyped-def]
    phone = device("phone", V5, clean=False, session_expiry=1)
    await phone.connect()
    await phone.subscribe("alerts/#", 1)
    assert node.gateway is not None
    queues = node.gateway.queues
    assert "mqtt.c.phone" in queues.by_name
    await phone.disconnect()
    await eventually(lambda: "mqtt.c.phone" not in queues.by_name, 5, "the session's queue to go")
    back = device("phone", V5, clean=False, session_expiry=1)
    await back.connect()
    assert not back.session_present


async def test_a_revoked_token_ends_the_mqtt_connection(
    door: MqttFrontDoor, node: Node, key: bytes, devices: list[Device]
) -> None:
    async with await Client.connect(node.address, token=token(key, "root", admin=True)) as admin:
        made = await admin.create_token("temp", subscribe=["s/>"])
        screen = Device(door.address, "screen", version=V5, password=made["token"])
        devices.append(screen)
        assert await screen.connect() == 0
        await screen.subscribe("s/#", 0)
        await admin.revoke_token("temp")
        assert await screen.wait_disconnected() == 0x87


async def test_a_client_past_the_connection_limit_is_told_the_server_is_busy(
    node: Node, key: bytes, devices: list[Device]
) -> None:
    assert node.gateway is not None
    front = MqttFrontDoor(node.gateway, "127.0.0.1:0", max_connections=1)
    address = await front.start()
    try:
        secret = token(key, "d", admin=True)
        first = Device(address, "first", version=V5, password=secret)
        second = Device(address, "second", version=V5, password=secret)
        devices += [first, second]
        assert await first.connect() == 0
        assert await second.connect() == 0x89  # server busy
    finally:
        await front.stop()


async def test_mqtt_3_1_is_refused_as_an_unsupported_version(door: MqttFrontDoor, devices) -> None:  # type: ignore[no-untyped-def]
    import paho.mqtt.client as mqtt

    old = Device(door.address, "old", version=mqtt.MQTTv31)
    devices.append(old)
    # paho reports 3.1.1's return code 1 as the v5 reason 0x84.
    assert await old.connect() == 0x84


async def test_packets_sent_right_after_connect_without_waiting_for_connack_are_served(
    door: MqttFrontDoor, key: bytes
) -> None:
    host, _, port = door.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    v5 = ProtocolVersion.V5
    secret = token(key, "eager", admin=True).encode()
    writer.write(
        encode(Connect("eager", protocol_level=v5, username="eager", password=secret), v5)
        + encode(Subscribe(1, (Subscription("echo/#", 1),)), v5)
        + encode(Publish("echo/1", b"hi", qos=1, packet_id=2), v5)
    )
    decoder = Decoder(server=False, version=v5)
    got: list[object] = []
    async with asyncio.timeout(10):
        while len(got) < 4:  # CONNACK, SUBACK, PUBACK and the echo, in some order after CONNACK
            got += decoder.feed(await reader.read(4096))
    writer.close()
    assert isinstance(got[0], Connack) and got[0].reason == ReasonCode.SUCCESS
    assert Suback(1, (ReasonCode.GRANTED_QOS_1,)) in got and Puback(2) in got
    [echo] = [p for p in got if isinstance(p, Publish)]
    assert (echo.topic, echo.payload) == ("echo/1", b"hi")


async def test_a_client_that_does_not_read_loses_direct_events_counted_and_blocks_nobody(
    inproc_nodes: InProcessNodes, devices: list[Device]
) -> None:
    node = await inproc_nodes.start("us", subscriber_buffer_events=100)
    assert node.gateway is not None
    front = MqttFrontDoor(node.gateway, "127.0.0.1:0")
    address = await front.start()
    try:
        host, _, port = address.rpartition(":")
        _, writer = await asyncio.open_connection(host, int(port))
        v311 = ProtocolVersion.V3_1_1
        writer.write(
            encode(Connect("stuck", protocol_level=v311, username="stuck"), v311)
            + encode(Subscribe(1, (Subscription("flood/#", 0),)), v311)
        )
        await eventually(lambda: front.session_of("stuck") is not None, 5, "stuck subscribed")
        await eventually(lambda: bool(front.session_of("stuck").patterns()), 5, "its SUBACK")  # type: ignore[union-attr]
        # From here on it reads nothing: the node's writes to it back up.
        pub = Device(address, "pub")
        devices.append(pub)
        await pub.connect()
        payload = b"x" * 10_000
        for _ in range(2_000):  # 20 MB, far beyond what the socket buffers hold
            await pub.publish("flood/x", payload, 0)
        assert await pub.publish("flood/last", b"", 1) == 0  # the publisher was never held

        async def counted() -> bool:
            async with await Client.connect(node.address) as admin:
                info = {c.name: c for c in await admin.clients()}
            return "stuck" in info and info["stuck"].events_discarded > 0

        await eventually(counted, 20, "the stuck client's discards to be counted")
        writer.close()
    finally:
        await front.stop()
