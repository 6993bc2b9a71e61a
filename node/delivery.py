"""Queue delivery state, sans-IO: who gets which entry, credits, acks, nacks, dead events.

No asyncio, no LMDB, no clock: the queue shell feeds it events and `now_ms`
and performs what it returns. It also keeps the in-memory window of a queue
bounded: past `window` ready entries the queue "spills" and later entries are
only on disk until the shell loads them back (`wants_load`/`loaded`), so a
queue holding a million events does not hold them in memory.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_WINDOW = 4096
DEFAULT_WINDOW_BYTES = 32 << 20
# Delivered, unacked bytes one consumer may hold, whatever its credits (one entry always goes).
DEFAULT_INFLIGHT_BYTES = 64 << 20


@dataclass(slots=True)
class Entry:
    """One queued event, as the delivery state knows it (the payload stays on disk)."""

    seq: int
    size: int
    expires_at_ms: int = 0
    delivery_count: int = 0
    redelivered: bool = False
    # The encoded event while the entry is in memory; opaque here.
    data: bytes = b""


class DeadReason(enum.Enum):
    EXPIRED = "ttl expired"
    MAX_DELIVERIES = "max deliveries reached"


@dataclass(slots=True)
class Pulled:
    """What `pull` decided: deliveries per consumer, and entries that are dead."""

    deliveries: list[tuple[int, list[Entry]]]
    dead: list[tuple[Entry, DeadReason]]


class QueueDelivery:
    """Delivery of one queue's entries to its consumers.

    Non-exclusive queues hand entries round-robin to consumers with credit.
    Exclusive queues deliver only to the consumer bound first; the others wait
    in line and take over, in bind order, when it leaves.
    """

    def __init__(
        self,
        exclusive: bool,
        max_deliveries: int,
        window: int = DEFAULT_WINDOW,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    ) -> None:
        self.exclusive = exclusive
        self.max_deliveries = max_deliveries
        self.window = window
        self.window_bytes = window_bytes
        self.ready: deque[Entry] = deque()
        self.ready_bytes = 0
        self.inflight: dict[int, tuple[int, Entry]] = {}
        self.credits: dict[int, int] = {}
        # Each consumer's delivered, unacked bytes, bounded by max_inflight_bytes.
        self.max_inflight_bytes = max_inflight_bytes
        self.inflight_bytes: dict[int, int] = {}
        self._turn = 0
        # Window state: entries past the window live only on disk.
        self.spilled = False
        self.loading = False
        self.last_loaded_seq = 0
        self.last_pushed_seq = 0

    # ------------------------------------------------------------ consumers

    def add_consumer(self, consumer: int, credits: int = 0) -> None:
        self.credits[consumer] = credits
        self.inflight_bytes[consumer] = 0

    def remove_consumer(self, consumer: int) -> list[Entry]:
        """Forget a consumer; its unacked entries go back to the front, redelivered."""
        self.credits.pop(consumer, None)
        self.inflight_bytes.pop(consumer, None)
        back = [entry for owner, entry in self.inflight.values() if owner == consumer]
        for entry in back:
            del self.inflight[entry.seq]
        self._requeue(back)
        return back

    def grant(self, consumer: int, credits: int) -> None:
        if consumer in self.credits:
            self.credits[consumer] += credits

    # ------------------------------------------------------------ entries

    def push(self, entries: Iterable[Entry]) -> None:
        """Entries just stored; those past the window stay on disk until loaded.

        Seqs normally arrive in increasing order. A dead-message queue also
        receives older seqs; a load (which reads after `last_loaded_seq`) would
        never find those again, so they stay in memory even past the window,
        unless a load that read the disk after their commit brought them already.
        """
        in_memory: set[int] | None = None
        for entry in entries:
            if entry.seq > self.last_pushed_seq:
                self.last_pushed_seq = entry.seq
            if entry.seq <= self.last_loaded_seq:
                if in_memory is None:  # rare: built once per push, not per entry
                    in_memory = {e.seq for e in self.ready}
                    in_memory.update(self.inflight)
                if entry.seq in in_memory:
                    continue
                self.ready.append(entry)
                self.ready_bytes += entry.size
                continue
            if self.spilled or self._window_full():
                self.spilled = True
                continue
            self.ready.append(entry)
            self.ready_bytes += entry.size
            self.last_loaded_seq = entry.seq

    def pushed_on_disk(self, last_seq: int) -> None:
        """Entries up to `last_seq` were stored while the queue is spilled (`spilled_for`
        was True for all of them): only a load will bring them."""
        if last_seq > self.last_pushed_seq:
            self.last_pushed_seq = last_seq

    def spilled_for(self, first_seq: int) -> bool:
        """Whether entries from `first_seq` on (newer than any loaded) would stay on disk."""
        return self.spilled and first_seq > self.last_loaded_seq

    def wants_load(self) -> bool:
        """True when the shell should read more entries from disk (after `last_loaded_seq`)."""
        return (
            self.spilled
            and not self.loading
            and len(self.ready) <= self.window // 2
            and self.ready_bytes <= self.window_bytes // 2
        )

    def loaded(self, entries: list[Entry], asked: int) -> None:
        """Entries read from disk after `last_loaded_seq`, at most `asked` of them.

        An entry past `last_pushed_seq` was committed but not pushed yet: the
        read saw it before its push, which will bring it, so it is left out.
        """
        self.loading = False
        for entry in entries:
            if entry.seq > self.last_pushed_seq:
                break
            if entry.seq > self.last_loaded_seq:
                self.ready.append(entry)
                self.ready_bytes += entry.size
                self.last_loaded_seq = entry.seq
        if len(entries) < asked and self.last_loaded_seq >= self.last_pushed_seq:
            self.spilled = False

    def pull(self, now_ms: int) -> Pulled:
        """Hand ready entries to consumers with credit; expired or over-delivered ones are dead."""
        deliveries: dict[int, list[Entry]] = {}
        dead: list[tuple[Entry, DeadReason]] = []
        takers = self._takers()
        if len(takers) == 1:  # one consumer can take: no turns to keep, a run per call
            taken = self._pull_run(takers[0], now_ms, dead)
            return Pulled([(takers[0], taken)] if taken else [], dead)
        while self.ready and takers:
            self._turn %= len(takers)
            consumer = takers[self._turn]
            entry = self.ready.popleft()
            self.ready_bytes -= entry.size
            reason = self._dead_reason(entry, now_ms)
            if reason is not None:
                dead.append((entry, reason))
                continue
            entry.delivery_count += 1
            self.inflight[entry.seq] = (consumer, entry)
            deliveries.setdefault(consumer, []).append(entry)
            self.credits[consumer] -= 1
            held = self.inflight_bytes[consumer] = self.inflight_bytes[consumer] + entry.size
            if self.credits[consumer] <= 0 or held >= self.max_inflight_bytes:
                takers.pop(self._turn)
            elif not self.exclusive:
                self._turn += 1
        return Pulled(list(deliveries.items()), dead)

    def _pull_run(
        self, consumer: int, now_ms: int, dead: list[tuple[Entry, DeadReason]]
    ) -> list[Entry]:
        """`pull` for a single consumer with credit: the same choices, fewer lookups."""
        ready, inflight, popleft = self.ready, self.inflight, self.ready.popleft
        credit, held = self.credits[consumer], self.inflight_bytes[consumer]
        limit, max_deliveries = self.max_inflight_bytes, self.max_deliveries
        taken: list[Entry] = []
        freed = 0
        while ready and credit > 0 and held < limit:
            entry = popleft()
            freed += entry.size
            if (entry.expires_at_ms and now_ms >= entry.expires_at_ms) or (
                max_deliveries and entry.delivery_count >= max_deliveries
            ):
                reason = self._dead_reason(entry, now_ms)
                assert reason is not None
                dead.append((entry, reason))
                continue
            entry.delivery_count += 1
            inflight[entry.seq] = (consumer, entry)
            taken.append(entry)
            credit -= 1
            held += entry.size
        self.ready_bytes -= freed
        self.credits[consumer], self.inflight_bytes[consumer] = credit, held
        return taken

    def expire(self, now_ms: int) -> list[Entry]:
        """Remove and return ready entries whose TTL has passed (nobody is consuming them)."""
        if not any(e.expires_at_ms for e in self.ready):
            return []
        keep: deque[Entry] = deque()
        gone = []
        for entry in self.ready:
            (gone if entry.expires_at_ms and now_ms >= entry.expires_at_ms else keep).append(entry)
        self.ready = keep
        self.ready_bytes = sum(e.size for e in keep)
        return gone

    def ack(self, consumer: int, tags: Iterable[int]) -> list[Entry]:
        """Entries acked by their consumer; unknown tags or another consumer's are ignored."""
        done = []
        inflight = self.inflight
        for tag in tags:
            held = inflight.get(tag)
            if held is not None and held[0] == consumer:
                del inflight[tag]
                done.append(held[1])
        if done and consumer in self.inflight_bytes:
            self.inflight_bytes[consumer] -= sum([e.size for e in done])
        return done

    def nack(self, consumer: int, tags: Iterable[int]) -> list[Entry]:
        """Entries to redeliver now, put back at the front of the queue."""
        back = []
        for tag in tags:
            held = self.inflight.get(tag)
            if held is not None and held[0] == consumer:
                del self.inflight[tag]
                self._settled(consumer, held[1])
                back.append(held[1])
        self._requeue(back)
        return back

    def drop(self, seqs: Iterable[int]) -> None:
        """Forget entries that were removed elsewhere (purged with the queue)."""
        gone = set(seqs)
        self.ready = deque(e for e in self.ready if e.seq not in gone)
        self.ready_bytes = sum(e.size for e in self.ready)
        for seq in gone:
            held = self.inflight.pop(seq, None)
            if held is not None:
                self._settled(*held)

    # ------------------------------------------------------------ internals

    def blocked_by_bytes(self, consumer: int) -> bool:
        """True when `consumer` has credit but holds max_inflight_bytes unacked."""
        return (
            self.credits.get(consumer, 0) > 0
            and self.inflight_bytes.get(consumer, 0) >= self.max_inflight_bytes
        )

    def _settled(self, consumer: int, entry: Entry) -> None:
        if consumer in self.inflight_bytes:
            self.inflight_bytes[consumer] -= entry.size

    def _takers(self) -> list[int]:
        limit, held = self.max_inflight_bytes, self.inflight_bytes
        if self.exclusive:
            first = next(iter(self.credits), None)
            if first is None or self.credits[first] <= 0 or held[first] >= limit:
                return []
            return [first]
        return [c for c, credit in self.credits.items() if credit > 0 and held[c] < limit]

    def _window_full(self) -> bool:
        return len(self.ready) >= self.window or self.ready_bytes >= self.window_bytes

    def _dead_reason(self, entry: Entry, now_ms: int) -> DeadReason | None:
        if entry.expires_at_ms and now_ms >= entry.expires_at_ms:
            return DeadReason.EXPIRED
        if self.max_deliveries and entry.delivery_count >= self.max_deliveries:
            return DeadReason.MAX_DELIVERIES
        return None

    def _requeue(self, entries: list[Entry]) -> None:
        for entry in entries:
            entry.redelivered = True
            self.ready_bytes += entry.size
        self.ready.extendleft(sorted(entries, key=lambda e: e.seq, reverse=True))
