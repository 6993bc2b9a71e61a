"""HTTP publish rate (issue 13): `POST /v1/events/{topic}` with httpx keep-alive.

A node with its HTTP front door runs in a child process (this script with
`--serve`), its data in a temporary directory, a queue subscribed to the
benchmark's topics so guaranteed events are stored (and the queue purged
between runs). Clients send from keep-alive connections at once (one request
in flight on each, as HTTP/1.1 allows), spread over client processes, direct
and guaranteed; one row per run: events per second, the median and p99 time of
one request, and the node's CPU use (100 % = one core: the node has one event
loop). One Python client process cannot load the node, so the same runs follow
with `curl --parallel` (Debian's curl), the node's own rate.

    .venv/bin/python benchmarks/bench_http.py [--seconds 5] [--payload 100]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_seconds  # noqa: E402

QUEUE = "bench-http"
# (connections, client processes): one Python client process tops out near 1,000
# requests/s (the node's CPU column shows when the clients, not the node, are the limit).
RUNS = ((1, 1), (16, 1), (16, 2))
# Requests per curl run.
CURL_EVENTS = 10_000
# Time for the client processes to start and connect before the clock starts.
STARTUP_S = 3.0
TOPIC = "bench/http"


async def _serve(data: Path) -> None:
    """The child: a node on 127.0.0.1:0, its HTTP front door, both addresses on stdout."""
    from node.config import METRICS_OFF, NodeConfig
    from node.server import Node

    config = NodeConfig(
        name="us", listen="127.0.0.1:0", http="127.0.0.1:0", data=data, metrics=METRICS_OFF
    )
    async with Node(config) as node:
        print(node.address, node.http_address, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed


async def _send(
    url: str, health: str, connections: int, start_at: float, seconds: float, payload: bytes
) -> list[float]:
    """One client process: `connections` keep-alive connections posting from `start_at`
    (wall clock, shared by every process) for `seconds`; the time of each request."""
    took: list[float] = []

    async def sender() -> None:
        # A client per connection: one shared pool serialises its connections on its lock.
        async with httpx.AsyncClient(timeout=30) as http:
            await http.get(health)  # connected before the clock starts
            await asyncio.sleep(max(0.0, start_at - time.time()))
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await http.post(url, content=payload)
                took.append(time.perf_counter() - started)
                if response.status_code not in (200, 202):
                    raise SystemExit(f"publish refused: {response.status_code} {response.text}")

    async with asyncio.TaskGroup() as tasks:
        for _ in range(connections):
            tasks.create_task(sender())
    return took


def _client_process(*args: Any) -> list[float]:
    return asyncio.run(_send(*args))


def _run(
    base: str,
    guaranteed: bool,
    connections: int,
    processes: int,
    seconds: float,
    payload: bytes,
    node_pid: int,
) -> dict[str, float]:
    url = f"{base}/v1/events/{TOPIC}" + ("?guaranteed=true" if guaranteed else "")
    start_at = time.time() + STARTUP_S
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = [
            pool.submit(
                _client_process, url, f"{base}/v1/health", share, start_at, seconds, payload
            )
            for share in shares
            if share
        ]
        time.sleep(max(0.0, start_at - time.time()))
        node_cpu = cpu_seconds(node_pid)
        took = sorted(t for run in runs for t in run.result())
    node_cpu = cpu_seconds(node_pid) - node_cpu
    return {
        "rate": len(took) / seconds,
        "p50_ms": statistics.median(took) * 1000,
        "p99_ms": took[int(len(took) * 0.99)] * 1000,
        "node_cpu_pct": node_cpu / seconds * 100,
    }


def _curl_run(base: str, guaranteed: bool, connections: int, count: int, payload: bytes) -> float:
    """Events per second posted by one `curl --parallel` (C, keep-alive): the node's own
    limit, which one Python client process does not reach."""
    url = f"{base}/v1/events/{TOPIC}" + ("?guaranteed=true" if guaranteed else "")
    with tempfile.TemporaryDirectory(prefix="plexus-bench-curl-") as tmp:
        body = Path(tmp) / "payload"
        body.write_bytes(payload)
        config = Path(tmp) / "requests"
        # `next` between requests: else curl adds each request's data to the one before.
        request = f'url = "{url}"\ndata-binary = "@{body}"\noutput = "/dev/null"\n'
        config.write_text("next\n".join([request] * count))
        started = time.monotonic()
        subprocess.run(
            [
                "curl",
                "-sS",
                "--no-progress-meter",
                "--fail",
                "-Z",
                "--parallel-max",
                str(connections),
                "-K",
                str(config),
            ],
            check=True,
        )
        return count / (time.monotonic() - started)


async def _bench(
    grpc_address: str, base: str, seconds: float, payload: bytes, node_pid: int
) -> None:
    from plexus import Client

    print(f"HTTP publish, {len(payload)}-byte payloads, {seconds:g} s per run, node at {base}")
    print(
        f"{'mode':<11} {'connections':>11} {'clients':>7} {'events/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'node CPU %':>10}"
    )
    async with await Client.connect(grpc_address) as client:
        await client.create_queue(QUEUE, [TOPIC])
        for guaranteed in (False, True):
            for connections, processes in RUNS:
                row = await asyncio.to_thread(
                    _run, base, guaranteed, connections, processes, seconds, payload, node_pid
                )
                await client.purge_queue(QUEUE)
                mode = "guaranteed" if guaranteed else "direct"
                print(
                    f"{mode:<11} {connections:>11} {processes:>7} {row['rate']:>10,.0f} "
                    f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['node_cpu_pct']:>10.0f}"
                )
        if shutil.which("curl") is None:
            print("curl rows skipped: install Debian's package curl")
            return
        print("\nthe same with curl --parallel (one curl process, C)")
        print(f"{'mode':<11} {'connections':>11} {'events/s':>10}")
        for guaranteed in (False, True):
            for connections in (1, 16):
                rate = await asyncio.to_thread(
                    _curl_run, base, guaranteed, connections, CURL_EVENTS, payload
                )
                await client.purge_queue(QUEUE)
                mode = "guaranteed" if guaranteed else "direct"
                print(f"{mode:<11} {connections:>11} {rate:>10,.0f}")


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
                _bench(
                    grpc_address,
                    f"http://{http_address}",
                    args.seconds,
                    b"x" * args.payload,
                    child.pid,
                )
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
