"""Prometheus metrics of nodes: names and values after known traffic (in-process),
the checks of `promtool check metrics` (tests/exposition.py, no Prometheus package
needed), where node processes serve them (or not), and bad flags."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

import plexus
from node.server import Node
from plexus.errors import LimitReached, NotFound
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.exposition import exposition_problems
from tests.harness import NodeProcess, Nodes, eventually, free_port
from tests.inprocess import InProcessNodes

PROMTOOL = shutil.which("promtool")


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    """promtool itself, where it happens to be installed (only to cross-check our checker)."""
    assert PROMTOOL
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


async def metrics_address(node: Node | NodeProcess) -> str:
    async with grpc.aio.insecure_channel(node.address) as channel:
        info = await rpc.BrokerStub(channel).GetNodeInfo(pb.NodeInfoRequest())
    return info.metrics_address


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "run", *args], capture_output=True, text=True, timeout=30
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


async def test_counters_after_known_traffic_and_promtools_checks_pass(
    inproc_nodes: InProcessNodes,
):
    node = await inproc_nodes.start("us", metrics=None)  # the default: on the gRPC host
    address = await metrics_address(node)
    assert address == node.metrics_address
    assert address.startswith("127.0.0.1:"), "by default metrics are on the gRPC host"
    async with await plexus.Client.connect(node.address) as client:
        await client.create_queue("billing", ["orders/safe/>"])
        async with client.subscribe("orders/direct/*") as subscription:
            for n in range(5):
                await client.publish(f"orders/direct/{n}", b"d")
            for n in range(3):
                await client.publish(f"orders/safe/{n}", b"g", guaranteed=True)
            await client.flush()
            got = 0
            async for _event in subscription:
                got += 1
                if got == 5:
                    break
        async with client.consume("billing") as consumer:
            acked = 0
            async for delivery in consumer:
                await delivery.ack()
                acked += 1
                if acked == 3:
                    break
        with pytest.raises(NotFound):
            await client.describe_queue("nope")

    expected = {
        ("plexus_events_in_total", (("mode", "direct"),)): 5,
        ("plexus_events_in_total", (("mode", "guaranteed"),)): 3,
        ("plexus_events_out_total", (("mode", "direct"),)): 5,
        ("plexus_events_out_total", (("mode", "guaranteed"),)): 3,
        ("plexus_queue_events_in_total", (("queue", "billing"),)): 3,
        ("plexus_queue_events_acked_total", (("queue", "billing"),)): 3,
        ("plexus_queue_depth", (("queue", "billing"),)): 0,
        ("plexus_queue_depth", (("queue", "billing.dmq"),)): 0,
        ("plexus_direct_discarded_total", ()): 0,
        (
            "plexus_grpc_errors_total",
            (("method", "plexus.v1.Broker/DescribeQueue"), ("code", "NOT_FOUND")),
        ): 1,
        ("plexus_node_info", (("region", "us"), ("version", plexus.__version__))): 1,
    }

    # A scrape reads the node's loop: scrape from another thread while this loop runs.
    async def seen() -> dict[tuple[str, tuple[tuple[str, str], ...]], float | None]:
        text = await asyncio.to_thread(scrape, address)
        return {key: value(text, key[0], **dict(key[1])) for key in expected}

    async def as_expected() -> bool:
        return await seen() == expected

    # Acks are confirmed once durable: the last counters may land a moment later.
    await eventually(as_expected, 10, f"metrics {expected}")

    text = await asyncio.to_thread(scrape, address)
    assert exposition_problems(text) == []
    if PROMTOOL:  # the checker and promtool agree on the real thing
        check = promtool_check(text)
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
    assert value(text, "plexus_storage_used_bytes") > 0


async def test_no_metrics_flag_overrides_the_config_file(nodes: Nodes, tmp_path: Path):
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nmetrics = "127.0.0.1:{port}"\n')
    node = nodes.start("us", None, "--config", str(config), "--no-metrics")
    assert await metrics_address(node) == ""
    with pytest.raises(urllib.error.URLError):
        scrape(f"127.0.0.1:{port}")


async def test_metrics_flag_picks_the_address_and_a_taken_one_is_one_line(
    nodes: Nodes, tmp_path: Path
):
    port = free_port()
    first = nodes.start("us", None, "--metrics", f"127.0.0.1:{port}")
    assert await metrics_address(first) == f"127.0.0.1:{port}"
    assert value(scrape(f"127.0.0.1:{port}"), "plexus_subscriptions") == 0
    result = run_node(
        "--name", "eu", "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "eu"),
        "--metrics", f"127.0.0.1:{port}",
    )  # fmt: skip
    assert_one_line_error(result, f"cannot serve metrics on 127.0.0.1:{port}", "in use")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--metrics", "nowhere"), "metrics: must be HOST:PORT"),
        (("--metrics", "127.0.0.1:1", "--no-metrics"), "contradict"),
        (("--log-format", "xml"), "--log-format"),
        (("--log-level", "loud"), "--log-level"),
    ],
)
def test_bad_metrics_and_log_flags_are_one_line(tmp_path: Path, flags: tuple[str, ...], says: str):
    result = run_node("--name", "us", "--listen", "127.0.0.1:0", "--data", str(tmp_path), *flags)
    assert_one_line_error(result, says)
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(180)
def test_local_cluster_status_gives_each_region_metrics_address(tmp_path: Path):
    from tests.test_local_cluster import Local

    local = Local(tmp_path / "state")
    try:
        local.run("up")
        regions = local.status()["regions"]
        leaders = 0
        for region in regions:
            text = scrape(region["metrics"])
            info = value(
                text, "plexus_node_info", region=region["name"], version=plexus.__version__
            )
            assert info == 1
            peers = {"us", "eu", "ap"} - {region["name"]}
            for peer in peers:
                assert value(text, "plexus_link_state", peer=peer, state="up") == 1
                assert value(text, "plexus_link_spool_depth", peer=peer) == 0
            role = {r: value(text, "plexus_raft_role", role=r) for r in ("leader", "follower")}
            assert None not in role.values(), "every region reports its Raft role"
            leaders += role["leader"] or 0
            assert exposition_problems(text) == []
        assert leaders <= 1  # (an election may be under way at a scrape)
        # The record keeps the addresses: a restarted cluster serves them again.
        local.run("down")
        local.run("up")
        assert [r["metrics"] for r in local.status()["regions"]] == [r["metrics"] for r in regions]
        assert value(scrape(regions[0]["metrics"]), "plexus_subscriptions") == 0
    finally:
        local.close()
        assert not local.processes(), "nodes left running"


GOOD_EXPOSITION = """\
# HELP plexus_events_total Events.
# TYPE plexus_events_total counter
plexus_events_total{kind="direct"} 3
plexus_events_total{kind="guaranteed"} 1
# HELP plexus_latency_seconds Latency.
# TYPE plexus_latency_seconds histogram
plexus_latency_seconds_bucket{le="0.1"} 1
plexus_latency_seconds_bucket{le="+Inf"} 2
plexus_latency_seconds_sum 0.3
plexus_latency_seconds_count 2
# HELP plexus_queue_depth Depth.
# TYPE plexus_queue_depth gauge
plexus_queue_depth{queue="a"} 0
"""


def _gauge(name: str, labels: str = "", help_text: str = "Some help.") -> str:
    help_line = f"# HELP {name} {help_text}\n" if help_text else ""
    return f"{help_line}# TYPE {name} gauge\n{name}{labels} 1\n"


BAD_EXPOSITIONS = {
    "no help text": _gauge("plexus_depth", help_text=""),
    'counter metrics should have "_total" suffix': (
        "# HELP plexus_events Events.\n# TYPE plexus_events counter\nplexus_events 1\n"
    ),
    'non-counter metrics should not have "_total" suffix': _gauge("plexus_events_total"),
    '"_bucket" suffix': _gauge("plexus_x_bucket"),
    '"_count"': _gauge("plexus_x_count"),
    '"le" label': _gauge("plexus_x", '{le="1"}'),
    '"quantile" label': _gauge("plexus_x", '{quantile="0.5"}'),
    "should not include type 'gauge'": _gauge("plexus_depth_gauge"),
    "should not contain ':'": _gauge("plexus:depth"),
    "metric names should be written in 'snake_case'": _gauge("plexus_queueDepth"),
    "label names should be written in 'snake_case'": _gauge("plexus_depth", '{queueName="a"}'),
    'use base unit "seconds" instead of "milliseconds"': _gauge("plexus_age_milliseconds"),
    'use base unit "bytes" instead of "kibibytes"': _gauge("plexus_spool_kibibytes"),
    "abbreviated units": _gauge("plexus_age_ms"),
    "second HELP line": _gauge("plexus_depth") + "# HELP plexus_depth Again.\n",
    "does not parse": _gauge("plexus_depth") + "plexus_depth{x=1} 2\n",
}
# What a Prometheus server's scrape refuses though promtool 2.42 lets it pass.
BAD_FOR_A_SCRAPE = {
    "not together": _gauge("plexus_depth") + _gauge("plexus_used") + 'plexus_depth{x="1"} 2\n',
    "twice": _gauge("plexus_depth") + "plexus_depth 2\n",
}


def test_the_exposition_checker_passes_good_text_and_names_each_problem_promtool_finds() -> None:
    assert exposition_problems(GOOD_EXPOSITION) == []
    if PROMTOOL:
        assert promtool_check(GOOD_EXPOSITION).returncode == 0
    for problem, text in BAD_EXPOSITIONS.items():
        found = exposition_problems(text)
        assert any(problem in p for p in found), (problem, found)
        if PROMTOOL:  # promtool, where installed, refuses the same text
            check = promtool_check(text)
            assert check.returncode != 0 or check.stdout.strip(), (problem, text)
    for problem, text in BAD_FOR_A_SCRAPE.items():
        found = exposition_problems(text)
        assert any(problem in p for p in found), (problem, found)


async def test_a_subscription_refused_inside_the_subscriptions_stream_counts_as_an_error(
    inproc_nodes: InProcessNodes,
):
    node = await inproc_nodes.start("us", metrics=None, max_subscriptions_per_client=1)
    address = await metrics_address(node)
    async with await plexus.Client.connect(node.address) as client, client.subscribe("a/1"):
        with pytest.raises(LimitReached):
            await client.subscribe("a/2").ready()
    key = ("plexus_grpc_errors_total", "plexus.v1.Broker/Subscriptions", "RESOURCE_EXHAUSTED")

    async def counted() -> bool:
        text = await asyncio.to_thread(scrape, address)
        return value(text, key[0], method=key[1], code=key[2]) == 1

    await eventually(counted, 10, f"{key} at 1")
