"""The event loop's side of the spool writer: submit a change, await its commit.

Changes submitted in one turn of the loop, and while the writer commits, form
the next group. The loop hands a group over only to an idle writer, and waits
while the writer applies it (see storage/writer.py: neither then waits for the
GIL once per LMDB call), then goes on during the commit's fsync. The writer
reports each group once; one `call_soon_threadsafe` per group resolves every
future in it and hands over the next, so a busy node pays one wake-up per
fsync, not one per publish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import lmdb

from storage.environment import Environment
from storage.writer import SpoolWriter, WriteOp


class Commits:
    """Durable writes for coroutines, through one group-commit writer."""

    def __init__(self, env: Environment, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writer = SpoolWriter(env, self._on_done)
        # Submitted, not handed over yet: the next group.
        self._next: list[WriteOp] = []
        self._hand_over_scheduled = False
        # A group is with the writer until its `on_done` comes back to the loop.
        self._writing = False

    def start(self) -> None:
        self._writer.start()

    def stop(self) -> None:
        """Commit everything submitted, then stop the writer."""
        for op in self._next:
            self._writer.submit(op)
        self._next = []
        self._writer.stop()

    def submit(self, apply: Callable[[lmdb.Transaction], Any]) -> asyncio.Future[Any]:
        """Queue a change; the future resolves with its result once committed (synced)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self._next.append(WriteOp(apply, future))
        if not self._writing and not self._hand_over_scheduled:
            # At the end of this turn: what the turn submits goes as one group.
            self._hand_over_scheduled = True
            self._loop.call_soon(self._hand_over)
        return future

    @property
    def commits(self) -> int:
        return self._writer.commits

    def _hand_over(self) -> None:
        self._hand_over_scheduled = False
        if self._writing or not self._next:
            return
        group, self._next = self._next, []
        self._writing = True
        self._writer.hand_over(group)

    def _on_done(self, group: list[WriteOp]) -> None:
        self._loop.call_soon_threadsafe(self._committed, group)

    def _committed(self, group: list[WriteOp]) -> None:
        self._writing = False
        _resolve(group)
        self._hand_over()


def _resolve(group: list[WriteOp]) -> None:
    for op in group:
        future: asyncio.Future[Any] = op.token
        if future.done():
            continue
        if op.error is not None:
            future.set_exception(op.error)
        else:
            future.set_result(op.result)
