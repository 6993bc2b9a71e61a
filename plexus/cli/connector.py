"""`plexus connector`: run a connector in the foreground, list the connectors of a node."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from plexus.cli.options import (
    SERVER_ENV,
    SERVER_GIVEN_META,
    command_token,
    connect,
    connect_streaming,
    run,
    server_option,
)
from plexus.errors import PlexusError

if TYPE_CHECKING:
    from plexus.client.info import ClientInfo

__all__ = ["connector_group"]

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0


@click.group("connector")
def connector_group() -> None:
    """Run connectors (sources and sinks at the edge of a region) and list them."""


def _metrics_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """HOST:PORT, or a bare PORT on loopback."""
    if value is None:
        return None
    from plexus.client.channel import parse_address

    address = f"{LOOPBACK}:{value}" if value.isdigit() else value
    try:
        parse_address(address)
    except PlexusError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return address


@connector_group.command("run")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    default=None,
    callback=_metrics_address,
    help="Serve the connector's Prometheus metrics here (a bare PORT: on loopback). Default: none.",
)
@click.option(
    "--metrics-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Serve metrics over HTTPS with this certificate (PEM; with --metrics-key).",
)
@click.option(
    "--metrics-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The private key (PEM) of --metrics-cert.",
)
@server_option
def run_(
    file: Path,
    metrics: str | None,
    metrics_cert: Path | None,
    metrics_key: Path | None,
    server: str,
) -> None:
    """Run the connector FILE.toml in the foreground until SIGTERM or Ctrl-C.

    It connects to its region's node (--region of the local cluster, or
    --server), creates its queue if it is a sink, and reports its counters to
    the node every second: `plexus connector list` shows them. One line says
    it started; changes of state and errors follow on stderr, one line each.
    """
    from plexus.cli.script import require_extra

    require_extra("connectors", "plexus connector run")
    from plexus.connectors.config import load

    if (metrics_cert is None) != (metrics_key is None):
        raise click.UsageError("give --metrics-cert and --metrics-key together")
    if metrics_cert is not None and metrics is None:
        raise click.UsageError("--metrics-cert needs --metrics HOST:PORT")
    loaded = load(file)  # a bad file fails here, before any connection
    _log_to_stderr()
    https = (metrics_cert, metrics_key) if metrics_cert and metrics_key else None
    run(_run(loaded, server, metrics, https))


async def _run(
    loaded: Any, server: str, metrics: str | None, https: tuple[Path, Path] | None
) -> None:
    from plexus.connectors.base import Stats
    from plexus.connectors.metrics import ConnectorCollector, MetricsEndpoint
    from plexus.connectors.runtime import run_connector, stop_on_signals

    stopping = asyncio.Event()
    with stop_on_signals(stopping):
        # Reconnects for as long as it runs: a node restart is ridden through.
        client = await connect_streaming(server, None, name=loaded.name)
        endpoint = MetricsEndpoint(metrics, https) if metrics else None
        stats = Stats()
        try:
            node = await client.node_info()
            line = f"connector {loaded.name} ({loaded.kind}) running in region {node.region}"
            line += f" at {client.address}"
            if endpoint is not None:
                bound = endpoint.start(ConnectorCollector(loaded.name, loaded.kind, stats))
                line += f", metrics on {endpoint.scheme}://{bound}/metrics"
            ready = asyncio.Event()
            work = asyncio.create_task(run_connector(loaded, client, stopping, stats, ready))
            # Said once a sink consumes its queue: events published from then on reach it.
            waiting = asyncio.ensure_future(ready.wait())
            try:
                await asyncio.wait({work, waiting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            if ready.is_set():
                click.echo(line)
                sys.stdout.flush()
            await work
        finally:
            await client.close()
            if endpoint is not None:
                await asyncio.to_thread(endpoint.stop)


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("plexus.connectors")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


# ------------------------------------------------------------------ list

COLUMNS = (
    ("connector", False),
    ("region", False),
    ("kind", False),
    ("state", False),
    ("in", True),
    ("out", True),
    ("lag", True),
    ("retries", True),
    ("errors", True),
    ("last error", False),
)
COUNTERS = ("events_in", "events_out", "lag_ms", "retries", "errors", "dead_lettered", "duplicates")


@connector_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_option
def list_(as_json: bool, server: str) -> None:
    """List the connectors connected to a node (--region or --server), or to every
    region of the local cluster when given neither: their state and counters."""
    ctx = click.get_current_context()
    given = ctx.meta.get(SERVER_GIVEN_META) or bool(os.environ.get(SERVER_ENV))
    rows = run(_one_node(server) if given else _local_cluster())
    if as_json:
        from plexus.cli.output import print_json

        print_json(rows)
    else:
        _print(rows)


async def _one_node(server: str) -> list[dict[str, Any]]:
    async with await connect(server) as client:
        region = (await client.node_info()).region
        return _connectors(region, await client.clients())


async def _local_cluster() -> list[dict[str, Any]]:
    from plexus.client import Client
    from plexus.local.state import StateDir, default_state_dir

    record = StateDir(default_state_dir()).load()
    token = command_token() or record.client_token()

    async def ask(region: Any) -> list[dict[str, Any]]:
        try:
            async with await Client.connect(
                region.grpc, timeout=CONNECT_TIMEOUT_S, ca=region.ca, token=token
            ) as client:
                return _connectors(region.name, await client.clients())
        except PlexusError as exc:  # the others are still worth listing
            sys.stderr.write(f"region {region.name}: {' '.join(str(exc).split())}\n")
            return []

    found = await asyncio.gather(*(ask(r) for r in record.regions))
    return [row for rows in found for row in rows]


def _connectors(region: str, clients: list[ClientInfo]) -> list[dict[str, Any]]:
    """The clients that reported a kind: connectors."""
    rows = []
    for c in clients:
        status = c.status
        if "kind" not in status:
            continue
        row: dict[str, Any] = {
            "name": c.name,
            "region": region,
            "kind": status["kind"],
            "state": status.get("state", ""),
        }
        for counter in COUNTERS:
            value = status.get(counter, "0")
            row[counter] = int(value) if value.isdigit() else 0
        row["position"] = status.get("position", "")
        row["last_error"] = status.get("last_error", "")
        row["client_id"] = c.id
        row["peer"] = c.peer
        rows.append(row)
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    from plexus.cli.output import Column, age, print_table

    columns = [Column(name, right) for name, right in COLUMNS]
    table = (
        (
            r["name"] or "-",
            r["region"],
            r["kind"],
            r["state"],
            str(r["events_in"]),
            str(r["events_out"]),
            age(r["lag_ms"]),
            str(r["retries"]),
            str(r["errors"]),
            _cut(r["last_error"]) or "-",
        )
        for r in rows
    )
    count = len(rows)
    print_table(f"{count} connector{'s' if count != 1 else ''}", columns, table)


def _cut(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
