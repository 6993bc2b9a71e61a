"""A real network partition: three voting regions, each in its own network namespace.

The regions talk over a bridge in a namespace of its own (see
/work/shared/notes/netns.md); the test process reaches them through one more
veth on that bridge. Setting a region's port on the bridge down cuts it off
silently (packets vanish, no RST), as a real partition does. The region cut off
must not run its Raft term up, and when it returns it must not depose the
leader (pysyncobj has no pre-vote; federation/prevote.py adds one), while the
majority's membership stays writable throughout.

Needs root and `ip` from iproute2 (`make test` installs it when missing).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plexus import Client
from tests.harness import eventually

pytestmark = [pytest.mark.slow, pytest.mark.solo, pytest.mark.timeout(180)]

REGIONS = ["us", "eu", "ap"]
LINKS = [("us", "eu"), ("eu", "ap"), ("us", "ap")]
GRPC_PORT = 7400
RAFT_PORT = 7401
# Long enough for a voter without a pre-vote to campaign a dozen times (its term reached
# 30 in 12 s before federation/prevote.py).
CUT_S = 6.0
READY_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 5.0


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Net:
    """Namespaces on one bridge: `bridge_ns`, one per region, and the test's own veth."""

    prefix: str
    subnet: str  # the first three octets, e.g. "198.18.42"
    host_if: str
    namespaces: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-net"

    def addr(self, region: str) -> str:
        return f"{self.subnet}.{REGIONS.index(region) + 1}"

    def grpc(self, region: str) -> str:
        return f"{self.addr(region)}:{GRPC_PORT}"

    def cut(self, region: str) -> None:
        ip("-n", self.bridge_ns, "link", "set", f"v-{region}", "down")

    def heal(self, region: str) -> None:
        ip("-n", self.bridge_ns, "link", "set", f"v-{region}", "up")


def require_ip() -> None:
    if shutil.which("ip") is None:
        pytest.fail(
            "the partition test needs `ip` from iproute2: apt-get install -y iproute2 "
            "(make test installs it when missing)"
        )
    if os.geteuid() != 0:
        pytest.fail("the partition test makes network namespaces: it must run as root")


@pytest.fixture
def net() -> Iterator[Net]:
    require_ip()
    tag = f"{os.getpid() % 100_000}{random.randrange(100)}"
    made = Net(
        prefix=f"plx{tag}",
        # RFC 2544's benchmarking range: never routed, and one /24 per run here.
        subnet=f"198.18.{random.randrange(1, 255)}",
        host_if=f"plh{tag}",
    )
    try:
        ip("netns", "add", made.bridge_ns)
        made.namespaces.append(made.bridge_ns)
        ip("-n", made.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", made.bridge_ns, "link", "set", "br0", "up")
        for region in REGIONS:
            ns = f"{made.prefix}-{region}"
            ip("netns", "add", ns)
            made.namespaces.append(ns)
            port = f"v-{region}"
            ip(
                "link",
                "add",
                "e0",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                port,
                "netns",
                made.bridge_ns,
            )
            ip("-n", made.bridge_ns, "link", "set", port, "master", "br0")
            ip("-n", made.bridge_ns, "link", "set", port, "up")
            ip("-n", ns, "addr", "add", f"{made.addr(region)}/24", "dev", "e0")
            ip("-n", ns, "link", "set", "e0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", made.host_if, "type", "veth", "peer", "v-host", "netns", made.bridge_ns)
        ip("-n", made.bridge_ns, "link", "set", "v-host", "master", "br0")
        ip("-n", made.bridge_ns, "link", "set", "v-host", "up")
        ip("addr", "add", f"{made.subnet}.254/24", "dev", made.host_if)
        ip("link", "set", made.host_if, "up")
        yield made
    finally:
        for proc in made.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stdout:
                proc.stdout.close()
        subprocess.run(["ip", "link", "del", made.host_if], capture_output=True, timeout=10)
        for ns in reversed(made.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def write_cluster_file(net: Net, root: Path) -> Path:
    lines = [
        "[cluster]",
        'name = "test"',
        'secret = "test-secret-0123456789"',
        "[settings]",
        "heartbeat_ms = 100",
        "reconnect_min_ms = 50",
        "reconnect_max_ms = 500",
    ]
    for region in REGIONS:
        lines += [
            "[[region]]",
            f'name = "{region}"',
            f'grpc = "{net.grpc(region)}"',
            f'raft = "{net.addr(region)}:{RAFT_PORT}"',
            f'data = "{region}"',
        ]
    for a, b in LINKS:
        lines += ["[[link]]", f'regions = ["{a}", "{b}"]']
    path = root / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_region(net: Net, region: str, cluster_file: Path, root: Path) -> None:
    log = open(root / f"{region}.log", "ab")  # noqa: SIM115 - owned by the process
    # Plaintext on the namespaces' addresses (--insecure): the drill is about Raft, not TLS.
    node = [sys.executable, "-m", "node", "run", "--cluster", str(cluster_file), "--region", region,
            "--insecure"]  # fmt: skip
    proc = subprocess.Popen(
        ["ip", "netns", "exec", f"{net.prefix}-{region}", *node],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    net.procs[region] = proc
    ready = threading.Event()

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"listening on" in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"region {region} did not start: {(root / f'{region}.log').read_text()[-2000:]}"
            )


async def raft(net: Net, region: str) -> dict[str, Any]:
    async with await Client.connect(net.grpc(region), CALL_TIMEOUT_S, reconnect=False) as client:
        info = await client.membership(timeout=CALL_TIMEOUT_S)
        return dict(info["raft"])


async def test_a_region_back_from_a_partition_keeps_its_term_and_the_leader(
    net: Net, tmp_path: Path
) -> None:
    cluster_file = write_cluster_file(net, tmp_path)
    for region in REGIONS:
        start_region(net, region, cluster_file, tmp_path)

    views: dict[str, dict[str, Any]] = {}

    async def agreed() -> bool:
        for region in REGIONS:
            try:
                views[region] = await raft(net, region)
            except Exception:
                return False
        leaders = {v["leader"] for v in views.values()}
        return len(leaders) == 1 and "" not in leaders and all(v["term"] for v in views.values())

    await eventually(agreed, 30, "the three regions to agree on a Raft leader")
    leader_raft = views[REGIONS[0]]["leader"]
    term = views[REGIONS[0]]["term"]
    [chief] = [r for r in REGIONS if views[r]["role"] == "leader"]
    cut = next(r for r in REGIONS if r != chief)
    [other] = [r for r in REGIONS if r not in (chief, cut)]

    net.cut(cut)
    # The majority's membership stays writable while `cut` is away: a link between
    # the two of them is removed and added again, over and over, for the whole cut.
    changes = 0
    until = time.monotonic() + CUT_S
    async with await Client.connect(net.grpc(chief), CALL_TIMEOUT_S) as client:
        while time.monotonic() < until:
            removed = await client.remove_link(chief, other, timeout=CALL_TIMEOUT_S)
            assert sorted([chief, other]) not in [sorted(link) for link in removed["links"]]
            added = await client.add_link(chief, other, timeout=CALL_TIMEOUT_S)
            assert sorted([chief, other]) in [sorted(link) for link in added["links"]]
            changes += 2
            for region in (chief, other):
                view = await raft(net, region)
                assert (view["leader"], view["term"]) == (leader_raft, term), (region, view)
    assert changes >= 4
    net.heal(cut)

    async def back() -> bool:
        try:
            views[cut] = await raft(net, cut)
        except Exception:
            return False
        return views[cut]["leader"] == leader_raft and views[cut]["role"] == "follower"

    await eventually(back, 30, f"region {cut} to follow the leader again")
    # A settled cluster after the return: the same leader, at most one term more.
    for region in REGIONS:
        view = await raft(net, region)
        assert view["leader"] == leader_raft, (region, view)
        assert view["term"] <= term + 1, (region, view, term)
    assert (await raft(net, chief))["role"] == "leader"
    log = (tmp_path / f"{cut}.log").read_text()
    assert "Traceback" not in log
