"""`file-sink`: a queue's events appended to a file as JSON lines, fsynced before the ack.

::

    [connector]
    name = "orders-archive"
    kind = "file-sink"
    [consume]
    queue = "orders-archive"
    subscribe = ["shop/orders/>"]
    [file]
    path = "orders.jsonl"

One JSON object per line and event: `id` (text: it is a 64-bit number),
`topic`, `payload` (UTF-8 text, or base64 with `"encoding": "base64"`),
`encoding`, `headers`, `region` (where it was published), `publish_time_ms`
and `delivery_count`. A batch is written and fsynced before `write` returns, so
an acked event is on disk. A kill -9 between the fsync and the ack makes the
queue deliver those events again: the last events before a crash may appear
twice at the end of the file (their `id` tells them apart; this sink does not
de-duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from plexus.client import Event
from plexus.connectors.base import ConnectorSection, ConsumeSection, Section, Sink, TransientError
from plexus.errors import InvalidArgument

__all__ = ["FileSink", "FileSinkSettings"]

# The fields of an event a line holds (Event.to_dict() has a few more).
LINE_FIELDS = (
    "id",
    "topic",
    "payload",
    "encoding",
    "headers",
    "region",
    "publish_time_ms",
    "delivery_count",
)


class FileSection(Section):
    """`[file]`: where the lines go (relative to the working directory)."""

    path: str = Field(min_length=1)


class FileSinkSettings(Section):
    connector: ConnectorSection
    consume: ConsumeSection
    file: FileSection


class FileSink(Sink):
    kind: ClassVar[str] = "file-sink"
    settings: ClassVar[type[FileSinkSettings]] = FileSinkSettings

    def __init__(self, config: FileSinkSettings) -> None:  # type: ignore[override]
        super().__init__(config)
        self.path = Path(config.file.path)
        self._file: io.FileIO | None = None

    async def open(self) -> None:
        try:
            self._file = await asyncio.to_thread(open, self.path, "ab", buffering=0)
        except OSError as exc:
            # A directory that is not there or not writable will not fix itself.
            raise InvalidArgument(
                f"[file] path {str(self.path)!r}: cannot open for appending: {exc.strerror}"
            ) from None

    async def write(self, events: Sequence[Event]) -> None:
        data = b"".join(line(e) for e in events)
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:  # a full or failing disk: retried, nothing acked meanwhile
            raise TransientError(f"writing {self.path}: {exc.strerror}") from None

    def _append(self, data: bytes) -> None:
        file = self._file
        assert file is not None, "write before open"
        end = file.seek(0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:  # unbuffered: a write may take only part
                view = view[file.write(view) or 0 :]
            os.fsync(file.fileno())
        except OSError:
            # No half line before the retry's copy of the batch.
            with contextlib.suppress(OSError):
                file.truncate(end)
            raise

    async def close(self) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None


def line(event: Event) -> bytes:
    full = event.to_dict()
    return json.dumps({k: full[k] for k in LINE_FIELDS}, ensure_ascii=False).encode() + b"\n"
