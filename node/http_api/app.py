"""The HTTP front door's routes: publish, stream (SSE), WebSocket, health.

Every call goes through the node's Gateway: the same identity and permission
checks, limits and publish path as gRPC (docs/http.md is the API's reference).
"""

from __future__ import annotations

import asyncio
import json
from functools import partial

from aiohttp import web

from node.gateway import Gateway, Published
from node.http_api.caller import QUERY_TOKEN_PARAMETERS, name_of, peer_of, token_of
from node.http_api.codec import compact_json, event_from_json, flag, headers_of, whole_number
from node.http_api.errors import BodyTooLarge, error_body, error_middleware
from node.http_api.sse import stream_events
from node.http_api.streams import OpenStreams
from node.http_api.websocket import websocket
from plexus.errors import InvalidArgument
from plexus.v1 import plexus_pb2 as pb

__all__ = ["build_app"]

_PUBLISH_PARAMETERS = frozenset({"guaranteed", "key", "ttl_ms", *QUERY_TOKEN_PARAMETERS})
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A batch body (`POST /v1/events`), in bytes: many events, each within max_payload_bytes.
MAX_BATCH_BYTES = 16 << 20


def build_app(gateway: Gateway, streams: OpenStreams, region: str) -> web.Application:
    """The routes, answering every refusal as JSON (errors.py)."""
    # Each route reads its body with read_body, under its own limit.
    app = web.Application(middlewares=[error_middleware(region)])
    app.router.add_get("/v1/health", partial(_health, gateway=gateway, region=region))
    app.router.add_post("/v1/events/{topic:.+}", partial(_publish, gateway=gateway))
    app.router.add_post("/v1/events", partial(_publish_batch, gateway=gateway))
    streaming = {"gateway": gateway, "streams": streams, "region": region}
    app.router.add_get("/v1/events", partial(stream_events, **streaming))
    app.router.add_get("/v1/ws", partial(websocket, **streaming))
    return app


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=compact_json)


async def _health(request: web.Request, gateway: Gateway, region: str) -> web.Response:
    leaving = gateway.publisher.leaving
    if leaving is not None:
        return _json({"region": region, "status": "leaving", "message": str(leaving)}, 503)
    return _json({"region": region, "status": "ok"})


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
    payload = await read_body(request, gateway.config.max_payload_bytes, "max_payload_bytes")
    event = pb.Event(
        topic=request.match_info["topic"],
        payload=payload,
        headers=headers_of(request.headers),
        mode=pb.DeliveryMode.GUARANTEED if guaranteed else pb.DeliveryMode.DIRECT,
        ttl_ms=ttl_ms,
    )
    # Shielded: a client that hangs up does not cut a guaranteed publish in half.
    [result] = await asyncio.shield(
        gateway.publish(
            access,
            [event],
            peer=peer_of(request),
            name=name_of(request),
            keys=[key] if key else (),
        )
    )
    if result.error is not None:
        raise result.error
    if guaranteed:
        return _json(_durable(result), status=200)
    return _json({"status": "routed"}, status=202)


async def _publish_batch(request: web.Request, gateway: Gateway) -> web.Response:
    """`POST /v1/events`: one JSON event per line (codec.event_from_json), published as one
    batch; one result per line, in order."""
    unknown = sorted(set(request.query) - set(QUERY_TOKEN_PARAMETERS))
    if unknown:
        raise InvalidArgument(f"unknown query parameter {unknown[0]!r} (known: token)")
    access = gateway.identify(token_of(request))
    body = await read_body(request, MAX_BATCH_BYTES, "the batch limit")
    events: list[pb.Event] = []
    keys: list[str] = []
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise InvalidArgument("expected a JSON object")
            event, key = event_from_json(message)
        except (json.JSONDecodeError, UnicodeDecodeError, InvalidArgument) as exc:
            raise InvalidArgument(f"line {number}: {exc}") from exc
        events.append(event)
        keys.append(key)
    if not events:
        raise InvalidArgument("the body holds no event: one JSON object per line")
    results = await asyncio.shield(
        gateway.publish(
            access,
            events,
            peer=peer_of(request),
            name=name_of(request),
            keys=keys if any(keys) else (),
        )
    )
    return _json(
        {
            "results": [
                error_body(result.error) if result.error is not None else _done(event, result)
                for event, result in zip(events, results, strict=True)
            ]
        }
    )


def _done(event: pb.Event, result: Published) -> dict[str, object]:
    return _durable(result) if event.mode == pb.DeliveryMode.GUARANTEED else {"status": "routed"}


def _durable(result: Published) -> dict[str, object]:
    """A stored event's answer: its id (a string: JSON numbers lose 64-bit precision), and
    whether it was a resend of a key already stored."""
    return {"status": "durable", "id": str(result.id), "duplicate": result.duplicate}


async def read_body(request: web.Request, limit: int, setting: str) -> bytes:
    """The request body, refused (413) past `limit` bytes before it is all read."""
    size = request.content_length
    if size is not None and size > limit:
        raise BodyTooLarge(f"request body of {size} bytes is over {setting} = {limit}")
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"request body is over {setting} = {limit}")
    return bytes(body)
