"""The broker as the MQTT and HTTP front doors see it: publish, subscribe and consume, in-process.

The gRPC service (node/service.py) drives the same parts over its streams; the
other front doors call these instead (never gRPC to themselves), with the same
identity and permission checks: a token means the same on every front door.
Events come and go as `pb.Event` messages, decoded from the frames the router
and queues keep for gRPC streams (a front door re-encodes them in its own
protocol anyway).

Each open subscription or consumer is registered with the node's clients
(`plexus clients` lists it, the connection limits count it) under a peer
such as `mqtt:127.0.0.1:50312`, and ends when its token is revoked: its
`wake` is set, and `still_valid` raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from node.auth import Authenticator, audit
from node.clients import ClientRegistry
from node.config import MAX_SUBSCRIBER_BUFFER_EVENTS, NodeConfig
from node.direct import DirectRouter, Subscriber
from node.permissions import Access
from node.publishing import Publisher
from node.queues import Consumer, Queue, QueueTable
from plexus.errors import (
    FailedPrecondition,
    PlexusError,
    QueueExists,
    QueueNotFound,
    code_from_int,
    error_from_status,
)
from plexus.topics import validate_pattern
from plexus.v1 import plexus_pb2 as pb

__all__ = ["ROUTED", "Gateway", "GatewayConsumer", "GatewaySubscription", "Published"]


@dataclass(frozen=True, slots=True)
class Published:
    """What became of one published event: its id once durable (guaranteed events; 0 for a
    direct one, routed and not acknowledged), `duplicate` when it was a resend of a key
    already stored (the id is the first copy's), or why it was refused."""

    id: int = 0
    duplicate: bool = False
    error: PlexusError | None = None


ROUTED = Published()


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class GatewaySubscription:
    """A direct subscription: events as they come, from a bounded buffer (see node/direct.py)."""

    def __init__(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber

    @property
    def wake(self) -> asyncio.Event:
        """Set when events are buffered (or the token was revoked): clear it, then `take`."""
        return self._subscriber.wake

    @property
    def pattern(self) -> str:
        return self._subscriber.pattern

    def take(self) -> list[pb.Event]:
        """Everything buffered, oldest first; an event's `discarded` counts those lost before
        it to a full buffer."""
        if not self._subscriber.buffer:
            return []
        return list(pb.EventBatch.FromString(self._subscriber.take()).events)


class GatewayConsumer:
    """A consumer of a queue: deliveries (with `delivery_tag`) under credit, acked or nacked."""

    def __init__(self, queues: QueueTable, queue: Queue, consumer: Consumer) -> None:
        self._queues = queues
        self.queue = queue
        self._consumer = consumer

    @property
    def wake(self) -> asyncio.Event:
        """Set when deliveries wait, the queue is gone or the token was revoked."""
        return self._consumer.wake

    @property
    def closed_reason(self) -> str | None:
        """Why the node ended this consumer (its queue was deleted), or None."""
        return self._consumer.closed_reason

    def take(self) -> list[pb.Event]:
        """The deliveries waiting, each with its `delivery_tag`, `delivery_count`, `redelivered`."""
        consumer = self._consumer
        consumer.confirmed.clear()  # durable-ack confirmations: front doors do not wait on them
        if not consumer.outbox:
            return []
        frames, consumer.outbox = consumer.outbox, []
        consumer.delivered += len(frames)
        return list(pb.EventBatch.FromString(b"".join(frames)).events)

    def grant(self, credits: int) -> None:
        """Allow `credits` more deliveries in flight."""
        self._queues.grant(self.queue, self._consumer, credits)

    def ack(self, tags: Iterable[int]) -> None:
        self._queues.ack(self.queue, self._consumer, tags)

    def nack(self, tags: Iterable[int]) -> None:
        self._queues.nack(self.queue, self._consumer, tags)


class Gateway:
    """Publish, subscribe and consume for front doors other than gRPC."""

    def __init__(
        self,
        config: NodeConfig,
        auth: Authenticator,
        router: DirectRouter,
        queues: QueueTable,
        publisher: Publisher,
        clients: ClientRegistry,
    ) -> None:
        self.config = config
        self.auth = auth
        self.router = router
        self.queues = queues
        self.publisher = publisher
        self.clients = clients

    # ------------------------------------------------------------ identity

    def identify(self, token: str | None) -> Access:
        """The access `token` gives (all, when the node runs without authentication).

        Raises `Unauthenticated` naming what is wrong with it: missing, expired,
        revoked or forged.
        """
        return self.auth.identify(_metadata(token))

    def expires_at(self, token: str | None) -> float:
        """When `token` expires (Unix seconds; inf: never, or the node runs open)."""
        return self.auth.expires_at(_metadata(token))

    def still_valid(self, token: str | None) -> None:
        """Raises `Unauthenticated` once `token` has expired or been revoked."""
        self.auth.still_valid(_metadata(token))

    # ------------------------------------------------------------ publish

    async def publish(
        self,
        access: Access,
        events: Sequence[pb.Event],
        *,
        peer: str,
        name: str = "",
        keys: Sequence[str] = (),
    ) -> list[Published]:
        """Publish `events` as one batch; one result per event, once it is routed (direct)
        or durable (guaranteed), or refused (`error`).

        `keys` (parallel to `events`, "" for none) de-duplicate guaranteed events as
        `PublishRequest.keys` does: a resend of a key is acked (`duplicate`, with the
        first copy's id), not stored again.
        """
        results = [ROUTED] * len(events)
        allowed = []
        for index, event in enumerate(events):
            if access.may_publish(event.topic):
                allowed.append(index)
            else:
                results[index] = Published(error=access.publish_refusal(event.topic))
        if not allowed:
            return results
        request = pb.PublishRequest(events=[events[i] for i in allowed])
        if keys:
            request.keys.extend(keys[i] for i in allowed)
        acked: list[pb.PublishAck] = []
        with self.clients.publishing(peer, name) as client:
            client.published += len(allowed)
            done = self.publisher.publish(request, request.SerializeToString(), 0, acked.extend)
            if done is not None:
                await done
            refused = [ack for ack in acked if ack.HasField("error")]
            if refused:
                self.clients.refused_events(client, refused)
        for ack in acked:
            if ack.HasField("error"):
                error = ack.error
                refusal = error_from_status(
                    code_from_int(error.code), error.message, error.reason, dict(error.fields)
                )
                results[allowed[ack.index]] = Published(error=refusal)
                continue
            for k in range(ack.count or 1):  # a run of events: consecutive ids
                results[allowed[ack.index + k]] = Published(ack.id + k, ack.duplicate)
        return results

    # ------------------------------------------------------------ subscribe

    @contextmanager
    def subscribe(
        self, access: Access, pattern: str, *, peer: str, name: str = "", buffer_events: int = 0
    ) -> Iterator[GatewaySubscription]:
        """A direct subscription to `pattern`, live on entry (local events and, within
        milliseconds, other regions'), removed on exit."""
        validate_pattern(pattern)
        access.require_subscribe((pattern,))
        capacity = min(
            buffer_events or self.config.subscriber_buffer_events, MAX_SUBSCRIBER_BUFFER_EVENTS
        )
        subscriber = Subscriber(pattern, capacity, self.config.subscriber_buffer_bytes)
        with (
            self.clients.subscribing(peer, subscriber, name),
            self.auth.watching(subscriber.wake),
        ):
            self.router.add(subscriber)
            try:
                yield GatewaySubscription(subscriber)
            finally:
                self.router.remove(subscriber)

    # ------------------------------------------------------------ queues

    async def ensure_queue(self, access: Access, config: pb.QueueConfig) -> Queue:
        """The queue `config.name`, created with `config` if absent (which needs the token's
        `create` permission on it and `subscribe` on its patterns)."""
        try:
            return self.queues.get(config.name)
        except QueueNotFound:
            pass
        access.require_queue("create", config.name)
        access.require_subscribe(config.subscriptions)
        try:
            return await self.queues.create(config)
        except QueueExists:  # created meanwhile by another caller
            return self.queues.get(config.name)

    async def set_queue_subscriptions(
        self, access: Access, name: str, patterns: Iterable[str]
    ) -> Queue:
        """Replace the subscriptions of queue `name` with `patterns`, durably, keeping what
        it holds (a persistent MQTT session following its client's SUBSCRIBE and
        UNSUBSCRIBE). Needs what creating it needs: `create` on the queue and `subscribe`
        on each pattern. Events published after it returns match the new patterns, here
        and in other regions within milliseconds."""
        wanted = list(patterns)
        access.require_queue("create", name)
        access.require_subscribe(wanted)
        return await self.queues.set_subscriptions(name, wanted)

    async def delete_queue(self, access: Access, name: str) -> None:
        """Delete queue `name`, what it holds and its dead-message queue (a persistent
        session that ended). Needs `admin`, as gRPC's DeleteQueue; audited the same way."""
        access.require_admin()
        await self.queues.delete(name)
        audit(access, "delete queue", name)

    @contextmanager
    def consume(
        self, access: Access, queue_name: str, credits: int, *, peer: str, name: str = ""
    ) -> Iterator[GatewayConsumer]:
        """Consume `queue_name` with `credits` deliveries in flight; on exit, what was not
        acked goes back to the queue (redelivered)."""
        access.require_queue("consume", queue_name)
        queue = self.queues.get(queue_name)
        if queue.deleted:
            raise FailedPrecondition(f"queue {queue_name!r} was deleted")
        consumer = Consumer()
        with (
            self.clients.consuming(peer, queue.name, consumer, name),
            self.auth.watching(consumer.wake),
        ):
            self.queues.bind(queue, consumer, credits)
            try:
                yield GatewayConsumer(self.queues, queue, consumer)
            finally:
                self.queues.unbind(queue, consumer)
