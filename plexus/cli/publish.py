"""`plexus pub`: publish one event or many, direct or guaranteed, at a rate or flat out."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from typing import Any

import click

from plexus.cli.options import connect_streaming, parse_headers, run, server_option
from plexus.errors import InvalidArgument, PlexusError

__all__ = ["pub"]

SEQ = "{seq}"
# Events published between two looks at the loop (lets the sender write).
YIELD_EVERY_EVENTS = 1000
# Direct events printed per flush with --json.
JSON_FLUSH_EVERY_EVENTS = 10_000


@click.command("pub")
@click.argument("topic")
@click.argument("payload", required=False)
@click.option("--guaranteed", is_flag=True, help="Wait until each event is durable.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Events to publish; {seq} in the topic or payload becomes 0..N-1.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Events per second (0: as fast as possible).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=parse_headers,
    metavar="KEY=VALUE",
    help="A header (repeatable).",
)
@click.option("--ttl-ms", type=click.IntRange(min=0), default=0, help="Time to live (0: none).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per acked event.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Give up after S seconds in all (default: publish every event, riding through "
    "restarts of the node however long they take).",
)
@server_option
def pub(
    topic: str,
    payload: str | None,
    guaranteed: bool,
    count: int,
    rate: float,
    headers: dict[str, str],
    ttl_ms: int,
    as_json: bool,
    timeout: float | None,
    server: str,
) -> None:
    """Publish PAYLOAD (read from stdin when omitted) to TOPIC."""
    from plexus.client.client import MAX_PAYLOAD_BYTES
    from plexus.topics import validate_topic

    validate_topic(topic.replace(SEQ, "0"))
    if payload is None:
        data = sys.stdin.buffer.read()
    else:
        data = payload.encode("utf-8", "surrogateescape")
    if len(data.replace(SEQ.encode(), str(count - 1).encode())) > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"payload of {len(data)} bytes is over the limit of {MAX_PAYLOAD_BYTES} bytes"
        )
    started = time.perf_counter()
    acks = _Acks(guaranteed, as_json)
    published = run(
        _publish_within(timeout, acks, server, topic, data, count, rate, headers or None, ttl_ms)
    )
    if not as_json:
        elapsed = time.perf_counter() - started
        mode = "guaranteed" if guaranteed else "direct"
        noun = "event" if count == 1 else "events"
        detail = f" (id {published})" if count == 1 and guaranteed else ""
        per_s = f", {count / elapsed:,.0f}/s" if count > 1 and elapsed > 0 else ""
        click.echo(f"published {count} {mode} {noun}{detail} in {elapsed:.2f} s{per_s}")


async def _publish_within(timeout: float | None, acks: _Acks, *args: Any) -> int | None:
    try:
        async with asyncio.timeout(timeout):
            return await _publish(acks, *args)
    except TimeoutError:
        what = "acked" if acks.guaranteed else "published"
        raise PlexusError(
            f"{acks.settled} of {args[3]} events {what} within {timeout:g} s"
        ) from None


async def _publish(
    acks: _Acks,
    server: str,
    topic: str,
    data: bytes,
    count: int,
    rate: float,
    headers: dict[str, str] | None,
    ttl_ms: int,
) -> int | None:
    """Publish and return the last guaranteed event id (None for direct)."""
    guaranteed, as_json = acks.guaranteed, acks.as_json
    async with await connect_streaming(server) as client:
        try:
            topic_parts = topic.split(SEQ) if SEQ in topic else None
            data_parts = data.split(SEQ.encode()) if SEQ.encode() in data else None
            publish = client.publish_nowait
            track = guaranteed or as_json
            pending = acks.pending
            interval = 1.0 / rate if rate > 0 else 0.0
            start = time.monotonic()
            for seq in range(count):
                event_topic = str(seq).join(topic_parts) if topic_parts else topic
                event_data = str(seq).encode().join(data_parts) if data_parts else data
                fut = publish(
                    event_topic, event_data, guaranteed=guaranteed, headers=headers, ttl_ms=ttl_ms
                )
                if track:
                    pending.append((seq, event_topic, fut))
                if interval:
                    ahead = start + (seq + 1) * interval - time.monotonic()
                    if ahead > 0.0005:
                        await asyncio.sleep(ahead)
                        acks.settle(until_done=False)
                if seq % YIELD_EVERY_EVENTS == YIELD_EVERY_EVENTS - 1:
                    await asyncio.sleep(0)
                    if as_json and not guaranteed and len(pending) >= JSON_FLUSH_EVERY_EVENTS:
                        await client.flush()
                        acks.settle(until_done=True)
                    await client.drain()
                    acks.settle(until_done=False)
            await client.flush()
            if pending:
                await asyncio.wait({fut for _, _, fut in pending})
            acks.settle(until_done=True)
        except BaseException:
            acks.silence()
            raise
        lost = client.publish_stats()["direct_unconfirmed"]
        if lost:
            sys.stderr.write(f"{lost} direct events were written before a break and may be lost\n")
    return acks.last_id


class _Acks:
    """Acks of published events, checked and printed (--json) in publish order."""

    def __init__(self, guaranteed: bool, as_json: bool) -> None:
        self.guaranteed, self.as_json = guaranteed, as_json
        self.pending: deque[tuple[int, str, asyncio.Future[int | None]]] = deque()
        self.last_id: int | None = None
        self.settled = 0

    def settle(self, until_done: bool) -> None:
        """Pop acked events from the front; raise the first refusal."""
        pending, lines = self.pending, []
        while pending and (until_done or pending[0][2].done()):
            seq, topic, fut = pending.popleft()
            event_id = fut.result()
            self.settled += 1
            if self.guaranteed:
                self.last_id = event_id
            if self.as_json:
                id_text = None if event_id is None else str(event_id)
                lines.append(json.dumps({"id": id_text, "topic": topic, "seq": seq}))
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()

    def silence(self) -> None:
        """Mark every outstanding refusal as seen: the first one is reported, once."""
        for _, _, fut in self.pending:
            if fut.done():
                if not fut.cancelled():
                    fut.exception()
            else:
                fut.add_done_callback(_retrieve)
        self.pending.clear()


def _retrieve(fut: asyncio.Future[int | None]) -> None:
    if not fut.cancelled():
        fut.exception()
