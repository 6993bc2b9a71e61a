"""Keeps what this region knows of other regions' interest durable, for a restart to route by.

A node killed and restarted would otherwise route guaranteed events by no
remote interest until its links sync again, acking events that never reach
the queues of other regions. The mesh reports each region whose interest
changed (`KnownInterestSink.changed`); this shell marks it dirty and writes
every dirty region's whole set in one commit through the node's group-commit
writer, at most once per `FLUSH_INTERVAL_S` and never with two writes in
flight, so a burst of 10,000 deltas costs a handful of commits, not 10,000,
and nothing here waits on the disk. A crash loses at most the last interval's
changes: the restarted node routes by the interest before them until its
links sync, as it would by none before this existed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Collection
from functools import partial
from typing import Any

import lmdb

from federation.interest import RemoteInterest
from federation.mesh import Mesh
from storage.interest import InterestStore

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.1

Commit = Callable[[Callable[[lmdb.Transaction], Any]], Awaitable[Any]]


class DurableInterest:
    """The known interest of other regions, written behind the mesh as it changes."""

    def __init__(
        self, store: InterestStore, commit: Commit, interval_s: float = FLUSH_INTERVAL_S
    ) -> None:
        self.store = store
        self.commit = commit
        self.interval_s = interval_s
        # Writes submitted (commits asked of the writer), for metrics and tests.
        self.writes = 0
        self._remote: RemoteInterest | None = None
        self._dirty: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Future[Any] | None = None
        self._last_write = -math.inf
        self._failing = False

    async def restore(self, mesh: Mesh, regions: Collection[str]) -> int:
        """Load what was kept into `mesh` (before it serves publishers or opens links);
        records of regions no longer in the cluster are deleted. Returns how many restored."""
        records = await asyncio.to_thread(self.store.read_all)
        kept = [r for r in records if r.region in regions and r.region != mesh.region]
        mesh.restore(kept)
        self._remote = mesh.remote
        for region in {r.region for r in records} - {r.region for r in kept}:
            self.changed(region)  # left the cluster while this node was down
        if kept:
            log.info(
                "routing by the last known interest of %s until links sync",
                ", ".join(r.region for r in kept),
            )
        return len(kept)

    def changed(self, region: str) -> None:
        """`region`'s interest changed or was forgotten: write it with the next flush."""
        self._dirty.add(region)
        self._schedule()

    def flush(self) -> None:
        """Submit what is dirty now (the node is stopping): the writer applies it before
        it ends."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._dirty and self._remote is not None:
            self._write()

    def _schedule(self) -> None:
        if self._timer is not None or self._writing is not None:
            return  # the write under way or the one due takes this change along
        if not self._dirty or self._remote is None:
            return
        loop = asyncio.get_running_loop()
        # The first change after a quiet spell goes at once (after the frames already
        # read this loop iteration); within a burst, once per interval.
        delay = max(0.0, self._last_write + self.interval_s - loop.time())
        self._timer = loop.call_later(delay, self._write)

    def _write(self) -> None:
        self._timer = None
        remote = self._remote
        assert remote is not None
        regions, self._dirty = self._dirty, set()
        known = remote.regions()
        # Snapshots taken now, on the loop; encoded in the writer thread.
        records = [
            (region, remote.version_of(region), remote.patterns_of(region))
            if region in known
            else (region, None, frozenset[str]())
            for region in sorted(regions)
        ]
        store = self.store

        def apply(txn: lmdb.Transaction) -> None:
            for region, version, patterns in records:
                if version is None:
                    store.delete(txn, region)
                else:
                    store.put(txn, region, version, sorted(patterns))

        self._last_write = asyncio.get_running_loop().time()
        self.writes += 1
        writing = asyncio.ensure_future(self.commit(apply))
        self._writing = writing
        writing.add_done_callback(partial(self._written, regions))

    def _written(self, regions: set[str], writing: asyncio.Future[Any]) -> None:
        if self._writing is writing:
            self._writing = None
        error = None if writing.cancelled() else writing.exception()
        if error is not None:
            # Written again with the next flush; logged once until a write lands.
            self._dirty |= regions
            if not self._failing:
                self._failing = True
                log.error("keeping the interest of %s failed: %r", ", ".join(regions), error)
        elif self._failing:
            self._failing = False
            log.info("keeping the interest of other regions works again")
        if not writing.cancelled():
            self._schedule()
