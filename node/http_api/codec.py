"""Events to JSON and back, and the values of query parameters: no I/O.

A payload travels as text when it is valid UTF-8 (`"encoding": "utf-8"`), else
as base64 (`"encoding": "base64"`); a client publishing JSON may send either.
An event's id is a string: it is 64 bits, more than a JavaScript number holds.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from plexus.errors import InvalidArgument
from plexus.v1 import plexus_pb2 as pb

__all__ = [
    "HEADER_PREFIX",
    "compact_json",
    "event_from_json",
    "event_json",
    "flag",
    "headers_of",
    "whole_number",
]

# HTTP request headers that become event headers: `Plexus-Header-Shelf: 4` -> {"shelf": "4"}.
HEADER_PREFIX = "plexus-header-"
# The request's Content-Type is kept as this event header.
CONTENT_TYPE_HEADER = "content-type"
# `id >> 22` is the Unix time in milliseconds when the origin node took the event.
_ID_TIME_SHIFT = 22

# `?guaranteed` alone means true, as a flag does.
_TRUE = frozenset({"true", "1", "yes", ""})
_FALSE = frozenset({"false", "0", "no"})


def compact_json(value: Any) -> str:
    """JSON without the spaces: what every answer and message of the front door is."""
    return json.dumps(value, separators=(",", ":"))


def event_json(event: pb.Event) -> dict[str, Any]:
    """What SSE and WebSocket clients receive of an event."""
    try:
        payload, encoding = event.payload.decode(), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(event.payload).decode(), "base64"
    out: dict[str, Any] = {
        "topic": event.topic,
        "payload": payload,
        "encoding": encoding,
        "headers": dict(event.headers),
        "id": str(event.id),
        "origin_region": event.origin_region,
        "published_ms": event.id >> _ID_TIME_SHIFT,
        "guaranteed": event.mode == pb.DeliveryMode.GUARANTEED,
    }
    if event.discarded_before:
        # Events this subscriber's full buffer dropped just before this one.
        out["discarded_before"] = event.discarded_before
    return out


def headers_of(request_headers: Mapping[str, str]) -> dict[str, str]:
    """The event headers an HTTP request carries: `Plexus-Header-*` (names lowercased, as
    HTTP treats them case-insensitively) and its Content-Type."""
    headers = {
        name[len(HEADER_PREFIX) :].lower(): value
        for name, value in request_headers.items()
        if name.lower().startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX)
    }
    content_type = request_headers.get("Content-Type")
    if content_type:
        headers[CONTENT_TYPE_HEADER] = content_type
    return headers


def flag(name: str, value: str | None) -> bool:
    """A true/false query parameter; absent is false."""
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InvalidArgument(f"query parameter {name!r}: expected true or false, got {value!r}")


def whole_number(name: str, value: Any) -> int:
    """A non-negative integer from a query parameter (text) or a JSON value."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise InvalidArgument(f"{name!r}: expected a whole number, got {value!r}")


def payload_of(message: Mapping[str, Any]) -> bytes:
    """A JSON message's payload: text, or base64 when its `encoding` says so."""
    payload = message.get("payload", "")
    encoding = message.get("encoding", "utf-8")
    if not isinstance(payload, str):
        raise InvalidArgument(f"'payload' must be a string, got {type(payload).__name__}")
    if encoding == "utf-8":
        return payload.encode()
    if encoding == "base64":
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise InvalidArgument(f"'payload' is not valid base64: {exc}") from exc
    raise InvalidArgument(f"'encoding' must be 'utf-8' or 'base64', got {encoding!r}")


def event_from_json(message: Mapping[str, Any]) -> tuple[pb.Event, str]:
    """The event a JSON publish message describes, and its de-duplication key ("" for none).

    Fields: topic, payload, encoding, headers, guaranteed, ttl_ms, key.
    """
    topic = message.get("topic")
    if not isinstance(topic, str):
        raise InvalidArgument(f"'topic' must be a string, got {topic!r}")
    headers = message.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidArgument("'headers' must be an object of strings to strings")
    guaranteed = message.get("guaranteed", False)
    if not isinstance(guaranteed, bool):
        raise InvalidArgument(f"'guaranteed' must be true or false, got {guaranteed!r}")
    key = message.get("key") or ""
    if not isinstance(key, str):
        raise InvalidArgument(f"'key' must be a string, got {key!r}")
    if key and not guaranteed:
        raise InvalidArgument("'key' de-duplicates guaranteed events only: add guaranteed")
    event = pb.Event(
        topic=topic,
        payload=payload_of(message),
        headers=headers,
        mode=pb.DeliveryMode.GUARANTEED if guaranteed else pb.DeliveryMode.DIRECT,
        ttl_ms=whole_number("ttl_ms", message.get("ttl_ms", 0)),
    )
    return event, key
