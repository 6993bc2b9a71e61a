"""Storage faults against real node processes: a full disk, and damaged data files at start.

The full disk is real: the node's data directory is a small tmpfs (we run as
root in the test machines; if the mount is refused the test fails saying
why), filled to the last byte by a ballast file next to the node's data.
ENOSPC from the filesystem is what a full disk is; RLIMIT_FSIZE (EFBIG) or a
fake error would test a different path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from plexus import Client
from plexus.errors import StorageFull
from storage.data_file import HELD_DATA_MARKER
from tests.harness import NodeProcess, Nodes, eventually, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DISK_BYTES = 24 << 20
BIG_PAYLOAD = b"x" * (200 << 10)


@contextlib.contextmanager
def small_disk(where: Path, size_bytes: int = DISK_BYTES) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted at `where`, unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"a full disk needs a small tmpfs (root): mount failed: {mounted.stderr.strip()}"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a ballast file until the device has not one byte left."""
    ballast = disk / "ballast"
    chunk = b"\0" * (1 << 20)
    with open(ballast, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(chunk[:size])
            except OSError:
                pass
    return ballast


async def consume_all(client: Client, queue: str, count: int) -> list[bytes]:
    got: list[bytes] = []
    async with client.consume(queue, prefetch=64) as consumer:
        async for delivery in consumer:
            got.append(delivery.payload)
            await delivery.ack()
            if len(got) == count:
                break
    return got


async def test_full_disk_refuses_guaranteed_with_storage_full_and_recovers(
    tmp_path: Path,
) -> None:
    nodes = Nodes(tmp_path)
    with small_disk(tmp_path / "us") as disk:
        try:
            node = nodes.start("us", disk, "--map-size-mb", "1")
            client = await Client.connect(node.address)
            await client.create_queue("orders", ["orders/>"])
            acked = [b"before-%d" % i for i in range(50)]
            for payload in acked:
                await client.publish("orders/1", payload, guaranteed=True, timeout=10)

            ballast = fill(disk)
            refusal: StorageFull | None = None
            for _ in range(200):  # LMDB's free pages may take a few publishes first
                try:
                    await client.publish("orders/1", BIG_PAYLOAD, guaranteed=True, timeout=10)
                except StorageFull as exc:
                    refusal = exc
                    break
            assert refusal is not None, "a publish on a full disk was never refused"
            assert refusal.path == str(disk)
            assert "free of" in refusal.detail and str(disk) in str(refusal)

            # Still serving what needs no new disk space: reads, direct events.
            assert (await client.describe_queue("orders")).depth >= len(acked)
            async with client.subscribe("news/>") as sub:
                await eventually(lambda: _subscriptions(client), 10, "the subscription to register")
                await client.publish("news/1", b"direct while full")
                async with asyncio.timeout(10):
                    event = await sub.__anext__()
            assert event.payload == b"direct while full"
            # Acks free space: they land in LMDB's free pages, or are refused and redelivered.
            consumer_acked: list[bytes] = []
            async with client.consume("orders", prefetch=16) as consumer:
                for _ in range(10):
                    async with asyncio.timeout(10):
                        delivery = await consumer.__anext__()
                    try:
                        await delivery.ack()
                    except StorageFull:
                        continue
                    consumer_acked.append(delivery.payload)
            assert set(consumer_acked) <= set(acked)
            assert node.running

            # Room again: the next publish just lands, no restart.
            ballast.unlink()
            after = await client.publish("orders/1", b"after", guaranteed=True, timeout=10)
            assert after
            await client.close()
            node.stop()

            log = node.log_path.read_text()
            assert "has room again" in log and "Traceback" not in log
            again = nodes.restart(node)
            client = await Client.connect(again.address)
            depth = (await client.describe_queue("orders")).depth
            got = await consume_all(client, "orders", depth)
            await client.close()
            kept = [p for p in acked if p not in consumer_acked]
            assert got[: len(kept)] == kept  # nothing acked by the node was lost
            assert got[-1] == b"after"
        finally:
            nodes.close()


async def _subscriptions(client: Client) -> bool:
    return (await client.node_info()).subscriptions >= 1


# --------------------------------------------------------------------------
# damaged data files at start


def start_refused(data_dir: Path) -> tuple[int, str]:
    """Run a node on `data_dir` that must refuse to start; (exit code, stderr)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "run",
            "--name",
            "us",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--data",
            str(data_dir),
            "--no-metrics",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stderr


async def node_with_data(nodes: Nodes, name: str = "us") -> tuple[NodeProcess, list[bytes]]:
    """A node that acked a few guaranteed events into a queue, then stopped cleanly."""
    node = nodes.start(name)
    payloads = [b"kept-%d" % i for i in range(20)]
    async with await Client.connect(node.address) as client:
        await client.create_queue("orders", ["orders/>"])
        for payload in payloads:
            await client.publish("orders/1", payload, guaranteed=True, timeout=10)
    assert node.stop() == 0
    return node, payloads


def assert_one_line_refusal(code: int, stderr: str, *words: str) -> None:
    assert code != 0, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    for word in words:
        assert word in errors[0], errors[0]


async def test_truncated_data_file_is_refused_naming_it_then_restore_works(
    nodes: Nodes,
) -> None:
    node, payloads = await node_with_data(nodes)
    data_file = node.data_dir / "lmdb" / "data.mdb"
    saved = data_file.read_bytes()
    with open(data_file, "r+b") as f:
        f.truncate(len(saved) // 2)
    code, stderr = start_refused(node.data_dir)
    assert_one_line_refusal(code, stderr, str(data_file), "truncated", "backup")
    data_file.write_bytes(saved)  # the documented recovery: restore the file
    again = nodes.restart(node)
    async with await Client.connect(again.address) as client:
        assert await consume_all(client, "orders", len(payloads)) == payloads


@pytest.mark.parametrize("damage", ["empty", "missing"])
async def test_empty_or_missing_data_file_in_a_directory_that_held_data_is_refused(
    nodes: Nodes, damage: str
) -> None:
    node, _ = await node_with_data(nodes)
    assert (node.data_dir / HELD_DATA_MARKER).exists()
    data_file = node.data_dir / "lmdb" / "data.mdb"
    if damage == "empty":
        data_file.write_bytes(b"")
    else:
        data_file.unlink()
    code, stderr = start_refused(node.data_dir)
    what = "is empty" if damage == "empty" else "is missing"
    assert_one_line_refusal(code, stderr, str(data_file), what, "held data")
    assert not data_file.exists() or data_file.stat().st_size == 0  # nothing written over it


@pytest.mark.parametrize("damage", ["zeroed-meta", "garbled-pages", "zeroed-pages"])
async def test_corrupt_data_file_is_refused_with_one_line(nodes: Nodes, damage: str) -> None:
    node, _ = await node_with_data(nodes)
    data_file = node.data_dir / "lmdb" / "data.mdb"
    size = data_file.stat().st_size
    with open(data_file, "r+b") as f:
        if damage == "zeroed-meta":
            f.write(b"\0" * 8192)
        else:
            f.seek(8192)
            rest = size - 8192
            f.write(os.urandom(rest) if damage == "garbled-pages" else b"\0" * rest)
    code, stderr = start_refused(node.data_dir)
    assert_one_line_refusal(code, stderr, str(data_file))
