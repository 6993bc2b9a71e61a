"""One MQTT connection's session, sans-IO: packets in, bytes and broker actions out.

The asyncio shell (node/mqtt/server.py) feeds it decoded packets
(`receive`), the broker's answers (`authenticated`, `published`) and events
to deliver (`deliver`), always with `now` in seconds; the session answers with
bytes to write (`data_to_send`) and `Action`s for the broker (publish,
subscribe, ack a queue delivery, close). It reads no clock and does no I/O,
so tests drive it packet by packet.

Delivery QoS is min(the event's, the subscription's): a direct event is QoS
0, a guaranteed one QoS 1 (the mesh delivers guaranteed events at least
once; it has no exactly-once to offer a QoS 2 subscriber). Inbound QoS 1 and
2 publish guaranteed events and are acknowledged (PUBACK, PUBREC) only once
the broker said they are durable; a QoS 2 packet id stays known until its
PUBREL, so a resent PUBLISH with that id is not published twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from node.mqtt.actions import (
    AckDeliveries,
    Action,
    Authenticate,
    Close,
    PublishEvent,
    SendRetained,
    SubscriptionsChanged,
)
from node.mqtt.codec import encode
from node.mqtt.packets import (
    REASONS_ALLOWED,
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
    Unsuback,
    Unsubscribe,
)
from node.mqtt.session_state import SessionState
from plexus.errors import (
    InvalidArgument,
    InvalidPattern,
    InvalidTopic,
    PermissionDenied,
    PlexusError,
    ResourceExhausted,
    Unauthenticated,
)
from plexus.mqtt_topics import (
    mqtt_filter_matches,
    to_mqtt_topic,
    to_plexus_patterns,
    to_plexus_topic,
)
from plexus.v1 import plexus_pb2 as pb

__all__ = ["Phase", "Session", "SessionLimits"]

# Longest client id accepted (the spec asks for at least 23 characters).
MAX_CLIENT_ID_CHARS = 256
# Keepalive is 1.5 times what the client asked (MQTT-3.1.2-24).
KEEPALIVE_GRACE = 1.5
# Outbound QoS 1 messages waiting for a free in-flight slot, past which they are dropped
# and counted (a clean session's subscription; a persistent session's queue gives only
# as many deliveries as the window holds).
MAX_PENDING_MESSAGES = 10_000
# In-flight window for 3.1.1 clients, which have no receive maximum of their own.
V3_RECEIVE_MAXIMUM = 1_000
MAX_PACKET_ID = 65_535
# A v5 session expiry interval meaning "never".
NEVER_EXPIRES = 0xFFFF_FFFF
# Events remembered to deliver once when several of the session's patterns match them.
RECENT_EVENTS = 4_096
# Topics whose granted QoS is remembered (then the cache starts again).
GRANTED_CACHE_TOPICS = 16_384


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What the node allows one connection (told to v5 clients in CONNACK)."""

    maximum_packet_bytes: int = 1 << 20
    receive_maximum: int = 1_024
    topic_alias_maximum: int = 64


class Phase(Enum):
    AWAIT_CONNECT = "await connect"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    CLOSED = "closed"


def _reason_of(error: PlexusError) -> ReasonCode:
    """The v5 reason code that tells a client why the broker refused its publish."""
    if isinstance(error, PermissionDenied | Unauthenticated):
        return ReasonCode.NOT_AUTHORIZED
    if isinstance(error, ResourceExhausted):
        return ReasonCode.QUOTA_EXCEEDED
    if isinstance(error, InvalidTopic):
        return ReasonCode.TOPIC_NAME_INVALID
    if isinstance(error, InvalidArgument):
        return ReasonCode.PAYLOAD_FORMAT_INVALID
    return ReasonCode.UNSPECIFIED_ERROR


@dataclass(slots=True)
class _Outbound:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    properties: Properties
    tag: int  # queue delivery tag, 0 for none


class Session:
    """The MQTT protocol for one connection, from CONNECT to its end."""

    def __init__(self, limits: SessionLimits = SessionLimits(), assigned_id: str = "") -> None:
        self.limits = limits
        # The client id given to a client that sent an empty one.
        self._assigned_id = assigned_id
        self.phase = Phase.AWAIT_CONNECT
        self.version = ProtocolVersion.V5
        self.client_id = ""
        self.username = ""
        self.persistent = False
        # How long a persistent session outlives its connection (None: as long as the node).
        self.expiry_s: int | None = None
        self.state = SessionState()
        self._out = bytearray()
        self._keepalive_s = 0.0
        self._last_heard = 0.0
        # The CONNECT's will, armed once the connection is accepted.
        self._will_given: PublishEvent | None = None
        self._will: PublishEvent | None = None
        self._will_delay_s = 0
        self._may_subscribe: Callable[[str], bool] = lambda _pattern: True
        # Inbound: QoS 1/2 publishes sent to the broker, by ref: (packet id, qos).
        self._refs = 0
        self._publishing: dict[int, tuple[int, int]] = {}
        self._publishing_ids: set[int] = set()
        self._aliases: dict[int, str] = {}
        # Outbound: the client's limits, packet ids in flight (id -> queue tag), the rest.
        self._client_max_bytes = 0
        self._window = V3_RECEIVE_MAXIMUM
        self._inflight: dict[int, int] = {}
        self._pending: deque[_Outbound] = deque()
        self._next_id = 1
        self._pattern_filters: dict[str, set[str]] = {}
        self._recent: set[tuple[str, int]] = set()  # (origin region, id) delivered lately
        self._recent_order: deque[tuple[str, int]] = deque()
        self._granted: dict[str, int | None] = {}  # topic -> QoS, until subscriptions change
        self.dropped = 0  # outbound messages dropped: too large, or no room to wait

    # ------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        """Bytes to write, in order; empties the buffer."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def _send(self, packet: Packet) -> None:
        self._out += encode(packet, self.version)

    def _v5(self) -> bool:
        return self.version == ProtocolVersion.V5

    def _fail(self, reason: ReasonCode, detail: str) -> list[Action]:
        """End the connection for a protocol violation: a v5 client is told why."""
        if self.phase == Phase.CONNECTED and self._v5():
            if reason not in REASONS_ALLOWED[PacketType.DISCONNECT]:
                reason = ReasonCode.UNSPECIFIED_ERROR
            self._send(Disconnect(reason, Properties(reason_string=detail[:200])))
        elif self.phase in (Phase.AWAIT_CONNECT, Phase.AUTHENTICATING):
            if reason not in REASONS_ALLOWED[PacketType.CONNACK]:
                reason = ReasonCode.SERVER_UNAVAILABLE  # e.g. shutting down before CONNACK
            self._send(Connack(reason=reason))
        self.phase = Phase.CLOSED
        return [Close(f"{reason.name.lower()}: {detail}")]

    def fail(self, error: ProtocolError, version: ProtocolVersion | None = None) -> list[Action]:
        """The decoder found `error` in the bytes read: tell the client and close.

        Before a CONNECT was read, the answer is a CONNACK in the connection's `version`
        if the decoder knew it, else in 3.1.1's form, which every older client reads
        (an MQTT 3.1 client learns it is refused as an unsupported version)."""
        if self.phase == Phase.AWAIT_CONNECT:
            self.version = version or ProtocolVersion.V3_1_1
        return self._fail(error.reason, error.detail)

    # ------------------------------------------------------------ time

    def expired(self, now: float) -> bool:
        """Whether the client has been silent for 1.5 times its keepalive."""
        return bool(self._keepalive_s) and now - self._last_heard > self._keepalive_s

    def keepalive_deadline(self) -> float | None:
        if not self._keepalive_s:
            return None
        return self._last_heard + self._keepalive_s

    def time_out(self) -> list[Action]:
        return self._fail(ReasonCode.KEEP_ALIVE_TIMEOUT, "keepalive expired")

    def take_over(self) -> list[Action]:
        """Another connection took this client id."""
        return self._fail(ReasonCode.SESSION_TAKEN_OVER, "another connection used this client id")

    def shut_down(self) -> list[Action]:
        return self._fail(ReasonCode.SERVER_SHUTTING_DOWN, "the node is stopping")

    # ------------------------------------------------------------ receiving

    def receive(self, packet: Packet, now: float) -> list[Action]:
        self._last_heard = now
        if self.phase == Phase.AWAIT_CONNECT:
            if not isinstance(packet, Connect):
                return self._fail(ReasonCode.PROTOCOL_ERROR, "the first packet must be CONNECT")
            return self._connect(packet)
        if self.phase != Phase.CONNECTED:
            return self._fail(ReasonCode.PROTOCOL_ERROR, "packet before CONNACK")
        match packet:
            case Publish():
                return self._publish(packet)
            case Puback():
                return self._acked(packet.packet_id)
            case Pubrec():
                return self._received(packet)
            case Pubcomp():
                return self._acked(packet.packet_id)
            case Pubrel():
                return self._release(packet.packet_id)
            case Subscribe():
                return self._subscribe(packet)
            case Unsubscribe():
                return self._unsubscribe(packet)
            case Pingreq():
                self._send(Pingresp())
                return []
            case Disconnect():
                return self._disconnect(packet)
        return self._fail(ReasonCode.PROTOCOL_ERROR, f"unexpected {type(packet).__name__.upper()}")

    # ------------------------------------------------------------ CONNECT

    def _connect(self, connect: Connect) -> list[Action]:
        self.version = (
            ProtocolVersion.V5
            if connect.protocol_level == ProtocolVersion.V5
            else ProtocolVersion.V3_1_1
        )
        if connect.protocol_level not in (ProtocolVersion.V3_1_1, ProtocolVersion.V5):
            return self._fail(
                ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                f"protocol level {int(connect.protocol_level)}",
            )
        client_id = connect.client_id
        if not client_id and (self._v5() or connect.clean_start):
            client_id = self._assigned_id
        if not client_id:
            return self._fail(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                "an empty client id needs a clean session",
            )
        if len(client_id) > MAX_CLIENT_ID_CHARS or any(ord(c) < 0x20 for c in client_id):
            return self._fail(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                f"client ids have at most {MAX_CLIENT_ID_CHARS} printable characters",
            )
        self.client_id = client_id
        self.username = connect.username or ""
        expiry = connect.properties.session_expiry_interval or 0
        self.persistent = expiry > 0 if self._v5() else not connect.clean_start
        self.expiry_s = expiry if self._v5() and expiry != NEVER_EXPIRES else None
        self._keepalive_s = connect.keepalive * KEEPALIVE_GRACE
        props = connect.properties
        self._client_max_bytes = props.maximum_packet_size or 0
        if self._v5():
            self._window = props.receive_maximum or 65_535
        if connect.will is not None:
            will = connect.will
            try:
                topic = to_plexus_topic(will.topic)
            except InvalidTopic as exc:
                return self._fail(ReasonCode.TOPIC_NAME_INVALID, f"will topic: {exc}")
            self._will_given = PublishEvent(
                self._event(topic, will.payload, will.qos, will.properties),
                will.retain,
                None,
            )
            self._will_delay_s = will.properties.will_delay_interval or 0
        self.phase = Phase.AUTHENTICATING
        return [Authenticate(connect)]

    def refuse(self, reason: ReasonCode, detail: str) -> list[Action]:
        """The shell refuses the connection (credentials, server busy)."""
        return self._fail(reason, detail)

    def authenticated(
        self,
        now: float,
        may_subscribe: Callable[[str], bool],
        state: SessionState | None = None,
    ) -> list[Action]:
        """Accept the connection; `state` is the persistent session found, if any (its
        subscriptions resume: the shell already receives for them)."""
        self._last_heard = now
        self._may_subscribe = may_subscribe
        self.phase = Phase.CONNECTED
        self._will = self._will_given
        present = state is not None
        if state is not None:
            self.state = state
            for topic_filter, patterns in state.patterns.items():
                for pattern in patterns:
                    self._pattern_filters.setdefault(pattern, set()).add(topic_filter)
        properties = Properties()
        if self._v5():
            properties = Properties(
                receive_maximum=self.limits.receive_maximum,
                topic_alias_maximum=self.limits.topic_alias_maximum,
                maximum_packet_size=self.limits.maximum_packet_bytes,
                shared_subscription_available=0,
                subscription_identifier_available=0,
                assigned_client_identifier=(
                    self.client_id if self.client_id == self._assigned_id else None
                ),
            )
        self._send(Connack(session_present=present and self.persistent, properties=properties))
        return []

    # ------------------------------------------------------------ PUBLISH in

    def _event(self, topic: str, payload: bytes, qos: int, props: Properties) -> pb.Event:
        mode = pb.DeliveryMode.GUARANTEED if qos else pb.DeliveryMode.DIRECT
        event = pb.Event(topic=topic, payload=payload, mode=mode)
        if props.user_properties:
            event.headers.update(dict(props.user_properties))
        if props.content_type:
            event.headers["content-type"] = props.content_type
        if props.message_expiry_interval:
            event.ttl_ms = props.message_expiry_interval * 1000
        return event

    def _publish(self, packet: Publish) -> list[Action]:
        topic = packet.topic
        alias = packet.properties.topic_alias
        if alias is not None:
            if not 0 < alias <= self.limits.topic_alias_maximum:
                return self._fail(ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {alias}")
            if topic:
                self._aliases[alias] = topic
            elif alias in self._aliases:
                topic = self._aliases[alias]
            else:
                return self._fail(ReasonCode.PROTOCOL_ERROR, f"topic alias {alias} was never set")
        try:
            plexus_topic = to_plexus_topic(topic)
        except InvalidTopic as exc:
            return self._fail(ReasonCode.TOPIC_NAME_INVALID, str(exc))
        event = self._event(plexus_topic, packet.payload, packet.qos, packet.properties)
        if packet.qos == 0:
            return [PublishEvent(event, packet.retain, None)]
        packet_id = packet.packet_id or 0
        if packet.qos == 2 and (
            packet_id in self.state.awaiting_release or packet_id in self._publishing_ids
        ):
            if packet_id in self.state.awaiting_release:
                self._send(Pubrec(packet_id))
            return []  # a resend: published once already (or being published)
        if len(self._publishing) + len(self.state.awaiting_release) >= self.limits.receive_maximum:
            return self._fail(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, "too many QoS 1/2 in flight")
        self._refs += 1
        self._publishing[self._refs] = (packet_id, packet.qos)
        if packet.qos == 2:
            self._publishing_ids.add(packet_id)
        return [PublishEvent(event, packet.retain, self._refs)]

    def published(self, ref: int, error: PlexusError | None) -> list[Action]:
        """The broker's answer to `PublishEvent(ref=ref)`: None once durable."""
        packet_id, qos = self._publishing.pop(ref)
        self._publishing_ids.discard(packet_id)
        if self.phase != Phase.CONNECTED:
            return []
        if error is not None and not self._v5():
            # 3.1.1 has no way to refuse a publish but to close the connection.
            return self._fail(ReasonCode.NOT_AUTHORIZED, str(error))
        reason = ReasonCode.SUCCESS if error is None else _reason_of(error)
        properties = Properties(reason_string=str(error)[:200]) if error else Properties()
        if qos == 1:
            self._send(Puback(packet_id, reason, properties))
        else:
            if error is None:
                self.state.awaiting_release.add(packet_id)
            self._send(Pubrec(packet_id, reason, properties))
        return []

    def publish_refused(self, error: PlexusError) -> list[Action]:
        """A QoS 0 publish was refused: 3.1.1 clients learn it by the connection closing."""
        if self._v5():
            return []
        return self._fail(ReasonCode.NOT_AUTHORIZED, str(error))

    def _release(self, packet_id: int) -> list[Action]:
        known = packet_id in self.state.awaiting_release
        self.state.awaiting_release.discard(packet_id)
        reason = ReasonCode.SUCCESS if known else ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
        self._send(Pubcomp(packet_id, reason))
        return []

    # ------------------------------------------------------------ SUBSCRIBE

    def _subscribe(self, packet: Subscribe) -> list[Action]:
        reasons: list[ReasonCode] = []
        before = set(self._pattern_filters)
        retained: list[str] = []
        for sub in packet.subscriptions:
            topic_filter = sub.topic_filter
            if topic_filter.startswith("$share/"):
                reasons.append(ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
                continue
            try:
                patterns = tuple(to_plexus_patterns(topic_filter))
            except (InvalidPattern, InvalidTopic):
                reasons.append(ReasonCode.TOPIC_FILTER_INVALID)
                continue
            # `a/#` is `a/>` and `a`: a token allowing only `a/>` gets that much of it.
            allowed = tuple(p for p in patterns if self._may_subscribe(p))
            if patterns[-1] not in allowed:
                reasons.append(ReasonCode.NOT_AUTHORIZED)
                continue
            patterns = allowed
            qos = min(sub.qos, 2)
            existed = topic_filter in self.state.filters
            self._forget(topic_filter, [])
            self.state.filters[topic_filter] = qos
            self.state.patterns[topic_filter] = patterns
            for pattern in patterns:
                self._pattern_filters.setdefault(pattern, set()).add(topic_filter)
            if sub.retain_handling == 0 or (sub.retain_handling == 1 and not existed):
                retained.extend(patterns)
            reasons.append(ReasonCode(qos))
        self._granted.clear()
        self._send(Suback(packet.packet_id, tuple(reasons)))
        actions: list[Action] = []
        added = tuple(p for p in self._pattern_filters if p not in before)
        removed = tuple(p for p in before if p not in self._pattern_filters)
        if added or removed:
            actions.append(SubscriptionsChanged(added, removed, tuple(self._pattern_filters)))
        if retained:
            actions.append(SendRetained(tuple(dict.fromkeys(retained))))
        return actions

    def _unsubscribe(self, packet: Unsubscribe) -> list[Action]:
        reasons: list[ReasonCode] = []
        removed: list[str] = []
        for topic_filter in packet.topic_filters:
            if self.state.filters.pop(topic_filter, None) is None:
                reasons.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
                continue
            reasons.append(ReasonCode.SUCCESS)
            self._forget(topic_filter, removed)
        self._granted.clear()
        self._send(Unsuback(packet.packet_id, tuple(reasons) if self._v5() else ()))
        if not removed:
            return []
        return [SubscriptionsChanged((), tuple(removed), tuple(self._pattern_filters))]

    def _forget(self, topic_filter: str, removed: list[str]) -> None:
        """Drop `topic_filter`'s patterns; those no other filter holds go to `removed`."""
        for pattern in self.state.patterns.pop(topic_filter, ()):
            holders = self._pattern_filters.get(pattern, set())
            holders.discard(topic_filter)
            if not holders:
                self._pattern_filters.pop(pattern, None)
                removed.append(pattern)

    def patterns(self) -> tuple[str, ...]:
        """The Plexus patterns of every subscription, each once."""
        return tuple(self._pattern_filters)

    # ------------------------------------------------------------ PUBLISH out

    def deliver(self, events: Iterable[pb.Event], retained: bool = False) -> list[Action]:
        """Send `events` (from subscriptions, a queue, or the retained store) to the client
        at the QoS of the subscriptions they match; QoS 1 waits for a free in-flight slot."""
        done: list[int] = []  # queue deliveries the client will not ack itself
        overlapping = not retained and len(self._pattern_filters) > 1
        for event in events:
            if overlapping and not event.delivery_tag and self._seen(event):
                continue  # another of this session's subscriptions brought it already
            topic = to_mqtt_topic(event.topic)
            granted = self._granted_qos(topic)
            if granted is None or self.phase != Phase.CONNECTED:
                if event.delivery_tag and granted is None:
                    done.append(event.delivery_tag)
                continue
            qos = min(granted, 1 if event.mode == pb.DeliveryMode.GUARANTEED else 0)
            message = _Outbound(
                topic,
                event.payload,
                qos,
                retained,
                event.redelivered and qos > 0,
                self._properties_of(event),
                event.delivery_tag,
            )
            if qos == 0:
                self._write(message, None)
                if event.delivery_tag:
                    done.append(event.delivery_tag)
            elif len(self._inflight) < self._window and not self._pending:
                done.extend(self._send_inflight(message))
            elif len(self._pending) < MAX_PENDING_MESSAGES:
                self._pending.append(message)
            else:
                self.dropped += 1
        return [AckDeliveries(tuple(done))] if done else []

    def _seen(self, event: pb.Event) -> bool:
        key = (event.origin_region, event.id)
        if key in self._recent:
            return True
        self._recent.add(key)
        self._recent_order.append(key)
        if len(self._recent_order) > RECENT_EVENTS:
            self._recent.discard(self._recent_order.popleft())
        return False

    def _granted_qos(self, topic: str) -> int | None:
        """The highest QoS of the subscriptions matching `topic` (None: none matches, as
        for a `$` topic under a leading wildcard)."""
        if topic in self._granted:
            return self._granted[topic]
        granted = [qos for f, qos in self.state.filters.items() if mqtt_filter_matches(f, topic)]
        if len(self._granted) >= GRANTED_CACHE_TOPICS:
            self._granted.clear()
        qos = self._granted[topic] = max(granted) if granted else None
        return qos

    def _properties_of(self, event: pb.Event) -> Properties:
        if not self._v5() or not event.headers:
            return Properties()
        headers = dict(event.headers)
        content_type = headers.pop("content-type", None)
        return Properties(content_type=content_type, user_properties=tuple(headers.items()))

    def _send_inflight(self, message: _Outbound) -> list[int]:
        packet_id = self._free_packet_id()
        if not self._write(message, packet_id):
            return [message.tag] if message.tag else []
        self._inflight[packet_id] = message.tag
        return []

    def _write(self, message: _Outbound, packet_id: int | None) -> bool:
        """Encode `message`; False (dropped and counted) when the client's maximum packet
        size is smaller than it: the client would have to close the connection."""
        packet = Publish(
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            message.dup,
            packet_id,
            message.properties,
        )
        data = encode(packet, self.version)
        if self._client_max_bytes and len(data) > self._client_max_bytes:
            self.dropped += 1
            return False
        self._out += data
        return True

    def _free_packet_id(self) -> int:
        while self._next_id in self._inflight:
            self._next_id = self._next_id % MAX_PACKET_ID + 1
        packet_id = self._next_id
        self._next_id = self._next_id % MAX_PACKET_ID + 1
        return packet_id

    def _acked(self, packet_id: int) -> list[Action]:
        tag = self._inflight.pop(packet_id, None)
        done = [tag] if tag else []
        while self._pending and len(self._inflight) < self._window:
            done.extend(self._send_inflight(self._pending.popleft()))
        return [AckDeliveries(tuple(done))] if done else []

    def _received(self, packet: Pubrec) -> list[Action]:
        # Only QoS 2 deliveries get a PUBREC, and this session sends none: answer as the
        # protocol asks, releasing the id.
        self._send(Pubrel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
        return self._acked(packet.packet_id)

    @property
    def window(self) -> int:
        """How many QoS 1 messages may be in flight to the client (its receive maximum)."""
        return self._window

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # ------------------------------------------------------------ the end

    def _disconnect(self, packet: Disconnect) -> list[Action]:
        if packet.reason != ReasonCode.DISCONNECT_WITH_WILL_MESSAGE:
            self._will = None
        expiry = packet.properties.session_expiry_interval
        if expiry is not None and self.persistent:  # a v5 client may shorten it as it leaves
            self.expiry_s = expiry if expiry != NEVER_EXPIRES else None
        self.phase = Phase.CLOSED
        return [Close("the client disconnected")]

    def will(self) -> tuple[PublishEvent, int] | None:
        """The will to publish now that the connection is gone, and its delay in seconds
        (None after a normal DISCONNECT, or when it had none)."""
        if self._will is None:
            return None
        will, self._will = self._will, None
        return will, self._will_delay_s
