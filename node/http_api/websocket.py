"""`GET /v1/ws`: a WebSocket for both directions, JSON text messages.

Client to node, each with an optional `id` the answer repeats:

    {"type": "subscribe", "id": "1", "pattern": "orders/>"}
    {"type": "unsubscribe", "id": "2", "pattern": "orders/>"}
    {"type": "publish", "id": "3", "topic": "orders/1", "payload": "...",
     "encoding": "utf-8", "headers": {}, "guaranteed": true, "key": "", "ttl_ms": 0}

Node to client: `{"type": "ack", "id": ...}` once a subscription is live or a
publish is routed (direct) or durable (guaranteed); `{"type": "error", "id":
..., "error": {...}}` for a refused request (the connection stays open);
`{"type": "event", "pattern": P, "event": {...}}` for each event. A revoked or
expired token, or the node stopping, ends the connection with an error message
and close code 1008 (policy) or 1001 (going away).
"""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from node.gateway import ROUTED, Gateway, GatewaySubscription
from node.http_api.caller import name_of, peer_of, token_of
from node.http_api.codec import compact_json, event_from_json, event_json
from node.http_api.errors import error_body
from node.http_api.streams import HEARTBEAT_S, OpenStreams, next_check_s, pump
from node.permissions import Access
from plexus.errors import InvalidArgument, NotFound, PlexusError, Unauthenticated, Unavailable
from plexus.v1 import plexus_pb2 as pb

__all__ = ["websocket"]

# How long closing waits for the client's close frame: a silent client does not hold a
# stopping node.
CLOSE_TIMEOUT_S = 1.0
# Room in a WebSocket message beyond its payload: topic, headers, JSON.
MESSAGE_OVERHEAD_BYTES = 64 << 10
# Publishes awaiting their ack per connection: past it the node stops reading the socket.
MAX_PUBLISHES_IN_FLIGHT = 1024


class _Session:
    """One WebSocket's subscriptions and publishes."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        gateway: Gateway,
        access: Access,
        token: str | None,
        peer: str,
        name: str,
        tasks: asyncio.TaskGroup,
    ) -> None:
        self.ws, self.gateway, self.access, self.token = ws, gateway, access, token
        self.peer, self.name, self.tasks = peer, name, tasks
        self.subscriptions: dict[str, tuple[ExitStack, asyncio.Task[None]]] = {}
        self.in_flight = asyncio.Semaphore(MAX_PUBLISHES_IN_FLIGHT)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(compact_json(message))

    async def handle(self, text: str) -> None:
        request_id: Any = None
        try:
            try:
                message = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"message is not JSON: {exc}") from exc
            if not isinstance(message, dict):
                raise InvalidArgument("message must be a JSON object")
            request_id = message.get("id")
            kind = message.get("type")
            if kind == "publish":
                self.gateway.still_valid(self.token)
                event, key = event_from_json(message)
                await self.in_flight.acquire()  # backpressure: stop reading while full
                self.tasks.create_task(self.publish(request_id, event, key))
            elif kind == "subscribe":
                self.subscribe(_pattern(message))
                await self.send({"type": "ack", "id": request_id})
            elif kind == "unsubscribe":
                self.unsubscribe(_pattern(message))
                await self.send({"type": "ack", "id": request_id})
            else:
                raise InvalidArgument(
                    f"'type' must be publish, subscribe or unsubscribe, got {kind!r}"
                )
        except Unauthenticated:
            raise
        except PlexusError as exc:
            await self.send({"type": "error", "id": request_id, **error_body(exc)})

    async def publish(self, request_id: Any, event: pb.Event, key: str) -> None:
        result: PlexusError | None
        published = ROUTED
        try:
            # Shielded: the event is stored even if the connection goes meanwhile.
            [published] = await asyncio.shield(
                self.gateway.publish(
                    self.access, [event], peer=self.peer, name=self.name, keys=[key] if key else ()
                )
            )
            result = published.error
        except PlexusError as exc:  # e.g. a limit of the node's clients
            result = exc
        finally:
            self.in_flight.release()
        if result is not None:
            await self.send({"type": "error", "id": request_id, **error_body(result)})
        elif event.mode == pb.DeliveryMode.GUARANTEED:
            await self.send(
                {
                    "type": "ack",
                    "id": request_id,
                    "event_id": str(published.id),
                    "duplicate": published.duplicate,
                }
            )
        else:
            await self.send({"type": "ack", "id": request_id})

    def subscribe(self, pattern: str) -> None:
        if pattern in self.subscriptions:
            return  # already live: subscribing twice changes nothing
        stack = ExitStack()
        subscription = stack.enter_context(
            self.gateway.subscribe(self.access, pattern, peer=self.peer, name=self.name)
        )
        task = self.tasks.create_task(self._pump(subscription))
        self.subscriptions[pattern] = (stack, task)

    def unsubscribe(self, pattern: str) -> None:
        entry = self.subscriptions.pop(pattern, None)
        if entry is None:
            raise NotFound(f"no subscription to {pattern!r} on this connection")
        stack, task = entry
        task.cancel()
        stack.close()

    def close(self) -> None:
        for stack, task in self.subscriptions.values():
            task.cancel()
            stack.close()
        self.subscriptions.clear()

    async def _pump(self, subscription: GatewaySubscription) -> None:
        pattern = subscription.pattern

        async def send(events: list[pb.Event]) -> None:
            for event in events:
                await self.send({"type": "event", "pattern": pattern, "event": event_json(event)})

        await pump(self.gateway, self.token, subscription, send)


def _pattern(message: dict[str, Any]) -> str:
    pattern = message.get("pattern")
    if not isinstance(pattern, str):
        raise InvalidArgument(f"'pattern' must be a string, got {pattern!r}")
    return pattern


async def websocket(
    request: web.Request, gateway: Gateway, streams: OpenStreams, region: str
) -> web.StreamResponse:
    token = token_of(request)
    access = gateway.identify(token)  # refused before the upgrade, as a JSON error
    # A message holds one event: its payload as base64 (4/3 of it) and the rest.
    max_message = gateway.config.max_payload_bytes * 4 // 3 + MESSAGE_OVERHEAD_BYTES
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_S, timeout=CLOSE_TIMEOUT_S, max_msg_size=max_message
    )
    await ws.prepare(request)
    with streams.open() as stop:
        session: _Session | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                session = _Session(
                    ws, gateway, access, token, peer_of(request), name_of(request), tasks
                )
                tasks.create_task(_watch_token(gateway, token))
                tasks.create_task(_read(ws, session))
                await stop.wait()
                raise Unavailable(f"node {region} is stopping its HTTP front door")
        except* Unauthenticated as ended:
            await _end(ws, ended.exceptions[0], WSCloseCode.POLICY_VIOLATION)
        except* Unavailable as ended:
            await _end(ws, ended.exceptions[0], WSCloseCode.GOING_AWAY)
        except* ConnectionError:
            pass  # the client went away
        finally:
            if session is not None:
                session.close()
    return ws


async def _read(ws: web.WebSocketResponse, session: _Session) -> None:
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await session.handle(message.data)
        elif message.type == WSMsgType.BINARY:
            await session.send(
                {"type": "error", "id": None, **error_body(InvalidArgument("send text frames"))}
            )
    raise _ClientClosed


class _ClientClosed(ConnectionError):
    """The client closed the WebSocket."""


async def _watch_token(gateway: Gateway, token: str | None) -> None:
    """Ends the session when its token is revoked (subscribed or not) or expires."""
    expires_at = gateway.expires_at(token)
    changed = asyncio.Event()
    with gateway.auth.watching(changed):  # set on every change of the token state
        while True:
            try:
                async with asyncio.timeout(next_check_s(expires_at)):
                    await changed.wait()
            except TimeoutError:
                pass
            changed.clear()
            gateway.still_valid(token)


async def _end(ws: web.WebSocketResponse, exc: BaseException, code: int) -> None:
    assert isinstance(exc, PlexusError)
    try:
        await ws.send_str(compact_json({"type": "error", "id": None, **error_body(exc)}))
        await ws.close(code=code, message=str(exc)[:120].encode())
    except ConnectionError:
        pass
