"""Where `plexus top` reads the mesh: a local cluster's state directory, or one node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from plexus.tui.app import Snapshot, Source


def local_cluster(state_dir: Path) -> Source:
    """Every region of the local cluster, as `plexus status --json` sees it."""
    from plexus.local import ops
    from plexus.local.state import StateDir

    state = StateDir(state_dir)

    async def read() -> Snapshot:
        return await asyncio.to_thread(ops.status, state)

    return read


def one_node(address: str) -> Source:
    """The membership and the links of the node at `address`."""
    from plexus.client import Client

    async def read() -> Snapshot:
        async with await Client.connect(address, timeout=2.0) as client:
            membership, view = await asyncio.gather(client.membership(), client.list_links())
        here = view.region
        regions: list[dict[str, Any]] = [
            {
                "name": r["name"],
                "address": r["grpc"],
                "state": "running",
                "raft": membership["raft"] if r["name"] == here else {},
            }
            for r in membership["regions"]
        ] or [{"name": here, "address": address, "state": "running", "raft": {}}]
        links = [
            {
                "regions": [here, link.peer],
                "state": link.state,
                "rate_ab": link.events_out_per_s,
                "rate_ba": link.events_in_per_s,
                "spool_depth": link.spool_depth,
            }
            for link in view.links
        ]
        return {"cluster": membership["cluster"] or here, "regions": regions, "links": links}

    return read
