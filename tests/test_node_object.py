"""The node as an object (node/server.py): start on port 0, report the address, stop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
import pytest

from node.server import Node, PortInUse
from plexus import Client
from plexus.errors import DataDirLocked
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.inprocess import NODE_THREADS, node_config

WAIT_S = 10.0


def node_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith(NODE_THREADS)]


async def test_port_0_reports_the_port_bound_and_the_metrics_address(tmp_path: Path) -> None:
    async with Node(node_config("us", tmp_path, metrics="127.0.0.1:0")) as node:
        host, _, port = node.address.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert node.metrics_address.startswith("127.0.0.1:")
        assert not node.metrics_address.endswith(":0")
        async with await Client.connect(node.address) as client:
            info = await client.node_info()
        assert (info.region, info.listen_address) == ("us", node.address)
        assert info.metrics_address == node.metrics_address
    assert node_threads() == []


async def test_stop_is_graceful_idempotent_and_frees_port_and_data_directory(
    tmp_path: Path,
) -> None:
    node = Node(node_config("us", tmp_path))
    await node.start()
    async with await Client.connect(node.address) as client:
        await client.create_queue("kept", ["k/>"])
        await client.publish("k/1", b"x", guaranteed=True)
    await node.stop()
    await node.stop()
    async with asyncio.timeout(WAIT_S):
        await node.wait_stopped()
    assert node_threads() == []
    # The same data directory and port serve again, with what was stored.
    again = Node(node_config("us", tmp_path, listen=node.address))
    async with again, await Client.connect(again.address) as client:
        assert (await client.describe_queue("kept")).depth == 1


async def test_a_node_that_cannot_start_closes_what_it_opened(tmp_path: Path) -> None:
    async with Node(node_config("us", tmp_path / "us")) as running:
        taken = Node(node_config("eu", tmp_path / "eu", listen=running.address))
        with pytest.raises(PortInUse, match=running.address):
            await taken.start()
        locked = Node(node_config("us", tmp_path / "us"))
        with pytest.raises(DataDirLocked, match="us"):
            await locked.start()
        await taken.stop()  # a failed node stops as a no-op
        # eu's data directory was released by the failed start.
        async with Node(node_config("eu", tmp_path / "eu")) as eu:
            assert eu.address != running.address
    assert node_threads() == []


async def test_stop_of_a_node_never_started_does_nothing(tmp_path: Path) -> None:
    node = Node(node_config("us", tmp_path))
    await node.stop()
    async with asyncio.timeout(WAIT_S):
        await node.wait_stopped()
    assert not (tmp_path / "LOCK").exists()


async def test_admin_shutdown_stops_the_node(tmp_path: Path) -> None:
    node = Node(node_config("us", tmp_path))
    await node.start()
    try:
        async with grpc.aio.insecure_channel(node.address) as channel:
            await rpc.AdminStub(channel).Shutdown(pb.ShutdownRequest(force=True), timeout=WAIT_S)
        async with asyncio.timeout(WAIT_S):
            await node.wait_stopped()
        assert node.stop_requested
        assert node_threads() == []
    finally:
        await node.stop()
