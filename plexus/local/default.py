"""The embedded default cluster: regions us, eu and ap, fully linked, on free loopback ports."""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Collection
from contextlib import ExitStack
from pathlib import Path

__all__ = ["DEFAULT_NAME", "DEFAULT_REGIONS", "default_cluster_toml", "free_ports"]

DEFAULT_NAME = "local"
DEFAULT_REGIONS = ("us", "eu", "ap")
HOST = "127.0.0.1"


def free_ports(count: int, host: str = HOST, avoid: Collection[int] = ()) -> list[int]:
    """`count` distinct ports free right now on `host` (all held open until all are picked),
    none of them in `avoid` (ports a cluster file names for nodes not running yet)."""
    with ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            if port not in avoid:
                ports.append(port)
        return ports


def default_cluster_toml(data_dir: dict[str, Path], secret_file: Path) -> str:
    """The cluster file of the default cluster, with ports picked now.

    Each region gets a gRPC port, a membership (Raft) port, a metrics port, an
    MQTT port and an HTTP port;
    the file is written into the state directory so a restart reuses them. The
    secret stays in its own file (`secret_file`), out of the cluster file.
    """
    ports = iter(free_ports(5 * len(DEFAULT_REGIONS)))
    lines = [
        "# The default local cluster of `plexus up`: us, eu and ap, each linked to both others.",
        "# Ports were picked free when it was first started; restarts reuse them.",
        "",
        "[cluster]",
        f'name = "{DEFAULT_NAME}"',
        f"secret_file = {json.dumps(str(secret_file))}",
        "",
        "[settings]",
        "heartbeat_ms = 250              # quick failure detection on one machine",
        "dead_after_heartbeats = 6",
        "reconnect_min_ms = 50",
        "reconnect_max_ms = 2000",
    ]
    for name in DEFAULT_REGIONS:
        lines += [
            "",
            "[[region]]",
            f'name = "{name}"',
            f'grpc = "{HOST}:{next(ports)}"',
            f'raft = "{HOST}:{next(ports)}"',
            f'metrics = "{HOST}:{next(ports)}"',
            f'mqtt = "{HOST}:{next(ports)}"',
            f'http = "{HOST}:{next(ports)}"',
            f"data = {json.dumps(str(data_dir[name]))}",
        ]
    for a, b in itertools.combinations(DEFAULT_REGIONS, 2):
        lines += ["", "[[link]]", f'regions = ["{a}", "{b}"]']
    return "\n".join(lines) + "\n"
