"""The MQTT session state machine without sockets: packets in, bytes (decoded here as a
client would) and broker actions out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.mqtt.actions import (
    AckDeliveries,
    Authenticate,
    Close,
    PublishEvent,
    SendRetained,
    SubscriptionsChanged,
)
from node.mqtt.codec import Decoder, encode
from node.mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
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
)
from node.mqtt.session import Session, SessionLimits
from node.mqtt.session_state import SessionState, filters_of_patterns
from plexus.errors import NotPermitted, QueueFull
from plexus.mqtt_topics import to_plexus_patterns
from plexus.v1 import plexus_pb2 as pb

pytestmark = pytest.mark.timeout(30)
V5, V311 = ProtocolVersion.V5, ProtocolVersion.V3_1_1
DEFAULTS = SessionLimits()


class Client:
    """A session and the decoder of what it sends, as the client sees it."""

    def __init__(self, version: ProtocolVersion = V5, limits: SessionLimits = DEFAULTS):
        self.session = Session(limits, assigned_id="assigned-1")
        self.decoder = Decoder(server=False, version=version)
        self.version = version

    def send(self, packet: Packet, now: float = 0.0) -> list:  # type: ignore[type-arg]
        # Through the encoder and back, as the bytes would come.
        [decoded] = (
            Decoder().feed(encode(packet, self.version))
            if isinstance(packet, Connect)
            else [packet]
        )
        return self.session.receive(decoded, now)

    def got(self) -> list[Packet]:
        return self.decoder.feed(self.session.data_to_send())

    def connect(self, allow: str = "", **connect: object) -> Client:
        [action] = self.send(Connect("dev", protocol_level=self.version, **connect))  # type: ignore[arg-type]
        assert isinstance(action, Authenticate)
        self.session.authenticated(0.0, lambda p: not allow or p.startswith(allow))
        [connack] = self.got()
        assert isinstance(connack, Connack) and connack.reason == ReasonCode.SUCCESS
        return self


def guaranteed(topic: str, payload: bytes = b"x", tag: int = 0, event_id: int = 1) -> pb.Event:
    return pb.Event(
        topic=topic, payload=payload, mode=pb.DeliveryMode.GUARANTEED, delivery_tag=tag, id=event_id
    )


def direct(topic: str, payload: bytes = b"x", event_id: int = 1) -> pb.Event:
    return pb.Event(topic=topic, payload=payload, mode=pb.DeliveryMode.DIRECT, id=event_id)


# ------------------------------------------------------------------ CONNECT


def test_a_3_1_1_empty_client_id_without_clean_session_is_rejected() -> None:
    client = Client(V311)
    [close] = client.send(Connect("", protocol_level=V311, clean_start=False))
    assert isinstance(close, Close)
    [connack] = client.got()
    assert connack == Connack(reason=ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)


def test_a_v5_empty_client_id_is_assigned_one() -> None:
    client = Client(V5)
    client.send(Connect("", protocol_level=V5))
    client.session.authenticated(0.0, lambda p: True)
    [connack] = client.got()
    assert isinstance(connack, Connack)
    assert connack.properties.assigned_client_identifier == "assigned-1"


def test_a_client_id_too_long_is_rejected() -> None:
    client = Client(V5)
    [close] = client.send(Connect("x" * 300, protocol_level=V5))
    assert isinstance(close, Close)
    assert client.got()[0].reason == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "reason",
    [ReasonCode.BAD_USER_NAME_OR_PASSWORD, ReasonCode.NOT_AUTHORIZED, ReasonCode.SERVER_BUSY],
)
@pytest.mark.parametrize("version", [V311, V5])
def test_the_shell_refuses_a_connection_with_its_reason(reason: ReasonCode, version) -> None:  # type: ignore[no-untyped-def]
    client = Client(version)
    client.send(Connect("dev", protocol_level=version))
    [close] = client.session.refuse(reason, "no")
    assert isinstance(close, Close)
    [connack] = client.got()
    # 3.1.1 has no "server busy": it reads as server unavailable.
    expected = (
        ReasonCode.SERVER_UNAVAILABLE
        if (version, reason) == (V311, ReasonCode.SERVER_BUSY)
        else reason
    )
    assert connack == Connack(reason=expected)


def test_a_first_packet_other_than_connect_closes() -> None:
    client = Client(V5)
    [close] = client.session.receive(Pingreq(), 0.0)
    assert isinstance(close, Close)


def test_keepalive_expires_after_one_and_a_half_times() -> None:
    client = Client(V5).connect(keepalive=10)
    assert not client.session.expired(14.9)
    client.send(Pingreq(), now=10.0)
    assert client.got() == [Pingresp()]
    assert not client.session.expired(24.9)
    assert client.session.expired(25.1)
    [close] = client.session.time_out()
    assert isinstance(close, Close)
    assert client.got()[0].reason == ReasonCode.KEEP_ALIVE_TIMEOUT  # type: ignore[union-attr]


# ------------------------------------------------------------------ PUBLISH in


def test_qos1_is_acked_only_once_the_broker_says_durable() -> None:
    client = Client(V5).connect()
    [publish] = client.send(Publish("a/b", b"hi", qos=1, packet_id=7))
    assert isinstance(publish, PublishEvent) and publish.ref is not None
    assert publish.event.mode == pb.DeliveryMode.GUARANTEED and publish.event.topic == "a/b"
    assert client.got() == []
    client.session.published(publish.ref, None)
    assert client.got() == [Puback(7)]


def test_qos0_publishes_direct_with_no_answer() -> None:
    client = Client(V311).connect()
    [publish] = client.send(Publish("/a//b", b"hi"))
    assert isinstance(publish, PublishEvent) and publish.ref is None
    assert publish.event.mode == pb.DeliveryMode.DIRECT
    assert publish.event.topic == "%/a/%/b"  # empty levels escaped, reversibly


def test_qos2_resent_before_pubrel_is_published_once() -> None:
    client = Client(V5).connect()
    [publish] = client.send(Publish("a", b"1", qos=2, packet_id=3))
    assert client.send(Publish("a", b"1", qos=2, packet_id=3, dup=True)) == []  # in progress
    client.session.published(publish.ref, None)  # type: ignore[arg-type]
    assert client.got() == [Pubrec(3)]
    assert client.send(Publish("a", b"1", qos=2, packet_id=3, dup=True)) == []
    assert client.got() == [Pubrec(3)]
    client.send(Pubrel(3))
    assert client.got() == [Pubcomp(3)]
    [again] = client.send(Publish("a", b"2", qos=2, packet_id=3))  # a new message now
    assert isinstance(again, PublishEvent)


def test_a_refused_publish_gets_its_reason_in_v5_and_closes_3_1_1() -> None:
    client = Client(V5).connect()
    [one] = client.send(Publish("admin/x", qos=1, packet_id=1))
    [two] = client.send(Publish("q/x", qos=1, packet_id=2))
    client.session.published(one.ref, NotPermitted("dev", "publish", "admin/x"))  # type: ignore[arg-type]
    client.session.published(two.ref, QueueFull("q", "max_depth", 1))  # type: ignore[arg-type]
    first, second = client.got()
    assert (first.packet_id, first.reason) == (1, ReasonCode.NOT_AUTHORIZED)  # type: ignore[union-attr]
    assert second.reason == ReasonCode.QUOTA_EXCEEDED  # type: ignore[union-attr]
    old = Client(V311).connect()
    [three] = old.send(Publish("admin/x", qos=1, packet_id=1))
    [close] = old.session.published(three.ref, NotPermitted("dev", "publish", "admin/x"))  # type: ignore[arg-type]
    assert isinstance(close, Close) and old.got() == []


def test_topic_aliases_inbound() -> None:
    client = Client(V5).connect()
    [first] = client.send(Publish("long/topic", b"1", properties=Properties(topic_alias=5)))
    [second] = client.send(Publish("", b"2", properties=Properties(topic_alias=5)))
    assert first.event.topic == second.event.topic == "long/topic"  # type: ignore[union-attr]
    [close] = client.send(Publish("", b"3", properties=Properties(topic_alias=6)))
    assert isinstance(close, Close)
    assert client.got()[0].reason == ReasonCode.PROTOCOL_ERROR  # type: ignore[union-attr]
    other = Client(V5).connect()
    other.send(Publish("t", properties=Properties(topic_alias=1000)))
    assert other.got()[0].reason == ReasonCode.TOPIC_ALIAS_INVALID  # type: ignore[union-attr]


def test_more_qos1_in_flight_than_the_receive_maximum_disconnects() -> None:
    client = Client(V5, SessionLimits(receive_maximum=2)).connect()
    client.send(Publish("a", qos=1, packet_id=1))
    client.send(Publish("a", qos=1, packet_id=2))
    [close] = client.send(Publish("a", qos=1, packet_id=3))
    assert isinstance(close, Close)
    assert client.got()[0].reason == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED  # type: ignore[union-attr]


def test_user_properties_become_headers() -> None:
    client = Client(V5).connect()
    props = Properties(user_properties=(("k", "v"),), content_type="text/plain")
    [publish] = client.send(Publish("a", b"x", properties=props))
    assert dict(publish.event.headers) == {"k": "v", "content-type": "text/plain"}  # type: ignore[union-attr]


# ------------------------------------------------------------------ SUBSCRIBE


def test_suback_grants_refuses_and_asks_for_patterns_and_retained() -> None:
    client = Client(V5).connect(allow="ok")
    subs = (
        Subscription("ok/#", qos=1),
        Subscription("secret/#", qos=1),
        Subscription("a/#/b", qos=0),
        Subscription("$share/g/ok", qos=0),
        Subscription("ok/+/x", qos=2, retain_handling=2),
    )
    changed, retained = client.send(Subscribe(1, subs))
    [suback] = client.got()
    assert suback == Suback(
        1,
        (
            ReasonCode.GRANTED_QOS_1,
            ReasonCode.NOT_AUTHORIZED,
            ReasonCode.TOPIC_FILTER_INVALID,
            ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            ReasonCode.GRANTED_QOS_2,
        ),
    )
    assert changed == SubscriptionsChanged(("ok", "ok/>", "ok/*/x"), (), ("ok", "ok/>", "ok/*/x"))
    assert retained == SendRetained(("ok", "ok/>"))  # retain handling 2: none for ok/+/x


def test_a_filter_the_token_allows_only_below_gets_that_part() -> None:
    client = Client(V311).connect(allow="news/")
    [changed] = client.send(Subscribe(1, (Subscription("news/#", 1, retain_handling=2),)))
    assert client.got() == [Suback(1, (ReasonCode.GRANTED_QOS_1,))]
    assert changed.patterns == ("news/>",)  # type: ignore[union-attr]


def test_unsubscribe_stops_patterns_no_other_filter_holds() -> None:
    client = Client(V5).connect()
    client.send(Subscribe(1, (Subscription("a/#"), Subscription("a/+"))))
    client.got()
    [changed] = client.send(Unsubscribe(2, ("a/#", "nope")))
    assert changed == SubscriptionsChanged((), ("a", "a/>"), ("a/*",))
    assert client.got() == [Unsuback(2, (ReasonCode.SUCCESS, ReasonCode.NO_SUBSCRIPTION_EXISTED))]


# ------------------------------------------------------------------ PUBLISH out


def test_delivery_qos_is_the_lower_of_the_event_and_the_subscription() -> None:
    client = Client(V5).connect()
    client.send(Subscribe(1, (Subscription("one/#", 1), Subscription("zero/#", 0))))
    client.got()
    acks = client.session.deliver(
        [
            direct("one/a", event_id=1),
            guaranteed("one/b", event_id=2),
            guaranteed("zero/c", tag=9, event_id=3),
        ]
    )
    a, b, c = client.got()
    assert (a.qos, b.qos, c.qos) == (0, 1, 0)  # type: ignore[union-attr]
    assert acks == [AckDeliveries((9,))]  # QoS 0 from a queue: done once sent


def test_the_in_flight_window_is_the_clients_receive_maximum() -> None:
    client = Client(V5)
    client.send(Connect("dev", protocol_level=V5, properties=Properties(receive_maximum=2)))
    client.session.authenticated(0.0, lambda p: True)
    client.send(Subscribe(1, (Subscription("#", 1),)))
    client.got()
    client.session.deliver([guaranteed(f"t/{i}", tag=10 + i, event_id=i) for i in range(3)])
    first = client.got()
    assert [p.topic for p in first] == ["t/0", "t/1"]  # type: ignore[union-attr]
    [ack] = client.send(Puback(first[0].packet_id))  # type: ignore[union-attr]
    assert ack == AckDeliveries((10,))
    [third] = client.got()
    assert third.topic == "t/2"  # type: ignore[union-attr]


def test_a_redelivered_queue_event_goes_out_with_dup() -> None:
    client = Client(V311).connect()
    client.send(Subscribe(1, (Subscription("#", 1),)))
    client.got()
    event = guaranteed("t", tag=4)
    event.redelivered = True
    client.session.deliver([event])
    [publish] = client.got()
    assert publish.dup and publish.qos == 1  # type: ignore[union-attr]


def test_a_message_larger_than_the_clients_maximum_is_dropped_and_counted() -> None:
    client = Client(V5)
    client.send(Connect("dev", protocol_level=V5, properties=Properties(maximum_packet_size=100)))
    client.session.authenticated(0.0, lambda p: True)
    client.send(Subscribe(1, (Subscription("#", 1),)))
    client.got()
    acks = client.session.deliver(
        [guaranteed("t", b"x" * 200, tag=5), guaranteed("u", b"y", event_id=2)]
    )
    [small] = client.got()
    assert small.topic == "u"  # type: ignore[union-attr]
    assert acks == [AckDeliveries((5,))] and client.session.dropped == 1


def test_leading_wildcards_do_not_match_dollar_topics() -> None:
    client = Client(V5).connect()
    client.send(Subscribe(1, (Subscription("#", 0),)))
    client.got()
    client.session.deliver([direct("$SYS/x"), direct("a", event_id=2)])
    assert [p.topic for p in client.got()] == ["a"]  # type: ignore[union-attr]


# ------------------------------------------------------------------ will


def test_the_will_is_kept_for_a_vanished_client_not_after_disconnect() -> None:
    will = Will("status/dev", b"gone", qos=1)
    vanished = Client(V311).connect(will=will)
    [(publish, delay)] = [vanished.session.will()]  # type: ignore[misc]
    assert publish.event.topic == "status/dev" and delay == 0
    polite = Client(V5).connect(will=will)
    polite.send(Disconnect())
    assert polite.session.will() is None
    asking = Client(V5).connect(will=will)
    asking.send(Disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE))
    assert asking.session.will() is not None


# ------------------------------------------------------------------ persistent state

FILTER_LEVEL = st.one_of(
    st.just(""), st.just("+"), st.just("%"), st.just("$x"), st.text("ab*>%", min_size=1, max_size=3)
)


@given(st.lists(FILTER_LEVEL, min_size=1, max_size=4), st.booleans())
def test_a_filter_comes_back_from_its_patterns(levels: list[str], multi: bool) -> None:
    topic_filter = "/".join([*levels, "#"] if multi else levels) or "%"
    state = SessionState.of_patterns(to_plexus_patterns(topic_filter))
    assert list(state.filters) == [topic_filter]
    assert filters_of_patterns(to_plexus_patterns(topic_filter)) == [topic_filter]
