"""Errors as the HTTP front door answers them: the gRPC code's HTTP status and a JSON body.

The body carries what a gRPC status carries (plexus/errors.py), so a client sees
the same reason codes on every front door:

    {"error": {"code": "PERMISSION_DENIED", "reason": "NOT_PERMITTED",
               "message": "...", "fields": {"token": "...", ...}}}

A bug in a handler is logged with its traceback and answered 500 INTERNAL;
the client never sees the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web

from node.http_api.codec import compact_json
from plexus.errors import (
    InternalError,
    InvalidArgument,
    NotFound,
    PlexusError,
    QueueFull,
    SpoolFull,
    StorageFull,
    reason_of,
)

__all__ = ["BodyTooLarge", "error_body", "error_middleware", "error_response", "http_status"]

log = logging.getLogger(__name__)

# The HTTP status of each gRPC code (as Google's HTTP/JSON APIs map them).
_STATUS_OF_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Storage that is full will not clear in a moment, unlike a per-client limit (429):
# 507 Insufficient Storage tells a client not to retry at once.
_STORAGE_FULL = (QueueFull, SpoolFull, StorageFull)


class BodyTooLarge(InvalidArgument):
    """A request body over `max_payload_bytes`: INVALID_ARGUMENT, as on gRPC, answered 413."""


def http_status(exc: PlexusError) -> int:
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, _STORAGE_FULL):
        return 507
    return _STATUS_OF_CODE.get(exc.status_code, 500)


def error_body(exc: PlexusError) -> dict[str, Any]:
    """The JSON object of `exc` (also sent in SSE `error` events and WebSocket errors)."""
    return {
        "error": {
            "code": exc.status_code.name,
            "reason": reason_of(exc),
            "message": str(exc),
            "fields": exc.fields(),
        }
    }


def error_response(exc: PlexusError, status: int | None = None) -> web.Response:
    return web.json_response(error_body(exc), status=status or http_status(exc), dumps=compact_json)


def _from_http(exc: web.HTTPException, request: web.Request) -> PlexusError:
    """aiohttp's own refusal (no route, a wrong method, a malformed request) as an error."""
    if exc.status == 404:
        return NotFound(f"no such endpoint: {request.method} {request.path}")
    if exc.status == 405:
        return InvalidArgument(f"{request.method} is not allowed on {request.path}")
    return InvalidArgument(exc.text or exc.reason)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_middleware(region: str) -> Callable[[web.Request, Handler], Awaitable[Any]]:
    """Answers every refusal as JSON; logs a bug as a bug."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except PlexusError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(_from_http(exc, request), exc.status)
        except Exception:
            log.exception("bug in the HTTP front door: %s %s", request.method, request.path)
            return error_response(InternalError(region))

    return middleware
