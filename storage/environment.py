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
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import lmdb

from plexus.errors import DataDirLocked, StorageFull
from storage.data_file import (
    DATA_FILE,
    DataDirUnusable,
    DataFileDamaged,
    check_data_file,
    held_data,
    mark_held_data,
)

log = logging.getLogger(__name__)

DEFAULT_MAP_BYTES = 1 << 30
# Named databases (storage/spool.py, dedup.py, interest.py, retained.py), with room to grow.
MAX_DBS = 16
# LMDB may report a write that found no room as EIO rather than ENOSPC: with
# less than this free on the device, a failed write is taken as a full disk.
FULL_DISK_MARGIN_BYTES = 16 << 20
DATA_DIR_MODE = 0o700
DATA_FILE_MODE = 0o600


class Environment:
    """An open LMDB environment in a locked data directory."""

    def __init__(self, data_dir: Path, map_size_bytes: int = DEFAULT_MAP_BYTES) -> None:
        self.data_dir = Path(data_dir)
        _make_data_dir(self.data_dir)
        self._lock_fd = _lock_data_dir(self.data_dir)
        opened: lmdb.Environment | None = None
        try:
            check_data_file(self.data_dir)
            self.env = opened = lmdb.open(
                str(self.data_dir / "lmdb"),
                map_size=map_size_bytes,
                max_dbs=MAX_DBS,
                sync=True,
                metasync=True,
                writemap=False,
                readahead=False,
                max_readers=256,
                mode=DATA_FILE_MODE,
            )
            self._held_data = held_data(self.data_dir)
            self._check_pages()
        except BaseException as exc:
            if opened is not None:
                opened.close()
            os.close(self._lock_fd)
            if isinstance(exc, lmdb.Error):
                raise _translate_open(exc, self.data_dir) from exc
            raise
        self._gate = threading.Condition()
        self._readers = 0
        self._growing = False

    def _check_pages(self) -> None:
        """Walk every key of every database once: a zeroed or garbled page fails here, not later."""
        with self.env.begin(buffers=True) as txn:
            names = [bytes(key) for key in txn.cursor().iternext(values=False)]
        for name in names:
            db = self.env.open_db(name)
            with self.env.begin(db=db, buffers=True) as txn:
                for _ in txn.cursor().iternext(values=False):
                    pass
        if names and not self._held_data:
            self.note_committed()

    def has_room(self) -> bool:
        """Whether the device is past the full-disk margin (a quarter of a small device)."""
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:
            return False
        return usage.free >= min(FULL_DISK_MARGIN_BYTES, usage.total // 4)

    def note_committed(self) -> None:
        """A commit landed: mark DATA as holding data (once; retried if the marker fails)."""
        if self._held_data:
            return
        try:
            mark_held_data(self.data_dir)
        except OSError as exc:
            log.warning("cannot write the marker %s: %s", self.data_dir / "HELD-DATA", exc)
            return
        self._held_data = True

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
    code = getattr(exc, "errno", None)
    if "No space left" in text or code == errno.ENOSPC:
        return StorageFull(str(data_dir), f"no space left on its device ({free_space(data_dir)})")
    if "quota exceeded" in text or code == errno.EDQUOT:
        return StorageFull(str(data_dir), f"disk quota exceeded ({free_space(data_dir)})")
    if "Input/output error" in text or code == errno.EIO or isinstance(exc, lmdb.DiskError):
        try:
            usage = shutil.disk_usage(data_dir)
        except OSError:
            return exc
        if usage.free < FULL_DISK_MARGIN_BYTES:
            return StorageFull(
                str(data_dir), f"a write failed with its device full ({free_space(data_dir)})"
            )
    return exc


def translate_open_error(exc: lmdb.Error, data_dir: Path) -> Exception:
    """An LMDB failure while a node starts: a full disk, else a damaged data file."""
    return _translate_open(exc, data_dir)


def _translate_open(exc: lmdb.Error, data_dir: Path) -> Exception:
    translated = _translate(exc, data_dir)
    if translated is not exc:
        return translated
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return DataFileDamaged(str(data_dir / DATA_FILE), f"is corrupt ({detail})", str(data_dir))


def free_space(data_dir: Path) -> str:
    """What is free on the device of `data_dir`, for operators: "1.5 MiB free of 20.0 MiB"."""
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return f"free space unknown: {exc.strerror}"
    return f"{_mib(usage.free)} free of {_mib(usage.total)}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _make_data_dir(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirUnusable(str(data_dir), "it is a file, not a directory")
    try:
        data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        # Events, spools and the Raft state (the cluster's keys with it) are the node's alone.
        os.chmod(data_dir, DATA_DIR_MODE)
    except OSError as exc:
        raise DataDirUnusable(str(data_dir), f"cannot create it ({exc.strerror})") from exc
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise DataDirUnusable(str(data_dir), "no permission to write in it")


def _lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on DATA/LOCK for the life of the process."""
    path = data_dir / "LOCK"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataDirUnusable(str(data_dir), f"cannot create {path} ({exc.strerror})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise DataDirLocked(str(data_dir), int(owner) if owner.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
