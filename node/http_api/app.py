"""The HTTP front door's routes: publish, stream (SSE), WebSocket, health.

Every call goes through the node's Gateway: the same identity and permission
checks, limits and publish path as gRPC (docs/http.md is the API's reference).
"""

from __future__ import annotations

import asyncio
from functools import partial

from aiohttp import web

from node.gateway import Gateway
from node.http_api.caller import QUERY_TOKEN_PARAMETERS, name_of, peer_of, token_of
from node.http_api.codec import flag, headers_of, whole_number
from node.http_api.errors import BodyTooLarge, error_middleware
from node.http_api.sse import stream_events
from node.http_api.streams import OpenStreams
from node.http_api.websocket import websocket
from plexus.errors import InvalidArgument
from plexus.v1 import plexus_pb2 as pb

__all__ = ["build_app"]

_PUBLISH_PARAMETERS = frozenset({"guaranteed", "key", "ttl_ms", *QUERY_TOKEN_PARAMETERS})
IDEMPOTENCY_HEADER = "Idempotency-Key"


def build_app(gateway: Gateway, streams: OpenStreams, region: str) -> web.Application:
    """The routes, answering every refusal as JSON (errors.py)."""
    max_payload = gateway.config.max_payload_bytes
    app = web.Application(middlewares=[error_middleware(region)], client_max_size=max_payload)
    app.router.add_get("/v1/health", partial(_health, gateway=gateway, region=region))
    app.router.add_post("/v1/events/{topic:.+}", partial(_publish, gateway=gateway))
    streaming = {"gateway": gateway, "streams": streams, "region": region}
    app.router.add_get("/v1/events", partial(stream_events, **streaming))
    app.router.add_get("/v1/ws", partial(websocket, **streaming))
    return app


async def _health(request: web.Request, gateway: Gateway, region: str) -> web.Response:
    leaving = gateway.publisher.leaving
    if leaving is not None:
        return web.json_response(
            {"region": region, "status": "leaving", "message": str(leaving)}, status=503
        )
    return web.json_response({"region": region, "status": "ok"})


async def _publish(request: web.Request, gateway: Gateway) -> web.Response:
    query = request.query
    unknown = sorted(set(query) - _PUBLISH_PARAMETERS)
    if unknown:
        raise InvalidArgument(
            f"unknown query parameter {unknown[0]!r} (known: guaranteed, key, ttl_ms, token)"
        )
    guaranteed = flag("guaranteed", query.get("guaranteed"))
    key = query.get("key") or request.headers.get(IDEMPOTENCY_HEADER, "")
    if key and not guaranteed:
        raise InvalidArgument(
            "query parameter 'key' (or Idempotency-Key) de-duplicates guaranteed events "
            "only: add guaranteed=true"
        )
    ttl_ms = whole_number("query parameter 'ttl_ms'", query.get("ttl_ms", "0"))
    access = gateway.identify(token_of(request))
    limit = gateway.config.max_payload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    try:
        payload = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise _too_large(None, limit) from exc
    event = pb.Event(
        topic=request.match_info["topic"],
        payload=payload,
        headers=headers_of(request.headers),
        mode=pb.DeliveryMode.GUARANTEED if guaranteed else pb.DeliveryMode.DIRECT,
        ttl_ms=ttl_ms,
    )
    # Shielded: a client that hangs up does not cut a guaranteed publish in half.
    [refusal] = await asyncio.shield(
        gateway.publish(
            access,
            [event],
            peer=peer_of(request),
            name=name_of(request),
            keys=[key] if key else (),
        )
    )
    if refusal is not None:
        raise refusal
    if guaranteed:
        return web.json_response({"status": "durable"}, status=200)
    return web.json_response({"status": "routed"}, status=202)


def _too_large(size: int | None, limit: int) -> BodyTooLarge:
    of = f" of {size} bytes" if size is not None else ""
    return BodyTooLarge(f"request body{of} is over the node's limit max_payload_bytes = {limit}")
