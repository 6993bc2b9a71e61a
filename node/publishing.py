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
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

from node import framing
from node.commits import Commits
from node.dedup import (
    MAX_KEY_BYTES,
    PENDING,
    DedupWindow,
    app_key,
    producer_key,
    producer_name,
)
from node.delivery import Entry
from node.direct import DirectRouter, Subscriber
from node.event_ids import EventIds, publish_ms
from node.queues import Queue, QueueTable, now_ms
from plexus.errors import InvalidArgument, InvalidTopic, PlexusError, reason_of
from plexus.topics import validate_topic
from plexus.v1 import plexus_pb2 as pb
from storage.dedup import DedupLog, DedupRecord
from storage.spool import Forward, Spool, StoredEvent

log = logging.getLogger(__name__)

GUARANTEED = pb.GUARANTEED
# The longest time to live a guaranteed event may ask for: ten years (expiry
# times are Unix milliseconds in a u64 in storage; a longer TTL is refused).
MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000
_TTL_TAG = b"\x28"  # Event.ttl_ms, field 5, varint
VALID_TOPIC_CACHE = 65_536

AckSink = Callable[[list[pb.PublishAck]], None]


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
    # Its de-duplication key (b"": none).
    key: bytes = b""


# Made per guaranteed event: tuple.__new__ fills a named tuple in C, half the time
# of its generated Python __new__ (every field is given, so no defaults are needed).
_new_stored: Callable[[tuple[Any, ...]], StoredEvent] = partial(tuple.__new__, StoredEvent)
_new_pending: Callable[[tuple[Any, ...]], _Pending] = partial(tuple.__new__, _Pending)
_QUEUES_OF = itemgetter(_Pending._fields.index("queues"))
_STORED_OF = itemgetter(_Pending._fields.index("stored"))


class _Resend(NamedTuple):
    """A resend of a key whose first copy is still on its way to a commit."""

    index: int
    on_acks: AckSink
    done: asyncio.Future[None]


class Dedup(NamedTuple):
    """The de-duplication window and its durable log."""

    window: DedupWindow
    log: DedupLog

    @classmethod
    def open(cls, log: DedupLog, max_keys: int, max_age_s: float) -> Dedup:
        window = DedupWindow(max_keys, int(max_age_s * 1000))
        if window.enabled:
            window.load(log.read_all(), now_ms())
        return cls(window, log)


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

    def committed(self, forwards: Iterable[tuple[Forward, bytes]]) -> None: ...


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

    def committed(self, forwards: Iterable[tuple[Forward, bytes]]) -> None:
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
        dedup: Dedup | None = None,
        max_headers: int = 64,
        max_header_bytes: int = 16 << 10,
    ) -> None:
        self.region = region
        self.router = router
        self.queues = queues
        self.spool = spool
        self.commits = commits
        # Every size limit counts the whole event (payload, topic, headers), not the payload.
        self.max_payload_bytes = max_payload_bytes
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        # A batch no longer than this holds no event over any size limit (a header takes at
        # least 2 bytes on the wire), so its events need no size checks.
        self._sizes_fit_bytes = min(max_payload_bytes, max_header_bytes, 2 * max_headers + 1)
        # The most bytes the node's fields (id, origin region) add to an event, and the
        # fewest a guaranteed event's non-header fields but its topic and payload take.
        self._stamp_bytes = len(pb.Event(id=2**64 - 1, origin_region=region).SerializeToString())
        self._guaranteed_min_bytes = len(
            pb.Event(id=1, origin_region=region, mode=GUARANTEED).SerializeToString()
        )
        self.ids = EventIds()
        self.counters = Counters()
        self.dedup = dedup if dedup is not None and dedup.window.enabled else None
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
        # One size check for the whole batch covers every event in it, mostly.
        check_sizes = len(raw) > self._sizes_fit_bytes
        sizes_fit = 0
        keys_of: list[bytes] | None = None
        # The batch's keys claimed as one run, named by its first key (the SDK's case).
        run_key = b""
        # Only guaranteed events are de-duplicated.
        if maybe_guaranteed and self.dedup is not None and (request.sequences or request.keys):
            try:
                run_key = self._claim_run(request, len(events))
                if not run_key:
                    keys_of = _dedup_keys(request, len(events))
            except PlexusError as exc:
                on_acks([_refusal(first_index + i, exc) for i in range(len(events))])
                return None
        duplicates: list[pb.PublishAck] = []
        resends: list[asyncio.Future[None]] = []
        # When every event goes to the same subscribers, the stamped request
        # itself is their EventBatch: one serialization for the whole batch.
        whole_batch = True
        guaranteed = invalid = 0
        last_topic = None
        subscribers: tuple[Subscriber, ...] = ()
        remote_wanted = False
        wants_remote = self.remote.wants
        remote: list[tuple[str, bytes]] = []
        # What guaranteed events of `queues_topic` need, looked up once per run of a topic.
        queues_topic = None
        queues: tuple[Queue, ...] = ()
        queue_ids: tuple[int, ...] = ()
        forwarding = False
        # Room in every queue for the rest of the batch, whatever its events' sizes: then
        # reservations add up here (`run_count`, `run_bytes`) instead of a check per event.
        roomy = False
        run_count = run_bytes = 0
        # The most bytes the batch's events take stored: re-encoded, an event is at most
        # 3 times its bytes on the wire (an empty header entry gains an empty key and
        # value), plus the node's fields.
        batch_bound = 4 * len(raw) + len(events) * self._stamp_bytes
        for offset, event in enumerate(events):
            topic = event.topic
            if topic != last_topic:
                if topic not in valid_topics:
                    problem = self._check(topic)
                    if problem is not None:
                        index = first_index + offset
                        refused.append(_refusal(index, problem, f"event {index}: "))
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
            # (One attribute read per event, ~25 ns: the byte scan cannot see a mode out of range.)
            mode = event.mode
            if not mode:
                if check_sizes:
                    problem = self._check_sizes(first_index + offset, topic, event, len(raw))
                    if problem is not None:
                        refused.append(_refusal(first_index + offset, problem))
                        whole_batch = False
                        invalid += 1
                        continue
                if remote_wanted:
                    remote.append((topic, event.SerializeToString()))
                if subscribers:
                    routed.append((event, subscribers))
                else:
                    whole_batch = False
                continue
            index = first_index + offset
            whole_batch = False
            if mode != GUARANTEED:
                refused.append(_refusal(index, mode_out_of_range(index, mode)))
                invalid += 1
                continue
            if topic != queues_topic:
                if run_count:
                    self._reserve(queues, run_count, run_bytes)
                    run_count = run_bytes = 0
                queues_topic = topic
                queues = self.queues.match(topic)
                queue_ids = self.queues.ids_of(queues)
                forwarding = self.forwarder.wants(topic)
                roomy = all(q.has_room(len(events) - offset, batch_bound) for q in queues)
                sizes_fit = self._stored_fit_bytes(topic)
            # Quotas count the event as stored: payload, topic, headers and the node's fields.
            data = event.SerializeToString()
            size = len(data)
            if size > sizes_fit:
                problem = self._check_sizes(index, topic, event, len(raw))
                if problem is not None:
                    refused.append(_refusal(index, problem))
                    invalid += 1
                    continue
            guaranteed += 1
            key = keys_of[offset] if keys_of is not None else b""
            if key and self._resent(key, index, on_acks, duplicates, resends):
                continue
            ttl = event.ttl_ms
            refusal = None
            if ttl > MAX_TTL_MS:
                refusal = _refusal(index, ttl_too_long(index, ttl))
            elif not roomy:
                refusal = _no_room(queues, index, size)
            forwards: tuple[Forward, ...] = ()
            if forwarding and refusal is None:
                try:
                    forwards = self.forwarder.forwards(topic, size)
                except PlexusError as exc:  # a link's spool is full
                    refusal = _refusal(index, exc)
            if refusal is not None:
                refused.append(refusal)
                if key:  # free again (nothing can wait on it yet: this call claimed it)
                    assert self.dedup is not None
                    self.dedup.window.failed([key])
                continue
            if roomy:
                run_count += 1
                run_bytes += size
            else:
                self._reserve(queues, 1, size)
            stored = _new_stored(
                (self.next_seq, data, queue_ids, at_ms + ttl if ttl else 0, size, forwards)
            )
            self.next_seq += 1
            pending.append(_new_pending((index, first_id + offset, topic, queues, stored, key)))
        if run_count:
            self._reserve(queues, run_count, run_bytes)
        self.counters.direct_in += len(events) - guaranteed - invalid
        if remote:
            self.remote.route_direct(remote)
        if routed:
            if whole_batch:
                request.flush = False
                if request.producer or request.sequences or request.keys:
                    for field in ("producer", "sequences", "keys"):
                        request.ClearField(field)
                _offer_batch(request.SerializeToString(), routed)
            else:
                for event, targets in routed:
                    framed = framing.frame(event.SerializeToString())
                    for subscriber in targets:
                        subscriber.offer(framed)
        if refused:
            on_acks(refused)
        if duplicates:
            on_acks(duplicates)
        records: list[DedupRecord] = []
        if run_key:
            records = self._run_records(run_key, first_index, len(events), pending)
        elif keys_of is not None:
            records = [DedupRecord(p.stored.seq, p.event_id, p.key) for p in pending if p.key]
        if pending:
            resends.append(self._store(pending, records, on_acks))
        if not resends:
            return None
        return resends[0] if len(resends) == 1 else _all_done(resends)

    def _stored_fit_bytes(self, topic: str) -> int:
        """A guaranteed event of `topic` no longer than this, stored, is over no size limit:
        the payload limit counts the stored event; its headers take at most what its
        node's fields, mode and topic leave, 2 bytes or more each."""
        topic_bytes = 2 + len(topic.encode())
        headers_fit = min(self.max_header_bytes, 2 * self.max_headers + 1)
        return min(self.max_payload_bytes, headers_fit + self._guaranteed_min_bytes + topic_bytes)

    def _claim_run(self, request: pb.PublishRequest, count: int) -> bytes:
        """Claim the batch's keys as one run when its sequences count up by one from a
        sequence past the producer's known ones; returns the run's first key (b"": not
        claimed, the keys go one by one)."""
        assert self.dedup is not None
        sequences = request.sequences
        if not sequences or request.keys or len(sequences) != count:
            return b""
        producer = request.producer
        first = sequences[0]
        if (
            not first
            or not 1 <= len(producer) <= 64
            or sequences[-1] - first != count - 1
            or list(sequences) != list(range(first, first + count))
        ):
            return b""
        if not self.dedup.window.claim_run(producer_name(producer), first, count):
            return b""
        return producer_key(producer, first)

    def _run_records(
        self, run_key: bytes, first_index: int, count: int, pending: list[_Pending]
    ) -> list[DedupRecord]:
        """The records of a claimed run's stored events; events not stored free their keys.

        Events at consecutive indexes were stored as consecutive events (seqs and ids), so
        each stretch of them is one run."""
        assert self.dedup is not None
        window = self.dedup.window
        name, first = run_key[:-8], int.from_bytes(run_key[-8:], "big")
        # Indexes only increase: as many as the batch, ending at its last, is all of them.
        if len(pending) == count and pending[-1].index == first_index + count - 1:
            head = pending[0]
            return [DedupRecord(head.stored.seq, head.event_id, run_key, count)]
        # Some were refused or not guaranteed: the run shrinks to the stretches stored.
        window.failed([run_key])
        records: list[DedupRecord] = []
        start = 0
        for at in range(1, len(pending) + 1):
            if at < len(pending) and pending[at].index == pending[at - 1].index + 1:
                continue
            head, count = pending[start], at - start
            sequence = first + head.index - first_index
            claimed = window.claim_run(name, sequence, count)
            assert claimed  # the run's own keys, just freed
            records.append(
                DedupRecord(
                    head.stored.seq, head.event_id, name + sequence.to_bytes(8, "big"), count
                )
            )
            start = at
        return records

    def _resent(
        self,
        key: bytes,
        index: int,
        on_acks: AckSink,
        duplicates: list[pb.PublishAck],
        resends: list[asyncio.Future[None]],
    ) -> bool:
        """Ack a resend of a stored key, or have it wait for its first copy's commit;
        False for a new key (now pending: the caller stores the event)."""
        assert self.dedup is not None
        window = self.dedup.window
        stored_id = window.claim(key)
        if stored_id is None:
            return False
        if stored_id == PENDING:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            window.join(key, _Resend(index, on_acks, done))
            resends.append(done)
        else:
            duplicates.append(pb.PublishAck(index=index, id=stored_id, duplicate=True))
        return True

    def _check(self, topic: str) -> PlexusError | None:
        try:
            validate_topic(topic)
        except InvalidTopic as exc:
            return exc
        if len(self._valid_topics) >= VALID_TOPIC_CACHE:
            self._valid_topics.clear()
        self._valid_topics.add(topic)
        return None

    def _check_sizes(
        self, index: int, topic: str, event: pb.Event, batch_bytes: int
    ) -> PlexusError | None:
        """Why event `index` is over a size limit (`batch_bytes` bounds each event), or None."""
        headers = event.headers
        count = len(headers)
        if count > self.max_headers:
            return InvalidArgument(
                f"event {index}: {count} headers on {topic!r}, over the node's limit "
                f"max_headers = {self.max_headers}"
            )
        if count and batch_bytes > self.max_header_bytes:
            header_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in headers.items())
            if header_bytes > self.max_header_bytes:
                return InvalidArgument(
                    f"event {index}: {header_bytes} bytes of headers on {topic!r}, over the "
                    f"node's limit max_header_bytes = {self.max_header_bytes}"
                )
        if batch_bytes > self.max_payload_bytes:
            size = event.ByteSize()
            if size > self.max_payload_bytes:
                return InvalidArgument(
                    f"event {index}: payload of {len(event.payload)} bytes on {topic!r} "
                    f"(event of {size} bytes with topic and headers) is over the node's limit "
                    f"max_payload_bytes = {self.max_payload_bytes}"
                )
        return None

    @staticmethod
    def _reserve(queues: tuple[Queue, ...], count: int, size: int) -> None:
        """Room in each queue for `count` events of `size` bytes in all, until they land."""
        for queue in queues:
            queue.reserved_depth += count
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
        region = self.region
        # A batch's events nearly all take one route (topic and destinations): what the
        # route decides is worked out when it changes, not per event.
        route: tuple[str, list[str]] | None = None
        for relayed in events:
            topic, data, destinations = relayed.topic, relayed.event, relayed.destinations[:]
            if route != (topic, destinations):
                route = topic, destinations
                here = region in destinations
                queues = self.queues.match(topic) if here else ()
                ids = self.queues.ids_of(queues)
                rest = frozenset(destinations) - {region}
            size = len(data)
            # No limit check: the publisher has its ack; a full queue takes it all the same.
            self._reserve(queues, 1, size)
            forwards: tuple[Forward, ...] = ()
            if rest:
                visited = frozenset(relayed.visited) | {region}
                forwards = self.forwarder.forwards(topic, size, rest, visited)
            expires = relayed_expiry(data) if queues else 0
            stored = _new_stored((self.next_seq, data, ids, expires, size, forwards))
            self.next_seq += 1
            pending.append(_new_pending((-1, 0, topic if here else "", queues, stored, b"")))
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

    def _store(
        self, pending: list[_Pending], records: list[DedupRecord], on_acks: AckSink
    ) -> asyncio.Future[None]:
        """Commit `pending` with their de-duplication `records`; then ack or refuse them."""
        if all(map(_QUEUES_OF, pending)):  # (in C) every one goes into a queue: the rule
            to_store = list(map(_STORED_OF, pending))
        else:
            to_store = [p.stored for p in pending if p.queues or p.stored.forwards]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not to_store and not records:
            self._acked(pending, on_acks)
            done.set_result(None)
            return done
        spool = self.spool
        trim_upto = 0
        if not records:
            future = self.commits.submit(lambda txn: spool.put_events(txn, to_store))
        else:
            assert self.dedup is not None
            log, trim_upto = self.dedup.log, self.dedup.window.trim_due()

            def write(txn: Any) -> None:
                spool.put_events(txn, to_store)
                log.append(txn, records)
                if trim_upto:
                    log.trim(txn, trim_upto)

            future = self.commits.submit(write)

        def committed(fut: asyncio.Future[None]) -> None:
            error = fut.exception()
            if error is None:
                if records:
                    self._dedup_landed(records, trim_upto)
                self._acked(pending, on_acks)
            else:
                if records:
                    self._dedup_failed([r.key for r in records], error)
                self._failed(pending, error, on_acks)
            done.set_result(None)

        future.add_done_callback(committed)
        return done

    def _dedup_landed(self, records: list[DedupRecord], trim_upto: int) -> None:
        assert self.dedup is not None
        window = self.dedup.window
        if trim_upto > window.trimmed:
            window.trimmed = trim_upto
        for resend, event_id in window.landed(records, now_ms()):
            resend.on_acks([pb.PublishAck(index=resend.index, id=event_id, duplicate=True)])
            resend.done.set_result(None)

    def _dedup_failed(self, keys: list[bytes], error: BaseException) -> None:
        assert self.dedup is not None
        for resend in self.dedup.window.failed(keys):
            resend.on_acks([_refusal(resend.index, error)])
            resend.done.set_result(None)

    def _acked(self, pending: list[_Pending], on_acks: AckSink) -> None:
        self._landed(pending)
        self.counters.guaranteed_in += len(pending)
        on_acks(_ack_runs(pending))

    def _landed(self, pending: list[_Pending]) -> None:
        """Committed: queues take their entries, links their spooled events."""
        queues = pending[0].queues
        # (map and count run in C; count finds each the same tuple by identity first.)
        if list(map(_QUEUES_OF, pending)).count(queues) == len(pending):
            # One topic's queues (or equal ones): the common case.
            stored = list(map(_STORED_OF, pending))
            for queue in queues:
                self._into_queue(queue, stored)
        else:
            by_queue: dict[Queue, list[StoredEvent]] = {}
            for p in pending:
                for queue in p.queues:
                    by_queue.setdefault(queue, []).append(p.stored)
            for queue, stored in by_queue.items():
                self._into_queue(queue, stored)
        forwards = [
            (f, p.stored.data) for p in pending if p.stored.forwards for f in p.stored.forwards
        ]
        if forwards:
            self.forwarder.committed(forwards)
        # Direct subscribers here see guaranteed events too, once they are safe.
        if len(self.router.index):
            self.router.fan_out((p.topic, p.stored.data) for p in pending if p.topic)

    def _into_queue(self, queue: Queue, stored: list[StoredEvent]) -> None:
        """Committed events into one queue, in seq order; a spilled queue's stay on disk."""
        if queue.delivery.spilled_for(stored[0].seq):
            size = sum([s.size for s in stored])
            self.queues.stored_on_disk(queue, len(stored), size, stored[-1].seq)
            return
        self.queues.stored(
            queue,
            [Entry(seq, size, expires, data=data) for seq, data, _, expires, size, _ in stored],
        )

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


def _no_room(queues: tuple[Queue, ...], index: int, size: int) -> pb.PublishAck | None:
    """The refusal of event `index` (`size` bytes) by the first queue short of room for it."""
    for queue in queues:
        full = queue.check_room(size)
        if full is not None:
            return _refusal(index, full)
    return None


def relayed_expiry(data: bytes) -> int:
    """When an encoded event that came over a link expires here (Unix ms; 0: never).

    Its publish time (the high bits of its id) plus its TTL: the same moment
    in every region it reaches. One already past is stored all the same and
    moves to the dead-message queue as a local event past its TTL does.
    """
    if _TTL_TAG not in data:  # the origin encodes canonically: no tag, no TTL
        return 0
    event = pb.Event.FromString(data)
    if not event.ttl_ms:
        return 0
    return publish_ms(event.id) + min(event.ttl_ms, MAX_TTL_MS)


def _dedup_keys(request: pb.PublishRequest, count: int) -> list[bytes]:
    """Each event's de-duplication key (b"": none); InvalidArgument for a malformed request."""
    sequences, keys, producer = request.sequences, request.keys, request.producer
    if sequences:
        if len(sequences) != count:
            raise InvalidArgument(f"sequences has {len(sequences)} entries for {count} events")
        if not 1 <= len(producer) <= 64:
            raise InvalidArgument("sequences need a producer of 1 to 64 bytes")
        if not keys:  # the SDK's case: one key per event from its sequence
            prefix = producer_key(producer, 0)[:-8]
            return [prefix + seq.to_bytes(8, "big") if seq else b"" for seq in sequences]
    if keys and len(keys) != count:
        raise InvalidArgument(f"keys has {len(keys)} entries for {count} events")
    found: list[bytes] = []
    for i in range(count):
        key = keys[i] if keys else ""
        if key:
            made = app_key(key)
            if len(made) > MAX_KEY_BYTES:
                raise InvalidArgument(
                    f"de-duplication key {key[:40]!r}... is over {MAX_KEY_BYTES - 1} bytes"
                )
            found.append(made)
        elif sequences and sequences[i]:
            found.append(producer_key(producer, sequences[i]))
        else:
            found.append(b"")
    return found


def _all_done(futures: list[asyncio.Future[None]]) -> asyncio.Future[None]:
    """One future done when every one of `futures` is (their results are None)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    left = len(futures)

    def one(_fut: asyncio.Future[None]) -> None:
        nonlocal left
        left -= 1
        if left == 0:
            done.set_result(None)

    for fut in futures:
        fut.add_done_callback(one)
    return done


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
    first, last = pending[0], pending[-1]
    span = len(pending) - 1
    if last.index - first.index == span and last.event_id - first.event_id == span:
        # Strictly increasing both, so one run: a whole batch stored, the common case.
        return [pb.PublishAck(index=first.index, id=first.event_id, count=span + 1)]
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


def _refusal(index: int, error: BaseException, prefix: str = "") -> pb.PublishAck:
    """The ack refusing one event: status code, message (after `prefix`), and the error's
    reason and fields."""
    if not isinstance(error, PlexusError):
        return pb.PublishAck(index=index, error=pb.Error(code=2, message=prefix + str(error)))
    refused = pb.Error(
        code=error.status_code.value[0],
        message=prefix + str(error),
        reason=reason_of(error),
        fields=error.fields(),
    )
    return pb.PublishAck(index=index, error=refused)


def mode_out_of_range(index: int, mode: int) -> InvalidArgument:
    known = ", ".join(f"{v.name} ({v.number})" for v in pb.DeliveryMode.DESCRIPTOR.values)
    return InvalidArgument(f"event {index}: mode {mode} is not a delivery mode: {known}")


def ttl_too_long(index: int, ttl_ms: int) -> InvalidArgument:
    return InvalidArgument(
        f"event {index}: ttl_ms {ttl_ms} is over the maximum of {MAX_TTL_MS} (ten years)"
    )


def refusal(index: int, error: BaseException) -> pb.PublishAck:
    """The ack refusing the event at stream index `index` with `error`."""
    return _refusal(index, error)
