from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeliveryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECT: _ClassVar[DeliveryMode]
    GUARANTEED: _ClassVar[DeliveryMode]
DIRECT: DeliveryMode
GUARANTEED: DeliveryMode

class Event(_message.Message):
    __slots__ = ("topic", "payload", "headers", "mode", "ttl_ms", "id", "origin_region", "delivery_count", "redelivered", "discarded_before", "delivery_tag", "queue")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_REGION_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_COUNT_FIELD_NUMBER: _ClassVar[int]
    REDELIVERED_FIELD_NUMBER: _ClassVar[int]
    DISCARDED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_TAG_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload: bytes
    headers: _containers.ScalarMap[str, str]
    mode: DeliveryMode
    ttl_ms: int
    id: int
    origin_region: str
    delivery_count: int
    redelivered: bool
    discarded_before: int
    delivery_tag: int
    queue: str
    def __init__(self, topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ..., mode: _Optional[_Union[DeliveryMode, str]] = ..., ttl_ms: _Optional[int] = ..., id: _Optional[int] = ..., origin_region: _Optional[str] = ..., delivery_count: _Optional[int] = ..., redelivered: _Optional[bool] = ..., discarded_before: _Optional[int] = ..., delivery_tag: _Optional[int] = ..., queue: _Optional[str] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "reason", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: str
    fields: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("events", "flush", "producer", "sequences", "keys")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    flush: bool
    producer: bytes
    sequences: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., flush: _Optional[bool] = ..., producer: _Optional[bytes] = ..., sequences: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class PublishAck(_message.Message):
    __slots__ = ("index", "id", "error", "count", "duplicate")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: int
    error: Error
    count: int
    duplicate: bool
    def __init__(self, index: _Optional[int] = ..., id: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., count: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("acks", "processed")
    ACKS_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[PublishAck]
    processed: int
    def __init__(self, acks: _Optional[_Iterable[_Union[PublishAck, _Mapping]]] = ..., processed: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("pattern", "buffer_events", "id")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    BUFFER_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    buffer_events: int
    id: int
    def __init__(self, pattern: _Optional[str] = ..., buffer_events: _Optional[int] = ..., id: _Optional[int] = ...) -> None: ...

class SubscriptionsRequest(_message.Message):
    __slots__ = ("subscribe", "unsubscribe")
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    subscribe: _containers.RepeatedCompositeFieldContainer[SubscribeRequest]
    unsubscribe: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, subscribe: _Optional[_Iterable[_Union[SubscribeRequest, _Mapping]]] = ..., unsubscribe: _Optional[_Iterable[int]] = ...) -> None: ...

class SubscriptionEvents(_message.Message):
    __slots__ = ("events", "subscription")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    subscription: int
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., subscription: _Optional[int] = ...) -> None: ...

class SubscriptionRefusal(_message.Message):
    __slots__ = ("subscription", "error")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    subscription: int
    error: Error
    def __init__(self, subscription: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class SubscriptionsResponse(_message.Message):
    __slots__ = ("subscribed", "refused", "events")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    subscribed: _containers.RepeatedScalarFieldContainer[int]
    refused: _containers.RepeatedCompositeFieldContainer[SubscriptionRefusal]
    events: _containers.RepeatedCompositeFieldContainer[SubscriptionEvents]
    def __init__(self, subscribed: _Optional[_Iterable[int]] = ..., refused: _Optional[_Iterable[_Union[SubscriptionRefusal, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[SubscriptionEvents, _Mapping]]] = ...) -> None: ...

class QueueLimits(_message.Message):
    __slots__ = ("max_depth", "max_bytes", "max_deliveries")
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    max_depth: int
    max_bytes: int
    max_deliveries: int
    def __init__(self, max_depth: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_deliveries: _Optional[int] = ...) -> None: ...

class QueueConfig(_message.Message):
    __slots__ = ("name", "subscriptions", "exclusive", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    subscriptions: _containers.RepeatedScalarFieldContainer[str]
    exclusive: bool
    limits: QueueLimits
    def __init__(self, name: _Optional[str] = ..., subscriptions: _Optional[_Iterable[str]] = ..., exclusive: _Optional[bool] = ..., limits: _Optional[_Union[QueueLimits, _Mapping]] = ...) -> None: ...

class QueueInfo(_message.Message):
    __slots__ = ("config", "depth", "bytes", "consumers", "unacked", "dead_message_queue", "events_in", "events_out", "oldest_age_ms")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    UNACKED_FIELD_NUMBER: _ClassVar[int]
    DEAD_MESSAGE_QUEUE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_IN_FIELD_NUMBER: _ClassVar[int]
    EVENTS_OUT_FIELD_NUMBER: _ClassVar[int]
    OLDEST_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    config: QueueConfig
    depth: int
    bytes: int
    consumers: int
    unacked: int
    dead_message_queue: str
    events_in: int
    events_out: int
    oldest_age_ms: int
    def __init__(self, config: _Optional[_Union[QueueConfig, _Mapping]] = ..., depth: _Optional[int] = ..., bytes: _Optional[int] = ..., consumers: _Optional[int] = ..., unacked: _Optional[int] = ..., dead_message_queue: _Optional[str] = ..., events_in: _Optional[int] = ..., events_out: _Optional[int] = ..., oldest_age_ms: _Optional[int] = ...) -> None: ...

class CreateQueueRequest(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: QueueConfig
    def __init__(self, config: _Optional[_Union[QueueConfig, _Mapping]] = ...) -> None: ...

class DeleteQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteQueueResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues",)
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueInfo]
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueInfo, _Mapping]]] = ...) -> None: ...

class DescribeQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PurgeQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PurgeQueueResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...

class ConsumeStart(_message.Message):
    __slots__ = ("queue", "credits")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    credits: int
    def __init__(self, queue: _Optional[str] = ..., credits: _Optional[int] = ...) -> None: ...

class ConsumeRequest(_message.Message):
    __slots__ = ("start", "credit", "ack", "nack")
    START_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    start: ConsumeStart
    credit: int
    ack: Tags
    nack: Tags
    def __init__(self, start: _Optional[_Union[ConsumeStart, _Mapping]] = ..., credit: _Optional[int] = ..., ack: _Optional[_Union[Tags, _Mapping]] = ..., nack: _Optional[_Union[Tags, _Mapping]] = ...) -> None: ...

class Tags(_message.Message):
    __slots__ = ("tags",)
    TAGS_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, tags: _Optional[_Iterable[int]] = ...) -> None: ...

class ConsumeResponse(_message.Message):
    __slots__ = ("started", "events", "confirmed")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    started: QueueInfo
    events: EventBatch
    confirmed: Tags
    def __init__(self, started: _Optional[_Union[QueueInfo, _Mapping]] = ..., events: _Optional[_Union[EventBatch, _Mapping]] = ..., confirmed: _Optional[_Union[Tags, _Mapping]] = ...) -> None: ...

class ReportStatusRequest(_message.Message):
    __slots__ = ("status",)
    class StatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _containers.ScalarMap[str, str]
    def __init__(self, status: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReportStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("region", "version", "protocol_version", "listen_address", "data_dir", "uptime_ms", "subscriptions", "queues", "direct_in", "direct_out", "guaranteed_in", "guaranteed_out", "discarded", "storage_map_bytes", "storage_used_bytes", "metrics_address")
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    DIRECT_IN_FIELD_NUMBER: _ClassVar[int]
    DIRECT_OUT_FIELD_NUMBER: _ClassVar[int]
    GUARANTEED_IN_FIELD_NUMBER: _ClassVar[int]
    GUARANTEED_OUT_FIELD_NUMBER: _ClassVar[int]
    DISCARDED_FIELD_NUMBER: _ClassVar[int]
    STORAGE_MAP_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    region: str
    version: str
    protocol_version: int
    listen_address: str
    data_dir: str
    uptime_ms: int
    subscriptions: int
    queues: int
    direct_in: int
    direct_out: int
    guaranteed_in: int
    guaranteed_out: int
    discarded: int
    storage_map_bytes: int
    storage_used_bytes: int
    metrics_address: str
    def __init__(self, region: _Optional[str] = ..., version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., listen_address: _Optional[str] = ..., data_dir: _Optional[str] = ..., uptime_ms: _Optional[int] = ..., subscriptions: _Optional[int] = ..., queues: _Optional[int] = ..., direct_in: _Optional[int] = ..., direct_out: _Optional[int] = ..., guaranteed_in: _Optional[int] = ..., guaranteed_out: _Optional[int] = ..., discarded: _Optional[int] = ..., storage_map_bytes: _Optional[int] = ..., storage_used_bytes: _Optional[int] = ..., metrics_address: _Optional[str] = ...) -> None: ...

class LinkInfo(_message.Message):
    __slots__ = ("peer", "state", "reason", "dialler", "rtt_ms", "events_in_per_s", "events_out_per_s", "bytes_in_per_s", "bytes_out_per_s", "events_in", "events_out", "direct_dropped", "spool_depth", "spool_oldest_age_ms", "held_down", "spool_discarded")
    PEER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DIALLER_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_IN_PER_S_FIELD_NUMBER: _ClassVar[int]
    EVENTS_OUT_PER_S_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_PER_S_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_PER_S_FIELD_NUMBER: _ClassVar[int]
    EVENTS_IN_FIELD_NUMBER: _ClassVar[int]
    EVENTS_OUT_FIELD_NUMBER: _ClassVar[int]
    DIRECT_DROPPED_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SPOOL_OLDEST_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    HELD_DOWN_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DISCARDED_FIELD_NUMBER: _ClassVar[int]
    peer: str
    state: str
    reason: str
    dialler: bool
    rtt_ms: float
    events_in_per_s: float
    events_out_per_s: float
    bytes_in_per_s: float
    bytes_out_per_s: float
    events_in: int
    events_out: int
    direct_dropped: int
    spool_depth: int
    spool_oldest_age_ms: int
    held_down: bool
    spool_discarded: int
    def __init__(self, peer: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., dialler: _Optional[bool] = ..., rtt_ms: _Optional[float] = ..., events_in_per_s: _Optional[float] = ..., events_out_per_s: _Optional[float] = ..., bytes_in_per_s: _Optional[float] = ..., bytes_out_per_s: _Optional[float] = ..., events_in: _Optional[int] = ..., events_out: _Optional[int] = ..., direct_dropped: _Optional[int] = ..., spool_depth: _Optional[int] = ..., spool_oldest_age_ms: _Optional[int] = ..., held_down: _Optional[bool] = ..., spool_discarded: _Optional[int] = ...) -> None: ...

class RegionInterest(_message.Message):
    __slots__ = ("region", "version", "patterns", "next_hop", "reachable")
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    region: str
    version: int
    patterns: _containers.RepeatedScalarFieldContainer[str]
    next_hop: str
    reachable: bool
    def __init__(self, region: _Optional[str] = ..., version: _Optional[int] = ..., patterns: _Optional[_Iterable[str]] = ..., next_hop: _Optional[str] = ..., reachable: _Optional[bool] = ...) -> None: ...

class ListLinksRequest(_message.Message):
    __slots__ = ("without_interest",)
    WITHOUT_INTEREST_FIELD_NUMBER: _ClassVar[int]
    without_interest: bool
    def __init__(self, without_interest: _Optional[bool] = ...) -> None: ...

class ListLinksResponse(_message.Message):
    __slots__ = ("region", "links", "interest")
    REGION_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    INTEREST_FIELD_NUMBER: _ClassVar[int]
    region: str
    links: _containers.RepeatedCompositeFieldContainer[LinkInfo]
    interest: _containers.RepeatedCompositeFieldContainer[RegionInterest]
    def __init__(self, region: _Optional[str] = ..., links: _Optional[_Iterable[_Union[LinkInfo, _Mapping]]] = ..., interest: _Optional[_Iterable[_Union[RegionInterest, _Mapping]]] = ...) -> None: ...

class SetLinkRequest(_message.Message):
    __slots__ = ("peer", "up")
    PEER_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    peer: str
    up: bool
    def __init__(self, peer: _Optional[str] = ..., up: _Optional[bool] = ...) -> None: ...

class SetLinkResponse(_message.Message):
    __slots__ = ("link",)
    LINK_FIELD_NUMBER: _ClassVar[int]
    link: LinkInfo
    def __init__(self, link: _Optional[_Union[LinkInfo, _Mapping]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("topic", "local_only")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    topic: str
    local_only: bool
    def __init__(self, topic: _Optional[str] = ..., local_only: _Optional[bool] = ...) -> None: ...

class ExplainedRegion(_message.Message):
    __slots__ = ("region", "path", "subscribers", "queues", "reachable", "error", "guaranteed_path")
    REGION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GUARANTEED_PATH_FIELD_NUMBER: _ClassVar[int]
    region: str
    path: _containers.RepeatedScalarFieldContainer[str]
    subscribers: int
    queues: _containers.RepeatedScalarFieldContainer[str]
    reachable: bool
    error: str
    guaranteed_path: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, region: _Optional[str] = ..., path: _Optional[_Iterable[str]] = ..., subscribers: _Optional[int] = ..., queues: _Optional[_Iterable[str]] = ..., reachable: _Optional[bool] = ..., error: _Optional[str] = ..., guaranteed_path: _Optional[_Iterable[str]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("topic", "regions")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    regions: _containers.RepeatedCompositeFieldContainer[ExplainedRegion]
    def __init__(self, topic: _Optional[str] = ..., regions: _Optional[_Iterable[_Union[ExplainedRegion, _Mapping]]] = ...) -> None: ...

class RegionMember(_message.Message):
    __slots__ = ("name", "grpc", "raft", "voter")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRPC_FIELD_NUMBER: _ClassVar[int]
    RAFT_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    grpc: str
    raft: str
    voter: bool
    def __init__(self, name: _Optional[str] = ..., grpc: _Optional[str] = ..., raft: _Optional[str] = ..., voter: _Optional[bool] = ...) -> None: ...

class MembershipRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MembershipInfo(_message.Message):
    __slots__ = ("cluster", "region", "raft_role", "raft_term", "raft_leader", "raft_commit_index", "raft_has_quorum", "version", "regions", "links", "token_verify_key", "revoked_token_names", "revoked_token_ids", "auth_version")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    RAFT_ROLE_FIELD_NUMBER: _ClassVar[int]
    RAFT_TERM_FIELD_NUMBER: _ClassVar[int]
    RAFT_LEADER_FIELD_NUMBER: _ClassVar[int]
    RAFT_COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    RAFT_HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_VERIFY_KEY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_TOKEN_NAMES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    AUTH_VERSION_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    region: str
    raft_role: str
    raft_term: int
    raft_leader: str
    raft_commit_index: int
    raft_has_quorum: bool
    version: int
    regions: _containers.RepeatedCompositeFieldContainer[RegionMember]
    links: _containers.RepeatedScalarFieldContainer[str]
    token_verify_key: bytes
    revoked_token_names: _containers.RepeatedScalarFieldContainer[str]
    revoked_token_ids: _containers.RepeatedScalarFieldContainer[str]
    auth_version: int
    def __init__(self, cluster: _Optional[str] = ..., region: _Optional[str] = ..., raft_role: _Optional[str] = ..., raft_term: _Optional[int] = ..., raft_leader: _Optional[str] = ..., raft_commit_index: _Optional[int] = ..., raft_has_quorum: _Optional[bool] = ..., version: _Optional[int] = ..., regions: _Optional[_Iterable[_Union[RegionMember, _Mapping]]] = ..., links: _Optional[_Iterable[str]] = ..., token_verify_key: _Optional[bytes] = ..., revoked_token_names: _Optional[_Iterable[str]] = ..., revoked_token_ids: _Optional[_Iterable[str]] = ..., auth_version: _Optional[int] = ...) -> None: ...

class JoinChallengeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JoinChallengeResponse(_message.Message):
    __slots__ = ("nonce", "expires_in_ms")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_MS_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    expires_in_ms: int
    def __init__(self, nonce: _Optional[bytes] = ..., expires_in_ms: _Optional[int] = ...) -> None: ...

class AddRegionRequest(_message.Message):
    __slots__ = ("region", "links", "proof", "nonce")
    REGION_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    region: RegionMember
    links: _containers.RepeatedScalarFieldContainer[str]
    proof: bytes
    nonce: bytes
    def __init__(self, region: _Optional[_Union[RegionMember, _Mapping]] = ..., links: _Optional[_Iterable[str]] = ..., proof: _Optional[bytes] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class AddRegionResponse(_message.Message):
    __slots__ = ("membership", "raft_members", "voter")
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    RAFT_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    membership: MembershipInfo
    raft_members: _containers.RepeatedScalarFieldContainer[str]
    voter: bool
    def __init__(self, membership: _Optional[_Union[MembershipInfo, _Mapping]] = ..., raft_members: _Optional[_Iterable[str]] = ..., voter: _Optional[bool] = ...) -> None: ...

class RemoveRegionRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ("drain_timeout_ms", "force")
    DRAIN_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    drain_timeout_ms: int
    force: bool
    def __init__(self, drain_timeout_ms: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class ShutdownResponse(_message.Message):
    __slots__ = ("spooled_left",)
    SPOOLED_LEFT_FIELD_NUMBER: _ClassVar[int]
    spooled_left: int
    def __init__(self, spooled_left: _Optional[int] = ...) -> None: ...

class LinkChangeRequest(_message.Message):
    __slots__ = ("a", "b")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    a: str
    b: str
    def __init__(self, a: _Optional[str] = ..., b: _Optional[str] = ...) -> None: ...

class ListClientsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClientInfo(_message.Message):
    __slots__ = ("id", "peer", "connected_since_ms", "publishers", "subscriptions", "consuming", "events_published", "events_delivered", "events_discarded", "limits_hit", "name", "status")
    class LimitsHitEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class StatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHERS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    CONSUMING_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DELIVERED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DISCARDED_FIELD_NUMBER: _ClassVar[int]
    LIMITS_HIT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: int
    peer: str
    connected_since_ms: int
    publishers: int
    subscriptions: _containers.RepeatedScalarFieldContainer[str]
    consuming: _containers.RepeatedScalarFieldContainer[str]
    events_published: int
    events_delivered: int
    events_discarded: int
    limits_hit: _containers.ScalarMap[str, int]
    name: str
    status: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., peer: _Optional[str] = ..., connected_since_ms: _Optional[int] = ..., publishers: _Optional[int] = ..., subscriptions: _Optional[_Iterable[str]] = ..., consuming: _Optional[_Iterable[str]] = ..., events_published: _Optional[int] = ..., events_delivered: _Optional[int] = ..., events_discarded: _Optional[int] = ..., limits_hit: _Optional[_Mapping[str, int]] = ..., name: _Optional[str] = ..., status: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListClientsResponse(_message.Message):
    __slots__ = ("clients",)
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[ClientInfo]
    def __init__(self, clients: _Optional[_Iterable[_Union[ClientInfo, _Mapping]]] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("contains", "limit")
    CONTAINS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    contains: str
    limit: int
    def __init__(self, contains: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class SubscriptionInfo(_message.Message):
    __slots__ = ("pattern", "queue", "client_id", "delivered", "discarded", "buffered", "buffer_events")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DISCARDED_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    BUFFER_EVENTS_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    queue: str
    client_id: int
    delivered: int
    discarded: int
    buffered: int
    buffer_events: int
    def __init__(self, pattern: _Optional[str] = ..., queue: _Optional[str] = ..., client_id: _Optional[int] = ..., delivered: _Optional[int] = ..., discarded: _Optional[int] = ..., buffered: _Optional[int] = ..., buffer_events: _Optional[int] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions", "total")
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[SubscriptionInfo]
    total: int
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[SubscriptionInfo, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class TokenGrants(_message.Message):
    __slots__ = ("publish", "subscribe", "consume", "create", "purge", "admin")
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    CONSUME_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    publish: _containers.RepeatedScalarFieldContainer[str]
    subscribe: _containers.RepeatedScalarFieldContainer[str]
    consume: _containers.RepeatedScalarFieldContainer[str]
    create: _containers.RepeatedScalarFieldContainer[str]
    purge: _containers.RepeatedScalarFieldContainer[str]
    admin: bool
    def __init__(self, publish: _Optional[_Iterable[str]] = ..., subscribe: _Optional[_Iterable[str]] = ..., consume: _Optional[_Iterable[str]] = ..., create: _Optional[_Iterable[str]] = ..., purge: _Optional[_Iterable[str]] = ..., admin: _Optional[bool] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("name", "grants", "expires_in_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    grants: TokenGrants
    expires_in_s: int
    def __init__(self, name: _Optional[str] = ..., grants: _Optional[_Union[TokenGrants, _Mapping]] = ..., expires_in_s: _Optional[int] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "info")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: TokenInfo
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("name", "id", "grants", "expires_at", "issued_at", "revoked")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    grants: TokenGrants
    expires_at: int
    issued_at: int
    revoked: bool
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., grants: _Optional[_Union[TokenGrants, _Mapping]] = ..., expires_at: _Optional[int] = ..., issued_at: _Optional[int] = ..., revoked: _Optional[bool] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens", "revoked_names")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_NAMES_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    revoked_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ..., revoked_names: _Optional[_Iterable[str]] = ...) -> None: ...
