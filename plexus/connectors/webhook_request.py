"""What a webhook receiver gets: the JSON body of one event, and its signature.

The body::

    {"id": "7408…", "topic": "shop/orders/insert", "region": "us",
     "publish_time": "2026-11-30T23:11:03.123Z", "headers": {…}, "delivery_count": 1,
     "payload": {…}, "payload_encoding": "json"}

`id` is a string: event ids use all 64 bits, more than a JSON number keeps in
JavaScript. `payload` is the parsed JSON when the payload is JSON
(`payload_encoding` "json"), else its text ("utf-8"), else base64 ("base64").

The signature is HMAC-SHA256, keyed with the secret, of the timestamp header's
value, a ".", and the body's bytes, sent as `sha256=<hex>`: the timestamp is in
the signed material so a receiver can refuse a replayed old request.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from typing import Any

from plexus.client import Event

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "encode_body",
    "sign",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-Plexus-Signature"
TIMESTAMP_HEADER = "X-Plexus-Timestamp"


def encode_body(event: Event) -> bytes:
    payload, encoding = _payload(event.payload)
    published = datetime.datetime.fromtimestamp(event.publish_time_ms / 1000, datetime.UTC)
    body = {
        "id": str(event.id),
        "topic": event.topic,
        "region": event.origin_region,
        "publish_time": published.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "headers": event.headers,
        "delivery_count": event.delivery_count,
        "payload": payload,
        "payload_encoding": encoding,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _payload(data: bytes) -> tuple[Any, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"
    try:
        return json.loads(text, parse_constant=_not_json), "json"
    except ValueError:
        return text, "utf-8"


def _not_json(constant: str) -> None:
    # NaN and Infinity parse in Python but are not JSON: a receiver could not read them back.
    raise ValueError(f"{constant} is not JSON")
