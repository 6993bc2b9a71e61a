"""The node's one LMDB environment: the data-directory lock, opening, reads, growth.

Bytes in, bytes out: nothing here knows protobuf or asyncio. Writes go through
`storage.writer.SpoolWriter`; reads take `Environment.reading()`, which also
keeps map growth safe (LMDB may only resize with no transaction open in the
process).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import lmdb

from plexus.errors import DataDirLocked, StorageFull

DEFAULT_MAP_BYTES = 1 << 30
# Named databases: see storage/spool.py for what each holds.
MAX_DBS = 8


class Environment:
    """An open LMDB environment in a locked data directory."""

    def __init__(self, data_dir: Path, map_size_bytes: int = DEFAULT_MAP_BYTES) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_data_dir(self.data_dir)
        try:
            self.env = lmdb.open(
                str(self.data_dir / "lmdb"),
                map_size=map_size_bytes,
                max_dbs=MAX_DBS,
                sync=True,
                metasync=True,
                writemap=False,
                readahead=False,
                max_readers=256,
            )
        except lmdb.Error as exc:
            os.close(self._lock_fd)
            raise _translate(exc, self.data_dir) from exc
        self._gate = threading.Condition()
        self._readers = 0
        self._growing = False

    def db(self, name: bytes) -> lmdb._Database:
        return self.env.open_db(name)

    @contextlib.contextmanager
    def reading(self) -> Iterator[lmdb.Transaction]:
        """A read transaction; waits while the map is being grown."""
        with self._gate:
            while self._growing:
                self._gate.wait()
            self._readers += 1
        try:
            with self.env.begin(buffers=False) as txn:
                yield txn
        finally:
            with self._gate:
                self._readers -= 1
                self._gate.notify_all()

    def grow(self) -> int:
        """Double the map size; called by the writer after MapFullError."""
        with self._gate:
            self._growing = True
            while self._readers:
                self._gate.wait()
            try:
                new_size = self.env.info()["map_size"] * 2
                self.env.set_mapsize(new_size)
                return new_size
            except lmdb.Error as exc:
                raise _translate(exc, self.data_dir) from exc
            finally:
                self._growing = False
                self._gate.notify_all()

    def map_bytes(self) -> int:
        return int(self.env.info()["map_size"])

    def used_bytes(self) -> int:
        stat = self.env.stat()
        return int((self.env.info()["last_pgno"] + 1) * stat["psize"])

    def close(self) -> None:
        self.env.close()
        os.close(self._lock_fd)


def translate_error(exc: lmdb.Error, data_dir: Path) -> Exception:
    """The PlexusError for an LMDB failure the user can act on, else `exc`."""
    return _translate(exc, data_dir)


def _translate(exc: lmdb.Error, data_dir: Path) -> Exception:
    text = str(exc)
    if "No space left" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        return StorageFull(str(data_dir), "no space left on the device")
    return exc


def _lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on DATA/LOCK for the life of the process."""
    path = data_dir / "LOCK"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise DataDirLocked(str(data_dir), int(owner) if owner.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
