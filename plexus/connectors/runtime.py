"""Running one connector in the foreground: its kind's work, its reports, its stop.

The runtime is handed a connected `Client` (named after the connector, so the
node lists it) and a `stopping` event (set by SIGTERM or SIGINT). It runs a
Source's `run(ctx)`, or the sink loop for a Sink; reports the counters to the
node every second and once more at the stop (`plexus connector list`); and
logs each change of state, and each new error, as one line. On a stop it
waits up to STOP_GRACE_S for the work in hand (a write under way finishes and
is acked; a batch waiting to be retried is abandoned unacked), then cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

from plexus.client import Client
from plexus.connectors.base import ConsumeSection, Context, Sink, Stats
from plexus.connectors.config import LoadedConnector
from plexus.connectors.sink_loop import SinkLoop
from plexus.errors import PlexusError

__all__ = ["STATUS_INTERVAL_S", "run_connector", "status_of", "stop_on_signals"]

log = logging.getLogger("plexus.connectors")

STATUS_INTERVAL_S = 1.0
STOP_GRACE_S = 10.0
REPORT_TIMEOUT_S = 2.0
# The node's bound on a reported value (node/clients.py).
MAX_STATUS_VALUE_BYTES = 1024


async def run_connector(
    loaded: LoadedConnector,
    client: Client,
    stopping: asyncio.Event,
    stats: Stats | None = None,
    ready: asyncio.Event | None = None,
) -> Stats:
    """Run the connector until `stopping` is set (or its work ends), counting in `stats`
    (e.g. the one the metrics endpoint reads); its final counters. `ready` is set once
    a sink consumes its queue (events published from then on reach it), or by a source
    once what is committed from then on is captured.

    Raises what ended the work (e.g. the queue deleted, a token revoked, a file
    that cannot be opened), after the last report.
    """
    stats = stats if stats is not None else Stats()
    ready = ready if ready is not None else asyncio.Event()
    ctx = Context(loaded.name, client, stats, stopping, loaded.transform, ready)
    kind = loaded.build()
    if isinstance(kind, Sink):
        kind.stats = stats  # a sink counts what only it can tell (duplicates)
        consume = getattr(loaded.settings, "consume", None)
        if not isinstance(consume, ConsumeSection):
            raise TypeError(f"{type(kind).__name__}.settings has no [consume] section")
        work = asyncio.create_task(SinkLoop(kind, ctx, consume, ready).run())
    else:
        work = asyncio.create_task(kind.run(ctx))  # it sets `ready` once it captures
    seen = _Seen()
    reporter = asyncio.create_task(_report_every(client, loaded, stats, seen))
    try:
        await _until_done(work, stopping)
    except BaseException as exc:
        if isinstance(exc, PlexusError | OSError):
            stats.failed(exc)
        raise
    finally:
        for task in (work, reporter):  # `work` is still running only if we were cancelled
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        stats.state = "stopped"
        _log_changes(loaded.name, stats, seen)
        await _report(client, loaded.kind, stats)
    return stats


async def _until_done(work: asyncio.Task[None], stopping: asyncio.Event) -> None:
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not work.done():
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await asyncio.shield(work)
        except TimeoutError:
            log.warning("work still under way %s s after the stop: abandoned", STOP_GRACE_S)
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return
    work.result()


class _Seen:
    """What has been logged already (logs are edge-triggered)."""

    def __init__(self) -> None:
        self.state = "starting"
        self.errors = 0


async def _report_every(client: Client, loaded: LoadedConnector, stats: Stats, seen: _Seen) -> None:
    while True:
        _log_changes(loaded.name, stats, seen)
        await _report(client, loaded.kind, stats)
        await asyncio.sleep(STATUS_INTERVAL_S)


def _log_changes(name: str, stats: Stats, seen: _Seen) -> None:
    if stats.errors != seen.errors:
        more = stats.errors - seen.errors
        extra = f" (and {more - 1} more since the last line)" if more > 1 else ""
        log.error("%s: %s%s", name, stats.last_error, extra)
        seen.errors = stats.errors
    if stats.state != seen.state:
        log.info("%s: %s", name, stats.state)
        seen.state = stats.state


async def _report(client: Client, kind: str, stats: Stats) -> None:
    try:
        await client.report_status(status_of(kind, stats), timeout=REPORT_TIMEOUT_S)
    except PlexusError as exc:  # reconnecting, or the node is gone: the next report tells
        log.debug("status report failed: %s", exc)


def status_of(kind: str, stats: Stats) -> dict[str, str]:
    """The counters as the node keeps them (`plexus connector list` reads them back)."""
    last_error = stats.last_error.encode()[:MAX_STATUS_VALUE_BYTES].decode(errors="ignore")
    return {
        "kind": kind,
        "state": stats.state,
        "events_in": str(stats.events_in),
        "events_out": str(stats.events_out),
        "lag_ms": str(round(stats.lag_s * 1000)),
        "retries": str(stats.retries),
        "errors": str(stats.errors),
        "dead_lettered": str(stats.dead_lettered),
        "duplicates": str(stats.duplicates),
        "position": stats.position[:200],
        "last_error": last_error,
    }


@contextlib.contextmanager
def stop_on_signals(stopping: asyncio.Event) -> Iterator[None]:
    """While open, SIGTERM and SIGINT set `stopping` (a clean stop) instead of killing."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
