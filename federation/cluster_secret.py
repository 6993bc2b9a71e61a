"""Where a cluster's secret comes from: a file, the environment, or (locally) the cluster file.

The secret keys every link and join proof and encrypts Raft traffic, so it is
read from `secret_file = "path"` (relative to the cluster file) or from
$PLEXUS_CLUSTER_SECRET, and a literal `secret` in the cluster file is for a
laptop. Problems name the key and never show the value.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECRET_ENV = "PLEXUS_CLUSTER_SECRET"
# 128 bits as hex: shorter is a password someone typed, not a secret.
MIN_SECRET_BYTES = 16

log = logging.getLogger("plexus.cluster")


def cluster_secret(
    cluster: Mapping[str, Any], base: Path, env: Mapping[str, str] = os.environ
) -> tuple[str | None, list[tuple[str, str]]]:
    """The secret of a `[cluster]` table whose file is in `base`, or the (key, problem) pairs."""
    literal, path = cluster.get("secret"), cluster.get("secret_file")
    if literal is not None and path is not None:
        return None, [("cluster.secret_file", "give either secret or secret_file, not both")]
    if path is not None:
        if not isinstance(path, str) or not path.strip():
            return None, [("cluster.secret_file", "must be the path of a file")]
        secret, problem = _read(base / os.path.expanduser(path))
        if secret is None:
            return None, [("cluster.secret_file", problem)]
        return _checked("cluster.secret_file", secret)
    if literal is not None:
        if not isinstance(literal, str):
            return None, [("cluster.secret", "must be a string")]
        return _checked("cluster.secret", literal)
    if SECRET_ENV in env:
        return _checked(SECRET_ENV, env[SECRET_ENV])
    return None, [
        (
            "cluster.secret_file",
            f'missing (required): secret_file = "path", or set {SECRET_ENV}',
        )
    ]


def _read(path: Path) -> tuple[str | None, str]:
    """The secret in the file at `path`, or None and why not (never showing its content)."""
    try:
        # A trailing newline (an editor's or echo's) is not part of the secret.
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None, f"{str(path)!r}: file not found"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{str(path)!r}: cannot read it ({exc.__class__.__name__})"
    if mode & 0o077:
        # Like ssh's key check, but a warning: refusing would stop a running cluster's restart.
        log.warning(
            "the cluster secret file %s is readable by others (mode %o): chmod 600 it", path, mode
        )
    return secret, ""


def _checked(key: str, secret: str) -> tuple[str | None, list[tuple[str, str]]]:
    size = len(secret.strip().encode())
    if size < MIN_SECRET_BYTES:
        return None, [
            (
                key,
                f"the secret is {size} bytes, at least {MIN_SECRET_BYTES} are needed "
                "(e.g. the output of `openssl rand -hex 16`)",
            )
        ]
    return secret, []
