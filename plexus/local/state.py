"""The state directory of a local cluster and the JSON record kept in it.

    STATE/                    0700, and every file in it 0600 (plexus/local/private.py)
      cluster.toml            the cluster file the nodes run (generated or copied)
      cluster.secret          the cluster secret, when `up` generated it
      cluster.json            the record: cluster, source, links, regions with pids
      lock                    held while up/down/start change the record
      regions/NAME/data       the region's data directory
      regions/NAME/node.log   its stdout and stderr
      tls/ca.crt, tls/ca.key  the cluster's CA (clients verify nodes with ca.crt)
      tls/NAME.crt, NAME.key  region NAME's certificate and key (dir 0700, files 0600)
      auth/signing.key        the key that signs client tokens (0600; the cluster file's [auth] key)
      auth/admin.token        a token with every permission (0600): what local commands use

Every node's command line names STATE/cluster.toml, so `pgrep -f STATE` finds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plexus.errors import PlexusError
from plexus.local.private import open_private, private_dir, write_private

__all__ = [
    "STATE_ENV",
    "ClusterRecord",
    "LocalClusterError",
    "RegionRecord",
    "StateDir",
    "default_state_dir",
    "resolve_region",
    "resolve_region_ca",
]

STATE_ENV = "PLEXUS_STATE_DIR"
TOKEN_ENV = "PLEXUS_TOKEN"
RECORD_VERSION = 1


class LocalClusterError(PlexusError):
    """A local cluster command that cannot go on: no cluster, unknown region, a node that failed."""


def default_state_dir() -> Path:
    """$PLEXUS_STATE_DIR, else $XDG_STATE_HOME/plexus, else ~/.local/state/plexus."""
    given = os.environ.get(STATE_ENV)
    if given:
        return Path(given).expanduser().absolute()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser().absolute() / "plexus"


# Node-local addresses `plexus up` gives every region (a free port when the file gives none).
LOCAL_LISTENERS = ("metrics", "mqtt", "http")


@dataclass
class RegionRecord:
    name: str
    grpc: str
    raft: str | None
    data: str
    log: str
    pid: int | None = None
    # The exact command that starts this region's node (kept so restarts are identical).
    command: list[str] = field(default_factory=list)
    # Where the node serves Prometheus metrics (None in records made before metrics).
    metrics: str | None = None
    # The CA certificate that verifies this region's node (None: it serves plaintext).
    ca: str | None = None
    # Where the node serves MQTT and HTTP (None in records made before they existed).
    mqtt: str | None = None
    http: str | None = None

    @property
    def address(self) -> str:
        return self.grpc


@dataclass
class ClusterRecord:
    cluster: str
    source: str  # "default" or the absolute path of the config file it was made from
    cluster_file: str
    links: list[list[str]]
    regions: list[RegionRecord]
    version: int = RECORD_VERSION

    def client_token(self) -> str | None:
        """The token commands on this cluster present (see `StateDir.client_token`)."""
        return StateDir(Path(self.cluster_file).parent).client_token()

    def region(self, name: str) -> RegionRecord:
        for region in self.regions:
            if region.name == name:
                return region
        known = ", ".join(r.name for r in self.regions) or "none"
        raise LocalClusterError(
            f"no region {name!r} in local cluster {self.cluster} (regions: {known})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterRecord:
        regions = [RegionRecord(**r) for r in data["regions"]]
        return cls(
            cluster=data["cluster"],
            source=data["source"],
            cluster_file=data["cluster_file"],
            links=[list(link) for link in data["links"]],
            regions=regions,
            version=data.get("version", RECORD_VERSION),
        )


class StateDir:
    """Paths inside one state directory, and reading and writing its record."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser().absolute()

    @property
    def record_path(self) -> Path:
        return self.path / "cluster.json"

    @property
    def cluster_file(self) -> Path:
        return self.path / "cluster.toml"

    @property
    def secret_file(self) -> Path:
        return self.path / "cluster.secret"

    def region_dir(self, name: str) -> Path:
        return self.path / "regions" / name

    def data_dir(self, name: str) -> Path:
        return self.region_dir(name) / "data"

    def log_path(self, name: str) -> Path:
        return self.region_dir(name) / "node.log"

    @property
    def signing_key(self) -> Path:
        return self.path / "auth" / "signing.key"

    @property
    def admin_token(self) -> Path:
        return self.path / "auth" / "admin.token"

    def client_token(self) -> str | None:
        """The token local commands present: $PLEXUS_TOKEN, else the cluster's admin token."""
        given = os.environ.get(TOKEN_ENV)
        if given:
            return given
        try:
            return self.admin_token.read_text(encoding="ascii").strip() or None
        except FileNotFoundError:
            return None

    @property
    def tls_dir(self) -> Path:
        return self.path / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.crt"

    def exists(self) -> bool:
        return self.record_path.is_file()

    def load(self) -> ClusterRecord:
        """The record; a one-line error when there is no local cluster here."""
        try:
            data = json.loads(self.record_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LocalClusterError(
                f"no local cluster in {self.path}: start one with 'plexus up'"
            ) from None
        except (OSError, ValueError) as exc:
            raise LocalClusterError(f"{self.record_path}: unreadable record: {exc}") from None
        try:
            return ClusterRecord.from_dict(data)
        except (KeyError, TypeError) as exc:
            raise LocalClusterError(f"{self.record_path}: unreadable record: {exc!r}") from None

    def save(self, record: ClusterRecord) -> None:
        """Write the record atomically (readers never see half of it)."""
        private_dir(self.path)
        tmp = self.record_path.with_suffix(".json.tmp")
        write_private(tmp, json.dumps(record.to_dict(), indent=2) + "\n")
        os.replace(tmp, self.record_path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held by commands that start or stop nodes, so two of them never interleave."""
        private_dir(self.path)
        with os.fdopen(open_private(self.path / "lock", os.O_WRONLY | os.O_APPEND), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_region_ca(name: str, state_dir: Path | str | None = None) -> str | None:
    """The CA certificate that verifies region `name` of the local cluster (None: plaintext)."""
    state = StateDir(state_dir if state_dir is not None else default_state_dir())
    return state.load().region(name).ca


def write_secret(path: Path, content: bytes) -> None:
    """Write a key or token readable by its owner only (0600, from its creation)."""
    private_dir(path.parent)
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "wb") as handle:
        handle.write(content)


def resolve_region(name: str, state_dir: Path | str | None = None) -> str:
    """The gRPC address of region `name` of the local cluster (state dir from $PLEXUS_STATE_DIR)."""
    state = StateDir(state_dir if state_dir is not None else default_state_dir())
    return state.load().region(name).grpc
