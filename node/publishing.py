"""The publish path: validate, stamp, fan out direct events, store guaranteed ones.

One `PublishBatch` per incoming request. Direct events go straight to the
matching subscribers' buffers. Guaranteed events are checked against every
matching queue's limits, reserved, and written in one `Commits` op; they are
acked, queued and shown to direct subscribers only once that op is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node import framing
from node.commits import Commits
from node.delivery import Entry
from node.direct import DirectRouter
from node.queues import Queue, QueueTable, now_ms
from plexus.errors import InvalidArgument, InvalidTopic, PlexusError
from plexus.topics import validate_topic
from plexus.v1 import plexus_pb2 as pb
from storage.spool import Spool, StoredEvent

log = logging.getLogger(__name__)

GUARANTEED = pb.GUARANTEED
VALID_TOPIC_CACHE = 65_536
# The low bits of an event id count events within one millisecond.
ID_SEQUENCE_BITS = 22


class EventIds:
    """Unique, time-ordered event ids: milliseconds in the high bits, a counter below."""

    def __init__(self) -> None:
        self._last = 0

    def take(self, count: int, at_ms: int) -> int:
        """Reserve `count` consecutive ids; returns the first."""
        first = max(self._last + 1, at_ms << ID_SEQUENCE_BITS)
        self._last = first + count - 1
        return first


@dataclass(slots=True)
class Counters:
    direct_in: int = 0
    guaranteed_in: int = 0


@dataclass(slots=True)
class _Pending:
    """A guaranteed event waiting for its commit."""

    index: int
    event_id: int
    topic: str
    body: bytes
    queues: tuple[Queue, ...]
    entry: Entry


AckSink = Callable[[list[pb.PublishAck]], None]


class Publisher:
    """Routes published batches; shared by every Publish stream of the node."""

    def __init__(
        self,
        region: str,
        router: DirectRouter,
        queues: QueueTable,
        spool: Spool,
        commits: Commits,
        max_payload_bytes: int,
    ) -> None:
        self.region = region
        self.router = router
        self.queues = queues
        self.spool = spool
        self.commits = commits
        self.max_payload_bytes = max_payload_bytes
        self.ids = EventIds()
        self.counters = Counters()
        self.next_seq = spool.last_seq() + 1
        self._valid_topics: set[str] = set()

    def publish(
        self, events: Sequence[pb.Event], first_index: int, on_acks: AckSink
    ) -> asyncio.Future[None] | None:
        """Route one batch. Refusals and (later) guaranteed acks go to `on_acks`.

        Returns a future that completes once every guaranteed event of the
        batch is acked or refused, or None when there was nothing to store.
        """
        at_ms = now_ms()
        origin = framing.origin_fields(at_ms, self.region)
        first_id = self.ids.take(len(events), at_ms)
        refused: list[pb.PublishAck] = []
        pending: list[_Pending] = []
        match_subscribers = self.router.index.match
        woken = set()
        direct = delivered = discarded = 0
        for offset, event in enumerate(events):
            index = first_index + offset
            topic = event.topic
            problem = self._check(topic, event)
            if problem is not None:
                refused.append(_refusal(index, problem))
                continue
            event_id = first_id + offset
            if event.mode == GUARANTEED:
                queues = self.queues.match(topic)
                size = len(event.payload)
                full = next((e for q in queues if (e := q.check_room(size)) is not None), None)
                if full is not None:
                    refused.append(_refusal(index, full))
                    continue
                body = event.SerializeToString() + framing.id_field(event_id) + origin
                for queue in queues:
                    queue.reserved_depth += 1
                    queue.reserved_bytes += size
                expires = at_ms + event.ttl_ms if event.ttl_ms else 0
                entry = Entry(self.next_seq, size, expires, data=body)
                self.next_seq += 1
                pending.append(_Pending(index, event_id, topic, body, queues, entry))
                continue
            direct += 1
            subscribers = match_subscribers(topic)
            if subscribers:
                body = event.SerializeToString() + framing.id_field(event_id) + origin
                framed = framing.frame(body)
                for subscriber in subscribers:
                    if subscriber.offer(body, framed):
                        woken.add(subscriber)
                        delivered += 1
                    else:
                        discarded += 1
        for subscriber in woken:
            subscriber.wake.set()
        self.counters.direct_in += direct
        self.router.delivered += delivered
        self.router.discarded += discarded
        if refused:
            on_acks(refused)
        if not pending:
            return None
        return self._store(pending, on_acks)

    def _check(self, topic: str, event: pb.Event) -> PlexusError | None:
        if topic not in self._valid_topics:
            try:
                validate_topic(topic)
            except InvalidTopic as exc:
                return exc
            if len(self._valid_topics) >= VALID_TOPIC_CACHE:
                self._valid_topics.clear()
            self._valid_topics.add(topic)
        if len(event.payload) > self.max_payload_bytes:
            return InvalidArgument(
                f"payload of {len(event.payload)} bytes on {topic!r} is over the node's limit "
                f"of {self.max_payload_bytes} bytes"
            )
        return None

    def _store(self, pending: list[_Pending], on_acks: AckSink) -> asyncio.Future[None]:
        to_store = [
            StoredEvent(
                p.entry.seq,
                p.body,
                tuple(q.queue_id for q in p.queues),
                p.entry.expires_at_ms,
                p.entry.size,
            )
            for p in pending
            if p.queues
        ]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not to_store:
            self._acked(pending, on_acks)
            done.set_result(None)
            return done
        spool = self.spool
        future = self.commits.submit(lambda txn: spool.put_events(txn, to_store))

        def committed(fut: asyncio.Future[None]) -> None:
            error = fut.exception()
            if error is None:
                self._acked(pending, on_acks)
            else:
                self._failed(pending, error, on_acks)
            done.set_result(None)

        future.add_done_callback(committed)
        return done

    def _acked(self, pending: list[_Pending], on_acks: AckSink) -> None:
        by_queue: dict[Queue, list[Entry]] = {}
        for p in pending:
            for i, queue in enumerate(p.queues):
                entry = p.entry if i == 0 else _copy(p.entry)
                by_queue.setdefault(queue, []).append(entry)
        for queue, entries in by_queue.items():
            self.queues.stored(queue, entries)
        self.counters.guaranteed_in += len(pending)
        # Direct subscribers see guaranteed events too, once they are safe.
        self.router.fan_out((p.topic, p.body, framing.frame(p.body)) for p in pending)
        on_acks([pb.PublishAck(index=p.index, id=p.event_id) for p in pending])

    def _failed(self, pending: list[_Pending], error: BaseException, on_acks: AckSink) -> None:
        for p in pending:
            for queue in p.queues:
                queue.reserved_depth -= 1
                queue.reserved_bytes -= p.entry.size
        if not isinstance(error, PlexusError):
            log.error("storing %d guaranteed events failed: %r", len(pending), error)
            error = PlexusError(f"storage failure: {error}")
        on_acks([_refusal(p.index, error) for p in pending])


def _copy(entry: Entry) -> Entry:
    return Entry(entry.seq, entry.size, entry.expires_at_ms, data=entry.data)


def _refusal(index: int, error: BaseException) -> pb.PublishAck:
    code = error.status_code if isinstance(error, PlexusError) else None
    value = code.value[0] if code is not None else 2
    return pb.PublishAck(index=index, error=pb.Error(code=value, message=str(error)))
