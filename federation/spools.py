"""Outbound spools of a region's links: guaranteed events waiting for the next hop to store them.

Each link has an LMDB spool (storage/spool.py) written in the same commit as
the local queues, so a publisher's ack means "stored here and spooled
towards every other region that wants it". This module keeps the in-memory
side: link ids, the next link sequence, depth and bytes against the per-link
quota, and a wake-up for the link's sender when something new is spooled.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import lmdb

from federation.spool_tail import SpoolTail
from federation.topology import ClusterSettings
from plexus.errors import SpoolFull
from plexus.v1 import link_pb2 as lpb
from storage.spool import Forward, Spool

log = logging.getLogger(__name__)

# A spool over 80 % of its quota is logged once; it is logged again only after it
# drained under 70 %, so a spool hovering at the mark does not log at every trim.
SPOOL_HIGH_FRACTION = 0.8
SPOOL_REARM_FRACTION = 0.7

# Made per spooled event: tuple.__new__ fills the named tuple in C, not its Python __new__.
_new_forward: Callable[[tuple[int, int, bytes]], Forward] = functools.partial(
    tuple.__new__, Forward
)

# Runs a change in the node's group-commit writer; resolves once durable.
Commit = Callable[[Callable[[lmdb.Transaction], Any]], Awaitable[Any]]


@dataclass
class LinkSpool:
    peer: str
    link_id: int
    next_seq: int
    received_upto: int
    depth: int = 0
    bytes: int = 0
    # Monotonic time the oldest spooled event was spooled (0: empty or unknown).
    oldest_s: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Relayed events spooled past the quota (never refused: their publisher has its ack).
    over_quota: int = 0
    # Events dropped to make room under the discard-oldest policy.
    discarded: int = 0
    shedding: bool = False
    # Over SPOOL_HIGH_FRACTION of the quota (and not yet back under the re-arm mark).
    high: bool = False
    # What was just committed, for a sender that keeps up.
    tail: SpoolTail = field(default_factory=SpoolTail)


class LinkSpools:
    """The spools of every link of this region."""

    def __init__(self, spool: Spool, settings: ClusterSettings, commit: Commit) -> None:
        self.store = spool
        self.settings = settings
        self.commit = commit
        self.links: dict[str, LinkSpool] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def open_all(self, peers: Iterable[str]) -> None:
        """Allocate (or find) the link ids of `peers` and resume their spools from disk."""
        store = self.store
        wanted = sorted(set(peers) - set(self.links))

        def allocate(txn: lmdb.Transaction) -> dict[str, int]:
            return {peer: store.link_id(txn, peer) for peer in wanted}

        for peer, link_id in (await self.commit(allocate)).items():
            # Resuming scans the link's spool on disk: not on the event loop.
            self.links[peer] = await asyncio.to_thread(self._resume, peer, link_id)

    async def trim(self, peer: str, upto: int) -> None:
        """The peer stored everything up to `upto`: delete it here."""
        link = self.links[peer]
        store = self.store
        count, size = await self.commit(lambda txn: store.trim(txn, link.link_id, upto))
        self.released(peer, size, count)

    def _resume(self, peer: str, link_id: int) -> LinkSpool:
        """The link to `peer` (its id allocated in storage) as its spool on disk left it."""
        _id, sent, received = self.store.link_marks(peer)
        depth, size = self.store.spool_totals(link_id)
        link = LinkSpool(peer, link_id, sent + 1, received, depth, size)
        if depth:
            link.oldest_s = time.monotonic()
        quota = self.settings.link_spool_quota_bytes
        if size > quota * SPOOL_HIGH_FRACTION:
            link.high = True
            self._log_high(link, quota)
        return link

    def reserve(self, peer: str, size: int, envelope: bytes, *, enforce_quota: bool) -> Forward:
        """A place in `peer`'s spool for an event of `size` bytes; SpoolFull past the quota.

        `size` is the stored event's encoded length (payload, topic, headers and the
        node's fields), as the storage counts it when the spool is trimmed or reopened.
        """
        link = self.links[peer]
        quota = self.settings.link_spool_quota_bytes
        if link.bytes + size > quota:
            if self.settings.spool_full == "discard-oldest":
                self._shed(link, link.bytes + size - quota)
            elif enforce_quota:
                raise SpoolFull(peer, quota)
            else:
                link.over_quota += 1  # relayed events are never refused: counted instead
        forward = _new_forward((link.link_id, link.next_seq, envelope))
        link.next_seq += 1
        link.depth += 1
        link.bytes += size
        if not link.high and link.bytes > quota * SPOOL_HIGH_FRACTION:
            link.high = True
            self._log_high(link, quota)
        if not link.oldest_s:
            link.oldest_s = time.monotonic()
        return forward

    async def drop_all(self, peer: str) -> int:
        """Forget a link that left the cluster, deleting what was spooled for it."""
        link = self.links.pop(peer, None)
        if link is None:
            return 0
        store = self.store
        count, _size = await self.commit(lambda txn: store.trim(txn, link.link_id, 2**63))
        return int(count)

    def _shed(self, link: LinkSpool, free_bytes: int) -> None:
        """Make room by dropping the link's oldest spooled events (policy discard-oldest)."""
        if link.shedding:
            return
        link.shedding = True
        store, link_id = self.store, link.link_id

        def drop(txn: lmdb.Transaction) -> tuple[int, int]:
            return store.drop_oldest(txn, link_id, free_bytes)

        async def shed() -> None:
            try:
                count, size = await self.commit(drop)
            finally:
                link.shedding = False
            link.tail.clear()  # the oldest may be what the tail holds next
            link.discarded += count
            self.released(link.peer, size, count)
            log.warning(
                "spool of the link to %s over quota: discarded its %d oldest events",
                link.peer,
                count,
            )

        self._tasks.add(task := asyncio.get_running_loop().create_task(shed()))
        task.add_done_callback(self._tasks.discard)

    def released(self, peer: str, size: int, count: int) -> None:
        """Events of `peer`'s spool whose commit failed or that the peer stored."""
        link = self.links[peer]
        link.depth = max(0, link.depth - count)
        link.bytes = max(0, link.bytes - size)
        quota = self.settings.link_spool_quota_bytes
        if link.high and link.bytes < quota * SPOOL_REARM_FRACTION:
            link.high = False
            log.info(
                "spool of the link to %s is back under %d%% of its quota",
                peer,
                SPOOL_REARM_FRACTION * 100,
                extra={"event": "spool_low", "peer": peer, "bytes": link.bytes, "quota": quota},
            )
        if not link.depth:
            link.oldest_s = 0.0

    @staticmethod
    def _log_high(link: LinkSpool, quota: int) -> None:
        log.warning(
            "spool of the link to %s is over %d%% of its quota (%d of %d bytes, %d events): "
            "the link is down or slow",
            link.peer,
            SPOOL_HIGH_FRACTION * 100,
            link.bytes,
            quota,
            link.depth,
            extra={"event": "spool_high", "peer": link.peer, "bytes": link.bytes, "quota": quota},
        )

    def spooled(self, committed: Iterable[tuple[str, Forward, bytes]]) -> None:
        """New events are committed in these spools ((peer, its place, the event)): keep
        them for the senders, and wake them."""
        links = self.links
        woken: set[str] = set()
        for peer, forward, data in committed:
            link = links.get(peer)
            if link is None:  # the link left the cluster meanwhile
                continue
            link.tail.append(forward.link_seq, forward.envelope, data)
            if peer not in woken:
                woken.add(peer)
                link.changed.set()

    def oldest_age_ms(self, peer: str) -> int:
        link = self.links.get(peer)
        if link is None or not link.oldest_s:
            return 0
        return int((time.monotonic() - link.oldest_s) * 1000)


# Envelopes repeat: events on one topic take the same route until interest or links change.
ENVELOPE_CACHE = 4096


@functools.lru_cache(maxsize=ENVELOPE_CACHE)
def envelope(destinations: frozenset[str], visited: frozenset[str], topic: str) -> bytes:
    """What a link sends along with a spooled event, stored with it."""
    return lpb.GuaranteedEvent(
        destinations=sorted(destinations), visited=sorted(visited), topic=topic
    ).SerializeToString()
