"""What every call of a client carries as metadata: its token, `authorization: Bearer
<token>`, and its name, `plexus-client-name: <name>` (shown by `plexus clients`).

Added by a client interceptor on the channel, so unary calls and every kind of
stream carry them, and a reconnect (a new channel) keeps them. With TLS the same
token could travel as call credentials; on a plaintext channel gRPC allows only
metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpc import aio

AUTHORIZATION = "authorization"
NAME = "plexus-client-name"

Headers = tuple[tuple[str, str], ...]


def _with_headers(details: aio.ClientCallDetails, headers: Headers) -> aio.ClientCallDetails:
    metadata = aio.Metadata(*(details.metadata or ()))
    for key, value in headers:
        metadata[key] = value
    return aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnary(aio.UnaryUnaryClientInterceptor):
    def __init__(self, headers: Headers) -> None:
        self.headers = headers

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_headers(details, self.headers), request)


class _UnaryStream(aio.UnaryStreamClientInterceptor):
    def __init__(self, headers: Headers) -> None:
        self.headers = headers

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_headers(details, self.headers), request)


class _StreamUnary(aio.StreamUnaryClientInterceptor):
    def __init__(self, headers: Headers) -> None:
        self.headers = headers

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_headers(details, self.headers), requests)


class _StreamStream(aio.StreamStreamClientInterceptor):
    def __init__(self, headers: Headers) -> None:
        self.headers = headers

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_headers(details, self.headers), requests)


def call_interceptors(
    token: str | None, name: str | None = None
) -> Sequence[aio.ClientInterceptor]:
    """Interceptors that send `token` and `name` with every call (none without either)."""
    headers: Headers = ()
    if token:
        headers += ((AUTHORIZATION, f"Bearer {token}"),)
    if name:
        headers += ((NAME, name),)
    if not headers:
        return ()
    return (
        _UnaryUnary(headers),
        _UnaryStream(headers),
        _StreamUnary(headers),
        _StreamStream(headers),
    )
