"""The client's token on every call: `authorization: Bearer <token>` metadata.

Added by a client interceptor on the channel, so unary calls and every kind of
stream carry it, and a reconnect (a new channel) keeps it. With TLS the same
token could travel as call credentials; on a plaintext channel gRPC allows only
metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpc import aio

AUTHORIZATION = "authorization"


def _with_token(details: aio.ClientCallDetails, header: tuple[str, str]) -> aio.ClientCallDetails:
    metadata = aio.Metadata(*(details.metadata or ()))
    metadata[AUTHORIZATION] = header[1]
    return aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _BearerUnaryUnary(aio.UnaryUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self.header), request)


class _BearerUnaryStream(aio.UnaryStreamClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self.header), request)


class _BearerStreamUnary(aio.StreamUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token(details, self.header), requests)


class _BearerStreamStream(aio.StreamStreamClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token(details, self.header), requests)


def token_interceptors(token: str | None) -> Sequence[aio.ClientInterceptor]:
    """Interceptors that send `token` with every call (none without a token)."""
    if not token:
        return ()
    header = (AUTHORIZATION, f"Bearer {token}")
    return (
        _BearerUnaryUnary(header),
        _BearerUnaryStream(header),
        _BearerStreamUnary(header),
        _BearerStreamStream(header),
    )
