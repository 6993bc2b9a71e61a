"""`Event`: a thin, cheap, read-only view of a received `plexus.v1.Event`.

Subscribers may receive hundreds of thousands of events per second, so an
Event holds only the protobuf message and reads fields on demand.
"""

from __future__ import annotations

import base64
from typing import Any

from plexus.v1 import plexus_pb2 as pb

__all__ = ["ID_SEQUENCE_BITS", "Event"]

# An event id is (publish time in Unix ms) << 22 | (count within that ms).
ID_SEQUENCE_BITS = 22


class Event:
    """A received event. `message` is the underlying `plexus.v1.Event`."""

    __slots__ = ("message",)

    def __init__(self, message: pb.Event) -> None:
        self.message = message

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def payload(self) -> bytes:
        return self.message.payload

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.message.headers)

    @property
    def id(self) -> int:
        """Unique within the origin region, time-ordered (high bits: publish ms)."""
        return self.message.id

    @property
    def publish_time_ms(self) -> int:
        """When the origin node took the event, Unix ms (the id's high bits)."""
        return self.message.id >> ID_SEQUENCE_BITS

    @property
    def origin_region(self) -> str:
        return self.message.origin_region

    @property
    def guaranteed(self) -> bool:
        return self.message.mode == pb.GUARANTEED

    @property
    def ttl_ms(self) -> int:
        return self.message.ttl_ms

    @property
    def delivery_count(self) -> int:
        """Deliveries from its queue, this one included (0 for direct events)."""
        return self.message.delivery_count

    @property
    def redelivered(self) -> bool:
        return self.message.redelivered

    @property
    def discarded_before(self) -> int:
        """Direct events this subscriber lost to a full buffer just before this one."""
        return self.message.discarded_before

    @property
    def delivery_tag(self) -> int:
        return self.message.delivery_tag

    @property
    def queue(self) -> str:
        return self.message.queue

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the payload is text, or base64 when it is not UTF-8."""
        m = self.message
        try:
            payload, encoding = m.payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(m.payload).decode("ascii"), "base64"
        data: dict[str, Any] = {
            "id": str(m.id),
            "topic": m.topic,
            "payload": payload,
            "encoding": encoding,
            "headers": dict(m.headers),
            "delivery_count": m.delivery_count,
            "region": m.origin_region,
            "publish_time_ms": m.id >> ID_SEQUENCE_BITS,
            "guaranteed": m.mode == pb.GUARANTEED,
            "redelivered": m.redelivered,
            "discarded_before": m.discarded_before,
        }
        if m.queue:
            data["queue"] = m.queue
            data["delivery_tag"] = m.delivery_tag
        return data

    def __repr__(self) -> str:
        m = self.message
        return f"Event(topic={m.topic!r}, id={m.id}, payload={m.payload[:40]!r})"
