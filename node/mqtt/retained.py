"""Retained messages of the MQTT front door: the last message kept per topic, durably.

A publish with MQTT's retain flag is kept for its topic (replacing the one
before) and given to every later subscriber whose patterns match it; one with
an empty payload clears the topic. Each change commits through the node's
group-commit writer before `retain` returns, so an acknowledged retained
message survives a crash; memory follows only once the commit is done. Every
message is also held in memory, indexed by topic, so a subscribe never reads
the disk. Count and bytes are bounded: past either limit a new message is
refused with `LimitReached` naming the setting, and nothing is dropped.

Topics here are Plexus topics (plexus/mqtt_topics.py maps MQTT's); the rule
that leading MQTT wildcards skip `$` topics is the deliverer's to apply.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable
from typing import NoReturn

from google.protobuf.message import DecodeError

from node.commits import Commits
from plexus.errors import InvalidArgument, LimitReached
from plexus.topics import TopicSet, validate_pattern, validate_topic
from plexus.v1 import plexus_pb2 as pb
from storage.environment import Environment
from storage.retained import RetainedRecords

__all__ = ["RetainedStore"]

log = logging.getLogger(__name__)

# The node settings (node/config.py) that bound the store, named in refusals.
MAX_MESSAGES_SETTING = "retained_max_messages"
MAX_BYTES_SETTING = "retained_max_bytes"


class RetainedStore:
    """The retained message of each topic: kept with `retain`, found with `matching`."""

    def __init__(
        self,
        records: RetainedRecords,
        commits: Commits,
        loaded: Iterable[tuple[str, bytes]],
        *,
        max_messages: int,
        max_bytes: int,
    ) -> None:
        self._records = records
        self._commits = commits
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        # Committed state: the message and its encoded size per topic, and the topic index.
        self._events: dict[str, tuple[pb.Event, int]] = {}
        self._topics = TopicSet()
        self.bytes = 0
        # Writes submitted and not yet committed: counted against the limits meanwhile.
        self._pending_new = 0
        self._pending_bytes = 0
        # Refusals by limit, for metrics (as QueueTable.limits_hit).
        self.limits_hit: Counter[str] = Counter()
        for topic, data in loaded:
            try:
                self._keep(topic, data)
            except DecodeError as exc:
                log.error("retained message of topic %r unreadable, skipped: %s", topic, exc)

    @classmethod
    async def open(
        cls,
        env: Environment,
        commits: Commits,
        *,
        max_messages: int,
        max_bytes: int,
    ) -> RetainedStore:
        """The store of the node's environment, with every retained message loaded (read in
        a worker thread: opening the database may wait for the writer's transaction)."""

        def load() -> tuple[RetainedRecords, list[tuple[str, bytes]]]:
            records = RetainedRecords(env)
            return records, records.read_all()

        records, loaded = await asyncio.to_thread(load)
        store = cls(records, commits, loaded, max_messages=max_messages, max_bytes=max_bytes)
        if len(store) > max_messages or store.bytes > max_bytes:
            log.warning(
                "%d retained messages (%d bytes) kept from before, over the limits "
                "%s = %d, %s = %d: new ones are refused until some are cleared",
                len(store),
                store.bytes,
                MAX_MESSAGES_SETTING,
                max_messages,
                MAX_BYTES_SETTING,
                max_bytes,
            )
        return store

    def __len__(self) -> int:
        return len(self._events)

    async def retain(self, topic: str, event: pb.Event) -> None:
        """Keep `event` as `topic`'s retained message, or clear it when the payload is empty;
        durable when this returns (also if the caller is cancelled meanwhile, the change
        lands). Raises `LimitReached` naming the limit a new message would pass."""
        validate_topic(topic)
        if event.topic != topic:
            raise InvalidArgument(f"retained event's topic {event.topic!r} is not {topic!r}")
        if not event.payload:
            await self._write(topic, None, new=False)
            return
        data = event.SerializeToString()
        new = topic not in self._events
        self._check_room(topic, len(data), new)
        await self._write(topic, data, new=new)

    def matching(self, patterns: Iterable[str]) -> list[pb.Event]:
        """The retained messages whose topics any of `patterns` matches, each once, by topic;
        from memory. The events are shared: do not modify them."""
        topics: set[str] = set()
        for pattern in patterns:
            validate_pattern(pattern)
            topics.update(self._topics.matching(pattern))
        return [self._events[topic][0] for topic in sorted(topics)]

    def _check_room(self, topic: str, size: int, new: bool) -> None:
        # Counts what is committed and what is on its way, so concurrent retains never
        # pass a limit together.
        if new and len(self._events) + self._pending_new + 1 > self.max_messages:
            self._refuse(MAX_MESSAGES_SETTING, self.max_messages)
        held = 0 if new else self._events[topic][1]
        if self.bytes - held + self._pending_bytes + size > self.max_bytes:
            self._refuse(MAX_BYTES_SETTING, self.max_bytes)

    def _refuse(self, setting: str, value: int) -> NoReturn:
        self.limits_hit[setting] += 1
        raise LimitReached(setting, value)

    async def _write(self, topic: str, data: bytes | None, *, new: bool) -> None:
        records, size = self._records, len(data) if data is not None else 0
        self._pending_new += new
        self._pending_bytes += size
        if data is None:
            future = self._commits.submit(lambda txn: records.delete(txn, topic))
        else:
            future = self._commits.submit(lambda txn: records.put(txn, topic, data))

        def done(fut: asyncio.Future[None]) -> None:
            self._pending_new -= new
            self._pending_bytes -= size
            if fut.cancelled() or fut.exception() is not None:
                return  # nothing landed; the caller hears why
            if data is None:
                self._drop(topic)
            else:
                self._keep(topic, data)

        # Memory follows the commit in commit order, whether or not the caller still waits.
        future.add_done_callback(done)
        await asyncio.shield(future)

    def _keep(self, topic: str, data: bytes) -> None:
        event = pb.Event.FromString(data)
        self._drop(topic)
        self._events[topic] = (event, len(data))
        self.bytes += len(data)
        self._topics.add(topic)

    def _drop(self, topic: str) -> None:
        held = self._events.pop(topic, None)
        if held is not None:
            self.bytes -= held[1]
            self._topics.discard(topic)
