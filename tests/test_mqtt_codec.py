"""The sans-IO MQTT codec: round trips, paho-mqtt as the independent other side, bad bytes.

paho-mqtt's `Client` is driven through a fake socket (the outermost edge): what
it writes is fed to our `Decoder` as a broker would read it, and what our
encoder writes for a broker is read by paho, whose callbacks must fire with
the same values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from paho.mqtt import client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from node.mqtt.codec import Decoder, encode
from node.mqtt.packets import (
    EMPTY_PROPERTIES,
    REASONS_ALLOWED,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Properties,
    ProtocolError,
    ProtocolVersion,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    connect_return_code,
)
from tests.harness import free_port
from tests.mqtt_devices import mosquitto_tool

pytestmark = pytest.mark.timeout(120)

V4, V5 = ProtocolVersion.V3_1_1, ProtocolVersion.V5
VERSIONS = [V4, V5]

# --------------------------------------------------------------------------
# paho at the edge: a Client whose socket is two byte buffers
# --------------------------------------------------------------------------


class FakeSocket:
    """What paho sends, and what it will receive; no network."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.inbound = bytearray()

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)

    def recv(self, size: int) -> bytes:
        if not self.inbound:
            raise BlockingIOError
        chunk = bytes(self.inbound[:size])
        del self.inbound[:size]
        return chunk

    def close(self) -> None:
        pass

    def take_sent(self) -> bytes:
        data = bytes(self.sent)
        self.sent.clear()
        return data


class PahoPeer:
    """A paho Client wired to a FakeSocket, recording the callbacks it fires."""

    def __init__(self, version: ProtocolVersion, client_id: str = "paho") -> None:
        self.version = version
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if version == V5 else paho.MQTTv311,
        )
        self.wire = FakeSocket()
        self.client._sock = self.wire  # type: ignore[assignment]
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        for name in ("connect", "subscribe", "unsubscribe", "message", "publish", "disconnect"):
            setattr(self.client, f"on_{name}", self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(client: paho.Client, userdata: Any, *args: Any) -> None:
            self.calls.append((name, args))

        return record

    def connected(self) -> None:
        """As if CONNECT went out and CONNACK came back: publish and friends now write."""
        self.client._state = paho._ConnectionState.MQTT_CS_CONNECTED

    def receive(self, data: bytes, expect: paho.MQTTErrorCode = paho.MQTT_ERR_SUCCESS) -> None:
        """Give paho `data` from the broker and let it read all of it."""
        self.wire.inbound += data
        while self.wire.inbound:
            rc = self.client._packet_read()
            assert rc == expect, f"paho read what we sent as {rc!r}"


def paho_packets(peer: PahoPeer, version: ProtocolVersion) -> list[Packet]:
    """Decode what paho sent, as a broker would, after a CONNECT of this version."""
    decoder = Decoder()
    decoder.feed(encode(Connect("paho", version), version))
    return decoder.feed(peer.wire.take_sent())


# Our property names -> paho's (which it spells from the spec's table).
PAHO_NAMES = {
    "payload_format_indicator": "PayloadFormatIndicator",
    "message_expiry_interval": "MessageExpiryInterval",
    "content_type": "ContentType",
    "response_topic": "ResponseTopic",
    "correlation_data": "CorrelationData",
    "subscription_identifiers": "SubscriptionIdentifier",
    "session_expiry_interval": "SessionExpiryInterval",
    "assigned_client_identifier": "AssignedClientIdentifier",
    "server_keep_alive": "ServerKeepAlive",
    "authentication_method": "AuthenticationMethod",
    "authentication_data": "AuthenticationData",
    "request_problem_information": "RequestProblemInformation",
    "will_delay_interval": "WillDelayInterval",
    "request_response_information": "RequestResponseInformation",
    "response_information": "ResponseInformation",
    "server_reference": "ServerReference",
    "reason_string": "ReasonString",
    "receive_maximum": "ReceiveMaximum",
    "topic_alias_maximum": "TopicAliasMaximum",
    "topic_alias": "TopicAlias",
    "maximum_qos": "MaximumQoS",
    "retain_available": "RetainAvailable",
    "user_properties": "UserProperty",
    "maximum_packet_size": "MaximumPacketSize",
    "wildcard_subscription_available": "WildcardSubscriptionAvailable",
    "subscription_identifier_available": "SubscriptionIdentifierAvailable",
    "shared_subscription_available": "SharedSubscriptionAvailable",
}


def to_paho(properties: Properties, packet_type: int) -> PahoProperties | None:
    if properties == EMPTY_PROPERTIES:
        return None
    result = PahoProperties(packet_type)
    for name, paho_name in PAHO_NAMES.items():
        value = getattr(properties, name)
        if value is not None and value != ():
            setattr(result, paho_name, list(value) if isinstance(value, tuple) else value)
    return result


def from_paho(properties: PahoProperties | None) -> Properties:
    if properties is None:
        return EMPTY_PROPERTIES
    values: dict[str, Any] = {}
    for name, paho_name in PAHO_NAMES.items():
        if not hasattr(properties, paho_name):
            continue
        value = getattr(properties, paho_name)
        if name == "user_properties":
            value = tuple(tuple(pair) for pair in value)
        elif isinstance(value, list):  # paho's list for a repeatable property
            value = tuple(value)
        values[name] = value
    return Properties(**values)


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
TOPICS = TEXT.map(lambda t: t.replace("+", "p").replace("#", "h")).filter(bool)
PAYLOADS = st.binary(max_size=300)
U16 = st.integers(1, 0xFFFF)
U32 = st.integers(0, 0xFFFF_FFFF)
FLAG = st.integers(0, 1)
PAIRS = st.lists(st.tuples(TEXT, TEXT), max_size=3).map(tuple)


def properties_of(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Properties]:
    """Properties with any subset of `fields` set."""
    return st.fixed_dictionaries({}, optional=fields).map(lambda d: Properties(**d))


PUBLISH_PROPERTIES = properties_of(
    payload_format_indicator=FLAG,
    message_expiry_interval=U32,
    content_type=TEXT,
    response_topic=TOPICS,
    correlation_data=st.binary(max_size=20),
    topic_alias=U16,
    user_properties=PAIRS,
)
# What a broker's PUBLISH carries to a subscriber; no topic alias, as paho keeps no alias table.
SERVER_PUBLISH_PROPERTIES = properties_of(
    payload_format_indicator=FLAG,
    message_expiry_interval=U32,
    content_type=TEXT,
    response_topic=TOPICS,
    correlation_data=st.binary(max_size=20),
    subscription_identifiers=st.lists(st.integers(1, 268_435_455), max_size=2).map(tuple),
    user_properties=PAIRS,
)
WILL_PROPERTIES = properties_of(
    payload_format_indicator=FLAG,
    message_expiry_interval=U32,
    content_type=TEXT,
    response_topic=TOPICS,
    correlation_data=st.binary(max_size=20),
    will_delay_interval=U32,
    user_properties=PAIRS,
)
CONNECT_PROPERTIES = properties_of(
    session_expiry_interval=U32,
    receive_maximum=U16,
    maximum_packet_size=st.integers(1, 268_435_455),
    topic_alias_maximum=st.integers(0, 0xFFFF),
    request_response_information=FLAG,
    request_problem_information=FLAG,
    authentication_method=TEXT,
    authentication_data=st.binary(max_size=20),
    user_properties=PAIRS,
).filter(lambda p: p.authentication_data is None or p.authentication_method is not None)
CONNACK_PROPERTIES = properties_of(
    session_expiry_interval=U32,
    receive_maximum=U16,
    maximum_qos=FLAG,
    retain_available=FLAG,
    maximum_packet_size=st.integers(1, 268_435_455),
    assigned_client_identifier=TEXT,
    topic_alias_maximum=st.integers(0, 0xFFFF),
    reason_string=TEXT,
    wildcard_subscription_available=FLAG,
    subscription_identifier_available=FLAG,
    shared_subscription_available=FLAG,
    response_information=TEXT,
    server_reference=TEXT,
    user_properties=PAIRS,
)
ACK_PROPERTIES = properties_of(reason_string=TEXT, user_properties=PAIRS)


def _no_properties_in_v4(version: ProtocolVersion, properties: Properties) -> Properties:
    return properties if version == V5 else EMPTY_PROPERTIES


# --------------------------------------------------------------------------
# Client packets: paho encodes, we decode
# --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    version=st.sampled_from(VERSIONS),
    client_id=TEXT,
    clean=st.booleans(),
    keepalive=st.integers(0, 0xFFFF),
    login=st.none() | st.tuples(TEXT, st.none() | st.binary(max_size=20)),
    will=st.none() | st.tuples(TOPICS, PAYLOADS, st.integers(0, 2), st.booleans(), WILL_PROPERTIES),
    properties=CONNECT_PROPERTIES,
)
def test_connect_written_by_paho_decodes_to_the_same_connect(
    version: ProtocolVersion,
    client_id: str,
    clean: bool,
    keepalive: int,
    login: tuple[str, bytes | None] | None,
    will: tuple[str, bytes, int, bool, Properties] | None,
    properties: Properties,
) -> None:
    peer = PahoPeer(version, client_id)
    client = peer.client
    client._clean_session = clean
    client._clean_start = clean
    properties = _no_properties_in_v4(version, properties)
    client._connect_properties = to_paho(properties, PacketTypes.CONNECT)
    expected_will = None
    if will is not None:
        topic, payload, qos, retain, will_properties = will
        will_properties = _no_properties_in_v4(version, will_properties)
        client.will_set(
            topic, payload, qos, retain, to_paho(will_properties, PacketTypes.WILLMESSAGE)
        )
        expected_will = Will(topic, payload, qos, retain, will_properties)
    username = password = None
    if login is not None:
        username, password = login
        client.username_pw_set(username, password)
    client._send_connect(keepalive)

    decoder = Decoder()
    assert decoder.feed(peer.wire.take_sent()) == [
        Connect(client_id, version, clean, keepalive, username, password, expected_will, properties)
    ]
    assert decoder.version == version


@settings(max_examples=150, deadline=None)
@given(
    version=st.sampled_from(VERSIONS),
    topic=TOPICS,
    payload=PAYLOADS,
    qos=st.integers(0, 2),
    retain=st.booleans(),
    properties=PUBLISH_PROPERTIES,
)
def test_publish_written_by_paho_decodes_to_the_same_publish(
    version: ProtocolVersion,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    properties: Properties,
) -> None:
    peer = PahoPeer(version)
    peer.connected()
    properties = _no_properties_in_v4(version, properties)
    info = peer.client.publish(
        topic, payload, qos, retain, to_paho(properties, PacketTypes.PUBLISH)
    )
    packet_id = info.mid if qos else None
    assert paho_packets(peer, version) == [
        Publish(topic, payload, qos, retain, False, packet_id, properties)
    ]


SUBSCRIPTIONS = st.lists(
    st.tuples(TOPICS, st.integers(0, 2), st.booleans(), st.booleans(), st.integers(0, 2)),
    min_size=1,
    max_size=4,
)


@settings(max_examples=100, deadline=None)
@given(
    version=st.sampled_from(VERSIONS),
    subscriptions=SUBSCRIPTIONS,
    identifier=st.none() | st.integers(1, 268_435_455),
    pairs=PAIRS,
)
def test_subscribe_and_unsubscribe_written_by_paho_decode_with_their_options(
    version: ProtocolVersion,
    subscriptions: list[tuple[str, int, bool, bool, int]],
    identifier: int | None,
    pairs: tuple[tuple[str, str], ...],
) -> None:
    peer = PahoPeer(version)
    peer.connected()
    if version == V5:
        properties = Properties(
            subscription_identifiers=() if identifier is None else (identifier,),
            user_properties=pairs,
        )
        wanted = [Subscription(*sub) for sub in subscriptions]
        _, sub_mid = peer.client.subscribe(
            [(f, SubscribeOptions(q, nl, rap, rh)) for f, q, nl, rap, rh in subscriptions],
            properties=to_paho(properties, PacketTypes.SUBSCRIBE),
        )
        unsubscribe_properties = Properties(user_properties=pairs)
    else:
        properties = unsubscribe_properties = EMPTY_PROPERTIES
        wanted = [Subscription(f, q) for f, q, *_ in subscriptions]
        _, sub_mid = peer.client.subscribe([(f, q) for f, q, *_ in subscriptions])
    filters = [f for f, *_ in subscriptions]
    _, unsub_mid = peer.client.unsubscribe(
        filters, properties=to_paho(unsubscribe_properties, PacketTypes.UNSUBSCRIBE)
    )
    assert sub_mid is not None and unsub_mid is not None
    assert paho_packets(peer, version) == [
        Subscribe(sub_mid, tuple(wanted), properties),
        Unsubscribe(unsub_mid, tuple(filters), unsubscribe_properties),
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_acks_pings_and_disconnect_written_by_paho_decode(version: ProtocolVersion) -> None:
    peer = PahoPeer(version)
    peer.connected()
    client = peer.client
    client._send_puback(1)
    client._send_pubrec(2)
    client._send_pubrel(3)
    client._send_pubcomp(65535)
    client._send_pingreq()
    if version == V5:
        client.disconnect(
            PahoReasonCode(PacketTypes.DISCONNECT, identifier=0x04),
            to_paho(Properties(session_expiry_interval=30), PacketTypes.DISCONNECT),
        )
        disconnect = Disconnect(
            ReasonCode.DISCONNECT_WITH_WILL_MESSAGE, Properties(session_expiry_interval=30)
        )
    else:
        client.disconnect()
        disconnect = Disconnect()
    assert paho_packets(peer, version) == [
        Puback(1),
        Pubrec(2),
        Pubrel(3),
        Pubcomp(65535),
        Pingreq(),
        disconnect,
    ]


# --------------------------------------------------------------------------
# Server packets: we encode, paho decodes and fires its callbacks
# --------------------------------------------------------------------------

# 0x99 (will payload format invalid) is a CONNACK reason in the spec (3.2.2.2), not in paho.
CONNACK_REASONS = sorted(REASONS_ALLOWED[PacketType.CONNACK] - {ReasonCode.PAYLOAD_FORMAT_INVALID})


@settings(max_examples=100, deadline=None)
@given(
    version=st.sampled_from(VERSIONS),
    session_present=st.booleans(),
    reason=st.sampled_from(CONNACK_REASONS),
    properties=CONNACK_PROPERTIES,
)
def test_connack_we_write_reaches_paho_on_connect(
    version: ProtocolVersion, session_present: bool, reason: ReasonCode, properties: Properties
) -> None:
    # paho answers a 3.1.1 return code 1 by retrying in MQTT 3.1 (it reconnects).
    assume(version == V5 or connect_return_code(reason) != 1)
    peer = PahoPeer(version)
    peer.client._send_connect(60)
    properties = _no_properties_in_v4(version, properties)
    session_present = session_present and reason == ReasonCode.SUCCESS
    # paho's return for the code on the wire: 0 taken, 1..5 refused, any other "protocol".
    code = reason if version == V5 else connect_return_code(reason)
    refused = (
        paho.MQTT_ERR_SUCCESS
        if code == 0
        else paho.MQTT_ERR_CONN_REFUSED
        if code < 6
        else paho.MQTT_ERR_PROTOCOL
    )
    peer.receive(encode(Connack(session_present, reason, properties), version), refused)
    [(name, (flags, paho_reason, paho_properties))] = peer.calls
    assert name == "connect"
    assert flags.session_present is session_present
    if version == V5:
        assert paho_reason.value == reason
        assert from_paho(paho_properties) == properties
    else:
        # 3.1.1 carries the return code; paho reads it back as a v5 reason.
        assert (
            paho_reason.value
            == {0: 0, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}[connect_return_code(reason)]
        )


SUBACK_REASONS = sorted(REASONS_ALLOWED[PacketType.SUBACK])


@settings(max_examples=60, deadline=None)
@given(
    version=st.sampled_from(VERSIONS),
    reasons=st.lists(st.sampled_from(SUBACK_REASONS), min_size=1, max_size=4),
    properties=ACK_PROPERTIES,
)
def test_suback_and_unsuback_we_write_reach_paho(
    version: ProtocolVersion, reasons: list[ReasonCode], properties: Properties
) -> None:
    peer = PahoPeer(version)
    peer.connected()
    properties = _no_properties_in_v4(version, properties)
    _, sub_mid = peer.client.subscribe([(f"t/{i}", 1) for i in range(len(reasons))])
    _, unsub_mid = peer.client.unsubscribe(["t/0"])
    assert sub_mid is not None and unsub_mid is not None
    unsuback_reasons = (ReasonCode.NO_SUBSCRIPTION_EXISTED,) if version == V5 else ()
    peer.receive(
        encode(Suback(sub_mid, tuple(reasons), properties), version)
        + encode(Unsuback(unsub_mid, unsuback_reasons, properties), version)
    )
    assert [name for name, _ in peer.calls] == ["subscribe", "unsubscribe"]
    (_, sub), (_, unsub) = peer.calls
    assert sub[0] == sub_mid
    expected = [r if version == V5 or r < 0x80 else 0x80 for r in reasons]
    assert [code.value for code in sub[1]] == expected
    assert unsub[0] == unsub_mid
    if version == V5:
        assert from_paho(sub[2]) == properties
        assert [code.value for code in unsub[1]] == [0x11]
        assert from_paho(unsub[2]) == properties


@settings(max_examples=100, deadline=None)
@given(
    version=st.sampled_from(VERSIONS),
    topic=TOPICS,
    payload=PAYLOADS,
    qos=st.integers(0, 2),
    retain=st.booleans(),
    dup=st.booleans(),
    packet_id=U16,
    properties=SERVER_PUBLISH_PROPERTIES,
)
def test_publish_we_write_reaches_paho_on_message_and_paho_acknowledges(
    version: ProtocolVersion,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int,
    properties: Properties,
) -> None:
    peer = PahoPeer(version)
    peer.connected()
    properties = _no_properties_in_v4(version, properties)
    dup = dup and qos > 0
    publish = Publish(topic, payload, qos, retain, dup, packet_id if qos else None, properties)
    peer.receive(encode(publish, version))
    if qos == 2:
        # paho answers PUBREC, then takes the message at our PUBREL.
        assert paho_packets(peer, version) == [Pubrec(packet_id)]
        peer.receive(encode(Pubrel(packet_id), version))
        assert paho_packets(peer, version) == [Pubcomp(packet_id)]
    elif qos == 1:
        assert paho_packets(peer, version) == [Puback(packet_id)]
    [(name, (message,))] = peer.calls
    assert name == "message"
    assert (message.topic, message.payload, message.qos) == (topic, payload, qos)
    assert (message.retain, message.dup) == (retain, dup)
    if qos:
        assert message.mid == packet_id
    if version == V5:
        assert from_paho(message.properties) == properties


@pytest.mark.parametrize("version", VERSIONS)
def test_acks_we_write_complete_pahos_publishes(version: ProtocolVersion) -> None:
    peer = PahoPeer(version)
    peer.connected()
    one = peer.client.publish("a/1", b"x", qos=1)
    two = peer.client.publish("a/2", b"y", qos=2)
    peer.wire.take_sent()
    reason = ReasonCode.NO_MATCHING_SUBSCRIBERS if version == V5 else ReasonCode.SUCCESS
    properties = Properties(reason_string="nobody") if version == V5 else EMPTY_PROPERTIES
    peer.receive(encode(Puback(one.mid, reason, properties), version))
    peer.receive(encode(Pubrec(two.mid), version))
    assert paho_packets(peer, version) == [Pubrel(two.mid)]
    peer.receive(encode(Pubcomp(two.mid), version))
    assert [(name, args[0], args[1].value) for name, args in peer.calls] == [
        ("publish", one.mid, reason),
        ("publish", two.mid, 0),
    ]
    assert one.is_published() and two.is_published()


def test_pingresp_and_disconnect_we_write_reach_paho() -> None:
    peer = PahoPeer(V5)
    peer.connected()
    peer.client._ping_t = 1.0  # a PINGREQ outstanding
    peer.receive(encode(Pingresp(), V5))
    assert peer.client._ping_t == 0
    properties = Properties(reason_string="bye", server_reference="other:1883")
    peer.wire.inbound += encode(Disconnect(ReasonCode.SERVER_SHUTTING_DOWN, properties), V5)
    peer.client._packet_read()
    [(name, (_flags, reason, paho_properties))] = peer.calls
    assert name == "disconnect"
    assert reason.value == ReasonCode.SERVER_SHUTTING_DOWN
    assert from_paho(paho_properties) == properties


# --------------------------------------------------------------------------
# Our own round trips, every packet type, both versions
# --------------------------------------------------------------------------

FULL = Properties(user_properties=(("k", "v"), ("k", "v2")), reason_string="why")
CLIENT_PACKETS: dict[ProtocolVersion, list[Packet]] = {
    V4: [
        Publish("a/b", b"\x00\xff" * 10, 1, True, True, 7),
        Publish("/", b""),
        Puback(1),
        Pubrec(2),
        Pubrel(3),
        Pubcomp(4),
        Subscribe(5, (Subscription("a/#", 2), Subscription("+/x", 0))),
        Unsubscribe(6, ("a/#", "+/x")),
        Pingreq(),
        Disconnect(),
    ],
    V5: [
        Publish(
            "",
            b"p",
            2,
            packet_id=9,
            properties=Properties(topic_alias=3, content_type="text/plain", correlation_data=b"c"),
        ),
        Puback(1, ReasonCode.QUOTA_EXCEEDED, FULL),
        Pubrec(2, ReasonCode.NOT_AUTHORIZED),
        Pubrel(3, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND, FULL),
        Pubcomp(4, ReasonCode.SUCCESS, FULL),
        Subscribe(
            5,
            (Subscription("a/#", 1, True, True, 2), Subscription("b", 0, retain_handling=1)),
            Properties(subscription_identifiers=(268_435_455,)),
        ),
        Unsubscribe(6, ("a/#",), Properties(user_properties=(("u", "v"),))),
        Pingreq(),
        Disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE, Properties(session_expiry_interval=0)),
        Auth(ReasonCode.CONTINUE_AUTHENTICATION, Properties(authentication_method="SCRAM")),
    ],
}
SERVER_PACKETS: dict[ProtocolVersion, list[Packet]] = {
    V4: [
        Connack(True, ReasonCode.SUCCESS),
        Connack(False, ReasonCode.NOT_AUTHORIZED),
        Publish("x/y", b"z", 2, False, False, 65535),
        Puback(1),
        Pubrec(1),
        Pubrel(1),
        Pubcomp(1),
        Suback(
            8, (ReasonCode.GRANTED_QOS_0, ReasonCode.GRANTED_QOS_2, ReasonCode.UNSPECIFIED_ERROR)
        ),
        Unsuback(9),
        Pingresp(),
    ],
    V5: [
        Connack(
            True,
            ReasonCode.SUCCESS,
            Properties(
                assigned_client_identifier="auto-1",
                maximum_qos=1,
                retain_available=1,
                receive_maximum=100,
                topic_alias_maximum=10,
                maximum_packet_size=1 << 20,
                server_keep_alive=30,
                shared_subscription_available=0,
            ),
        ),
        Connack(False, ReasonCode.BAD_USER_NAME_OR_PASSWORD, Properties(reason_string="expired")),
        Publish("x/y", b"z", 1, True, True, 1, Properties(subscription_identifiers=(1, 2, 3))),
        Suback(8, (ReasonCode.GRANTED_QOS_1, ReasonCode.TOPIC_FILTER_INVALID), FULL),
        Unsuback(9, (ReasonCode.SUCCESS, ReasonCode.NO_SUBSCRIPTION_EXISTED), FULL),
        Pingresp(),
        Disconnect(ReasonCode.SESSION_TAKEN_OVER, Properties(reason_string="taken over")),
        Auth(ReasonCode.SUCCESS, Properties(authentication_data=b"\x01")),
    ],
}


def client_stream(version: ProtocolVersion) -> tuple[bytes, list[Packet]]:
    connect = Connect(
        "dev-1",
        version,
        False,
        30,
        "user",
        b"token",
        Will("dev/1/gone", b"offline", 1, True),
    )
    packets = [connect, *CLIENT_PACKETS[version]]
    return b"".join(encode(p, version) for p in packets), packets


@pytest.mark.parametrize("version", VERSIONS)
def test_every_client_packet_round_trips(version: ProtocolVersion) -> None:
    data, packets = client_stream(version)
    assert Decoder().feed(data) == packets


@pytest.mark.parametrize("version", VERSIONS)
def test_every_server_packet_round_trips(version: ProtocolVersion) -> None:
    packets = SERVER_PACKETS[version]
    data = b"".join(encode(p, version) for p in packets)
    assert Decoder(server=False, version=version).feed(data) == packets


@pytest.mark.parametrize("version", VERSIONS)
def test_bytes_split_at_every_boundary_decode_the_same(version: ProtocolVersion) -> None:
    data, packets = client_stream(version)
    for cut in range(len(data) + 1):
        decoder = Decoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == packets, f"cut at {cut}"
        assert decoder.buffered == 0
    decoder = Decoder()
    one_by_one = [packet for i in range(len(data)) for packet in decoder.feed(data[i : i + 1])]
    assert one_by_one == packets


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([127, 128, 16_383, 16_384, 70_000]))
def test_a_publish_whose_length_varint_is_split_decodes(seed: int, size: int) -> None:
    # Remaining lengths of 1, 2 and 3 varint bytes, cut inside the varint too.
    publish = Publish("t", bytes(size))
    data = encode(Connect("c", V4), V4) + encode(publish, V4)
    cut = 14 + seed % 6
    decoder = Decoder()
    assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == [Connect("c", V4), publish]


# --------------------------------------------------------------------------
# Bad bytes: one ProtocolError, its v5 reason, a message naming the problem
# --------------------------------------------------------------------------


def frame(first: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes((first, len(body))) + body


def s(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


C4 = encode(Connect("c", V4), V4)
C5 = encode(Connect("c", V5), V5)
R = ReasonCode

BAD = [
    # (name, bytes, reason, words in the message)
    (
        "varint",
        C4 + b"\x30\xff\xff\xff\xff\x01",
        R.MALFORMED_PACKET,
        "remaining length varint longer than 4 bytes",
    ),
    (
        "pubrel flags",
        C4 + frame(0x60, b"\x00\x01"),
        R.MALFORMED_PACKET,
        "reserved flag bits 0x0 in PUBREL must be 0x2",
    ),
    (
        "subscribe flags",
        C4 + frame(0x80, b"\x00\x01" + s(b"a") + b"\x00"),
        R.MALFORMED_PACKET,
        "reserved flag bits 0x0 in SUBSCRIBE must be 0x2",
    ),
    ("qos 3", C4 + frame(0x36, s(b"a") + b"\x00\x01"), R.MALFORMED_PACKET, "QoS 3 in PUBLISH"),
    (
        "dup on qos 0",
        C4 + frame(0x38, s(b"a")),
        R.MALFORMED_PACKET,
        "DUP flag set on a QoS 0 PUBLISH",
    ),
    (
        "wildcard topic",
        C4 + frame(0x30, s(b"a/+")),
        R.TOPIC_NAME_INVALID,
        "topic name 'a/+' contains a wildcard",
    ),
    (
        "hash topic",
        C5 + frame(0x30, s(b"a/#") + b"\x00"),
        R.TOPIC_NAME_INVALID,
        "contains a wildcard",
    ),
    (
        "utf-8 topic",
        C4 + frame(0x30, s(b"\xff\xfe")),
        R.MALFORMED_PACKET,
        "invalid UTF-8 in topic name",
    ),
    (
        "surrogate topic",
        C4 + frame(0x30, s(b"\xed\xa0\x80")),
        R.MALFORMED_PACKET,
        "invalid UTF-8 in topic name",
    ),
    ("nul topic", C4 + frame(0x30, s(b"a\x00b")), R.MALFORMED_PACKET, "U+0000 in topic name"),
    (
        "nul filter",
        C4 + frame(0x82, b"\x00\x01" + s(b"a\x00") + b"\x00"),
        R.MALFORMED_PACKET,
        "U+0000 in topic filter",
    ),
    ("empty topic", C4 + frame(0x30, s(b"")), R.PROTOCOL_ERROR, "empty topic name"),
    (
        "empty topic no alias",
        C5 + frame(0x30, s(b"") + b"\x00"),
        R.PROTOCOL_ERROR,
        "empty topic name and no topic alias",
    ),
    (
        "publish id 0",
        C4 + frame(0x32, s(b"a") + b"\x00\x00"),
        R.PROTOCOL_ERROR,
        "packet identifier 0 in a QoS 1 PUBLISH",
    ),
    (
        "puback id 0",
        C4 + frame(0x40, b"\x00\x00"),
        R.PROTOCOL_ERROR,
        "packet identifier 0 in PUBACK",
    ),
    (
        "no filter",
        C4 + frame(0x82, b"\x00\x01"),
        R.PROTOCOL_ERROR,
        "SUBSCRIBE with no topic filter",
    ),
    (
        "no unsubscribe filter",
        C5 + frame(0xA2, b"\x00\x01\x00"),
        R.PROTOCOL_ERROR,
        "UNSUBSCRIBE with no topic filter",
    ),
    (
        "options v4",
        C4 + frame(0x82, b"\x00\x01" + s(b"a") + b"\x04"),
        R.MALFORMED_PACKET,
        "reserved bits 0x04 set in the subscription options of 'a'",
    ),
    (
        "options v5",
        C5 + frame(0x82, b"\x00\x01\x00" + s(b"a") + b"\x40"),
        R.MALFORMED_PACKET,
        "reserved bits 0x40",
    ),
    (
        "subscribe qos 3",
        C4 + frame(0x82, b"\x00\x01" + s(b"a") + b"\x03"),
        R.MALFORMED_PACKET,
        "QoS 3 in SUBSCRIBE for 'a'",
    ),
    (
        "retain handling 3",
        C5 + frame(0x82, b"\x00\x01\x00" + s(b"a") + b"\x30"),
        R.PROTOCOL_ERROR,
        "retain handling 3",
    ),
    (
        "first not connect",
        frame(0x30, s(b"a")),
        R.PROTOCOL_ERROR,
        "the first packet must be CONNECT, got PUBLISH",
    ),
    ("second connect", C4 + C4, R.PROTOCOL_ERROR, "a second CONNECT"),
    (
        "mqtt 3.1",
        frame(0x10, s(b"MQIsdp") + b"\x03\x02\x00\x3c" + s(b"c")),
        R.UNSUPPORTED_PROTOCOL_VERSION,
        "MQTT 3.1 (MQIsdp, level 3) is not supported",
    ),
    (
        "level 6",
        frame(0x10, s(b"MQTT") + b"\x06\x02\x00\x3c" + s(b"c")),
        R.UNSUPPORTED_PROTOCOL_VERSION,
        "protocol level 6 is not supported",
    ),
    (
        "protocol name",
        frame(0x10, s(b"HTTP") + b"\x04\x02\x00\x3c" + s(b"c")),
        R.UNSUPPORTED_PROTOCOL_VERSION,
        "protocol name 'HTTP'",
    ),
    (
        "connect reserved flag",
        frame(0x10, s(b"MQTT") + b"\x04\x03\x00\x3c" + s(b"c")),
        R.MALFORMED_PACKET,
        "reserved connect flag (bit 0)",
    ),
    (
        "will qos 3",
        frame(0x10, s(b"MQTT") + b"\x04\x1e\x00\x3c" + s(b"c") + s(b"w") + s(b"")),
        R.MALFORMED_PACKET,
        "will QoS 3",
    ),
    (
        "will qos without will",
        frame(0x10, s(b"MQTT") + b"\x04\x0a\x00\x3c" + s(b"c")),
        R.MALFORMED_PACKET,
        "without a will",
    ),
    (
        "wildcard will",
        frame(0x10, s(b"MQTT") + b"\x04\x06\x00\x3c" + s(b"c") + s(b"w/#") + s(b"")),
        R.TOPIC_NAME_INVALID,
        "will topic 'w/#' contains a wildcard",
    ),
    (
        "password alone v4",
        frame(0x10, s(b"MQTT") + b"\x04\x42\x00\x3c" + s(b"c") + s(b"p")),
        R.MALFORMED_PACKET,
        "password without a user name",
    ),
    (
        "connect trailing",
        frame(0x10, s(b"MQTT") + b"\x04\x02\x00\x3c" + s(b"c") + b"!"),
        R.MALFORMED_PACKET,
        "1 unexpected bytes at the end of CONNECT",
    ),
    (
        "connect cut",
        frame(0x10, s(b"MQTT") + b"\x04\x02\x00"),
        R.MALFORMED_PACKET,
        "CONNECT ends before its keep alive",
    ),
    (
        "puback cut",
        C4 + frame(0x40, b"\x00"),
        R.MALFORMED_PACKET,
        "PUBACK ends before its packet identifier",
    ),
    (
        "puback trailing v4",
        C4 + frame(0x40, b"\x00\x01\x00"),
        R.MALFORMED_PACKET,
        "1 unexpected bytes at the end of PUBACK",
    ),
    ("pingreq body", C4 + frame(0xC0, b"\x00"), R.MALFORMED_PACKET, "unexpected bytes"),
    ("reserved type 0", C4 + frame(0x00, b""), R.MALFORMED_PACKET, "reserved packet type 0"),
    ("auth in v4", C4 + frame(0xF0, b""), R.MALFORMED_PACKET, "reserved packet type 15"),
    (
        "connack from client",
        C4 + frame(0x20, b"\x00\x00"),
        R.PROTOCOL_ERROR,
        "CONNACK may not come from a client",
    ),
    (
        "suback from client",
        C5 + frame(0x90, b"\x00\x01\x00\x00"),
        R.PROTOCOL_ERROR,
        "SUBACK may not come from a client",
    ),
    (
        "property not allowed",
        C5 + frame(0x30, s(b"a") + b"\x05\x11\x00\x00\x00\x01"),
        R.MALFORMED_PACKET,
        "property session_expiry_interval is not allowed in PUBLISH",
    ),
    (
        "property twice",
        C5 + frame(0x30, s(b"a") + b"\x04\x23\x00\x01\x23"),
        R.MALFORMED_PACKET,
        "PUBLISH ends before its property topic_alias",
    ),
    (
        "duplicate property",
        C5 + frame(0x30, s(b"a") + b"\x06\x23\x00\x01\x23\x00\x02"),
        R.PROTOCOL_ERROR,
        "property topic_alias twice in PUBLISH",
    ),
    (
        "unknown property",
        C5 + frame(0x30, s(b"a") + b"\x02\x7f\x00"),
        R.MALFORMED_PACKET,
        "unknown property identifier 0x7F",
    ),
    (
        "property length",
        C5 + frame(0x30, s(b"a") + b"\x09\x01\x01"),
        R.MALFORMED_PACKET,
        "property length 9 runs past the end of the packet",
    ),
    (
        "topic alias 0",
        C5 + frame(0x30, s(b"a") + b"\x03\x23\x00\x00"),
        R.PROTOCOL_ERROR,
        "property topic_alias = 0 is not allowed in PUBLISH",
    ),
    (
        "payload format 2",
        C5 + frame(0x30, s(b"a") + b"\x02\x01\x02"),
        R.PROTOCOL_ERROR,
        "property payload_format_indicator = 2",
    ),
    (
        "two subscription ids",
        C5 + frame(0x82, b"\x00\x01\x04\x0b\x01\x0b\x02" + s(b"a") + b"\x00"),
        R.PROTOCOL_ERROR,
        "property subscription_identifiers twice in SUBSCRIBE",
    ),
    (
        "will property in publish",
        C5 + frame(0x30, s(b"a") + b"\x05\x18\x00\x00\x00\x01"),
        R.MALFORMED_PACKET,
        "property will_delay_interval is not allowed in PUBLISH",
    ),
    (
        "subscription id from client",
        C5 + frame(0x30, s(b"a") + b"\x02\x0b\x01"),
        R.PROTOCOL_ERROR,
        "subscription identifier in a PUBLISH from a client",
    ),
    (
        "auth data alone",
        frame(0x10, s(b"MQTT") + b"\x05\x02\x00\x3c\x04\x16\x00\x01x" + s(b"c")),
        R.PROTOCOL_ERROR,
        "authentication data without an authentication method",
    ),
    (
        "puback reason",
        C5 + frame(0x40, b"\x00\x01\x05"),
        R.MALFORMED_PACKET,
        "reason code 0x05 is not one PUBACK may carry",
    ),
    (
        "user property cut",
        C5 + frame(0x30, s(b"a") + b"\x04\x26" + s(b"k")[:1] + b"\x01k"),
        R.MALFORMED_PACKET,
        "property user_properties",
    ),
]


@pytest.mark.parametrize(
    ("data", "reason", "words"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_bytes_raise_one_protocol_error_with_reason_and_message(
    data: bytes, reason: ReasonCode, words: str
) -> None:
    decoder = Decoder()
    with pytest.raises(ProtocolError) as info:
        decoder.feed(data)
    assert info.value.reason == reason
    assert words in str(info.value)


def test_a_packet_announcing_more_than_the_maximum_size_is_refused_before_its_body() -> None:
    decoder = Decoder(max_packet_size=1024)
    decoder.feed(C4)
    # PUBLISH announcing 256 MB: refused on its 5 header bytes.
    with pytest.raises(ProtocolError) as info:
        decoder.feed(b"\x30\xff\xff\xff\x7f")
    assert info.value.reason == ReasonCode.PACKET_TOO_LARGE
    assert "PUBLISH of 268435460 bytes is larger than the maximum packet size 1024" in str(
        info.value
    )


def test_a_packet_of_exactly_the_maximum_size_is_taken() -> None:
    publish = Publish("t", bytes(1024 - 6))  # 3 bytes of fixed header, 3 of topic
    data = encode(publish, V4)
    assert len(data) == 1024
    decoder = Decoder(max_packet_size=1024)
    decoder.feed(C4)
    assert decoder.feed(data) == [publish]
    with pytest.raises(ProtocolError, match="PUBLISH of 1025 bytes"):
        decoder.feed(encode(Publish("t", bytes(1024 - 5)), V4))


def test_packets_before_a_bad_one_in_the_same_read_are_handed_over_with_the_error() -> None:
    good = Publish("a", b"1")
    with pytest.raises(ProtocolError) as info:
        Decoder().feed(C4 + encode(good, V4) + frame(0x36, s(b"a")))
    assert info.value.packets == [Connect("c", V4), good]


def test_mqtt_3_1_is_refused_with_a_3_1_1_connack_return_code() -> None:
    # What the listener sends to a refused 3.1 client: return code 1.
    assert (
        encode(Connack(False, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), V4) == b"\x20\x02\x00\x01"
    )


@pytest.mark.parametrize(
    ("packet", "version", "words"),
    [
        (Publish("a", qos=1), V4, "PUBLISH packet identifier None is not in 1..65535"),
        (Publish("a", qos=3, packet_id=1), V4, "QoS 3 in PUBLISH"),
        (Publish("a", dup=True), V4, "DUP set on a QoS 0 PUBLISH"),
        (Publish("a\x00"), V4, "U+0000"),
        (Puback(1, ReasonCode.GRANTED_QOS_2), V5, "PUBACK may not carry reason"),
        (
            Publish("a", properties=Properties(session_expiry_interval=1)),
            V5,
            "not allowed in PUBLISH",
        ),
        (Auth(), V4, "AUTH exists in MQTT 5 only"),
        (Subscribe(1, ()), V4, "SUBSCRIBE with no topic filter"),
        (Connect("c", V5), V4, "CONNECT of protocol level 5"),
        (Connack(True, ReasonCode.NOT_AUTHORIZED), V4, "session present on a refused CONNACK"),
    ],
)
def test_the_encoder_refuses_packets_that_would_be_invalid_on_the_wire(
    packet: Packet, version: ProtocolVersion, words: str
) -> None:
    with pytest.raises(ValueError) as info:
        encode(packet, version)
    assert words in str(info.value)


def _valid_stream(version: ProtocolVersion) -> bytes:
    return client_stream(version)[0]


@settings(max_examples=400, deadline=None)
@given(
    version=st.sampled_from(VERSIONS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    server=st.booleans(),
)
def test_damaged_bytes_give_packets_or_one_protocol_error_never_another_exception(
    version: ProtocolVersion, edits: list[tuple[int, int]], server: bool
) -> None:
    if server:
        data = bytearray(_valid_stream(version))
        decoder = Decoder()
    else:
        data = bytearray(b"".join(encode(p, version) for p in SERVER_PACKETS[version]))
        decoder = Decoder(server=False, version=version)
    for where, byte in edits:
        data[where % len(data)] = byte
    try:
        decoder.feed(bytes(data))
    except ProtocolError as exc:
        assert exc.detail
        assert exc.reason.is_error


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from(VERSIONS), garbage=st.binary(min_size=1, max_size=200))
def test_garbage_after_connect_gives_packets_or_one_protocol_error(
    version: ProtocolVersion, garbage: bytes
) -> None:
    decoder = Decoder()
    decoder.feed(encode(Connect("c", version), version))
    try:
        decoder.feed(garbage)
    except ProtocolError as exc:
        assert exc.reason.is_error


# --------------------------------------------------------------------------
# Debian's mosquitto clients (libmosquitto, a C implementation) against the codec
# --------------------------------------------------------------------------


class CodecBroker:
    """Just enough broker over the codec to serve one mosquitto client: it answers
    CONNECT, SUBSCRIBE and each QoS step, and sends `to_deliver` after a SUBACK."""

    def __init__(self, to_deliver: list[Publish]) -> None:
        self.received: list[Packet] = []
        self.to_deliver = to_deliver
        self.closed = asyncio.Event()  # set once the client's connection has been read to its end

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = Decoder()
        version: ProtocolVersion | None = None
        try:
            while data := await reader.read(65536):
                for packet in decoder.feed(data):
                    self.received.append(packet)
                    version = decoder.version
                    assert version is not None
                    for answer in self._answers(packet):
                        writer.write(encode(answer, version))
                await writer.drain()
        finally:
            writer.close()
            self.closed.set()

    def _answers(self, packet: Packet) -> list[Packet]:
        if isinstance(packet, Connect):
            return [Connack()]
        if isinstance(packet, Subscribe):
            granted = tuple(ReasonCode(s.qos) for s in packet.subscriptions)
            return [Suback(packet.packet_id, granted), *self.to_deliver]
        if isinstance(packet, Publish) and packet.qos == 1:
            return [Puback(packet.packet_id or 0)]
        if isinstance(packet, Publish) and packet.qos == 2:
            return [Pubrec(packet.packet_id or 0)]
        if isinstance(packet, Pubrel):
            return [Pubcomp(packet.packet_id)]
        return []


async def run_against_codec(broker: CodecBroker, *command: str) -> str:
    port = free_port()
    server = await asyncio.start_server(broker.serve, "127.0.0.1", port)
    async with server:
        process = await asyncio.create_subprocess_exec(
            mosquitto_tool(command[0]),
            *command[1:],
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(20):
                output, _ = await process.communicate()
                await broker.closed.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, f"{command[0]} failed: {output.decode()}"
    return output.decode()


@pytest.mark.parametrize(("version", "flag"), [(V4, "mqttv311"), (V5, "mqttv5")])
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_mosquitto_pub_publishes_through_the_codec(
    version: ProtocolVersion, flag: str, qos: int
) -> None:
    broker = CodecBroker([])
    extra = ["-D", "publish", "user-property", "k", "v"] if version == V5 else []
    await run_against_codec(
        broker,
        "mosquitto_pub",
        "-V",
        flag,
        "-i",
        "dev-7",
        "-u",
        "user",
        "-P",
        "secret",
        "-q",
        str(qos),
        "-r",
        "-t",
        "/plant//line 1/temp",
        "-m",
        "21.5",
        *extra,
    )
    if qos == 2:
        assert Pubrel(1) in broker.received
    connect, publish, disconnect = [p for p in broker.received if not isinstance(p, Pubrel)]
    assert isinstance(connect, Connect)
    assert (connect.protocol_level, connect.client_id) == (version, "dev-7")
    assert (connect.username, connect.password) == ("user", b"secret")
    assert isinstance(publish, Publish)
    assert (publish.topic, publish.payload, publish.qos, publish.retain) == (
        "/plant//line 1/temp",
        b"21.5",
        qos,
        True,
    )
    if version == V5:
        assert publish.properties.user_properties == (("k", "v"),)
    assert disconnect == Disconnect()


@pytest.mark.parametrize(("version", "flag"), [(V4, "mqttv311"), (V5, "mqttv5")])
async def test_mosquitto_sub_receives_what_the_codec_encodes(
    version: ProtocolVersion, flag: str
) -> None:
    properties = Properties(user_properties=(("k", "v"),)) if version == V5 else EMPTY_PROPERTIES
    broker = CodecBroker(
        [
            Publish("sensors/a", b"one"),
            Publish("sensors/b", b"two", 1, packet_id=1, properties=properties),
        ]
    )
    output = await run_against_codec(
        broker, "mosquitto_sub", "-V", flag, "-t", "sensors/#", "-q", "1", "-C", "2", "-v"
    )
    assert output.splitlines() == ["sensors/a one", "sensors/b two"]
    subscribe = broker.received[1]
    assert subscribe == Subscribe(1, (Subscription("sensors/#", 1),))
    assert Puback(1) in broker.received
