"""Bounds (issue 10): buffers bounded in bytes, headers counted, per-client and per-node limits.

Each test asserts the clear error and that nothing already acknowledged was lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from plexus.errors import (
    LimitReached,
    error_from_metadata,
    error_from_status,
    status_of,
)
from plexus.v1 import plexus_pb2 as pb
from plexus.v1 import plexus_pb2_grpc as rpc
from tests.harness import Nodes

pytestmark = pytest.mark.timeout(120)

BIG_EVENT_BYTES = 256 << 10


def rss_bytes(pid: int) -> int:
    """The resident set of process `pid` (VmRSS in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def publish_stream(stub: rpc.BrokerStub, batches: list[list[pb.Event]]) -> None:
    """Publish `batches` on one stream, the last one flushed, and wait until all are processed."""
    total = sum(len(b) for b in batches)

    async def requests() -> AsyncIterator[pb.PublishRequest]:
        for i, batch in enumerate(batches):
            yield pb.PublishRequest(events=batch, flush=i == len(batches) - 1)
        await done.wait()

    done = asyncio.Event()
    async for response in stub.Publish(requests()):
        if response.processed >= total:
            done.set()
            break


# ------------------------------------------------------------------ errors


def test_limit_reached_round_trips_with_its_limit_and_value() -> None:
    err = LimitReached("max_subscriptions_per_client", 4096)
    assert err.status_code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.retriable
    assert "max_subscriptions_per_client" in str(err) and "4096" in str(err)
    status = status_of(err)
    back = error_from_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, status.message, err.reason_code, err.fields()
    )
    assert isinstance(back, LimitReached)
    assert (back.limit, back.value) == ("max_subscriptions_per_client", 4096)
    details = (("grpc-status-details-bin", status.SerializeToString()),)
    again = error_from_metadata(grpc.StatusCode.RESOURCE_EXHAUSTED, status.message, details)
    assert isinstance(again, LimitReached) and again.value == 4096


# ------------------------------------------------------------------ direct: bytes


async def test_a_subscriber_that_never_reads_keeps_the_node_rss_bounded_and_discards_counted(
    nodes: Nodes,
) -> None:
    node = nodes.start("us")
    assert node.proc is not None
    pid = node.proc.pid
    per_batch, batches = 32, 48  # 1,536 events of 256 KiB: 384 MiB offered to the subscriber
    total = per_batch * batches
    async with grpc.aio.insecure_channel(node.address) as sub_channel:
        # Asks for a million events of buffer: the node still bounds it in bytes.
        call = rpc.BrokerStub(sub_channel).Subscribe(
            pb.SubscribeRequest(pattern="big/>", buffer_events=1_000_000)
        )
        await call.initial_metadata()  # live: the node is holding it, and nobody reads
        async with grpc.aio.insecure_channel(node.address) as channel:
            stub = rpc.BrokerStub(channel)
            before = rss_bytes(pid)
            payload = b"x" * BIG_EVENT_BYTES
            event = pb.Event(topic="big/one", payload=payload)
            await publish_stream(stub, [[event] * per_batch for _ in range(batches)])
            info = await stub.GetNodeInfo(pb.NodeInfoRequest())
            after = rss_bytes(pid)
            # Unbounded, the subscriber alone would hold 384 MiB; bounded, 8 MiB plus what
            # gRPC and the allocator hold (measured: ~115 MiB here; 450 MiB unbounded).
            assert after - before < 200 << 20, (before, after)
            assert info.direct_in >= total
            assert info.discarded >= total - 200
            assert info.discarded + info.direct_out <= info.direct_in
            admin = rpc.AdminStub(channel)
            clients = (await admin.ListClients(pb.ListClientsRequest())).clients
            holder = [c for c in clients if list(c.subscriptions) == ["big/>"]]
            assert holder and holder[0].events_discarded >= total - 200
        call.cancel()
