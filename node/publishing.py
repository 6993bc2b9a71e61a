"""The publish path: validate, stamp, fan out direct events, store guaranteed ones.

One `PublishBatch` per incoming request. Direct events go straight to the
matching subscribers' buffers. Guaranteed events are checked against every
matching queue's limits, reserved, and written in one `Commits` op; they are
acked, queued and shown to direct subscribers only once that op is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from node import framing
from node.commits import Commits
from node.delivery import Entry
from node.direct import DirectRouter, Subscriber
from node.event_ids import EventIds
from node.queues import Queue, QueueTable, now_ms
from plexus.errors import InvalidArgument, InvalidTopic, PlexusError, reason_of
from plexus.topics import validate_topic
from plexus.v1 import plexus_pb2 as pb
from storage.spool import Forward, Spool, StoredEvent

log = logging.getLogger(__name__)

GUARANTEED = pb.GUARANTEED
VALID_TOPIC_CACHE = 65_536


@dataclass(slots=True)
class Counters:
    direct_in: int = 0
    guaranteed_in: int = 0


class _Pending(NamedTuple):
    """A guaranteed event waiting for its commit (a tuple: made per event)."""

    index: int
    event_id: int
    topic: str
    queues: tuple[Queue, ...]
    stored: StoredEvent


class Forwarding(Protocol):
    """Link spools for guaranteed events bound to other regions (federation's forwarder)."""

    def wants(self, topic: str) -> bool: ...

    def forwards(
        self,
        topic: str,
        size: int,
        destinations: frozenset[str] | None = None,
        visited: frozenset[str] | None = None,
    ) -> tuple[Forward, ...]: ...

    def release(self, forwards: Iterable[Forward], size: int) -> None: ...

    def committed(self, forwards: Iterable[Forward]) -> None: ...


class NoForwarding:
    """A node outside any cluster."""

    def wants(self, topic: str) -> bool:
        return False

    def forwards(
        self,
        topic: str,
        size: int,
        destinations: frozenset[str] | None = None,
        visited: frozenset[str] | None = None,
    ) -> tuple[Forward, ...]:
        return ()

    def release(self, forwards: Iterable[Forward], size: int) -> None:
        pass

    def committed(self, forwards: Iterable[Forward]) -> None:
        pass


# Records, inside a commit, the last link sequence stored from a peer.
RecordReceived = Callable[[Any], None]


class RemoteRouting(Protocol):
    """Other regions, as the publish path sees them (the mesh, in a cluster)."""

    def wants(self, topic: str) -> bool: ...

    def route_direct(self, items: list[tuple[str, bytes]]) -> None: ...


class NoRemoteRouting:
    """A node outside any cluster."""

    def wants(self, topic: str) -> bool:
        return False

    def route_direct(self, items: list[tuple[str, bytes]]) -> None:
        pass


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
        self.remote: RemoteRouting = NoRemoteRouting()
        self.forwarder: Forwarding = NoForwarding()
        # Set while the region leaves the cluster: every publish is refused with it.
        self.leaving: PlexusError | None = None

    def publish(
        self, request: pb.PublishRequest, raw: bytes, first_index: int, on_acks: AckSink
    ) -> asyncio.Future[None] | None:
        """Route one batch (`raw` is its wire form). Refusals and guaranteed acks go to `on_acks`.

        Returns a future that completes once every guaranteed event of the
        batch is acked or refused, or None when there was nothing to store.
        """
        events = request.events
        if self.leaving is not None:
            on_acks([_refusal(first_index + i, self.leaving) for i in range(len(events))])
            return None
        # Substring scans in C rule out, for most batches, per-event work in Python.
        maybe_guaranteed, maybe_forged = framing.scan_request(raw)
        if maybe_forged:
            _clear_delivery_fields(events)
        at_ms = now_ms()
        region = self.region
        first_id = self.ids.take(len(events), at_ms)
        refused: list[pb.PublishAck] = []
        pending: list[_Pending] = []
        routed: list[tuple[pb.Event, tuple[Subscriber, ...]]] = []
        match_subscribers = self.router.index.match
        valid_topics = self._valid_topics
        # One size check for the whole batch covers every payload in it.
        check_payloads = len(raw) > self.max_payload_bytes
        # When every event goes to the same subscribers, the stamped request
        # itself is their EventBatch: one serialization for the whole batch.
        whole_batch = True
        guaranteed = invalid = 0
        last_topic = None
        subscribers: tuple[Subscriber, ...] = ()
        remote_wanted = False
        wants_remote = self.remote.wants
        remote: list[tuple[str, bytes]] = []
        for offset, event in enumerate(events):
            topic = event.topic
            if topic != last_topic or check_payloads:
                if topic not in valid_topics or check_payloads:
                    problem = self._check(topic, event)
                    if problem is not None:
                        refused.append(_refusal(first_index + offset, problem))
                        whole_batch = False
                        invalid += 1
                        continue
                subscribers = match_subscribers(topic)
                remote_wanted = wants_remote(topic)
                last_topic = topic
                if routed and subscribers != routed[0][1]:
                    whole_batch = False
            event.id = first_id + offset
            event.origin_region = region
            if maybe_guaranteed and event.mode == GUARANTEED:
                whole_batch = False
                guaranteed += 1
                refusal = self._prepare(event, first_index + offset, at_ms, pending)
                if refusal is not None:
                    refused.append(refusal)
            else:
                if remote_wanted:
                    remote.append((topic, event.SerializeToString()))
                if subscribers:
                    routed.append((event, subscribers))
                else:
                    whole_batch = False
        self.counters.direct_in += len(events) - guaranteed - invalid
        if remote:
            self.remote.route_direct(remote)
        if routed:
            if whole_batch:
                request.flush = False
                _offer_batch(request.SerializeToString(), routed)
            else:
                for event, targets in routed:
                    framed = framing.frame(event.SerializeToString())
                    for subscriber in targets:
                        subscriber.offer(framed)
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

    def _prepare(
        self, event: pb.Event, index: int, at_ms: int, pending: list[_Pending]
    ) -> pb.PublishAck | None:
        """Reserve room in every matching queue for a guaranteed event, or refuse it."""
        topic = event.topic
        queues = self.queues.match(topic)
        size = len(event.payload)
        for queue in queues:
            full = queue.check_room(size)
            if full is not None:
                return _refusal(index, full)
        forwards: tuple[Forward, ...] = ()
        if self.forwarder.wants(topic):
            try:
                forwards = self.forwarder.forwards(topic, size)
            except PlexusError as exc:  # a link's spool is full
                return _refusal(index, exc)
        data = event.SerializeToString()
        self._reserve(queues, size)
        expires = at_ms + event.ttl_ms if event.ttl_ms else 0
        ids = self.queues.ids_of(queues)
        stored = StoredEvent(self.next_seq, data, ids, expires, size, forwards)
        self.next_seq += 1
        pending.append(_Pending(index, event.id, topic, queues, stored))
        return None

    @staticmethod
    def _reserve(queues: tuple[Queue, ...], size: int) -> None:
        for queue in queues:
            queue.reserved_depth += 1
            queue.reserved_bytes += size

    def store_relayed(
        self,
        events: list[Any],
        upto: int,
        record_received: RecordReceived,
        done: Callable[[], None],
    ) -> None:
        """Guaranteed events that arrived over a link: into local queues (when this region
        is a destination) and onward spools, with the link's received mark, in one commit."""
        pending: list[_Pending] = []
        for relayed in events:
            destinations = frozenset(relayed.destinations)
            topic, data = relayed.topic, relayed.event
            size = len(data)
            queues = self.queues.match(topic) if self.region in destinations else ()
            # No limit check: the publisher has its ack; a full queue takes it all the same.
            self._reserve(queues, size)
            rest = destinations - {self.region}
            forwards: tuple[Forward, ...] = ()
            if rest:
                visited = frozenset(relayed.visited) | {self.region}
                forwards = self.forwarder.forwards(topic, size, rest, visited)
            ids = self.queues.ids_of(queues)
            stored = StoredEvent(self.next_seq, data, ids, 0, size, forwards)
            self.next_seq += 1
            pending.append(
                _Pending(
                    -1, 0, topic if queues or self.region in destinations else "", queues, stored
                )
            )
        to_store = [p.stored for p in pending if p.queues or p.stored.forwards]
        spool = self.spool

        def write(txn: Any) -> None:
            spool.put_events(txn, to_store)
            record_received(txn)

        def committed(fut: asyncio.Future[None]) -> None:
            error = fut.exception()
            if error is not None:
                log.error("storing %d relayed events failed: %r", len(pending), error)
                self._release(pending)
                return
            self._landed(pending)
            done()

        self.commits.submit(write).add_done_callback(committed)

    def _store(self, pending: list[_Pending], on_acks: AckSink) -> asyncio.Future[None]:
        to_store = [p.stored for p in pending if p.queues or p.stored.forwards]
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
        self._landed(pending)
        self.counters.guaranteed_in += len(pending)
        on_acks(_ack_runs(pending))

    def _landed(self, pending: list[_Pending]) -> None:
        """Committed: queues take their entries, links their spooled events."""
        by_queue: dict[Queue, list[Entry]] = {}
        forwards = []
        for p in pending:
            seq, data, _ids, expires, size, forwarded = p.stored
            forwards.extend(forwarded)
            for queue in p.queues:
                entry = Entry(seq, size, expires, data=data)
                by_queue.setdefault(queue, []).append(entry)
        for queue, entries in by_queue.items():
            self.queues.stored(queue, entries)
        if forwards:
            self.forwarder.committed(forwards)
        # Direct subscribers here see guaranteed events too, once they are safe.
        self.router.fan_out((p.topic, p.stored.data) for p in pending if p.topic)

    def _release(self, pending: list[_Pending]) -> None:
        for p in pending:
            for queue in p.queues:
                queue.reserved_depth -= 1
                queue.reserved_bytes -= p.stored.size
            self.forwarder.release(p.stored.forwards, p.stored.size)

    def _failed(self, pending: list[_Pending], error: BaseException, on_acks: AckSink) -> None:
        self._release(pending)
        if not isinstance(error, PlexusError):
            log.error("storing %d guaranteed events failed: %r", len(pending), error)
            error = PlexusError(f"storage failure: {error}")
        on_acks([_refusal(p.index, error) for p in pending])


def _offer_batch(batch: bytes, routed: list[tuple[pb.Event, tuple[Subscriber, ...]]]) -> None:
    """Hand a whole encoded batch to its subscribers, event by event where one is short of room."""
    framed: list[bytes] | None = None
    for subscriber in routed[0][1]:
        if not subscriber.offer_batch(batch, len(routed)):
            if framed is None:
                framed = [framing.frame(event.SerializeToString()) for event, _ in routed]
            for one in framed:
                subscriber.offer(one)


def _ack_runs(pending: list[_Pending]) -> list[pb.PublishAck]:
    """One ack per run of consecutive indexes (their ids are consecutive too)."""
    acks: list[pb.PublishAck] = []
    first = previous = pending[0]
    count = 1
    for p in pending[1:]:
        if p.index == previous.index + 1 and p.event_id == previous.event_id + 1:
            count += 1
        else:
            acks.append(pb.PublishAck(index=first.index, id=first.event_id, count=count))
            first, count = p, 1
        previous = p
    acks.append(pb.PublishAck(index=first.index, id=first.event_id, count=count))
    return acks


def _clear_delivery_fields(events: Sequence[pb.Event]) -> None:
    """Drop delivery fields a publisher set: only the node sets them."""
    for event in events:
        for field in framing.DELIVERY_FIELDS:
            event.ClearField(field)


def _refusal(index: int, error: BaseException) -> pb.PublishAck:
    """The ack refusing one event: status code, message, and the error's reason and fields."""
    if not isinstance(error, PlexusError):
        return pb.PublishAck(index=index, error=pb.Error(code=2, message=str(error)))
    refused = pb.Error(
        code=error.status_code.value[0],
        message=str(error),
        reason=reason_of(error),
        fields=error.fields(),
    )
    return pb.PublishAck(index=index, error=refused)
