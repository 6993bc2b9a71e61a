"""MQTT control packets, 3.1.1 and 5.0 in one set of classes.

Each packet is a frozen dataclass holding what it means, not how it is laid
out: the codec (`node.mqtt.codec`) reads and writes both versions. Fields a
version lacks are left out when encoded for it (3.1.1 has no properties and
no reason codes on acknowledgements) and take their defaults when decoded
from it.

Reason codes are MQTT 5's (`ReasonCode`, from `node.mqtt.reasons`, also
importable from here). 3.1.1 carries fewer: a CONNACK return code
(`ConnectReturnCode`, from `connect_return_code`) and a SUBACK return code
that is the granted QoS or 0x80 (`suback_return_code`); the codec maps both
ways, so the session speaks v5 reasons whatever the client's version.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from node.mqtt.reasons import (
    ConnectReturnCode,
    ReasonCode,
    connect_return_code,
    reason_from_connect_return_code,
    suback_return_code,
)
from plexus.errors import PlexusError

__all__ = [
    "EMPTY_PROPERTIES",
    "REASONS_ALLOWED",
    "Auth",
    "Connack",
    "Connect",
    "ConnectReturnCode",
    "Disconnect",
    "Packet",
    "PacketType",
    "Pingreq",
    "Pingresp",
    "Properties",
    "ProtocolError",
    "ProtocolVersion",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "ReasonCode",
    "Suback",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "Will",
    "connect_return_code",
    "reason_from_connect_return_code",
    "suback_return_code",
]


class ProtocolVersion(IntEnum):
    """The protocol level byte of CONNECT."""

    V3_1 = 3  # "MQIsdp": refused with UNSUPPORTED_PROTOCOL_VERSION
    V3_1_1 = 4
    V5 = 5


class PacketType(IntEnum):
    """The high nibble of a packet's first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


_R = ReasonCode

# The reasons each packet type may carry (MQTT 5, the packet's "Reason Code" table).
REASONS_ALLOWED: dict[PacketType, frozenset[ReasonCode]] = {
    PacketType.CONNACK: frozenset(
        {_R.SUCCESS, *(r for r in _R if 0x80 <= r <= 0x8A), _R.BAD_AUTHENTICATION_METHOD}
        | {_R.TOPIC_NAME_INVALID, _R.PACKET_TOO_LARGE, _R.QUOTA_EXCEEDED}
        | {_R.PAYLOAD_FORMAT_INVALID, _R.RETAIN_NOT_SUPPORTED, _R.QOS_NOT_SUPPORTED}
        | {_R.USE_ANOTHER_SERVER, _R.SERVER_MOVED, _R.CONNECTION_RATE_EXCEEDED}
    ),
    PacketType.PUBACK: frozenset(
        {_R.SUCCESS, _R.NO_MATCHING_SUBSCRIBERS, _R.UNSPECIFIED_ERROR}
        | {_R.IMPLEMENTATION_SPECIFIC_ERROR, _R.NOT_AUTHORIZED, _R.TOPIC_NAME_INVALID}
        | {_R.PACKET_IDENTIFIER_IN_USE, _R.QUOTA_EXCEEDED, _R.PAYLOAD_FORMAT_INVALID}
    ),
    PacketType.PUBREL: frozenset({_R.SUCCESS, _R.PACKET_IDENTIFIER_NOT_FOUND}),
    PacketType.SUBACK: frozenset(
        {_R.GRANTED_QOS_0, _R.GRANTED_QOS_1, _R.GRANTED_QOS_2, _R.UNSPECIFIED_ERROR}
        | {_R.IMPLEMENTATION_SPECIFIC_ERROR, _R.NOT_AUTHORIZED, _R.TOPIC_FILTER_INVALID}
        | {_R.PACKET_IDENTIFIER_IN_USE, _R.QUOTA_EXCEEDED}
        | {_R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED, _R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED}
        | {_R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED}
    ),
    PacketType.UNSUBACK: frozenset(
        {_R.SUCCESS, _R.NO_SUBSCRIPTION_EXISTED, _R.UNSPECIFIED_ERROR}
        | {_R.IMPLEMENTATION_SPECIFIC_ERROR, _R.NOT_AUTHORIZED, _R.TOPIC_FILTER_INVALID}
        | {_R.PACKET_IDENTIFIER_IN_USE}
    ),
    PacketType.DISCONNECT: frozenset(
        {_R.NORMAL_DISCONNECTION, _R.DISCONNECT_WITH_WILL_MESSAGE}
        | {r for r in _R if r >= 0x80}
        - {_R.UNSUPPORTED_PROTOCOL_VERSION, _R.CLIENT_IDENTIFIER_NOT_VALID}
        - {_R.BAD_USER_NAME_OR_PASSWORD, _R.SERVER_UNAVAILABLE, _R.BANNED}
        - {_R.BAD_AUTHENTICATION_METHOD, _R.PACKET_IDENTIFIER_IN_USE}
        - {_R.PACKET_IDENTIFIER_NOT_FOUND}
    ),
    PacketType.AUTH: frozenset({_R.SUCCESS, _R.CONTINUE_AUTHENTICATION, _R.RE_AUTHENTICATE}),
}
REASONS_ALLOWED[PacketType.PUBREC] = REASONS_ALLOWED[PacketType.PUBACK]
REASONS_ALLOWED[PacketType.PUBCOMP] = REASONS_ALLOWED[PacketType.PUBREL]


class ProtocolError(PlexusError):
    """A peer broke the MQTT protocol; `reason` is what to tell it (v5 codes).

    `reason` is MALFORMED_PACKET (0x81), PROTOCOL_ERROR (0x82),
    UNSUPPORTED_PROTOCOL_VERSION (0x84), PACKET_TOO_LARGE (0x95),
    TOPIC_NAME_INVALID (0x90), ...; the message names what was wrong. The
    connection cannot go on after one: a v5 peer gets a DISCONNECT (or a
    CONNACK, before CONNECT was accepted) with `reason`, a 3.1.1 peer is cut
    (given a CONNACK return code first when one exists for `reason`).

    `packets` holds the whole, valid packets that arrived before the bad one
    in the same `Decoder.feed`: act on them before closing, as if they had
    come in an earlier read.
    """

    def __init__(
        self,
        reason: ReasonCode,
        detail: str,
        packet_type: PacketType | None = None,
    ) -> None:
        self.reason, self.detail, self.packet_type = reason, detail, packet_type
        self.packets: list[Packet] = []
        super().__init__(f"{reason.name.lower().replace('_', ' ')}: {detail}")


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """MQTT 5 properties (section 2.2.2.2); None (or empty) when absent.

    Single-byte flags (payload_format_indicator, maximum_qos, retain_available,
    the *_available ones, request_*_information) are ints as on the wire.
    `subscription_identifiers` holds the one of a SUBSCRIBE, or the several a
    PUBLISH may carry to a subscriber.
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __repr__(self) -> str:
        # Only what is set: 27 fields of None would bury it in every packet's repr.
        shown = (
            f"{name}={getattr(self, name)!r}"
            for name in self.__dataclass_fields__
            if getattr(self, name) not in (None, ())
        )
        return f"Properties({', '.join(shown)})"


EMPTY_PROPERTIES = Properties()


@dataclass(frozen=True, slots=True)
class Will:
    """The will message a CONNECT leaves, published if the client vanishes."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    protocol_level: ProtocolVersion = ProtocolVersion.V5
    clean_start: bool = True
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connack:
    """`reason` is written as a 3.1.1 return code (`connect_return_code`) to 3.1.1 peers."""

    session_present: bool = False
    reason: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish:
    """`packet_id` is None at QoS 0, 1..65535 above; `topic` may be "" with a topic alias (v5)."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Puback:
    packet_id: int
    reason: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubrec:
    packet_id: int
    reason: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubrel:
    packet_id: int
    reason: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubcomp:
    packet_id: int
    reason: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE and its options (the last three are v5 only)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Suback:
    """One reason per subscription, in order: GRANTED_QOS_n or a refusal."""

    packet_id: int
    reasons: tuple[ReasonCode, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsuback:
    """`reasons` (one per topic filter) travel in v5 only; decoded as () from 3.1.1."""

    packet_id: int
    reasons: tuple[ReasonCode, ...] = ()
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pingreq:
    pass


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    """`reason` and `properties` travel in v5 only."""

    reason: ReasonCode = ReasonCode.NORMAL_DISCONNECTION
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    """v5 only: a step of enhanced authentication."""

    reason: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = EMPTY_PROPERTIES


Packet: TypeAlias = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)
