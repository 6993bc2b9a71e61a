"""Group commit: one writer thread applies every queued write in one synced transaction.

Callers submit `WriteOp`s from any thread (the event loop, in practice) and
never wait on the disk. The writer takes everything queued, applies it in one
LMDB write transaction, commits (fsync), and reports each op's result through
one `on_done` call per group. Many publishes thus share one fsync, and when
traffic is light a group is a single op, so batching adds no latency.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb

from plexus.errors import StorageFull
from storage.environment import Environment, translate_error

log = logging.getLogger(__name__)

MAX_OPS_PER_GROUP = 4096


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
        self._queue: queue.SimpleQueue[WriteOp | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self.commits = 0
        self.ops = 0
        # The refusal while the disk is full (None when writes land): logged on each change.
        self.full: StorageFull | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: WriteOp) -> None:
        self._queue.put(op)

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
            group = [first]
            while len(group) < MAX_OPS_PER_GROUP:
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stopping = True
                    break
                group.append(op)
            self._commit(group)
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
                with self._env.env.begin(write=True) as txn:
                    for op in group:
                        op.result = op.apply(txn)
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
