"""Local clusters (issue 4): `plexus up`, a region added live, leader failover, 12 regions.

Every run uses its own temporary state directory and `plexus down --purge`
at the end. Figures:

- `plexus up` of the default 3-region cluster until ready (Raft leader, links up);
- `plexus region add` until the new region receives an event published elsewhere;
- Raft leader killed (kill -9) until a membership change succeeds again;
- 12 regions (hub-and-spoke and a partial mesh): start, an event from every
  region to every other, then idle CPU of all nodes together and RSS per node.

    .venv/bin/python benchmarks/bench_cluster.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Target, cpu_seconds, figure, free_port, load, rss

from plexus.client import Client
from plexus.local import membership, ops
from plexus.local.state import StateDir

RUNS = 3
IDLE_S = 10.0
# After the every-pair traffic: clients leave, their interest is withdrawn everywhere.
SETTLE_S = 3.0
TWELVE = [f"r{i:02d}" for i in range(12)]


@contextmanager
def local_cluster(config: Path | None = None) -> Iterator[tuple[StateDir, ops.UpResult]]:
    with tempfile.TemporaryDirectory(prefix="plexus-bench-") as tmp:
        state = StateDir(tmp)
        try:
            yield state, ops.up(state, config, timeout_s=120)
        finally:
            ops.down(state, purge=True)


def targets(state: StateDir, result: ops.UpResult) -> dict[str, Target]:
    """Where clients of a `plexus up` cluster connect, with its CA and admin token (what the
    CLI's `--region` uses)."""
    token = state.client_token()
    return {r.name: Target(r.grpc, str(state.ca_cert), token) for r in result.record.regions}


def bench_up() -> dict[str, Any]:
    times = []
    for _ in range(RUNS):
        started = time.monotonic()
        with local_cluster():
            times.append(time.monotonic() - started)
    return figure(
        "cluster", "plexus up (default 3 regions) until ready", statistics.median(times), "s",
        target=5.0, higher_is_better=False, runs=[round(t, 2) for t in times],
    )  # fmt: skip


async def _first_event(sub_at: Target, pub_at: Target, topic: str) -> None:
    async with (
        await sub_at.connect() as sub_client,
        await pub_at.connect() as pub_client,
        sub_client.subscribe(topic.rsplit("/", 1)[0] + "/>") as sub,
    ):
        while True:
            await pub_client.publish(topic, b"x")
            if await sub.next_batch(timeout=0.01):
                return


def bench_region_add() -> dict[str, Any]:
    times = []
    for _ in range(RUNS):
        with local_cluster() as (state, result):
            at = targets(state, result)
            started = time.monotonic()
            region, _ = membership.add_region(state, "sa", ["us"])
            sa = Target(region.grpc, at["eu"].ca, at["eu"].token)
            asyncio.run(_first_event(sa, at["eu"], "joined/eu/1"))
            times.append(time.monotonic() - started)
    return figure(
        "cluster", "region add until it receives events from others", statistics.median(times),
        "s", target=3.0, higher_is_better=False, runs=[round(t, 2) for t in times],
    )  # fmt: skip


async def _failover(state: StateDir) -> float:
    record = state.load()
    leader = await membership.wait_leader(record, time.monotonic() + 10)
    assert leader is not None
    survivor = next(r for r in record.regions if r.name != leader)
    ops.kill_region(state, leader)
    started = time.monotonic()
    async with await Client.connect(
        survivor.grpc, ca=str(state.ca_cert), token=state.client_token()
    ) as client:
        others = [r.name for r in record.regions if r.name not in (leader, survivor.name)]
        while True:
            try:
                await client.remove_link(survivor.name, others[0])
                return time.monotonic() - started
            except Exception:
                await asyncio.sleep(0.01)


def bench_failover() -> dict[str, Any]:
    times = []
    for _ in range(RUNS):
        with local_cluster() as (state, _result):
            times.append(asyncio.run(_failover(state)))
    return figure(
        "cluster", "leader kill -9 until membership changes succeed", statistics.median(times),
        "s", target=1.0, higher_is_better=False, runs=[round(t, 2) for t in times],
    )  # fmt: skip


def twelve_regions(shape: str, directory: Path) -> Path:
    """A 12-region cluster file: hub-and-spoke (r00 the hub) or a partial mesh (ring + chords)."""
    if shape == "hub-and-spoke":
        links = [("r00", r) for r in TWELVE[1:]]
    else:
        links = [(TWELVE[i], TWELVE[(i + 1) % 12]) for i in range(12)]
        links += [(TWELVE[i], TWELVE[(i + 5) % 12]) for i in range(0, 12, 3)]
    # default settings
    lines = ["[cluster]", f'name = "{shape}-12"', 'secret = "bench-secret-0123456789"']
    for name in TWELVE:
        lines += ["[[region]]", f'name = "{name}"', f'grpc = "127.0.0.1:{free_port()}"',
                  f'raft = "127.0.0.1:{free_port()}"', f'data = "{name}"']  # fmt: skip
    lines += [f'[[link]]\nregions = ["{a}", "{b}"]' for a, b in links]
    path = directory / f"{shape}-12.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _every_pair(at: dict[str, Target]) -> float:
    """An event from every region reaches a subscriber in every other region; seconds."""
    clients = {n: await target.connect() for n, target in at.items()}
    started = time.monotonic()
    try:
        subs = {n: clients[n].subscribe("pair/>") for n in clients}
        for sub in subs.values():
            await sub.ready()
        expected = len(clients) - 1
        got = {n: set() for n in clients}
        while any(len(v) < expected for v in got.values()):
            for n, client in clients.items():
                await client.publish(f"pair/{n}", n.encode())
            for n, sub in subs.items():
                for event in await sub.next_batch(timeout=0.05):
                    if event.origin_region != n:
                        got[n].add(event.origin_region)
            if time.monotonic() - started > 60:
                raise TimeoutError("events did not reach every pair of regions")
        return time.monotonic() - started
    finally:
        for client in clients.values():
            await client.close()


def bench_twelve(shape: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="plexus-bench-12-") as tmp:
        config = twelve_regions(shape, Path(tmp))
        started = time.monotonic()
        with local_cluster(config) as (state, result):
            up_s = time.monotonic() - started
            pairs_s = asyncio.run(_every_pair(targets(state, result)))
            pids = [r.pid for r in result.record.regions if r.pid]
            time.sleep(SETTLE_S)  # measuring idle: nothing to wait for
            cpu0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
            time.sleep(IDLE_S)
            idle = (sum(cpu_seconds(p) for p in pids) - cpu0) / (time.monotonic() - t0) * 100
            rss_mb = max(rss(p)["rss"] for p in pids)
    return [
        figure("cluster", f"12 regions {shape}: idle CPU, all nodes", round(idle, 1),
               "% of a core", target=10.0, higher_is_better=False,
               up_s=round(up_s, 2), every_pair_s=round(pairs_s, 2),
               settled_s=SETTLE_S, measured_s=IDLE_S, load=load()),
        figure("cluster", f"12 regions {shape}: RSS per node (max)", round(rss_mb, 1), "MiB",
               target=80.0, higher_is_better=False),
    ]  # fmt: skip


def run() -> list[dict[str, Any]]:
    rows = [bench_up(), bench_region_add(), bench_failover()]
    for shape in ("hub-and-spoke", "partial-mesh"):
        rows += bench_twelve(shape)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    for row in run():
        print(row)
