"""Queues of a node: definitions, limits, the queue subscription index, consumers, dispatch.

Each queue pairs its sans-IO `QueueDelivery` with counters and the consumer
streams bound to it. Every change that must survive a crash (store, ack, move
to the dead-message queue, create, change of subscriptions, delete) goes
through `Commits`; in-memory state follows only once the commit is done.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable

from node import framing
from node.commits import Commits
from node.config import NodeConfig
from node.delivery import DeadReason, Entry, QueueDelivery
from node.event_ids import publish_ms
from node.interest import InterestSink, NoInterestSink
from plexus.errors import (
    InvalidArgument,
    InvalidPattern,
    LimitReached,
    QueueExists,
    QueueFull,
    QueueNotFound,
)
from plexus.topics import SubscriptionTrie, validate_pattern
from plexus.v1 import plexus_pb2 as pb
from storage.spool import Spool

log = logging.getLogger(__name__)

QUEUE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
DMQ_SUFFIX = ".dmq"
MAX_SUBSCRIPTIONS_PER_QUEUE = 1000
LOAD_BATCH = 2048
# Entries a purge looks at per commit, so publishes still commit while a big queue is purged.
PURGE_PAGE = 10_000

_consumer_ids = itertools.count(1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Consumer:
    """One Consume stream: framed deliveries and durable-ack confirmations to send."""

    def __init__(self) -> None:
        self.id = next(_consumer_ids)
        self.outbox: list[bytes] = []
        self.confirmed: list[int] = []
        self.wake = asyncio.Event()
        self.closed_reason: str | None = None
        # Events sent on the stream, counted per write.
        self.delivered = 0

    def close(self, reason: str) -> None:
        self.closed_reason = reason
        self.wake.set()


class Queue:
    """One queue's runtime state."""

    def __init__(self, queue_id: int, config: pb.QueueConfig, dead_letters: Queue | None) -> None:
        self.queue_id = queue_id
        self.config = config
        self.name = config.name
        # Sorted plain strings: a listing of subscriptions reads them in order.
        self.subscriptions = tuple(sorted(config.subscriptions))
        self.dead_letters = dead_letters
        limits = config.limits
        self.delivery = QueueDelivery(config.exclusive, limits.max_deliveries)
        self.queue_field = framing.queue_field(config.name)
        self.consumers: dict[int, Consumer] = {}
        self.depth = 0
        self.bytes = 0
        self.reserved_depth = 0
        self.reserved_bytes = 0
        self.events_in = 0
        self.events_out = 0
        self.dispatch_scheduled = False
        self.deleted = False
        # While purging, nothing is delivered and nothing is loaded from disk.
        self.purging = False
        # Bumped by each purge: a load that read from disk before it is stale.
        self.purges = 0
        self.purge_lock = asyncio.Lock()
        # Held while a change of subscriptions commits (see QueueTable.set_subscriptions).
        self.config_lock = asyncio.Lock()
        # Refusing publishes since it filled up (logged once per fill, not per event).
        self.refusing = False

    def check_room(self, size: int) -> QueueFull | None:
        """Room for one more event of `size` bytes, or why not (said in the log once per fill)."""
        full = self._full(size)
        if full is not None and not self.refusing:
            self.refusing = True
            log.warning(
                "queue %s is full (%s %d): refusing publishes",
                self.name,
                full.limit,
                full.value,
                extra={"event": "queue_full", "queue": self.name, "limit": full.limit},
            )
        return full

    def freed(self) -> None:
        """Events left the queue: a queue that was refusing publishes says when it has room."""
        if self.refusing and self._full(0) is None:
            self.refusing = False
            log.info(
                "queue %s has room again: accepting publishes",
                self.name,
                extra={"event": "queue_has_room", "queue": self.name},
            )

    @property
    def config(self) -> pb.QueueConfig:
        return self._config

    @config.setter
    def config(self, config: pb.QueueConfig) -> None:
        self._config = config
        # Read per event by `_full`: plain ints, not protobuf attribute lookups.
        self._max_depth = config.limits.max_depth
        self._max_bytes = config.limits.max_bytes

    def has_room(self, count: int, size: int) -> bool:
        """Room for `count` more events of `size` bytes in all (one check for a batch)."""
        return (
            self.depth + self.reserved_depth + count <= self._max_depth
            and self.bytes + self.reserved_bytes + size <= self._max_bytes
        )

    def _full(self, size: int) -> QueueFull | None:
        if self.depth + self.reserved_depth + 1 > self._max_depth:
            return QueueFull(self.name, "max depth", self._max_depth)
        if self.bytes + self.reserved_bytes + size > self._max_bytes:
            return QueueFull(self.name, "max bytes", self._max_bytes)
        return None

    def info(self) -> pb.QueueInfo:
        oldest = self._oldest_publish_ms()
        return pb.QueueInfo(
            config=self.config,
            depth=self.depth,
            bytes=self.bytes,
            consumers=len(self.consumers),
            unacked=len(self.delivery.inflight),
            dead_message_queue=self.dead_letters.name if self.dead_letters else "",
            events_in=self.events_in,
            events_out=self.events_out,
            oldest_age_ms=max(0, now_ms() - oldest) if oldest else 0,
        )

    def _oldest_publish_ms(self) -> int:
        seqs = [seq for seq in self.delivery.inflight]
        if self.delivery.ready:
            seqs.append(self.delivery.ready[0].seq)
        if not seqs:
            return 0
        first = min(seqs)
        entry = (
            self.delivery.inflight[first][1]
            if first in self.delivery.inflight
            else self.delivery.ready[0]
        )
        return entry_publish_ms(entry)


def entry_publish_ms(entry: Entry) -> int:
    """The publish time of an in-memory entry, read from its encoded event."""
    if not entry.data:
        return 0
    return publish_ms(pb.Event.FromString(entry.data).id)


class QueueTable:
    """All queues of the node and the index from topics to queues."""

    def __init__(
        self,
        spool: Spool,
        commits: Commits,
        config: NodeConfig,
        interest: InterestSink | None = None,
    ) -> None:
        self._interest: InterestSink = interest or NoInterestSink()
        self._spool = spool
        self._commits = commits
        self._defaults = config
        self.by_name: dict[str, Queue] = {}
        self.index: SubscriptionTrie[Queue] = SubscriptionTrie()
        self._creating: set[str] = set()
        self.limits_hit: Counter[str] = Counter()  # max_queues refusals, for metrics
        # Reads of spilled queue windows under way (each in a worker thread).
        self._loads: set[asyncio.Task[None]] = set()
        self._ids_cache: dict[tuple[Queue, ...], tuple[int, ...]] = {}
        self._recovered_upto_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ lifecycle

    def recover(self, recovered_upto_seq: int) -> None:
        """Rebuild queues from disk at start-up (before serving)."""
        self._loop = asyncio.get_running_loop()
        self._recovered_upto_seq = recovered_upto_seq
        records = self._spool.queues()
        configs = {r.name: (r.queue_id, pb.QueueConfig.FromString(r.config)) for r in records}
        for name, (queue_id, config) in sorted(
            configs.items(), key=lambda kv: kv[0].endswith(DMQ_SUFFIX), reverse=True
        ):
            dead = None
            if not name.endswith(DMQ_SUFFIX):
                dead = self.by_name.get(name + DMQ_SUFFIX)
            queue = Queue(queue_id, config, dead)
            count, size, _first, last = self._spool.queue_totals(queue_id)
            queue.depth, queue.bytes = count, size
            if count:
                queue.delivery.spilled = True
                queue.delivery.last_pushed_seq = last
            self._register(queue)
            if count:
                self._schedule(queue)

    # ------------------------------------------------------------ management

    def validate(self, config: pb.QueueConfig) -> pb.QueueConfig:
        """A copy of `config` with defaults filled in; raises on bad input."""
        name = config.name
        if not QUEUE_NAME.match(name):
            raise InvalidArgument(
                f"invalid queue name {name!r}: use 1 to 100 letters, digits, '.', '_' or '-'"
            )
        if name.endswith(DMQ_SUFFIX):
            raise InvalidArgument(
                f"invalid queue name {name!r}: names ending in {DMQ_SUFFIX!r} are reserved "
                "for dead-message queues"
            )
        if len(config.subscriptions) > MAX_SUBSCRIPTIONS_PER_QUEUE:
            raise InvalidArgument(
                f"queue {name!r}: at most {MAX_SUBSCRIPTIONS_PER_QUEUE} subscriptions"
            )
        for pattern in config.subscriptions:
            try:
                validate_pattern(pattern)
            except InvalidPattern as exc:
                raise InvalidPattern(pattern, exc.reason, exc.level) from None
        out = pb.QueueConfig()
        out.CopyFrom(config)
        limits = out.limits
        limits.max_depth = limits.max_depth or self._defaults.queue_max_depth
        limits.max_bytes = limits.max_bytes or self._defaults.queue_max_bytes
        limits.max_deliveries = limits.max_deliveries or self._defaults.queue_max_deliveries
        return out

    async def create(self, requested: pb.QueueConfig) -> Queue:
        config = self.validate(requested)
        name = config.name
        if name in self.by_name or name in self._creating:
            raise QueueExists(name)
        max_queues = self._defaults.max_queues
        # Each queue comes with its dead-message queue.
        if len(self.by_name) // 2 + len(self._creating) >= max_queues:
            self.limits_hit["max_queues"] += 1
            raise LimitReached("max_queues", max_queues)
        dmq_config = pb.QueueConfig(name=name + DMQ_SUFFIX, limits=config.limits)
        dmq_config.limits.max_deliveries = 0
        self._creating.add(name)
        try:
            spool = self._spool

            def store(txn: object) -> tuple[int, int]:
                dmq_id = spool.put_queue(txn, dmq_config.name, dmq_config.SerializeToString())
                queue_id = spool.put_queue(txn, name, config.SerializeToString())
                return queue_id, dmq_id

            queue_id, dmq_id = await self._commits.submit(store)
        finally:
            self._creating.discard(name)
        dmq = Queue(dmq_id, dmq_config, None)
        queue = Queue(queue_id, config, dmq)
        self._register(dmq)
        self._register(queue)
        log.info("queue %s created with subscriptions %s", name, list(config.subscriptions))
        return queue

    async def set_subscriptions(self, name: str, patterns: Iterable[str]) -> Queue:
        """Replace the subscriptions of queue `name` with `patterns`, durably; what it holds
        stays. Validated as `create` validates; once the new config is committed, the
        subscription index and the interest told to other regions follow it."""
        queue = self.get(name)
        requested = pb.QueueConfig()
        requested.CopyFrom(queue.config)
        del requested.subscriptions[:]
        requested.subscriptions.extend(dict.fromkeys(patterns))  # repeats once, in order
        config = self.validate(requested)
        # One change at a time per queue: each commits, then the index follows, in order.
        async with queue.config_lock:
            if queue.deleted:
                raise QueueNotFound(name)
            if config.subscriptions == queue.config.subscriptions:
                return queue  # a client subscribing again to what it has: nothing to store
            spool, queue_id, data = self._spool, queue.queue_id, config.SerializeToString()
            stored = await self._commits.submit(
                lambda txn: spool.set_queue_config(txn, name, queue_id, data)
            )
            if not stored or queue.deleted:
                raise QueueNotFound(name)
            self._resubscribe(queue, config)
        log.info("queue %s now subscribes to %s", name, list(config.subscriptions))
        return queue

    async def delete(self, name: str) -> None:
        queue = self.get(name)
        doomed = [queue] + ([queue.dead_letters] if queue.dead_letters else [])
        for q in doomed:
            q.deleted = True
            self._unregister(q)
        spool = self._spool

        def drop(txn: object) -> int:
            return sum(spool.delete_queue(txn, q.name, q.queue_id) for q in doomed)

        dropped = await self._commits.submit(drop)
        for q in doomed:
            for consumer in q.consumers.values():
                consumer.close(f"queue {q.name!r} was deleted")
        log.info("queue %s deleted with %d events", name, dropped)

    async def purge(self, name: str) -> int:
        """Drop every entry queued and not in flight, durably; returns how many.

        Deliveries in flight stay with their consumers. The queue delivers
        nothing while purging; each page of deletes commits on its own and its
        entries leave the in-memory window once that commit is done.
        """
        queue = self.get(name)
        async with queue.purge_lock:
            queue.purging = True
            queue.purges += 1
            try:
                purged = await self._purge(queue)
            finally:
                queue.purging = False
                self._schedule(queue)
        log.info(
            "queue %s purged: %d events dropped, %d in flight kept",
            name,
            purged,
            len(queue.delivery.inflight),
        )
        return purged

    async def _purge(self, queue: Queue) -> int:
        keep = frozenset(queue.delivery.inflight)
        spool, queue_id = self._spool, queue.queue_id
        purged = after = 0
        while not queue.deleted:
            page = await self._commits.submit(
                lambda txn, after=after: spool.purge_entries(txn, queue_id, after, keep, PURGE_PAGE)
            )
            queue.delivery.drop(page.seqs)
            queue.depth -= len(page.seqs)
            queue.bytes -= page.size
            queue.freed()
            purged += len(page.seqs)
            if not page.more:
                break
            after = page.last_seq
        return purged

    def get(self, name: str) -> Queue:
        queue = self.by_name.get(name)
        if queue is None:
            raise QueueNotFound(name)
        return queue

    def match(self, topic: str) -> tuple[Queue, ...]:
        return self.index.match(topic)

    def ids_of(self, queues: tuple[Queue, ...]) -> tuple[int, ...]:
        """The queue ids of a match result (cached: the same tuples come back per topic)."""
        ids = self._ids_cache.get(queues)
        if ids is None:
            if len(self._ids_cache) > 4096:
                self._ids_cache.clear()
            ids = self._ids_cache[queues] = tuple(q.queue_id for q in queues)
        return ids

    def _register(self, queue: Queue) -> None:
        queue.delivery.max_inflight_bytes = self._defaults.consumer_inflight_bytes
        self.by_name[queue.name] = queue
        for pattern in queue.subscriptions:
            self.index.add(pattern, queue)
            self._interest.subscribe(pattern)

    def _resubscribe(self, queue: Queue, config: pb.QueueConfig) -> None:
        """Point the index and the interest at `config`'s subscriptions. New patterns go in
        before old ones leave, so other regions never see a gap in what both cover
        (`a/>` giving way to `a/b`)."""
        old, new = set(queue.subscriptions), set(config.subscriptions)
        queue.config = config
        queue.subscriptions = tuple(sorted(new))
        for pattern in sorted(new - old):
            self.index.add(pattern, queue)
            self._interest.subscribe(pattern)
        for pattern in sorted(old - new):
            self.index.remove(pattern, queue)
            self._interest.unsubscribe(pattern)

    def _unregister(self, queue: Queue) -> None:
        self.by_name.pop(queue.name, None)
        self._ids_cache.clear()
        for pattern in queue.subscriptions:
            self.index.remove(pattern, queue)
            self._interest.unsubscribe(pattern)

    # ------------------------------------------------------------ publishing

    def stored(self, queue: Queue, entries: list[Entry]) -> None:
        """Entries just committed into `queue` (their reservation becomes depth)."""
        size = sum(e.size for e in entries)
        queue.reserved_depth -= len(entries)
        queue.reserved_bytes -= size
        if queue.deleted:
            return
        queue.depth += len(entries)
        queue.bytes += size
        queue.events_in += len(entries)
        queue.delivery.push(entries)
        self._schedule(queue)

    def stored_on_disk(self, queue: Queue, count: int, size: int, last_seq: int) -> None:
        """`count` events up to `last_seq` just committed into a spilled queue: a load
        brings them into memory later, so none is built now."""
        queue.reserved_depth -= count
        queue.reserved_bytes -= size
        if queue.deleted:
            return
        queue.depth += count
        queue.bytes += size
        queue.events_in += count
        queue.delivery.pushed_on_disk(last_seq)
        self._schedule(queue)

    # ------------------------------------------------------------ consuming

    def bind(self, queue: Queue, consumer: Consumer, credits: int) -> None:
        queue.consumers[consumer.id] = consumer
        queue.delivery.add_consumer(consumer.id, credits)
        self._schedule(queue)

    def unbind(self, queue: Queue, consumer: Consumer) -> None:
        queue.consumers.pop(consumer.id, None)
        back = queue.delivery.remove_consumer(consumer.id)
        if back and not queue.deleted:
            self._persist_delivery_counts(queue, back)
            self._schedule(queue)

    def grant(self, queue: Queue, consumer: Consumer, credits: int) -> None:
        queue.delivery.grant(consumer.id, credits)
        self._schedule(queue)

    def ack(self, queue: Queue, consumer: Consumer, tags: Iterable[int]) -> None:
        """Remove acked entries; the consumer hears `confirmed` once that is durable."""
        delivery = queue.delivery
        blocked = delivery.blocked_by_bytes(consumer.id)
        done = delivery.ack(consumer.id, tags)
        if not done:
            return
        if blocked:  # its unacked bytes held it back: it may take more now
            self._schedule(queue)
        seqs = [e.seq for e in done]
        size = sum([e.size for e in done])
        spool, queue_id = self._spool, queue.queue_id
        future = self._commits.submit(lambda txn: spool.remove_entries(txn, queue_id, seqs))

        def finish(fut: asyncio.Future[int]) -> None:
            if fut.exception() is not None:
                log.error("queue %s: storing acks failed: %s", queue.name, fut.exception())
                consumer.close(f"storing acks failed: {fut.exception()}")
                return
            queue.depth -= len(done)
            queue.bytes -= size
            queue.freed()
            queue.events_out += len(done)
            consumer.confirmed.extend(seqs)
            consumer.wake.set()

        future.add_done_callback(finish)

    def nack(self, queue: Queue, consumer: Consumer, tags: Iterable[int]) -> list[int]:
        back = queue.delivery.nack(consumer.id, tags)
        if back:
            self._persist_delivery_counts(queue, back)
            self._schedule(queue)
        return [e.seq for e in back]

    def _persist_delivery_counts(self, queue: Queue, entries: list[Entry]) -> None:
        # Kept for max-deliveries across restarts; nothing waits on it.
        counts = [(e.seq, e.delivery_count) for e in entries]
        spool, queue_id = self._spool, queue.queue_id

        def store(txn: object) -> None:
            for seq, count in counts:
                spool.set_delivery_count(txn, queue_id, seq, count)

        self._commits.submit(store)

    # ------------------------------------------------------------ dispatch

    def _schedule(self, queue: Queue) -> None:
        if not queue.dispatch_scheduled:
            queue.dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch, queue)

    def _dispatch(self, queue: Queue) -> None:
        queue.dispatch_scheduled = False
        if queue.deleted or queue.purging:
            return
        delivery = queue.delivery
        pulled = delivery.pull(now_ms())
        for consumer_id, entries in pulled.deliveries:
            consumer = queue.consumers[consumer_id]
            field = queue.queue_field
            consumer.outbox.extend(framing.queue_deliveries(entries, field))
            consumer.wake.set()
        if pulled.dead:
            self._bury(queue, pulled.dead)
        if delivery.wants_load():
            delivery.loading = True
            task = asyncio.get_running_loop().create_task(self._load(queue))
            self._loads.add(task)
            task.add_done_callback(self._loads.discard)

    async def settle(self) -> None:
        """Wait for the reads from disk under way (before the environment closes)."""
        while self._loads:
            await asyncio.gather(*self._loads, return_exceptions=True)

    def expire_all(self) -> None:
        """Move expired ready entries of every queue to its dead-message queue."""
        now = now_ms()
        for queue in list(self.by_name.values()):
            if queue.purging:
                continue
            gone = queue.delivery.expire(now)
            if gone:
                self._bury(queue, [(e, DeadReason.EXPIRED) for e in gone])

    def _bury(self, queue: Queue, dead: list[tuple[Entry, DeadReason]]) -> None:
        entries = [e for e, _reason in dead]
        seqs = [e.seq for e in entries]
        target = queue.dead_letters
        spool = self._spool
        size = sum(e.size for e in entries)
        for reason in {r for _e, r in dead}:
            log.info(
                "queue %s: %d events dead (%s)",
                queue.name,
                sum(1 for _e, r in dead if r is reason),
                reason.value,
            )

        if target is None:  # a dead-message queue's own expired events are dropped

            def drop(txn: object) -> int:
                return spool.remove_entries(txn, queue.queue_id, seqs)

            future = self._commits.submit(drop)
        else:
            target_id = target.queue_id

            def move(txn: object) -> int:
                return spool.move_entries(txn, queue.queue_id, target_id, seqs)

            future = self._commits.submit(move)

        def done(fut: asyncio.Future[int]) -> None:
            if fut.exception() is not None:
                log.error("queue %s: moving dead events failed: %s", queue.name, fut.exception())
                return
            queue.depth -= len(entries)
            queue.bytes -= size
            queue.freed()
            if target is not None and not target.deleted:
                for e in entries:
                    e.delivery_count, e.redelivered, e.expires_at_ms = 0, False, 0
                target.depth += len(entries)
                target.bytes += size
                target.events_in += len(entries)
                target.delivery.push(entries)
                self._schedule(target)

        future.add_done_callback(done)

    async def _load(self, queue: Queue) -> None:
        """Read the next entries of a spilled queue from disk, off the event loop."""
        after = queue.delivery.last_loaded_seq
        spool = self._spool
        purges = queue.purges
        try:
            records = await asyncio.to_thread(spool.read_window, queue.queue_id, after, LOAD_BATCH)
        except Exception:
            log.exception("queue %s: reading from storage failed", queue.name)
            queue.delivery.loading = False
            return
        if queue.purges != purges:  # what was read may have been purged since: read again
            queue.delivery.loading = False
            self._schedule(queue)
            return
        recovered = self._recovered_upto_seq
        entries = [
            Entry(seq, size, expires, count, count > 0 or seq <= recovered, data)
            for seq, count, expires, size, data in records
            if data is not None
        ]
        queue.delivery.loaded(entries, LOAD_BATCH)
        self._schedule(queue)
