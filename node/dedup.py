"""The de-duplication window of idempotent publishing: which keys this node stored, as what.

A guaranteed event may carry a key: (producer, sequence) from the SDK, or a key
the application gives. The first copy of a key is stored; a resend of a key the
window holds (a lost ack, a reconnect, a crash of the client or of this node) is
acked again with the first copy's id and stores nothing. A key is *pending*
from the moment its first copy is prepared until its commit lands: resends
arriving meanwhile wait for that commit (`join`) and share its outcome.

The window holds *runs*: a producer's consecutive sequences stored as
consecutive events (spool seqs and ids both counting up with the sequence), as
the SDK publishes them, are one run, claimed, remembered and forgotten at once.
An application's key is a run of one. A run is named by its first key.

The window is bounded: the `max_keys` most recent keys, none older than
`max_age_ms` (an event id's high bits are its publish time); a run is cut at
its front when only part of it falls out. A resend of a key that fell out is
stored again. Sans-IO: the caller passes `now_ms`, stores runs durably with the
events (storage/dedup.py) and trims the log up to `trim_upto`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from typing import Any

from storage.dedup import DedupRecord

__all__ = ["MAX_KEY_BYTES", "PENDING", "DedupWindow", "app_key", "producer_key", "producer_name"]

MAX_KEY_BYTES = 256
# Forgotten keys are trimmed from the durable log in runs of at least this many.
TRIM_BATCH = 1024
# `DedupWindow.claim`'s answer for a key whose first copy is still being stored.
PENDING = -1
_ID_TIME_SHIFT = 22
_PRODUCER = ord("p")


def producer_name(producer: bytes) -> bytes:
    """What names a producer's runs: its keys without their sequence."""
    return b"p" + producer


def producer_key(producer: bytes, sequence: int) -> bytes:
    return b"p" + producer + sequence.to_bytes(8, "big")


def app_key(key: str) -> bytes:
    return b"k" + key.encode()


def _split(key: bytes) -> tuple[bytes, int]:
    """A key's (name, sequence): a producer's sequence, 0 for an application's key."""
    if key[0] == _PRODUCER:
        return key[:-8], int.from_bytes(key[-8:], "big")
    return key, 0


class _Run:
    """Keys first, first + 1, ... last of one name, stored as events seq, seq + 1, ... with
    ids event_id, event_id + 1, ... (event_id is PENDING until their commit lands)."""

    __slots__ = ("event_id", "first", "last", "name", "seq", "waiters")

    def __init__(self, name: bytes, first: int, last: int) -> None:
        self.name = name
        self.first = first
        self.last = last
        self.event_id = PENDING
        self.seq = 0
        # (waiter, sequence) of resends waiting for this pending run's commit.
        self.waiters: list[tuple[Any, int]] | None = None


class DedupWindow:
    def __init__(self, max_keys: int, max_age_ms: int) -> None:
        self.max_keys = max_keys
        self.max_age_ms = max_age_ms
        # Name -> its runs, landed or pending, by first sequence (they never overlap).
        self._runs: dict[bytes, _Runs] = {}
        # Landed runs, oldest first in commit order, and how many keys they hold.
        self._landed: deque[_Run] = deque()
        self._keys = 0
        # Records with seq <= trim_upto are forgotten; those up to `trimmed` are gone on
        # disk (the caller sets it once its trim committed).
        self.trim_upto = 0
        self.trimmed = 0
        self.duplicates = 0

    @property
    def enabled(self) -> bool:
        return self.max_keys > 0

    def __len__(self) -> int:
        """Keys stored (pending ones not counted)."""
        return self._keys

    def load(self, records: Iterable[DedupRecord], now_ms: int) -> None:
        """Refill from the durable log after a restart (runs in commit order)."""
        landed = self._landed
        for record in records:
            name, first = _split(record.key)
            last = landed[-1] if landed else None
            if (
                last is not None
                and last.name == name
                and _continues(last, first, record)
                and self._runs[name].newest() is last
            ):
                last.last += record.count  # per-key records of older nodes: one run again
                self._keys += record.count
                continue
            # Stored twice before this window existed: keep the first copy of each key.
            if self.claim_run(name, first, record.count):
                self._land(name, first, record.count, record.seq, record.event_id)
                continue
            for offset in range(record.count):
                if self._find(name, first + offset) is None:
                    at = first + offset
                    self._land(name, at, 1, record.seq + offset, record.event_id + offset)
        self._forget(now_ms)

    def claim_run(self, name: bytes, first: int, count: int) -> bool:
        """Claim keys first .. first + count - 1 of `name` at once, when all are past every
        key of it the window holds (a producer publishing in order): they are pending as one
        run. False: nothing claimed (claim them one by one)."""
        runs = self._runs.get(name)
        if runs is None:
            runs = self._runs[name] = _Runs()
        newest = runs.newest()
        if newest is None or newest.last < first:
            runs.append(_Run(name, first, first + count - 1))
            return True
        return False

    def claim(self, key: bytes) -> int | None:
        """What to do with a guaranteed event keyed `key`.

        None: the key is new and now pending: store the event, then report its
        commit with `landed` or `failed`. PENDING: its first copy is on its way
        to a commit (`join` the resend to it). Otherwise: the first copy's id.
        """
        name, sequence = _split(key)
        run = self._find(name, sequence)
        if run is None:
            self._runs_of(name, sequence)
            return None
        if run.event_id == PENDING:
            return PENDING
        self.duplicates += 1
        return run.event_id + sequence - run.first

    def join(self, key: bytes, waiter: Any) -> None:
        """A resend of a pending key: `waiter` comes back from `landed` or `failed`."""
        name, sequence = _split(key)
        run = self._find(name, sequence)
        assert run is not None and run.event_id == PENDING
        self.duplicates += 1
        if run.waiters is None:
            run.waiters = []
        run.waiters.append((waiter, sequence))

    def landed(self, records: Iterable[DedupRecord], now_ms: int) -> list[tuple[Any, int]]:
        """The first copies' commit landed, one claimed run each: remember them; returns
        the waiters to ack, with their id."""
        waiting: list[tuple[Any, int]] = []
        for record in records:
            name, first = _split(record.key)
            run = self._land(name, first, record.count, record.seq, record.event_id)
            if run.waiters:
                waiting.extend((w, run.event_id + seq - run.first) for w, seq in run.waiters)
                run.waiters = None
        self._forget(now_ms)
        return waiting

    def failed(self, keys: Iterable[bytes]) -> list[Any]:
        """The first copies' commit failed (or was refused), one claimed run each, named by
        its first key: the keys are free again; their waiters fail too."""
        waiters: list[Any] = []
        for key in keys:
            name, first = _split(key)
            runs = self._runs[name]
            run = runs[runs.at(first)]
            assert run.first == first and run.event_id == PENDING
            runs.drop(run)
            if runs.newest() is None:
                del self._runs[name]
            waiters.extend(w for w, _seq in run.waiters or ())
        return waiters

    def trim_due(self) -> int:
        """The seq to trim the durable log up to now (0: not worth a trim yet)."""
        if self.trim_upto - self.trimmed >= TRIM_BATCH or (
            self.trim_upto > self.trimmed and not self._landed
        ):
            return self.trim_upto
        return 0

    def _find(self, name: bytes, sequence: int) -> _Run | None:
        runs = self._runs.get(name)
        if runs is None:
            return None
        newest = runs.newest()
        if newest is None or newest.last < sequence:  # past them all: a producer's next key
            return None
        at = runs.at(sequence)
        if at >= runs.head and runs[at].last >= sequence:
            return runs[at]
        return None

    def _runs_of(self, name: bytes, first: int, count: int = 1) -> None:
        """A new pending run, in its place among its name's runs."""
        runs = self._runs.get(name)
        if runs is None:
            runs = self._runs[name] = _Runs()
        run = _Run(name, first, first + count - 1)
        newest = runs.newest()
        if newest is None or newest.first < first:
            runs.append(run)
        else:
            runs.insert(runs.at(first) + 1, run)

    def _land(self, name: bytes, first: int, count: int, seq: int, event_id: int) -> _Run:
        """Keys first .. first + count - 1 of `name` landed (their claim's run, as a rule)."""
        runs = self._runs.get(name)
        run = runs.newest() if runs is not None else None
        if run is None or run.first != first:  # not the name's newest run: rare
            run = self._find(name, first)
            if run is None:  # never claimed: so be it
                self._runs_of(name, first, count)
                return self._land(name, first, count, seq, event_id)
        run.event_id, run.seq = event_id, seq
        self._landed.append(run)
        self._keys += run.last - run.first + 1
        return run

    def _forget(self, now_ms: int) -> None:
        """Drop the oldest keys past max_keys or max_age_ms, cutting a run at its front."""
        landed = self._landed
        oldest_id = (now_ms - self.max_age_ms) << _ID_TIME_SHIFT
        while landed:
            run = landed[0]
            count = run.last - run.first + 1
            drop = max(self._keys - self.max_keys, min(count, oldest_id - run.event_id))
            if drop <= 0:
                return
            self.trim_upto = run.seq + min(drop, count) - 1
            if drop < count:
                run.first += drop
                run.event_id += drop
                run.seq += drop
                self._keys -= drop
                return
            landed.popleft()
            self._keys -= count
            runs = self._runs[run.name]
            runs.drop(run)
            if runs.newest() is None:
                del self._runs[run.name]


class _Runs(list[_Run]):
    """One name's runs by first sequence. Those before `head` are forgotten: the oldest
    leave without shifting the rest, then in bulk (a producer's runs come and go at both
    ends; bisection needs a list)."""

    __slots__ = ("head",)

    def __init__(self) -> None:
        super().__init__()
        self.head = 0

    def newest(self) -> _Run | None:
        return self[-1] if len(self) > self.head else None

    def at(self, sequence: int) -> int:
        """The index of the last run starting at or before `sequence` (head - 1: none)."""
        return bisect_right(self, sequence, lo=self.head, key=_first) - 1

    def drop(self, run: _Run) -> None:
        if self[self.head] is not run:  # not the oldest: rare
            del self[self.index(run, self.head)]
            return
        self.head += 1
        if self.head == len(self) or self.head > max(16, len(self) // 2):
            del self[: self.head]
            self.head = 0


def _continues(run: _Run, first: int, record: DedupRecord) -> bool:
    """Whether `record` holds the keys, seqs and ids right after `run`'s."""
    count = run.last - run.first + 1
    return (
        run.last + 1 == first
        and run.seq + count == record.seq
        and run.event_id + count == record.event_id
    )


def _first(run: _Run) -> int:
    return run.first
