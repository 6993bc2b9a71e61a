"""Every start-up problem is one line on stderr and a non-zero exit, never a traceback.

Each case runs `python -m node run ...` as a real process.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from plexus import Client
from tests.harness import Cluster, Nodes, free_port, wait_for

pytestmark = pytest.mark.timeout(120)

# A node that does not refuse to start runs until killed: fail, don't hang.
START_TIMEOUT_S = 60


def run_node(*args: str) -> tuple[int, str]:
    """(exit code, stderr) of a node that must refuse to start."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "node", "run", *args],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the node started instead of refusing: {exc.stderr!r}") from None
    return proc.returncode, proc.stderr


def assert_one_line(code: int, stderr: str, *words: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for word in words:
        assert word in lines[0], lines[0]


@contextlib.contextmanager
def listening(port: int, host: str = "127.0.0.1") -> Iterator[socket.socket]:
    """Something else holding `port`."""
    with socket.socket() as held:
        held.bind((host, port))
        held.listen()
        yield held


def node_args(data: Path, listen: str | None = None, *extra: str) -> list[str]:
    return [
        "--name",
        "us",
        "--listen",
        listen or f"127.0.0.1:{free_port()}",
        "--data",
        str(data),
        *extra,
    ]


def test_data_path_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")
    code, stderr = run_node(*node_args(data, None, "--no-metrics"))
    assert_one_line(code, stderr, str(data), "is a file")
    assert data.read_text() == "not a directory"


def test_data_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    data = tmp_path / "file" / "data"
    code, stderr = run_node(*node_args(data, None, "--no-metrics"))
    assert_one_line(code, stderr, str(data), "cannot create it")


def test_data_path_on_a_read_only_filesystem_is_one_line(tmp_path: Path) -> None:
    """No permission to create it: root passes file modes, so a read-only mount it is."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"a read-only data path needs a tmpfs (root): {mounted.stderr.strip()}")
    try:
        data = mount_point / "data"
        code, stderr = run_node(*node_args(data, None, "--no-metrics"))
        assert_one_line(code, stderr, str(data), "cannot create it", "Read-only")
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_grpc_port_in_use_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    with listening(port):
        code, stderr = run_node(*node_args(tmp_path / "us", f"127.0.0.1:{port}", "--no-metrics"))
    assert_one_line(code, stderr, f"127.0.0.1:{port}", "in use")


def test_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    with listening(port):
        code, stderr = run_node(*node_args(tmp_path / "us", None, "--metrics", f"127.0.0.1:{port}"))
    assert_one_line(code, stderr, "metrics", f"127.0.0.1:{port}", "in use")


def test_raft_port_in_use_is_one_line_not_a_node_without_quorum(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, ["us"], [], raft=True)
    raft = cluster.raft_ports["us"]
    with listening(raft):
        code, stderr = run_node("--cluster", str(cluster.file), "--region", "us", "--no-metrics")
    assert_one_line(code, stderr, "Raft", f"127.0.0.1:{raft}", "in use")


def test_raft_binds_only_the_address_of_the_cluster_file(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, ["us"], [], raft=True)
    raft = cluster.raft_ports["us"]
    cluster.start()
    try:
        wait_for(lambda: accepts("127.0.0.1", raft), 20, "Raft to listen on 127.0.0.1")
        # 127.0.0.2 is loopback too: a wildcard bind (pysyncobj's default) would answer there.
        assert not accepts("127.0.0.2", raft)
    finally:
        cluster.close()


def accepts(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


async def test_a_refused_start_loses_nothing_acked_before(nodes: Nodes) -> None:
    """A node refused for a taken port, then started once the port is free, has its events."""
    node = nodes.start("us")
    async with await Client.connect(node.address) as client:
        await client.create_queue("orders", ["orders/>"])
        for i in range(10):
            await client.publish("orders/1", b"e%d" % i, guaranteed=True, timeout=10)
    assert node.stop() == 0
    with listening(node.port):
        code, stderr = run_node(*node_args(node.data_dir, node.address, "--no-metrics"))
    assert_one_line(code, stderr, node.address, "in use")
    again = nodes.restart(node)
    async with await Client.connect(again.address) as client:
        assert (await client.describe_queue("orders")).depth == 10
