"""Who is calling: the token and the peer of a request.

Browsers' EventSource and WebSocket cannot set an Authorization header, so a
token may also come as the `token` (or `access_token`) query parameter; it then
shows in URLs, which proxies and access logs may keep (docs/http.md says so).
"""

from __future__ import annotations

from aiohttp import web

from plexus.errors import Unauthenticated

__all__ = ["QUERY_TOKEN_PARAMETERS", "name_of", "peer_of", "token_of"]

QUERY_TOKEN_PARAMETERS = ("token", "access_token")
# The name a client gives itself (`plexus clients` shows it), like gRPC's metadata.
CLIENT_NAME_HEADER = "Plexus-Client-Name"
MAX_NAME_CHARS = 100


def token_of(request: web.Request) -> str | None:
    """The bearer token of `request`, or None when it brings none."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("malformed")  # not "Bearer TOKEN"
        return token.strip()
    for name in QUERY_TOKEN_PARAMETERS:
        token = request.query.get(name)
        if token:
            return token
    return None


def peer_of(request: web.Request) -> str:
    """The connection, as the node's client registry keys it: `http:HOST:PORT`."""
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"http:{peername[0]}:{peername[1]}"
    return f"http:{request.remote}"


def name_of(request: web.Request) -> str:
    return request.headers.get(CLIENT_NAME_HEADER, "")[:MAX_NAME_CHARS]
