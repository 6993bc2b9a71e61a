"""The data file checked before LMDB maps it, and the marker that a directory held data.

LMDB maps `DATA/lmdb/data.mdb` and trusts it: a file shorter than the pages
its meta page claims kills the process with SIGBUS on the first read past
its end, and a zero-length or missing file is silently a fresh, empty
environment. So before opening, `check_data_file` reads the two meta pages
(LMDB 0.9 layout, 64-bit) and refuses a file that is not LMDB's, whose meta
pages are both damaged, or that lacks a page its newest tree reaches. (LMDB
never writes pages a transaction allocated and freed again, so a healthy
file may end before the last page its meta counts: only when it does are
the reachable pages walked, with plain reads that cannot fault.) And
`DATA/HELD-DATA`, written once a first commit has landed, makes a missing or
empty data file a refusal instead of a fresh start.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from plexus.errors import FailedPrecondition

HELD_DATA_MARKER = "HELD-DATA"
DATA_FILE = Path("lmdb") / "data.mdb"

LMDB_MAGIC = 0xBEEFC0DE
LMDB_DATA_VERSION = 1
# MDB_page header (16 bytes on 64-bit), then MDB_meta: magic, version,
# address, mapsize, two MDB_db of 48 bytes (the free db's md_pad is the page
# size), last_pg, txnid.
_META = struct.Struct("<IIQQ")
_PAGE_SIZE_AT = 16 + _META.size
_LAST_PAGE_AT = 16 + _META.size + 2 * 48
_MIN_PAGE_BYTES = 512
_MAX_PAGE_BYTES = 1 << 16

RECOVERY = "restore it from a backup, or remove {data} to start afresh"


class DataDirUnusable(FailedPrecondition):
    """The data directory cannot be used: a file in its place, no permission, no such parent."""

    def __init__(self, path: str, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(f"data directory {path} cannot be used: {detail}")


class DataFileDamaged(FailedPrecondition):
    """The data file is missing, truncated or corrupt: the node refuses to start on it."""

    def __init__(self, path: str, detail: str, data_dir: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(f"data file {path} {detail}: {RECOVERY.format(data=data_dir)}")


def check_data_file(data_dir: Path) -> None:
    """Refuse a data file LMDB must not open; a directory that never held data passes."""
    path = data_dir / DATA_FILE
    held = (data_dir / HELD_DATA_MARKER).exists()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if held:
            raise DataFileDamaged(
                str(path), "is missing but this directory held data", str(data_dir)
            ) from None
        return
    if size == 0:
        if held:
            raise DataFileDamaged(str(path), "is empty but this directory held data", str(data_dir))
        return
    try:
        with open(path, "rb") as f:
            head = f.read(_MAX_PAGE_BYTES * 2)
    except OSError as exc:
        raise DataFileDamaged(str(path), f"cannot be read ({exc.strerror})", str(data_dir)) from exc
    metas = [m for m in (_meta(head, 0), _meta_at_second_page(head)) if m is not None]
    if not metas:
        raise DataFileDamaged(
            str(path),
            "is corrupt: neither of its meta pages is a valid LMDB meta page",
            str(data_dir),
        )
    page_bytes, last_page, _txnid, roots = max(metas, key=lambda m: m[2])
    if size >= (last_page + 1) * page_bytes:
        return
    with open(path, "rb") as f:
        missing = _first_page_past_end(f.fileno(), page_bytes, size // page_bytes, roots)
    if missing is not None:
        raise DataFileDamaged(
            str(path),
            f"is truncated: {size} bytes, but its page {missing} ends at "
            f"{(missing + 1) * page_bytes} bytes",
            str(data_dir),
        )


def held_data(data_dir: Path) -> bool:
    return (data_dir / HELD_DATA_MARKER).exists()


def mark_held_data(data_dir: Path) -> None:
    """Write DATA/HELD-DATA (durably): from now on a missing or empty data file is refused."""
    path = data_dir / HELD_DATA_MARKER
    text = (
        f"This directory holds a Plexus node's data in {DATA_FILE}. While this file\n"
        "exists the node refuses to start over a missing or empty data file.\n"
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


Meta = tuple[int, int, int, tuple[int, int]]

# Page and node layout of LMDB 0.9 (64-bit): the page header is pgno (8),
# pad (2), flags (2), lower/upper (2+2) or an overflow run's page count (4);
# a node is lo (2), hi (2), flags (2), key size (2), then key and data.
_PAGE_HEADER = struct.Struct("<QHHHH")
_OVERFLOW_PAGES = struct.Struct("<I")
_NODE = struct.Struct("<HHHH")
_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_LEAF2 = 0x01, 0x02, 0x04, 0x20
_F_BIGDATA, _F_SUBDATA = 0x01, 0x02
_DB_ROOT_AT = 40  # in an MDB_db record
_NO_PAGE = 2**64 - 1


def _first_page_past_end(
    fd: int, page_bytes: int, pages: int, roots: tuple[int, ...]
) -> int | None:
    """The first page the trees reach (free list, main db, named dbs) that the file lacks."""
    todo = [root for root in roots if root != _NO_PAGE]
    seen: set[int] = set()
    while todo:
        pgno = todo.pop()
        if pgno in seen:
            continue
        seen.add(pgno)
        if pgno >= pages:
            return pgno
        page = os.pread(fd, page_bytes, pgno * page_bytes)
        _pgno, _pad, flags, lower, _upper = _PAGE_HEADER.unpack_from(page)
        if not flags & (_P_BRANCH | _P_LEAF) or flags & _P_LEAF2:
            continue  # LEAF2 pages hold fixed-size keys only; anything else is not ours to judge
        for index in range((lower - _PAGE_HEADER.size) // 2):
            (at,) = struct.unpack_from("<H", page, _PAGE_HEADER.size + 2 * index)
            lo, hi, node_flags, key_bytes = _NODE.unpack_from(page, at)
            if flags & _P_BRANCH:
                todo.append(lo | hi << 16 | node_flags << 32)
                continue
            data_at = at + _NODE.size + key_bytes
            if node_flags & _F_BIGDATA:
                (first,) = struct.unpack_from("<Q", page, data_at)
                if first >= pages:
                    return first
                run = os.pread(fd, _PAGE_HEADER.size, first * page_bytes)
                (count,) = _OVERFLOW_PAGES.unpack_from(run, 12)
                if first + count > pages:
                    return pages
            elif node_flags & _F_SUBDATA:
                (root,) = struct.unpack_from("<Q", page, data_at + _DB_ROOT_AT)
                if root != _NO_PAGE:
                    todo.append(root)
    return None


def _meta_at_second_page(head: bytes) -> Meta | None:
    first = _meta(head, 0)
    if first is not None:
        return _meta(head, first[0])
    # The first meta page is damaged: try each page size LMDB may have used.
    for page_bytes in (4096, 8192, 16384, 32768, 65536):
        found = _meta(head, page_bytes)
        if found is not None and found[0] == page_bytes:
            return found
    return None


def _meta(head: bytes, offset: int) -> Meta | None:
    """(page size, last page, txn id, roots) of the meta page at `offset`, or None."""
    if len(head) < offset + _LAST_PAGE_AT + 16:
        return None
    magic, version, _address, _map_bytes = _META.unpack_from(head, offset + 16)
    if magic != LMDB_MAGIC or version != LMDB_DATA_VERSION:
        return None
    (page_bytes,) = struct.unpack_from("<I", head, offset + _PAGE_SIZE_AT)
    last_page, txnid = struct.unpack_from("<QQ", head, offset + _LAST_PAGE_AT)
    free_root, main_root = (
        struct.unpack_from("<Q", head, offset + 16 + _META.size + 48 * db + _DB_ROOT_AT)[0]
        for db in (0, 1)
    )
    if not _MIN_PAGE_BYTES <= page_bytes <= _MAX_PAGE_BYTES or page_bytes & (page_bytes - 1):
        return None
    return page_bytes, last_page, txnid, (free_root, main_root)
