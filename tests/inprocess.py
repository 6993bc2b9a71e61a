"""In-process nodes for tests: a `node.server.Node` in the test's own event loop.

Each node listens on 127.0.0.1:0 (the port it bound is `node.address`) with
its own data directory. A test that needs a separate process (kill -9, a
restart of a process, the CLI running a node, a cluster) uses the real
processes of tests/harness.py instead.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from node.config import METRICS_OFF, NodeConfig
from node.server import Node

# Threads a node owns: the spool writer and the metrics HTTP server.
NODE_THREADS = ("spool-writer", "(serve_forever)")


def node_config(name: str, data: Path, **settings: Any) -> NodeConfig:
    """A node's config on a free loopback port, without metrics unless `metrics` is given
    (stopping the metrics server takes half a second); `settings` as in a [node] table."""
    defaults = {"name": name, "listen": "127.0.0.1:0", "data": data, "metrics": METRICS_OFF}
    return NodeConfig(**{**defaults, **settings})


class InProcessNodes:
    """Starts in-process nodes for one test and stops every one of them afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Node] = []

    async def start(self, name: str = "us", data_dir: Path | None = None, **settings: Any) -> Node:
        """A started node `name` (data in ROOT/NAME unless given); `settings` as in [node]."""
        node = Node(node_config(name, data_dir or self.root / name, **settings))
        self.started.append(node)
        await node.start()
        return node

    async def restart(self, node: Node) -> Node:
        """Stop `node` gracefully and start it again on the same port and data directory."""
        await node.stop()
        again = Node(node.config.model_copy(update={"listen": node.address}))
        self.started.append(again)
        await again.start()
        return again

    async def close(self) -> None:
        for node in self.started:
            await node.stop()
        left = [t.name for t in threading.enumerate() if t.name.endswith(NODE_THREADS)]
        assert not left, f"threads left running by stopped nodes: {left}"
