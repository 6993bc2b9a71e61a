"""HTTP publish rate (issue 13): `POST /v1/events/{topic}` with httpx keep-alive.

A node with its HTTP front door runs in a child process (this script with
`--serve`), its data in a temporary directory, a queue subscribed to the
benchmark's topics so guaranteed events are stored (and the queue purged
between runs). The client sends from CONNECTIONS keep-alive connections at once
(one request in flight on each, as HTTP/1.1 allows), direct and guaranteed,
and prints one row per run: events per second and the median and p99 time of
one request.

    .venv/bin/python benchmarks/bench_http.py [--seconds 5] [--payload 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUEUE = "bench-http"
TOPIC = "bench/http"


async def _serve(data: Path) -> None:
    """The child: a node on 127.0.0.1:0, its HTTP front door, both addresses on stdout."""
    from node.config import METRICS_OFF, NodeConfig
    from node.http_api import HttpFrontDoor
    from node.server import Node

    node = Node(NodeConfig(name="us", listen="127.0.0.1:0", data=data, metrics=METRICS_OFF))
    await node.start()
    assert node.gateway is not None
    door = HttpFrontDoor(node.gateway, "127.0.0.1:0", None, "us")
    address = await door.start()
    print(node.address, address, flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
    finally:
        await door.stop()
        await node.stop()


async def _run(
    base: str, guaranteed: bool, connections: int, seconds: float, payload: bytes
) -> dict[str, float]:
    url = f"{base}/v1/events/{TOPIC}" + ("?guaranteed=true" if guaranteed else "")
    took: list[float] = []

    async def sender() -> None:
        # A client per connection: one shared pool serialises its connections on its lock.
        async with httpx.AsyncClient(timeout=30) as http:
            await http.get(f"{base}/v1/health")  # connected before the clock starts
            await ready.wait()
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await http.post(url, content=payload)
                took.append(time.perf_counter() - started)
                if response.status_code not in (200, 202):
                    raise SystemExit(f"publish refused: {response.status_code} {response.text}")

    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(connections):
            tasks.create_task(sender())
        await asyncio.sleep(0.5)  # let every sender connect
        deadline = time.monotonic() + seconds
        started = time.monotonic()
        ready.set()
    elapsed = time.monotonic() - started
    took.sort()
    return {
        "rate": len(took) / elapsed,
        "p50_ms": statistics.median(took) * 1000,
        "p99_ms": took[int(len(took) * 0.99)] * 1000,
        "count": len(took),
    }


async def _bench(grpc_address: str, base: str, seconds: float, payload: bytes) -> None:
    from plexus import Client

    print(f"HTTP publish, {len(payload)}-byte payloads, {seconds:g} s per run, node at {base}")
    print(f"{'mode':<11} {'connections':>11} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    async with await Client.connect(grpc_address) as client:
        await client.create_queue(QUEUE, [TOPIC])
        for guaranteed in (False, True):
            for connections in (1, 16):
                row = await _run(base, guaranteed, connections, seconds, payload)
                await client.purge_queue(QUEUE)
                mode = "guaranteed" if guaranteed else "direct"
                print(
                    f"{mode:<11} {connections:>11} {row['rate']:>10,.0f} "
                    f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--payload", type=int, default=100, help="bytes per event")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    with tempfile.TemporaryDirectory(prefix="plexus-bench-http-") as data:
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", data],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            line = child.stdout.readline().split()
            if len(line) != 2:
                raise SystemExit("the node did not start (see its output above)")
            grpc_address, http_address = line
            asyncio.run(
                _bench(grpc_address, f"http://{http_address}", args.seconds, b"x" * args.payload)
            )
        finally:
            if child.stdin is not None:
                child.stdin.close()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


if __name__ == "__main__":
    main()
