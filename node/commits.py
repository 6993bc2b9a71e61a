"""The event loop's side of the spool writer: submit a change, await its commit.

The writer thread reports each group once; one `call_soon_threadsafe` per
group resolves every future in it, so a busy node pays one wake-up per fsync,
not one per publish.
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

    def start(self) -> None:
        self._writer.start()

    def stop(self) -> None:
        self._writer.stop()

    def submit(self, apply: Callable[[lmdb.Transaction], Any]) -> asyncio.Future[Any]:
        """Queue a change; the future resolves with its result once committed (synced)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self._writer.submit(WriteOp(apply, future))
        return future

    @property
    def commits(self) -> int:
        return self._writer.commits

    def _on_done(self, group: list[WriteOp]) -> None:
        self._loop.call_soon_threadsafe(_resolve, group)


def _resolve(group: list[WriteOp]) -> None:
    for op in group:
        future: asyncio.Future[Any] = op.token
        if future.done():
            continue
        if op.error is not None:
            future.set_exception(op.error)
        else:
            future.set_result(op.result)
