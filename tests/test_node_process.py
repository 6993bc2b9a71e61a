"""Starting a node process: refusals a user sees as one clear line, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Nodes, free_port


@pytest.fixture
def nodes(tmp_path: Path):
    nodes = Nodes(tmp_path)
    yield nodes
    nodes.close()


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "run", *args], capture_output=True, text=True, timeout=30
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for part in parts:
        assert part in result.stderr, result.stderr


def test_data_directory_in_use_is_refused_naming_path_and_pid(nodes: Nodes):
    first = nodes.start("us")
    assert first.proc is not None
    result = run_node(
        "--name", "us2", "--listen", f"127.0.0.1:{free_port()}", "--data", str(first.data_dir)
    )
    assert_one_line_error(result, str(first.data_dir), "in use", str(first.proc.pid))


def test_port_in_use_is_refused_naming_the_address(nodes: Nodes, tmp_path: Path):
    first = nodes.start("us")
    result = run_node("--name", "eu", "--listen", first.address, "--data", str(tmp_path / "eu"))
    assert_one_line_error(result, first.address, "in use")


@pytest.mark.parametrize("flag", ["--mqtt", "--http"])
def test_a_taken_mqtt_or_http_port_is_refused_before_anything_starts(
    nodes: Nodes, tmp_path: Path, flag: str
):
    first = nodes.start("us")  # its gRPC port is taken
    result = run_node(
        *("--name", "eu", "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "eu")),
        *(flag, first.address),
    )
    assert_one_line_error(result, first.address, "in use")
    assert not (tmp_path / "eu").exists()  # refused before the data directory was made


# A node without TLS, tokens, MQTT or HTTP holds ~35 MiB of its own (anonymous) memory at
# issue 14; ~40 when it loaded cryptography, PyJWT and pysyncobj whether it used them or not.
# Its file-backed pages are left out: how much of a shared library is mapped depends on the
# page cache (a freshly installed one is mapped whole), not on the node.
PLAIN_NODE_ANON_MIB = 38


def test_a_node_without_tls_tokens_or_front_doors_stays_small(nodes: Nodes):
    node = nodes.start("us")
    assert node.proc is not None
    status = Path(f"/proc/{node.proc.pid}/status").read_text().splitlines()
    anon_mib = int(next(line for line in status if line.startswith("RssAnon:")).split()[1]) / 1024
    assert anon_mib < PLAIN_NODE_ANON_MIB, f"{anon_mib:.1f} MiB of its own memory"


def test_bad_flags_are_named(tmp_path: Path):
    result = run_node("--name", "Bad Name", "--listen", "x", "--data", str(tmp_path / "d"))
    assert_one_line_error(result, "name: must be", "listen: must be HOST:PORT")


def test_sigterm_stops_the_node_cleanly(nodes: Nodes):
    node = nodes.start("us")
    assert node.stop() == 0


def test_bad_cluster_file_and_unknown_region_are_named(tmp_path: Path):
    cluster = tmp_path / "c.toml"
    cluster.write_text(
        '[cluster]\nname = "t"\nsecret = "a-secret-of-24-bytes-xxx"\n'
        '[[region]]\nname = "us"\ngrpc = "127.0.0.1:1"\n'
        '[[link]]\nregions = ["us", "xx"]\n'
    )
    result = run_node("--cluster", str(cluster), "--region", "us")
    assert_one_line_error(result, str(cluster), "unknown region 'xx'")
    cluster.write_text(
        '[cluster]\nname = "t"\nsecret = "a-secret-of-24-bytes-xxx"\n'
        '[[region]]\nname = "us"\ngrpc = "127.0.0.1:1"\n'
    )
    result = run_node("--cluster", str(cluster), "--region", "eu")
    assert_one_line_error(result, "region 'eu' is not in")


def test_cluster_needs_a_region(tmp_path: Path):
    result = run_node("--cluster", str(tmp_path / "c.toml"))
    assert result.returncode == 2 and "--region" in result.stderr
    assert "Traceback" not in result.stderr
