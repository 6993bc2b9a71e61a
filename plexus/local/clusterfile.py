"""A small reader for what a local cluster needs of a cluster file, and its copy.

The node validates the file in full when it starts (and names file, key and
line in its error); this reader only takes the cluster name, the regions (name,
gRPC and Raft addresses) and the links, and tolerates anything else.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plexus.local.state import LocalClusterError

__all__ = [
    "ClusterSpec",
    "RegionEntry",
    "read_cluster_file",
    "rewrite_data_paths",
    "with_secret_file",
]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_DATA_KEY = re.compile(r"^\s*data\s*=")
_SECRET_FILE_KEY = re.compile(r"^\s*secret_file\s*=")


@dataclass(frozen=True)
class RegionEntry:
    name: str
    grpc: str
    raft: str | None = None
    metrics: str | None = None
    mqtt: str | None = None
    http: str | None = None


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    regions: tuple[RegionEntry, ...]
    links: tuple[tuple[str, str], ...] = field(default=())

    def region(self, name: str) -> RegionEntry | None:
        return next((r for r in self.regions if r.name == name), None)


def read_cluster_file(path: Path) -> tuple[ClusterSpec, str]:
    """The spec and the text of the cluster file at `path`; a one-line error when unreadable.

    Regions without a usable name or address are left out: the node reports them.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LocalClusterError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise LocalClusterError(f"{path}: is a directory, not a cluster file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalClusterError(f"{path}: cannot read: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LocalClusterError(f"{path}: not valid TOML: {exc}") from None
    return spec_of(doc), text


def spec_of(doc: dict[str, Any]) -> ClusterSpec:
    cluster = doc.get("cluster")
    name = cluster.get("name") if isinstance(cluster, dict) else None
    regions: list[RegionEntry] = []
    tables = doc.get("region")
    for table in tables if isinstance(tables, list) else []:
        if not isinstance(table, dict):
            continue
        region, grpc = table.get("name"), table.get("grpc")
        if isinstance(region, str) and region and isinstance(grpc, str):
            raft, metrics, mqtt, http = (
                value if isinstance(value := table.get(key), str) else None
                for key in ("raft", "metrics", "mqtt", "http")
            )
            regions.append(RegionEntry(region, grpc, raft, metrics, mqtt, http))
    links: list[tuple[str, str]] = []
    tables = doc.get("link")
    for table in tables if isinstance(tables, list) else []:
        ends = table.get("regions") if isinstance(table, dict) else None
        if isinstance(ends, list) and len(ends) == 2 and all(isinstance(e, str) for e in ends):
            links.append((ends[0], ends[1]))
    return ClusterSpec(str(name) if isinstance(name, str) else "?", tuple(regions), tuple(links))


def rewrite_data_paths(text: str, data_dirs: list[Path | None]) -> str:
    """`text` with the `data` of the i-th `[[region]]` table set to `data_dirs[i]`.

    Lines are replaced in place, so the node's errors about the copy point at the
    same lines as in the original; a region without a `data` line gets one after
    its header. `None` leaves a region as it is.
    """
    out: list[str] = []
    index = -1
    pending: Path | None = None  # the data dir still to write for the current region

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            # Insert before trailing blank or comment lines, right after the region's keys.
            at = len(out)
            while at > 0 and (not out[at - 1].strip() or out[at - 1].lstrip().startswith("#")):
                at -= 1
            out.insert(at, f"data = {_toml_string(str(pending))}")
            pending = None

    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            flush()
            if header.group(1) == "[[" and header.group(2) == "region":
                index += 1
                pending = data_dirs[index] if index < len(data_dirs) else None
            out.append(line)
            continue
        if pending is not None and _DATA_KEY.match(line):
            out.append(f"data = {_toml_string(str(pending))}")
            pending = None
            continue
        out.append(line)
    flush()
    return "\n".join(out) + "\n"


def with_secret_file(text: str, path: Path) -> str:
    """`text` whose [cluster] table names `path` as its secret_file.

    An existing secret_file line is replaced; else the key takes the place of the
    table's first blank line, so the lines after it keep their numbers (the
    node's errors about the copy then point at the original's lines).
    """
    lines = text.splitlines()
    setting = f"secret_file = {_toml_string(str(path))}"
    table = ""
    header_at: int | None = None
    blank_at: int | None = None
    for i, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            table = header.group(2) if header.group(1) == "[" else ""
            header_at = i if table == "cluster" else header_at
            continue
        if table != "cluster":
            continue
        if _SECRET_FILE_KEY.match(line):
            lines[i] = setting
            return "\n".join(lines) + "\n"
        if not line.strip() and blank_at is None:
            blank_at = i
    if blank_at is not None:
        lines[blank_at] = setting
    elif header_at is not None:
        lines.insert(header_at + 1, setting)
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string for any text.
    return json.dumps(value, ensure_ascii=False)
