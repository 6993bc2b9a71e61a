"""The transport's floor under Plexus's latency: bare grpc.aio streams, no broker (issue 14).

The same processes and hops as a direct event takes, with nothing but gRPC in
between: a publisher process writes 100-byte messages on a bidirectional
stream to a relay process, which writes each one to a subscriber process's
server stream (two hops, as through one node); across a link, the first relay
writes each message on a stream to a second relay, which writes it to the
subscriber (three hops). Messages are raw bytes (no protobuf): 100-byte records,
paced and stamped like bench_latency's (`time.monotonic_ns()` in the first
8 bytes; CLOCK_MONOTONIC is system-wide on Linux). Each process writes what
is waiting as one message, as the SDK and the node batch what queued up
while a write was under way; at a low rate that is one record per write.

Each relay runs on uvloop when present, as the node does.

    .venv/bin/python benchmarks/bench_floor.py
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

from common import (
    PAYLOAD_BYTES,
    Workers,
    figure,
    free_port,
    percentile,
    report_errors,
    run_async_worker,
    wait_for_quiet,
)

RATES = (1_000, 5_000)
SECONDS = 3.0
WARMUP = 300
STAMP = struct.Struct("<q")
PADDING = b"x" * (PAYLOAD_BYTES - STAMP.size)
SERVICE = "floor.Relay"
PUBLISH = f"/{SERVICE}/Publish"
SUBSCRIBE = f"/{SERVICE}/Subscribe"
MIN_SLEEP_S = 0.001
QUIET_S = 5.0  # a subscriber that hears nothing for this long reports what it has


def _channel(address: str) -> Any:
    import grpc

    return grpc.aio.insecure_channel(address)


class _Outbox:
    """What waits to be written to one stream: written as one message when the stream is free,
    as the node writes whatever a subscriber's buffer holds."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.wake = asyncio.Event()

    def put(self, message: bytes) -> None:
        self.pending.append(message)
        self.wake.set()

    async def drain_to(self, write: Any) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            chunk, self.pending = b"".join(self.pending), []
            await write(chunk)


@report_errors
def relay_worker(results: Any, address: str, forward_to: str, ready: Any, done: Any) -> None:
    """Serve Publish (bidi, records in) and Subscribe (server stream, records out) on
    `address`; with `forward_to`, send everything received on to that relay instead."""
    import grpc

    async def main() -> dict[str, Any]:
        outboxes: list[_Outbox] = []
        tasks = []
        if forward_to:
            onward = _channel(forward_to).stream_stream(PUBLISH)()
            outbox = _Outbox()
            outboxes.append(outbox)
            tasks.append(asyncio.create_task(outbox.drain_to(onward.write)))

        async def publish(requests: Any, _context: Any) -> Any:
            async for message in requests:
                for box in outboxes:
                    box.put(message)
            return
            yield  # a stream handler that answers nothing

        async def subscribe(_request: bytes, context: Any) -> None:
            box = _Outbox()
            outboxes.append(box)
            await context.send_initial_metadata(())
            await box.drain_to(context.write)

        handlers = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Publish": grpc.stream_stream_rpc_method_handler(publish),
                "Subscribe": grpc.unary_stream_rpc_method_handler(subscribe),
            },
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handlers,))
        server.add_insecure_port(address)
        await server.start()
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await server.stop(0)
        return {"role": f"relay {address}"}

    results.put(run_async_worker(main()))


@report_errors
def subscriber_worker(results: Any, address: str, ready: Any, expected: int) -> None:
    async def main() -> dict[str, Any]:
        latencies: list[int] = []
        unpack = STAMP.unpack_from
        async with _channel(address) as channel:
            call = channel.unary_stream(SUBSCRIBE)(b"")
            await call.initial_metadata()
            ready.set()
            while len(latencies) < expected:
                try:
                    async with asyncio.timeout(QUIET_S):
                        message = await call.read()
                except TimeoutError:
                    break  # reported below as fewer received than sent
                now = time.monotonic_ns()
                latencies += [
                    now - unpack(message, at)[0] for at in range(0, len(message), PAYLOAD_BYTES)
                ]
            call.cancel()
        ms = [v / 1e6 for v in latencies[WARMUP:]]
        return {
            "role": "subscriber",
            "p50": percentile(ms, 50),
            "p99": percentile(ms, 99),
            "received": len(latencies),
        }

    results.put(run_async_worker(main()))


@report_errors
def publisher_worker(results: Any, address: str, rate: int, events: int, go: Any) -> None:
    """`events` records on a fixed schedule; the records due at a wake-up go as one write,
    as the SDK sends what `publish_nowait` queued since the last one."""

    async def main() -> dict[str, Any]:
        async with _channel(address) as channel:
            call = channel.stream_stream(PUBLISH)()
            await call.write(STAMP.pack(time.monotonic_ns()) + PADDING)  # the stream is open
            go.wait()
            interval_ns = 1e9 / rate
            t0 = time.monotonic_ns()
            k = 0
            while k < events:
                due = min(events, int((time.monotonic_ns() - t0) / interval_ns) + 1)
                records = []
                while k < due:
                    records.append(STAMP.pack(time.monotonic_ns()) + PADDING)
                    k += 1
                if records:
                    await call.write(b"".join(records))
                delay = (t0 + k * interval_ns - time.monotonic_ns()) / 1e9
                await asyncio.sleep(max(delay, MIN_SLEEP_S))
            await call.done_writing()
            await call.read()  # the relay read everything: closing now loses nothing
        return {"role": "publisher"}

    results.put(run_async_worker(main()))


def floor_run(hops: int, rate: int) -> dict[str, Any]:
    """p50/p99 ms of one paced stream through `hops` - 1 relays (2 or 3 hops)."""
    wait_for_quiet()
    events = WARMUP + int(rate * SECONDS)
    with Workers() as workers:
        done = workers.event()
        relays = [f"127.0.0.1:{free_port()}" for _ in range(hops - 1)]
        # Start the last relay first: the one before it dials it.
        for index in reversed(range(len(relays))):
            ready = workers.event()
            onward = relays[index + 1] if index + 1 < len(relays) else ""
            workers.start(f"relay{index}", relay_worker, relays[index], onward, ready, done)
            workers.wait(ready)
        sub_ready, go = workers.event(), workers.event()
        # The subscriber reads from the last relay, the publisher writes to the first.
        workers.start("subscriber", subscriber_worker, relays[-1], sub_ready, events + 1)
        workers.wait(sub_ready)
        workers.start("publisher", publisher_worker, relays[0], rate, events, go)
        go.set()
        results = {r["role"]: r for r in workers.collect(2, timeout=60)}
        done.set()
        workers.collect(len(relays), timeout=10)
    return results["subscriber"]


def run() -> list[dict[str, Any]]:
    rows = []
    for hops, where in ((2, "two hops (as through one node)"), (3, "three hops (across a link)")):
        for rate in RATES:
            result = floor_run(hops, rate)
            rows.append(
                figure(
                    "floor",
                    f"bare grpc.aio, {where}, {rate:,}/s, p50",
                    result["p50"],
                    "ms",
                    higher_is_better=False,
                    p99_ms=round(result["p99"], 3),
                )
            )
    return rows


if __name__ == "__main__":
    from common import fmt_number

    for row in run():
        print(f"{row['measure']:<60} {fmt_number(row['value']):>8} ms  p99 {row['p99_ms']} ms")
