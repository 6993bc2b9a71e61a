"""`plexus sub`: print direct events matching a pattern as they arrive."""

from __future__ import annotations

import sys
import time

import click

from plexus.cli.options import connect_streaming, run, server_option
from plexus.errors import PlexusError

__all__ = ["sub"]


@click.command("sub")
@click.argument("pattern")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after N events.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Total seconds to wait; with --count, not getting N events in time is an error. "
    "Without it, the subscription is made again after every break of the connection.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per event.")
@click.option(
    "--buffer-events",
    type=click.IntRange(min=0),
    default=0,
    help="Events the node buffers for this subscriber before discarding (0: node default).",
)
@server_option
def sub(
    pattern: str,
    count: int | None,
    timeout: float | None,
    as_json: bool,
    buffer_events: int,
    server: str,
) -> None:
    """Print events published to topics matching PATTERN (`*` one level, `>` the rest)."""
    from plexus.topics import validate_pattern

    validate_pattern(pattern)
    run(_subscribe(server, pattern, count, timeout, as_json, buffer_events))


async def _subscribe(
    server: str,
    pattern: str,
    count: int | None,
    timeout: float | None,
    as_json: bool,
    buffer_events: int,
) -> None:
    from plexus.cli.output import EventPrinter

    printer = EventPrinter(as_json)
    received = 0
    client = await connect_streaming(server, timeout)
    async with client, client.subscribe(pattern, buffer_events=buffer_events) as subscription:
        if sys.stderr.isatty():
            sys.stderr.write(f"subscribed to {pattern} on {server}\n")
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or received < count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            events = await subscription.next_batch(remaining)
            if not events:
                break
            if count is not None and received + len(events) > count:
                events = events[: count - received]
            printer.write(events)
            received += len(events)
    if count is not None and received < count:
        if timeout is not None:
            raise PlexusError(f"received {received} of {count} events within {timeout:g} s")
        raise PlexusError(f"subscription ended after {received} of {count} events")
