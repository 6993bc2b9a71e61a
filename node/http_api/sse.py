"""`GET /v1/events?pattern=P`: matching events as server-sent events.

The subscriptions are live before the response headers go out, so a client
that got its 200 misses nothing published after. Each event is one SSE message
whose data is the event as JSON (codec.event_json); the stream ends with an
`event: error` message when the token is revoked or expires or the node stops.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from aiohttp import web

from node.gateway import Gateway
from node.http_api.caller import QUERY_TOKEN_PARAMETERS, name_of, peer_of, token_of
from node.http_api.codec import compact_json, event_json
from node.http_api.errors import error_body
from node.http_api.streams import OpenStreams, next_check_s, pump
from plexus.errors import InvalidArgument, PlexusError, Unavailable
from plexus.v1 import plexus_pb2 as pb

__all__ = ["stream_events"]

_PARAMETERS = frozenset({"pattern", *QUERY_TOKEN_PARAMETERS})
# A keep-alive: SSE clients ignore lines that start with a colon.
_HEARTBEAT = b": keep-alive\n\n"
# One connection may carry several patterns, not unboundedly many.
MAX_PATTERNS = 16


def _message(event: pb.Event) -> bytes:
    return b"data: " + compact_json(event_json(event)).encode() + b"\n\n"


def _patterns(request: web.Request) -> list[str]:
    unknown = sorted(set(request.query) - _PARAMETERS)
    if unknown:
        raise InvalidArgument(f"unknown query parameter {unknown[0]!r} (known: pattern, token)")
    patterns = list(dict.fromkeys(request.query.getall("pattern", [])))
    if not patterns:
        raise InvalidArgument("query parameter 'pattern' is missing: which topics to stream?")
    if len(patterns) > MAX_PATTERNS:
        raise InvalidArgument(f"query parameter 'pattern': at most {MAX_PATTERNS} per stream")
    return patterns


async def stream_events(
    request: web.Request, gateway: Gateway, streams: OpenStreams, region: str
) -> web.StreamResponse:
    patterns = _patterns(request)
    token = token_of(request)
    access = gateway.identify(token)
    expires_at = gateway.expires_at(token)
    peer, name = peer_of(request), name_of(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass events through as they come
        }
    )

    async def send(events: list[pb.Event]) -> None:
        await response.write(b"".join(_message(event) for event in events))

    with ExitStack() as subscribed, streams.open() as stop:
        # Refusals (a pattern not permitted, a limit) are answered before any header.
        subscriptions = [
            subscribed.enter_context(gateway.subscribe(access, p, peer=peer, name=name))
            for p in patterns
        ]
        await response.prepare(request)
        try:
            async with asyncio.TaskGroup() as pumps:
                for subscription in subscriptions:
                    pumps.create_task(pump(gateway, token, subscription, send))
                while not stop.is_set():
                    try:
                        async with asyncio.timeout(next_check_s(expires_at)):
                            await stop.wait()
                    except TimeoutError:
                        gateway.still_valid(token)  # an expired token ends the stream
                        await response.write(_HEARTBEAT)
                raise Unavailable(f"node {region} is stopping its HTTP front door")
        except* PlexusError as ended:
            await _last_word(response, ended.exceptions[0])
        except* ConnectionError:
            pass  # the client went away
    return response


async def _last_word(response: web.StreamResponse, exc: BaseException) -> None:
    assert isinstance(exc, PlexusError)
    body = compact_json(error_body(exc)).encode()
    try:
        await response.write(b"event: error\ndata: " + body + b"\n\n")
        await response.write_eof()
    except ConnectionError:
        pass
