"""Real node processes for tests: start on a free loopback port, wait until serving, kill.

Every process started here is registered so the `nodes` fixture can kill
whatever a failed test left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from federation import link as link_module
from federation.link_protocol import LinkProtocol, LinkState

READY_TIMEOUT_S = 20.0
_used_ports: set[int] = set()
# Below the ephemeral range; random so two suites on one machine rarely meet.
_TEST_PORTS = (20_000, 32_000)
_port_picker = random.Random()


def _worker_share() -> tuple[int, int]:
    """(this pytest-xdist worker's number, how many workers); (0, 1) without xdist."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return (int(worker) if worker.isdigit() else 0), max(count, 1)


def free_port() -> int:
    """A loopback port nobody listens on, never handed out twice in this run.

    Taken below the kernel's ephemeral range (32768-60999 here), where bind(0)
    never lands: an outgoing connection or `plexus up`'s own port picking
    cannot take it between this check and the node's bind. Under
    pytest-xdist each worker takes only its own blocks of 16 ports
    (port // 16 % workers == worker), so two workers never hand out the same one.
    """
    worker, workers = _worker_share()
    low, high = _TEST_PORTS
    for _ in range(10_000):
        port = _port_picker.randrange(low, high)
        if port in _used_ports or port // 16 % workers != worker:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise AssertionError("no free loopback port found")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll `predicate` until true; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


async def eventually(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Await `predicate()` (a coroutine or a plain value) until true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


class NodeProcess:
    """One `python -m node run` process."""

    def __init__(self, name: str, data_dir: Path, port: int | None = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{name}-{self.port}.log"
        # Node flags other than the default name/listen/data (e.g. a cluster file).
        self.start_command: list[str] | None = None

    def start(self, *extra: str) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        where = self.start_command or [
            "--name",
            self.name,
            "--listen",
            self.address,
            "--data",
            str(self.data_dir),
        ]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "run", *where, *extra],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        log.close()
        ready = threading.Event()
        lines: list[bytes] = []

        def watch() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.append(line)
                if b"listening on" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"node {self.name} did not start: {self.log_path.read_text()[-2000:]}"
                )
        return self

    def kill(self) -> None:
        """kill -9, and reap."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc and self.proc.stdout and self.proc.poll() is not None:
            self.proc.stdout.close()

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipe()
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Nodes:
    """Starts nodes for one test and kills every one of them afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[NodeProcess] = []

    def start(self, name: str = "us", data_dir: Path | None = None, *extra: str) -> NodeProcess:
        node = NodeProcess(name, data_dir or self.root / name)
        self.started.append(node)
        return node.start(*extra)

    def restart(self, node: NodeProcess) -> NodeProcess:
        again = NodeProcess(node.name, node.data_dir, node.port)
        again.start_command = node.start_command
        self.started.append(again)
        return again.start()

    def close(self) -> None:
        for node in self.started:
            node.kill()


class Cluster:
    """Regions of one cluster file, each a real node process, for federation tests."""

    def __init__(
        self,
        root: Path,
        regions: list[str],
        links: list[tuple[str, str]],
        *,
        secret: str = "test-secret-0123456789",
        heartbeat_ms: int = 100,
        ports: dict[str, int] | None = None,
        settings: dict[str, int | str] | None = None,
        raft: bool = False,
        auth_key: Path | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.file = root / "cluster.toml"
        self.secret = secret
        self.ports = {name: (ports or {}).get(name) or free_port() for name in regions}
        self.nodes: dict[str, NodeProcess] = {}
        lines = [
            "[cluster]",
            'name = "test"',
            f'secret = "{secret}"',
            "[settings]",
            f"heartbeat_ms = {heartbeat_ms}",
            "reconnect_min_ms = 50",
            "reconnect_max_ms = 500",
            *(f"{key} = {value!r}".replace("'", '"') for key, value in (settings or {}).items()),
        ]
        self.raft_ports = {name: free_port() for name in regions} if raft else {}
        for name in regions:
            lines += [
                "[[region]]",
                f'name = "{name}"',
                f'grpc = "127.0.0.1:{self.ports[name]}"',
                f'data = "{name}"',
                *([f'raft = "127.0.0.1:{self.raft_ports[name]}"'] if raft else []),
            ]
        for a, b in links:
            lines += ["[[link]]", f'regions = ["{a}", "{b}"]']
        if auth_key is not None:  # client tokens signed with this key, required everywhere
            lines += ["[auth]", f'key = "{auth_key}"']
        self.file.write_text("\n".join(lines) + "\n")

    def address(self, region: str) -> str:
        return f"127.0.0.1:{self.ports[region]}"

    def start(self, *regions: str) -> None:
        for name in regions or tuple(self.ports):
            node = NodeProcess(name, self.root / name, self.ports[name])
            node.start_command = ["--cluster", str(self.file), "--region", name]
            self.nodes[name] = node.start()

    def kill(self, region: str) -> None:
        self.nodes[region].kill()

    def restart(self, region: str) -> None:
        """Start a killed region again on the same command, port and data directory."""
        old = self.nodes[region]
        old.kill()
        node = NodeProcess(region, old.data_dir, old.port)
        node.start_command = old.start_command
        self.nodes[region] = node.start()

    def join(self, region: str, via: str, links: list[str]) -> NodeProcess:
        """Start a new region that joins the running cluster through region `via`."""
        self.ports[region] = free_port()
        self.raft_ports[region] = free_port()
        node = NodeProcess(region, self.root / region, self.ports[region])
        node.start_command = [
            "--cluster",
            str(self.file),
            "--region",
            region,
            "--join",
            self.address(via),
            "--raft",
            f"127.0.0.1:{self.raft_ports[region]}",
            "--listen",
            self.address(region),
            "--data",
            str(self.root / region),
            *(arg for peer in links for arg in ("--link", peer)),
        ]
        self.nodes[region] = node.start()
        return node

    def close(self) -> None:
        for node in self.nodes.values():
            node.kill()


@contextlib.asynccontextmanager
async def link_held_down(root: Path, spool_quota: int) -> AsyncIterator[tuple[Any, Any]]:
    """Regions eu and us linked (us's spool for eu capped at `spool_quota` bytes), a queue
    `far` on `far/>` in eu that us has learned of, and the link then held down from us:
    what us takes for `far/>` waits in its spool. Yields SDK clients (eu, us)."""
    from plexus import Client

    cluster = Cluster(
        root, ["eu", "us"], [("eu", "us")], settings={"link_spool_quota_bytes": spool_quota}
    )
    cluster.start()
    try:
        async with (
            await Client.connect(cluster.address("eu")) as eu,
            await Client.connect(cluster.address("us")) as us,
        ):

            async def link_up() -> bool:
                links = (await us.list_links(interest=False)).links
                return [(link.peer, link.state) for link in links] == [("eu", "up")]

            await eventually(link_up, 10, "link us-eu up")
            await eu.create_queue("far", ["far/>"])

            async def us_knows_eu_interest() -> bool:
                view = await us.list_links()
                return any("far/>" in i.patterns for i in view.interest if i.region == "eu")

            await eventually(us_knows_eu_interest, 10, "us to learn eu's interest")
            await us.set_link("eu", up=False)
            yield eu, us
    finally:
        cluster.close()


def open_link_protocol(dialled_peer: str | None) -> LinkProtocol:
    """Region us's side of a link, past its handshake (OPEN): for driving a LinkSession
    without a peer. `dialled_peer` None is the accepting side."""
    protocol = LinkProtocol(
        cluster="c",
        secret="s",
        region="us",
        dialled_peer=dialled_peer,
        admit=lambda region: None,
        nonce=b"n" * 16,
        received_upto=0,
        received_mark=lambda peer: 0,
        heartbeat_ms=60_000,
        dead_after_ms=120_000,
        now_ms=link_module.now_ms(),
    )
    protocol.state = LinkState.OPEN
    return protocol


class DroppingDelivery:
    """A mesh's `LocalDelivery` for tests of the mesh alone: direct events go nowhere,
    guaranteed ones count as stored at once."""

    def deliver_direct(self, items: list[tuple[str, bytes]]) -> None:
        pass

    def store_guaranteed(
        self, peer: str, events: list[Any], upto: int, done: Callable[[], None]
    ) -> None:
        done()
