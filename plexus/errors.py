"""The error taxonomy shared by every layer, and its tables to the wire and back.

Each error names what was wrong in its message and keeps the parts as fields.
On the wire an error is a gRPC status code plus, in the status details
(`grpc-status-details-bin`, a `google.rpc.Status`), a `google.rpc.ErrorInfo`
whose `reason` names the class (`QUEUE_FULL`), whose `domain` is `plexus` and
whose `metadata` holds the class's fields as strings; a refused event in a
publish stream carries the same reason and fields in its `plexus.v1.Error`.
Reasons are part of the contract: they are only ever added, never renamed.

The node builds the details with `status_of`; the SDK turns a status back into
the same class with `error_from_metadata` (or `error_from_status` given a reason
and fields). A reason it does not know falls back to the status code's class.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "plexus"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class _Field(NamedTuple):
    """How one field of an error is written as a string, and read back."""

    dump: Callable[[Any], str]
    load: Callable[[str], Any]


TEXT = _Field(str, str)
INT = _Field(str, int)
OPTIONAL_INT = _Field(lambda v: "" if v is None else str(v), lambda s: int(s) if s else None)
TEXT_LIST = _Field(json.dumps, lambda s: [str(x) for x in json.loads(s)])


class PlexusError(Exception):
    """Root of every error Plexus raises on purpose."""

    status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    # True when the same call may succeed if tried again later.
    retriable: bool = False
    # The ErrorInfo reason that names this class on the wire (see REASONS).
    reason_code: ClassVar[str] = "UNKNOWN"
    # The fields that travel with the error, by attribute name.
    wire_fields: ClassVar[Mapping[str, _Field]] = {}

    def fields(self) -> dict[str, str]:
        """This error's fields as strings, as they travel on the wire."""
        wire_fields = REASONS[reason_of(self)].wire_fields
        return {
            name: field.dump(getattr(self, name))
            for name, field in wire_fields.items()
            if getattr(self, name, None) is not None
        }

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, str]) -> PlexusError:
        """The error as the node sent it: its message and its fields (None when absent)."""
        err = cls.__new__(cls)
        Exception.__init__(err, message)
        for name, field in cls.wire_fields.items():
            raw = fields.get(name)
            value = None
            if raw is not None:
                try:
                    value = field.load(raw)
                except (ValueError, TypeError):
                    value = None
            setattr(err, name, value)
        return err


class InvalidArgument(PlexusError):
    status_code = grpc.StatusCode.INVALID_ARGUMENT
    reason_code = "INVALID_ARGUMENT"


class InvalidTopic(InvalidArgument):
    reason_code = "INVALID_TOPIC"
    wire_fields = {"topic": TEXT, "reason": TEXT, "level": OPTIONAL_INT}

    def __init__(self, topic: str, reason: str, level: int | None = None) -> None:
        self.topic, self.reason, self.level = topic, reason, level
        where = f" at level {level + 1}" if level is not None else ""
        super().__init__(f"invalid topic {topic!r}{where}: {reason}")


class InvalidPattern(InvalidArgument):
    reason_code = "INVALID_PATTERN"
    wire_fields = {"pattern": TEXT, "reason": TEXT, "level": OPTIONAL_INT}

    def __init__(self, pattern: str, reason: str, level: int | None = None) -> None:
        self.pattern, self.reason, self.level = pattern, reason, level
        where = f" at level {level + 1}" if level is not None else ""
        super().__init__(f"invalid pattern {pattern!r}{where}: {reason}")


class ConfigError(PlexusError):
    """A bad configuration: every problem found, each with its source and key."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT
    reason_code = "CONFIG_ERROR"
    wire_fields = {"source": TEXT, "problems": TEXT_LIST}

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        super().__init__(f"{source}: " + "; ".join(problems))


class NotFound(PlexusError):
    status_code = grpc.StatusCode.NOT_FOUND
    reason_code = "NOT_FOUND"


class QueueNotFound(NotFound):
    reason_code = "QUEUE_NOT_FOUND"
    wire_fields = {"name": TEXT}

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no queue named {name!r}")


class AlreadyExists(PlexusError):
    status_code = grpc.StatusCode.ALREADY_EXISTS
    reason_code = "ALREADY_EXISTS"


class QueueExists(AlreadyExists):
    reason_code = "QUEUE_EXISTS"
    wire_fields = {"name": TEXT}

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a queue named {name!r} already exists")


class ResourceExhausted(PlexusError):
    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retriable = True
    reason_code = "RESOURCE_EXHAUSTED"


class QueueFull(ResourceExhausted):
    reason_code = "QUEUE_FULL"
    wire_fields = {"name": TEXT, "limit": TEXT, "value": INT}

    def __init__(self, name: str, limit: str, value: int) -> None:
        self.name, self.limit, self.value = name, limit, value
        super().__init__(f"queue {name!r} is full: {limit} {value} reached")


class StorageFull(ResourceExhausted):
    """The node's data directory has no room left (its disk or LMDB map)."""

    reason_code = "STORAGE_FULL"
    wire_fields = {"path": TEXT, "detail": TEXT}

    def __init__(self, path: str, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(f"storage in {path} is full: {detail}")


class SpoolFull(ResourceExhausted):
    """A link's outbound spool is over its quota: the link is down or slow."""

    reason_code = "SPOOL_FULL"
    wire_fields = {"peer": TEXT, "quota_bytes": INT}

    def __init__(self, peer: str, quota_bytes: int) -> None:
        self.peer, self.quota_bytes = peer, quota_bytes
        super().__init__(
            f"the spool of the link to {peer!r} is full ({quota_bytes} bytes): "
            "the link has been down or slow for too long"
        )


class LimitReached(ResourceExhausted):
    """A per-client or per-node limit (`limit`: the setting's name) would be passed."""

    reason_code = "LIMIT_REACHED"
    wire_fields = {"limit": TEXT, "value": INT}

    def __init__(self, limit: str, value: int) -> None:
        self.limit, self.value = limit, value
        super().__init__(f"limit reached: {limit} = {value}")


class FailedPrecondition(PlexusError):
    status_code = grpc.StatusCode.FAILED_PRECONDITION
    reason_code = "FAILED_PRECONDITION"


class DataDirLocked(FailedPrecondition):
    reason_code = "DATA_DIR_LOCKED"
    wire_fields = {"path": TEXT, "pid": OPTIONAL_INT}

    def __init__(self, path: str, pid: int | None) -> None:
        self.path, self.pid = path, pid
        owner = f"process {pid}" if pid else "another process"
        super().__init__(f"data directory {path} is in use by {owner}")


class PermissionDenied(PlexusError):
    status_code = grpc.StatusCode.PERMISSION_DENIED
    reason_code = "PERMISSION_DENIED"


class NotPermitted(PermissionDenied):
    """A token lacks the permission (`publish`, `subscribe`, `consume`, `create`, `purge`,
    `admin`) for `target` (a topic, pattern or queue; empty for admin calls)."""

    reason_code = "NOT_PERMITTED"
    wire_fields = {"token": TEXT, "permission": TEXT, "target": TEXT}

    def __init__(self, token: str, permission: str, target: str = "") -> None:
        self.token, self.permission, self.target = token, permission, target
        what = f" for {target!r}" if target else ""
        super().__init__(f"permission denied: token {token!r} has no {permission} permission{what}")


class Unauthenticated(PlexusError):
    """No usable token: `reason` is `missing`, `malformed`, `forged`, `expired` or `revoked`."""

    status_code = grpc.StatusCode.UNAUTHENTICATED
    reason_code = "UNAUTHENTICATED"
    wire_fields = {"reason": TEXT, "token": TEXT}

    def __init__(self, reason: str, token: str = "") -> None:
        self.reason, self.token = reason, token
        named = f" {token!r}" if token else ""
        super().__init__(f"unauthenticated: token{named} is {reason}")


class Unavailable(PlexusError):
    status_code = grpc.StatusCode.UNAVAILABLE
    retriable = True
    reason_code = "UNAVAILABLE"


class InternalError(PlexusError):
    """A bug in a node's own code: the node logged it; nothing the caller did wrong."""

    status_code = grpc.StatusCode.INTERNAL
    reason_code = "INTERNAL"
    wire_fields = {"region": TEXT}

    def __init__(self, region: str) -> None:
        self.region = region
        super().__init__(f"internal error in node {region}, see its log")


class ClientClosed(PlexusError):
    """The client (or the stream) was closed by the application: never retriable."""

    status_code = grpc.StatusCode.CANCELLED
    retriable = False

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} is closed")


class Timeout(PlexusError):
    """A call's deadline passed before the node answered (`timeout`: the deadline in s)."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED
    retriable = True

    def __init__(self, what: str, timeout: float | None) -> None:
        self.what, self.timeout = what, timeout
        within = f"within {timeout:g} s" if timeout is not None else "before its deadline"
        super().__init__(f"{what}: no answer {within}")


def _reasons(classes: Iterable[type[PlexusError]]) -> dict[str, type[PlexusError]]:
    table: dict[str, type[PlexusError]] = {}
    for cls in classes:
        if cls.reason_code in table:
            raise RuntimeError(f"reason {cls.reason_code} names two classes")
        table[cls.reason_code] = cls
    return table


# The one table between reasons on the wire and classes (a reason is never renamed).
# ClientClosed and Timeout are the client's own states: they never travel.
REASONS: dict[str, type[PlexusError]] = _reasons(
    (
        PlexusError,
        InvalidArgument,
        InvalidTopic,
        InvalidPattern,
        ConfigError,
        NotFound,
        QueueNotFound,
        AlreadyExists,
        QueueExists,
        ResourceExhausted,
        QueueFull,
        StorageFull,
        SpoolFull,
        LimitReached,
        FailedPrecondition,
        DataDirLocked,
        PermissionDenied,
        NotPermitted,
        Unauthenticated,
        Unavailable,
        InternalError,
    )
)

# The class of a status code, for a status with no (or an unknown) reason.
_BY_CODE: dict[grpc.StatusCode, type[PlexusError]] = {
    cls.status_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        ResourceExhausted,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        Unavailable,
        InternalError,
    )
}


def status_code_of(exc: PlexusError) -> grpc.StatusCode:
    return exc.status_code


def reason_of(exc: PlexusError) -> str:
    """The reason `exc` travels under: its own class's, else its nearest ancestor's in REASONS."""
    for cls in type(exc).__mro__:
        reason = getattr(cls, "reason_code", None)
        if reason is not None and REASONS.get(reason) is cls:
            return reason
    return PlexusError.reason_code


def error_from_status(
    code: grpc.StatusCode,
    message: str,
    reason: str = "",
    fields: Mapping[str, str] | None = None,
) -> PlexusError:
    """The client-side error for a status the node returned, rebuilt from its reason and fields.

    A reason this side does not know, or one that does not belong to `code`,
    gives the status code's own class.
    """
    cls = REASONS.get(reason) if reason else None
    if cls is None or cls.status_code != code:
        cls = _BY_CODE.get(code, PlexusError)
    return cls.rebuild(message, fields or {})


def status_of(exc: PlexusError) -> status_pb2.Status:
    """The `google.rpc.Status` the node answers `exc` with: code, message and ErrorInfo."""
    status = status_pb2.Status(code=exc.status_code.value[0], message=str(exc))
    info = error_details_pb2.ErrorInfo(reason=reason_of(exc), domain=DOMAIN, metadata=exc.fields())
    status.details.add().Pack(info)
    return status


def error_info(details: bytes | None) -> tuple[str, dict[str, str]]:
    """The Plexus reason and fields in a serialized `google.rpc.Status`; ("", {}) when none."""
    if not details:
        return "", {}
    try:
        status = status_pb2.Status.FromString(details)
    except DecodeError:
        return "", {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                return info.reason, dict(info.metadata)
    return "", {}


def status_details(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    """The `grpc-status-details-bin` value among a call's trailing metadata."""
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def error_from_metadata(
    code: grpc.StatusCode, message: str, metadata: Iterable[tuple[str, str | bytes]] | None
) -> PlexusError:
    """The error for a status and its trailing metadata (which may carry the details)."""
    reason, fields = error_info(status_details(metadata))
    return error_from_status(code, message, reason, fields)


def code_from_int(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
