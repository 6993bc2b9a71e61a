"""Directories and files only this user may read: the state dir holds the cluster secret.

`plexus up` keeps the secret, the cluster file, the records and the nodes' logs
and data under its state directory: directories 0700, files 0600, whatever
the umask says.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["open_private", "private_dir", "write_private"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`path` created if missing, and readable by this user only (an older one is tightened)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """A descriptor on `path`, created 0600 (an existing file is tightened to 0600)."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def write_private(path: Path, text: str) -> None:
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as out:
        out.write(text)
