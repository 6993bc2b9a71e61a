"""The error taxonomy shared by every layer, and its one table to gRPC status codes.

Each error names what was wrong in its message and keeps the parts as fields.
The node translates an error to a status code with `status_code_of`; the SDK
turns a status back into an error with `error_from_status`.
"""

from __future__ import annotations

import grpc


class PlexusError(Exception):
    """Root of every error Plexus raises on purpose."""

    status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    # True when the same call may succeed if tried again later.
    retriable: bool = False


class InvalidArgument(PlexusError):
    status_code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidTopic(InvalidArgument):
    def __init__(self, topic: str, reason: str, level: int | None = None) -> None:
        self.topic, self.reason, self.level = topic, reason, level
        where = f" at level {level + 1}" if level is not None else ""
        super().__init__(f"invalid topic {topic!r}{where}: {reason}")


class InvalidPattern(InvalidArgument):
    def __init__(self, pattern: str, reason: str, level: int | None = None) -> None:
        self.pattern, self.reason, self.level = pattern, reason, level
        where = f" at level {level + 1}" if level is not None else ""
        super().__init__(f"invalid pattern {pattern!r}{where}: {reason}")


class NotFound(PlexusError):
    status_code = grpc.StatusCode.NOT_FOUND


class QueueNotFound(NotFound):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no queue named {name!r}")


class AlreadyExists(PlexusError):
    status_code = grpc.StatusCode.ALREADY_EXISTS


class QueueExists(AlreadyExists):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a queue named {name!r} already exists")


class ResourceExhausted(PlexusError):
    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retriable = True


class QueueFull(ResourceExhausted):
    def __init__(self, name: str, limit: str, value: int) -> None:
        self.name, self.limit, self.value = name, limit, value
        super().__init__(f"queue {name!r} is full: {limit} {value} reached")


class StorageFull(ResourceExhausted):
    def __init__(self, path: str, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(f"storage in {path} is full: {detail}")


class FailedPrecondition(PlexusError):
    status_code = grpc.StatusCode.FAILED_PRECONDITION


class DataDirLocked(FailedPrecondition):
    def __init__(self, path: str, pid: int | None) -> None:
        self.path, self.pid = path, pid
        owner = f"process {pid}" if pid else "another process"
        super().__init__(f"data directory {path} is in use by {owner}")


class PermissionDenied(PlexusError):
    status_code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(PlexusError):
    status_code = grpc.StatusCode.UNAVAILABLE
    retriable = True


class ClientClosed(PlexusError):
    """The client (or the stream) was closed by the application: never retriable."""

    status_code = grpc.StatusCode.CANCELLED

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} is closed")


class Timeout(PlexusError):
    """A call's deadline passed before the node answered."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED
    retriable = True

    def __init__(self, what: str, timeout: float | None) -> None:
        self.what, self.timeout = what, timeout
        super().__init__(f"{what}: no answer within {timeout} s")


class ConfigError(PlexusError):
    """A bad configuration: every problem found, each with its source and key."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        super().__init__(f"{source}: " + "; ".join(problems))


_BY_CODE: dict[grpc.StatusCode, type[PlexusError]] = {
    cls.status_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        ResourceExhausted,
        FailedPrecondition,
        PermissionDenied,
        Unavailable,
    )
}


def status_code_of(exc: PlexusError) -> grpc.StatusCode:
    return exc.status_code


def error_from_status(code: grpc.StatusCode, message: str) -> PlexusError:
    """The client-side error for a status the node returned."""
    cls = _BY_CODE.get(code, PlexusError)
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


def code_from_int(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
