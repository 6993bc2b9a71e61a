"""Group commit: one writer thread applies every queued write in one synced transaction.

Callers submit `WriteOp`s from any thread (the event loop, in practice) and
never wait on the disk. The writer takes everything queued, applies it in one
LMDB write transaction, commits (fsync), and reports each op's result through
one `on_done` call per group. Many publishes thus share one fsync, and when
traffic is light a group is a single op, so batching adds no latency.

py-lmdb releases the GIL around every LMDB call, so a writer applying a group
while the event loop runs Python waits for the GIL once per put or delete:
measured, two thirds of its apply time went to that wait. `hand_over` lets
the caller wait (GIL released) while its group is applied, a CPU-bound step it
could not overlap anyway, and go on during the commit's fsync. It waits only
while applies take long enough to be worth two thread wake-ups.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb

from plexus.errors import StorageFull
from storage.environment import Environment, translate_error

log = logging.getLogger(__name__)

MAX_OPS_PER_GROUP = 4096
# How often `hand_over` checks, while it waits, that the writer thread still runs.
HAND_OVER_CHECK_S = 1.0
# `hand_over` waits only while the last group's apply took this long: a shorter one (a
# link's trim, a lone publish) costs less than the wake-ups of a wait (A/B: the wait
# slowed a link's small commits by ~10 % and sped one node's big ones by 10-25 %).
HAND_OVER_WAIT_MIN_S = 0.0003


@dataclass(slots=True)
class WriteOp:
    """A change applied inside the writer's transaction.

    `apply(txn)` returns the op's result; `token` is handed back untouched so
    the caller can find its continuation.
    """

    apply: Callable[[lmdb.Transaction], Any]
    token: Any = None
    result: Any = None
    error: BaseException | None = field(default=None)


Completion = Callable[[list[WriteOp]], None]


class SpoolWriter:
    """The single writer thread of a node's LMDB environment."""

    def __init__(self, env: Environment, on_done: Completion) -> None:
        self._env = env
        self._on_done = on_done
        self._queue: queue.SimpleQueue[list[WriteOp] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        # Set once the group taken last is applied (its commit may still be under way).
        self._applied = threading.Event()
        self._last_apply_s = 0.0
        self.commits = 0
        self.ops = 0
        # The refusal while the disk is full (None when writes land): logged on each change.
        self.full: StorageFull | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: WriteOp) -> None:
        self._queue.put([op])

    def hand_over(self, group: list[WriteOp]) -> None:
        """Submit `group` and, while applies take long, wait until it is applied, not
        committed. For a caller that knows the writer is idle (one `on_done` per
        earlier group came back): the group is then applied alone, without the
        caller competing for the GIL."""
        self._applied.clear()
        self._queue.put(group)
        if self._last_apply_s < HAND_OVER_WAIT_MIN_S:
            return
        while not self._applied.wait(HAND_OVER_CHECK_S):
            if not self._thread.is_alive():
                raise RuntimeError("the spool writer has stopped")

    def stop(self) -> None:
        """Apply everything already submitted, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group = list(first)
            while len(group) < MAX_OPS_PER_GROUP:
                try:
                    ops = self._queue.get_nowait()
                except queue.Empty:
                    break
                if ops is None:
                    stopping = True
                    break
                group.extend(ops)
            self._commit(group)
            self._applied.set()  # (already, unless the group failed)
            try:
                self._on_done(group)
            except Exception:  # the callback belongs to the caller; keep writing
                log.exception("spool writer completion callback failed")

    def _commit(self, group: list[WriteOp]) -> None:
        try:
            self._apply_all(group)
        except Exception as exc:
            error = self._as_error(exc)
            if len(group) == 1 or isinstance(error, StorageFull):
                # A full disk refuses every op alike: no point retrying them one by one.
                for op in group:
                    op.result, op.error = None, error
                return
            # One op failed the transaction: isolate it so the others still land.
            for op in group:
                try:
                    self._apply_all([op])
                except Exception as op_exc:
                    op.result, op.error = None, self._as_error(op_exc)

    def _apply_all(self, group: list[WriteOp]) -> None:
        while True:
            try:
                started = time.perf_counter()
                with self._env.env.begin(write=True) as txn:
                    for op in group:
                        op.result = op.apply(txn)
                    self._last_apply_s = time.perf_counter() - started
                    self._applied.set()  # a waiting `hand_over` goes on during the fsync
                self.commits += 1
                self.ops += len(group)
                self._landed()
                return
            except lmdb.MapFullError:
                new_size = self._env.grow()
                log.info("storage map grown to %d MiB", new_size >> 20)

    def _landed(self) -> None:
        self._env.note_committed()
        # Acks may land in LMDB's free pages on a disk still full: wait for real room.
        if self.full is not None and self._env.has_room():
            log.warning("storage in %s has room again: writes land", self._env.data_dir)
            self.full = None

    def _as_error(self, exc: Exception) -> BaseException:
        if isinstance(exc, lmdb.Error):
            error = translate_error(exc, self._env.data_dir)
            if isinstance(error, StorageFull):
                if self.full is None:
                    log.error("%s; refusing writes until there is room", error)
                self.full = error
            return error
        if isinstance(exc, StorageFull):  # from growing the map
            self.full = exc
            return exc
        log.error("spool write failed: %r", exc)
        return exc
