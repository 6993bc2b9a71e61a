"""`python -m plexus.demo` (`make demo`): a node, direct pub/sub, guaranteed delivery.

Starts a node in a temporary directory on a free loopback port, walks through
direct publish/subscribe and guaranteed delivery through a queue with the SDK,
and stops the node again, even when something fails.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

from plexus.client import Client

NODE_START_TIMEOUT_S = 10.0
NODE_STOP_TIMEOUT_S = 5.0

console = Console(highlight=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoNode:
    """A node process in a temporary data directory, stopped on exit."""

    def __init__(self, data_dir: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = data_dir / "node.log"
        self.data_dir = data_dir / "us"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DemoNode:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node", "run", "--name", "us",
                 "--listen", self.address, "--data", str(self.data_dir)],
                stdout=subprocess.PIPE,
                stderr=log,
            )  # fmt: skip
        ready = threading.Event()

        def watch() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if b"listening on" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"the node did not start:\n{tail}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(NODE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def direct_pub_sub(client: Client) -> None:
    console.rule("[bold]1. Direct events: at-most-once, memory only, lowest latency")
    console.print("subscribing to [cyan]orders/>[/cyan] (matches every topic under orders/)")
    async with client.subscribe("orders/>") as sub:  # returns once the subscription is live
        topics = ["orders/us/created", "orders/eu/created", "payments/us/settled"]
        for i, topic in enumerate(topics):
            await client.publish(topic, f'{{"order": {i}}}')
            console.print(f"  published  [cyan]{topic}[/cyan]")
        await client.flush()
        for _ in range(2):
            event = await asyncio.wait_for(sub.__anext__(), 5.0)
            console.print(
                f"  [green]received[/green]   [cyan]{event.topic}[/cyan] "
                f"{event.payload.decode()}  (id {event.id}, region {event.origin_region})"
            )
        console.print("  payments/us/settled did not match orders/> and was not delivered")


async def guaranteed_delivery(client: Client) -> None:
    console.rule("[bold]2. Guaranteed events: durable in a queue, acked by the consumer")
    await client.create_queue("billing", ["orders/>"], max_deliveries=5)
    console.print("created queue [magenta]billing[/magenta] subscribed to [cyan]orders/>[/cyan]")
    for i in range(5):
        event_id = await client.publish(f"orders/us/{i}", f"invoice {i}", guaranteed=True)
        console.print(f"  published  orders/us/{i}, durable on disk as event {event_id}")
    depth = (await client.describe_queue("billing")).depth
    console.print(f"queue [magenta]billing[/magenta] holds {depth} events")
    async with client.consume("billing", prefetch=10) as consumer:
        for _ in range(5):
            delivery = await asyncio.wait_for(consumer.__anext__(), 5.0)
            await delivery.ack()
            console.print(
                f"  [green]consumed[/green]   {delivery.topic} {delivery.payload.decode()!r} "
                f"(delivery {delivery.delivery_count}), ack confirmed durable"
            )
    info = await client.describe_queue("billing")
    console.print(f"queue [magenta]billing[/magenta]: depth {info.depth}, {info.events_out} out")


async def tour(address: str) -> None:
    async with await Client.connect(address) as client:
        node = await client.node_info()
        console.print(f"node [bold]{node.region}[/bold] {node.version} serving on {address}")
        await direct_pub_sub(client)
        await guaranteed_delivery(client)


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plexus-demo-") as tmp:
        console.print("[bold]Plexus demo[/bold]: starting a node in a temporary directory")
        try:
            with DemoNode(Path(tmp)) as node:
                asyncio.run(tour(node.address))
        except Exception as exc:
            console.print(f"[red]demo failed:[/red] {exc}")
            return 1
    console.rule()
    console.print(f"node stopped; demo done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
