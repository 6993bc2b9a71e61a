"""Changing a running local cluster: regions added and removed live, links added and removed.

The cluster's membership is replicated by the nodes (Raft); these operations
start or stop the local processes and ask a running region to make the
replicated change, then keep the state directory's record in step.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from plexus.errors import PlexusError
from plexus.local.default import free_ports
from plexus.local.launcher import is_running, node_command, stop_processes
from plexus.local.ops import (
    CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    region_tls_flags,
    start_regions,
    wait_links,
)
from plexus.local.state import (
    LOCAL_LISTENERS,
    ClusterRecord,
    LocalClusterError,
    RegionRecord,
    StateDir,
)

LEADER_POLL_S = 0.05
REMOVED_STOP_TIMEOUT_S = 45.0


def add_region(
    state: StateDir, name: str, links: list[str], timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[RegionRecord, float]:
    """Start a new local node and join it to the running cluster; (region, seconds)."""
    t0 = time.monotonic()
    with state.locked():
        record = state.load()
        if any(r.name == name for r in record.regions):
            raise LocalClusterError(f"a region named {name!r} already exists in {record.cluster}")
        for peer in links:
            record.region(peer)
        via = _any_running(record)
        ports = iter(free_ports(2 + len(LOCAL_LISTENERS)))
        data = state.data_dir(name)
        grpc, raft = f"127.0.0.1:{next(ports)}", f"127.0.0.1:{next(ports)}"
        listeners = {key: f"127.0.0.1:{next(ports)}" for key in LOCAL_LISTENERS}
        extra = ["--join", via.grpc, "--raft", raft, "--listen", grpc, "--data", str(data)]
        extra += [f"--{key}={address}" for key, address in listeners.items()]
        for peer in links:
            extra += ["--link", peer]
        # A cluster with TLS on: the new region gets its certificate from the same CA.
        tls = any(r.ca for r in record.regions)
        if tls:
            extra += region_tls_flags(state, name, grpc)
        region = RegionRecord(
            name=name,
            grpc=grpc,
            raft=raft,
            data=str(data),
            log=str(state.log_path(name)),
            command=node_command(Path(record.cluster_file), name, extra),
            ca=str(state.ca_cert) if tls else None,
            **listeners,
        )
        record.regions.append(region)
        record.links += [[name, peer] for peer in links]
        deadline = t0 + timeout_s
        try:
            start_regions(state, record, [region], deadline)
        except BaseException:
            record.regions.remove(region)
            record.links = [link for link in record.links if name not in link]
            state.save(record)
            raise
        state.save(record)
        running = [r.name for r in record.regions if is_running(r.pid, record.cluster_file)]
        asyncio.run(wait_links(record, running, deadline, touching=name))
        return region, time.monotonic() - t0


def remove_region(state: StateDir, name: str, force: bool = False) -> dict[str, Any]:
    """Remove a region live: it drains and stops, leaves Raft; the record forgets it."""
    with state.locked():
        record = state.load()
        region = record.region(name)
        via = _any_running(record, but=name)
        view = asyncio.run(
            _ask(via, lambda c: c.remove_region(name, force=force), record.client_token())
        )
        if region.pid and is_running(region.pid, record.cluster_file):
            deadline = time.monotonic() + REMOVED_STOP_TIMEOUT_S
            while is_running(region.pid, record.cluster_file) and time.monotonic() < deadline:
                time.sleep(LEADER_POLL_S)
            stop_processes([region.pid], record.cluster_file, grace_s=5.0)
        record.regions.remove(region)
        record.links = [link for link in record.links if name not in link]
        state.save(record)
        return view


def add_link(state: StateDir, a: str, b: str) -> dict[str, Any]:
    with state.locked():
        record = state.load()
        record.region(a)
        record.region(b)
        view = asyncio.run(
            _ask(_any_running(record), lambda c: c.add_link(a, b), record.client_token())
        )
        record.links = [list(link) for link in view["links"]]
        state.save(record)
        return view


def remove_link(state: StateDir, a: str, b: str) -> dict[str, Any]:
    with state.locked():
        record = state.load()
        view = asyncio.run(
            _ask(_any_running(record), lambda c: c.remove_link(a, b), record.client_token())
        )
        record.links = [list(link) for link in view["links"]]
        state.save(record)
        return view


async def wait_leader(record: ClusterRecord, deadline: float) -> str | None:
    """The Raft leader's address once one is elected (None: the cluster runs without Raft)."""
    if not any(r.raft for r in record.regions):
        return None
    running = [r for r in record.regions if is_running(r.pid, record.cluster_file)]
    while True:
        for region in running:
            try:
                view = await _ask(region, lambda c: c.membership(), record.client_token())
            except PlexusError:
                continue
            if view["raft"]["role"] == "leader":
                return region.name
        if time.monotonic() > deadline:
            raise LocalClusterError("no Raft leader elected in time (see 'plexus status')")
        await asyncio.sleep(LEADER_POLL_S)


def _any_running(record: ClusterRecord, but: str | None = None) -> RegionRecord:
    """A running region that votes in Raft (only voters make membership changes)."""
    running = [
        r for r in record.regions if r.name != but and is_running(r.pid, record.cluster_file)
    ]
    if not running:
        raise LocalClusterError(f"no region of {record.cluster} is running: 'plexus up' starts it")
    for region in running:
        try:
            view = asyncio.run(_ask(region, lambda c: c.membership(), record.client_token()))
        except PlexusError:
            continue
        if view["raft"]["role"] in ("leader", "follower", "candidate", ""):
            return region
    return running[0]


async def _ask(region: RegionRecord, call: Any, token: str | None) -> Any:
    from plexus.client import Client

    async with await Client.connect(
        region.grpc, timeout=CONNECT_TIMEOUT_S, ca=region.ca, token=token
    ) as client:
        return await call(client)
