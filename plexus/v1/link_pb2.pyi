from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkFrame(_message.Message):
    __slots__ = ("hello", "refusal", "interest_full", "interest_delta", "interest_request", "link_state", "direct", "guaranteed", "ack", "heartbeat", "proof")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    INTEREST_FULL_FIELD_NUMBER: _ClassVar[int]
    INTEREST_DELTA_FIELD_NUMBER: _ClassVar[int]
    INTEREST_REQUEST_FIELD_NUMBER: _ClassVar[int]
    LINK_STATE_FIELD_NUMBER: _ClassVar[int]
    DIRECT_FIELD_NUMBER: _ClassVar[int]
    GUARANTEED_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    refusal: Refusal
    interest_full: InterestFull
    interest_delta: InterestDelta
    interest_request: InterestRequest
    link_state: LinkState
    direct: DirectBatch
    guaranteed: GuaranteedBatch
    ack: LinkAck
    heartbeat: Heartbeat
    proof: LinkProof
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ..., interest_full: _Optional[_Union[InterestFull, _Mapping]] = ..., interest_delta: _Optional[_Union[InterestDelta, _Mapping]] = ..., interest_request: _Optional[_Union[InterestRequest, _Mapping]] = ..., link_state: _Optional[_Union[LinkState, _Mapping]] = ..., direct: _Optional[_Union[DirectBatch, _Mapping]] = ..., guaranteed: _Optional[_Union[GuaranteedBatch, _Mapping]] = ..., ack: _Optional[_Union[LinkAck, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., proof: _Optional[_Union[LinkProof, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("cluster", "region", "protocol_version", "proof", "nonce", "received_upto")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_UPTO_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    region: str
    protocol_version: int
    proof: bytes
    nonce: bytes
    received_upto: int
    def __init__(self, cluster: _Optional[str] = ..., region: _Optional[str] = ..., protocol_version: _Optional[int] = ..., proof: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., received_upto: _Optional[int] = ...) -> None: ...

class LinkProof(_message.Message):
    __slots__ = ("proof",)
    PROOF_FIELD_NUMBER: _ClassVar[int]
    proof: bytes
    def __init__(self, proof: _Optional[bytes] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("reason", "detail")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    reason: str
    detail: str
    def __init__(self, reason: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class InterestFull(_message.Message):
    __slots__ = ("region", "version", "patterns")
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    region: str
    version: int
    patterns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, region: _Optional[str] = ..., version: _Optional[int] = ..., patterns: _Optional[_Iterable[str]] = ...) -> None: ...

class InterestDelta(_message.Message):
    __slots__ = ("region", "version", "added", "removed")
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    region: str
    version: int
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, region: _Optional[str] = ..., version: _Optional[int] = ..., added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class InterestRequest(_message.Message):
    __slots__ = ("regions",)
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, regions: _Optional[_Iterable[str]] = ...) -> None: ...

class LinkState(_message.Message):
    __slots__ = ("region", "version", "up")
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    region: str
    version: int
    up: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, region: _Optional[str] = ..., version: _Optional[int] = ..., up: _Optional[_Iterable[str]] = ...) -> None: ...

class DirectBatch(_message.Message):
    __slots__ = ("destinations", "visited", "events", "topics")
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    VISITED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    destinations: _containers.RepeatedScalarFieldContainer[str]
    visited: _containers.RepeatedScalarFieldContainer[str]
    events: _containers.RepeatedScalarFieldContainer[bytes]
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, destinations: _Optional[_Iterable[str]] = ..., visited: _Optional[_Iterable[str]] = ..., events: _Optional[_Iterable[bytes]] = ..., topics: _Optional[_Iterable[str]] = ...) -> None: ...

class GuaranteedEvent(_message.Message):
    __slots__ = ("link_seq", "destinations", "visited", "event", "topic")
    LINK_SEQ_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    VISITED_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    link_seq: int
    destinations: _containers.RepeatedScalarFieldContainer[str]
    visited: _containers.RepeatedScalarFieldContainer[str]
    event: bytes
    topic: str
    def __init__(self, link_seq: _Optional[int] = ..., destinations: _Optional[_Iterable[str]] = ..., visited: _Optional[_Iterable[str]] = ..., event: _Optional[bytes] = ..., topic: _Optional[str] = ...) -> None: ...

class GuaranteedBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[GuaranteedEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[GuaranteedEvent, _Mapping]]] = ...) -> None: ...

class LinkAck(_message.Message):
    __slots__ = ("upto",)
    UPTO_FIELD_NUMBER: _ClassVar[int]
    upto: int
    def __init__(self, upto: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_ms", "echo_ms", "echo_held_ms", "interest_digest")
    SENT_MS_FIELD_NUMBER: _ClassVar[int]
    ECHO_MS_FIELD_NUMBER: _ClassVar[int]
    ECHO_HELD_MS_FIELD_NUMBER: _ClassVar[int]
    INTEREST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    sent_ms: int
    echo_ms: int
    echo_held_ms: int
    interest_digest: int
    def __init__(self, sent_ms: _Optional[int] = ..., echo_ms: _Optional[int] = ..., echo_held_ms: _Optional[int] = ..., interest_digest: _Optional[int] = ...) -> None: ...
