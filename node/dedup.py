"""The de-duplication window of idempotent publishing: which keys this node stored, as what.

A guaranteed event may carry a key: (producer, sequence) from the SDK, or a key
the application gives. The first copy of a key is stored; a resend of a key the
window holds (a lost ack, a reconnect, a crash of the client or of this node) is
acked again with the first copy's id and stores nothing. A key is *pending*
from the moment its first copy is prepared until its commit lands: resends
arriving meanwhile wait for that commit (`join`) and share its outcome.

The window is bounded: the `max_keys` most recent keys, none older than
`max_age_ms` (an event id's high bits are its publish time). A resend of a key
that fell out is stored again. Sans-IO: the caller passes `now_ms`, stores
`records` durably with the events (storage/dedup.py) and trims the log up to
`trim_upto`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from storage.dedup import DedupRecord

__all__ = ["MAX_KEY_BYTES", "PENDING", "DedupWindow", "app_key", "producer_key"]

MAX_KEY_BYTES = 256
# Forgotten keys are trimmed from the durable log in runs of at least this many.
TRIM_BATCH = 1024
# `DedupWindow.claim`'s answer for a key whose first copy is still being stored.
PENDING = -1
_ID_TIME_SHIFT = 22


def producer_key(producer: bytes, sequence: int) -> bytes:
    return b"p" + producer + sequence.to_bytes(8, "big")


def app_key(key: str) -> bytes:
    return b"k" + key.encode()


class DedupWindow:
    def __init__(self, max_keys: int, max_age_ms: int) -> None:
        self.max_keys = max_keys
        self.max_age_ms = max_age_ms
        # Key -> the id of its stored first copy, or PENDING while that copy commits
        # (one dict: a new key costs one lookup and one insert when claimed).
        self._ids: dict[bytes, int] = {}
        # Oldest first, in commit order: the seq of each key's record, and the key.
        self._seqs: deque[int] = deque()
        self._keys: deque[bytes] = deque()
        # Pending keys with resends waiting for their commit -> those resends.
        self._waiters: dict[bytes, list[Any]] = {}
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
        return len(self._keys)

    def load(self, records: Iterable[DedupRecord], now_ms: int) -> None:
        """Refill from the durable log after a restart."""
        for record in records:
            self._remember(record)
        self._forget(now_ms)

    def claim(self, key: bytes) -> int | None:
        """What to do with a guaranteed event keyed `key`.

        None: the key is new and now pending: store the event, then report its
        commit with `landed` or `failed`. PENDING: its first copy is on its way
        to a commit (`join` the resend to it). Otherwise: the first copy's id.
        """
        event_id = self._ids.get(key)
        if event_id is None:
            self._ids[key] = PENDING
            return None
        if event_id != PENDING:
            self.duplicates += 1
        return event_id

    def join(self, key: bytes, waiter: Any) -> None:
        """A resend of a pending key: `waiter` comes back from `landed` or `failed`."""
        self.duplicates += 1
        self._waiters.setdefault(key, []).append(waiter)

    def landed(
        self, records: Iterable[tuple[int, int, bytes]], now_ms: int
    ) -> list[tuple[Any, int]]:
        """The first copies' commit landed, (seq, event id, key) each: remember them;
        returns the waiters to ack, with their id."""
        waiting: list[tuple[Any, int]] = []
        ids, seqs, keys = self._ids, self._seqs, self._keys
        for seq, event_id, key in records:
            ids[key] = event_id
            seqs.append(seq)
            keys.append(key)
        if self._waiters:  # resends of keys still pending: rare, so looked for only then
            pop_waiters = self._waiters.pop
            for _seq, event_id, key in records:
                waiters = pop_waiters(key, None)
                if waiters:
                    waiting.extend((waiter, event_id) for waiter in waiters)
        self._forget(now_ms)
        return waiting

    def failed(self, keys: Iterable[bytes]) -> list[Any]:
        """The first copies' commit failed (or was refused): the keys are free again;
        their waiters fail too."""
        waiters: list[Any] = []
        ids = self._ids
        for key in keys:
            if ids.get(key) == PENDING:
                del ids[key]
            waiters.extend(self._waiters.pop(key, None) or ())
        return waiters

    def trim_due(self) -> int:
        """The seq to trim the durable log up to now (0: not worth a trim yet)."""
        if self.trim_upto - self.trimmed >= TRIM_BATCH or (
            self.trim_upto > self.trimmed and not self._keys
        ):
            return self.trim_upto
        return 0

    def _remember(self, record: DedupRecord) -> None:
        if record.key in self._ids:  # stored twice before this window existed: keep the first
            return
        self._ids[record.key] = record.event_id
        self._seqs.append(record.seq)
        self._keys.append(record.key)

    def _forget(self, now_ms: int) -> None:
        ids, seqs, keys = self._ids, self._seqs, self._keys
        over = len(keys) - self.max_keys
        if over > 0:  # past max_keys: the oldest go without an age check each
            pop_key, pop_seq = keys.popleft, seqs.popleft
            for _ in range(over):
                del ids[pop_key()]
            for _ in range(over - 1):
                pop_seq()
            self.trim_upto = pop_seq()
        oldest_ms = now_ms - self.max_age_ms
        while keys and ids[keys[0]] >> _ID_TIME_SHIFT < oldest_ms:
            del ids[keys.popleft()]
            self.trim_upto = seqs.popleft()
