"""The node's guaranteed path in one process, without gRPC (issue 14).

Publish (SDK-shaped requests: 1,000 events of 100 bytes, a producer and
sequences, so de-duplication is on) -> synced commit -> queue -> delivery ->
ack -> synced commit, through the node's own `Publisher`, `QueueTable`,
`Commits` and LMDB spool, with an in-process consumer that acks every frame
it is handed. What it prints is the process's CPU time per event (every
thread: event loop, spool writer, window reads), the node's own cost per
event with no transport: on a shared machine that moves less than wall rates.

    .venv/bin/python benchmarks/bench_guaranteed_path.py [EVENTS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from node.commits import Commits
from node.config import NodeConfig
from node.direct import DirectRouter
from node.publishing import Dedup, Publisher
from node.queues import Consumer, QueueTable
from plexus.v1 import plexus_pb2 as pb
from storage.dedup import DedupLog
from storage.environment import Environment
from storage.spool import Spool

EVENTS = 200_000
BATCH = 1_000
# Requests in flight, as a publish stream allows before it waits for commits.
PENDING_BATCHES = 8
CREDITS = 4_096
TOPIC = "bench/g/x"


def requests(events: int) -> list[bytes]:
    """Encoded PublishRequests as the SDK sends guaranteed events."""
    producer = os.urandom(16)
    out = []
    for first in range(0, events, BATCH):
        request = pb.PublishRequest(producer=producer)
        for i in range(BATCH):
            request.events.add(topic=TOPIC, payload=b"x" * 100, mode=pb.GUARANTEED)
            request.sequences.append(first + i + 1)
        out.append(request.SerializeToString())
    return out


def delivery_tag(frame: bytes, queue_field: bytes) -> int:
    """The tag the node framed after the queue's name (a varint)."""
    at = frame.rfind(queue_field) + len(queue_field) + 2
    value = shift = 0
    while True:
        byte = frame[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7


async def run(events: int, data: Path) -> tuple[float, float]:
    """(events/s, CPU µs per event) of `events` through the path."""
    raws = requests(events)
    loop = asyncio.get_running_loop()
    env = Environment(data)
    commits = Commits(env, loop)
    commits.start()
    try:
        spool = Spool(env)
        config = NodeConfig(name="bench", data=data)
        queues = QueueTable(spool, commits, config)
        queues.recover(spool.last_seq())
        limits = pb.QueueLimits(max_depth=events * 2)
        queue = await queues.create(
            pb.QueueConfig(name="q", subscriptions=["bench/g/>"], limits=limits)
        )
        dedup = Dedup.open(DedupLog(env), config.dedup_window_events, config.dedup_window_s)
        publisher = Publisher(
            "bench", DirectRouter(), queues, spool, commits, config.max_payload_bytes, dedup
        )
        consumer = Consumer()
        queues.bind(queue, consumer, CREDITS)

        async def consume() -> None:
            confirmed = 0
            while confirmed < events:
                await consumer.wake.wait()
                consumer.wake.clear()
                if consumer.outbox:
                    frames, consumer.outbox = consumer.outbox, []
                    tags = [delivery_tag(f, queue.queue_field) for f in frames]
                    queues.ack(queue, consumer, tags)
                    queues.grant(queue, consumer, len(tags))
                confirmed += len(consumer.confirmed)
                consumer.confirmed = []

        def refused(acks: list[pb.PublishAck]) -> None:
            if any(ack.HasField("error") for ack in acks):
                raise RuntimeError(f"a publish was refused: {acks}")

        cpu, wall = time.process_time(), time.perf_counter()
        consuming = asyncio.create_task(consume())
        in_flight: set[asyncio.Future[None]] = set()
        for index, raw in enumerate(raws):
            while len(in_flight) >= PENDING_BATCHES:
                _done, in_flight = await asyncio.wait(in_flight, return_when="FIRST_COMPLETED")
            done_future = publisher.publish(
                pb.PublishRequest.FromString(raw), raw, index * BATCH, refused
            )
            if done_future is not None:
                in_flight.add(done_future)
            await asyncio.sleep(0)
        await consuming
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        commits.stop()
        env.close()
    return events / wall, cpu / events * 1e6


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else EVENTS
    with tempfile.TemporaryDirectory(prefix="bench-path-") as tmp:
        rate, cpu_us = asyncio.run(run(events, Path(tmp) / "data"))
    print(
        f"guaranteed path in one process: {rate:,.0f} events/s, {cpu_us:.2f} µs CPU per event "
        f"(1-minute load {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
