"""Retained messages on disk: the last one kept per topic (MQTT's retain flag).

One LMDB database, `retained`, holds a record per topic:

    retained   topic (UTF-8)  -> the encoded event (the caller's bytes)

A new message for a topic replaces its record; clearing a topic deletes it.
Bytes in, bytes out: nothing here knows protobuf or asyncio. Writes take the
writer's transaction; `read_all` opens its own.
"""

from __future__ import annotations

import lmdb

from storage.environment import Environment


class RetainedRecords:
    """Write, delete and read back the retained message of each topic."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self.db = env.db(b"retained")

    def put(self, txn: lmdb.Transaction, topic: str, data: bytes) -> None:
        """Keep `data` as `topic`'s retained message, replacing the one before."""
        txn.put(topic.encode("utf-8"), data, db=self.db)

    def delete(self, txn: lmdb.Transaction, topic: str) -> None:
        """Drop `topic`'s retained message; no-op when it has none."""
        txn.delete(topic.encode("utf-8"), db=self.db)

    def read_all(self) -> list[tuple[str, bytes]]:
        """Every (topic, data) record, by topic."""
        with self._env.reading() as txn:
            return [
                (bytes(key).decode("utf-8"), bytes(value)) for key, value in txn.cursor(db=self.db)
            ]
