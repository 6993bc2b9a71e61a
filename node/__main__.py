"""`python -m node run ...`: run one region node (what `plexus node run` execs)."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import lmdb

from node.logs import LOG_FORMATS, LOG_LEVELS, LogFormat, setup_logging
from plexus.errors import PlexusError
from storage.environment import translate_open_error

if TYPE_CHECKING:
    from federation.topology import Topology
    from node.config import NodeConfig
    from node.joining import JoinRequest

EXIT_USAGE = 2
# Young-generation collections every 50,000 net allocations instead of 700: in flight,
# queued entries outlive several hundred collections a second, each walking them (~8 %
# of a guaranteed run's CPU); the hot path makes few cycles, so little waits longer.
GC_YOUNG_THRESHOLD = 50_000


@click.group()
def cli() -> None:
    """The Plexus region node."""


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="TOML file with a [node] table.",
)
@click.option(
    "--cluster",
    "cluster_file",
    type=click.Path(path_type=Path),
    help="Cluster file (cluster-configs/): run one region of it, linked to the others.",
)
@click.option("--region", help="With --cluster: which region this node is.")
@click.option(
    "--join",
    "join_via",
    metavar="HOST:PORT",
    help="With --cluster: join it as a new region through this member's gRPC address.",
)
@click.option("--raft", metavar="HOST:PORT", help="With --join: this region's Raft address.")
@click.option(
    "--link", "links", multiple=True, metavar="REGION", help="With --join: link to this region."
)
@click.option("--name", help="Region name, e.g. us.")
@click.option("--listen", help="gRPC address HOST:PORT (port 0 picks a free one).")
@click.option("--data", type=click.Path(path_type=Path), help="Data directory.")
@click.option("--map-size-mb", type=int, help="Initial LMDB map size in MiB (grows as needed).")
@click.option("--max-payload-bytes", type=int, help="Largest payload accepted.")
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics here (port 0 picks a free one). "
    "Default: the cluster file's, else a free port on the gRPC host.",
)
@click.option("--no-metrics", is_flag=True, help="Serve no metrics.")
@click.option(
    "--mqtt",
    metavar="HOST:PORT",
    help="Serve MQTT 3.1.1 and 5.0 here (port 0 picks a free one; TLS when the node has it). "
    "Default: the cluster file's, else none.",
)
@click.option(
    "--http",
    metavar="HOST:PORT",
    help="Serve the HTTP gateway here (port 0 picks a free one; HTTPS when the node has TLS). "
    "Default: the cluster file's, else none.",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path),
    help="This node's certificate (PEM; 'plexus cert node' makes one). "
    "Default: the cluster file's [tls].",
)
@click.option("--tls-key", type=click.Path(path_type=Path), help="Its private key (PEM).")
@click.option(
    "--tls-ca",
    type=click.Path(path_type=Path),
    help="The cluster CA certificate: verifies the regions this node links to.",
)
@click.option(
    "--metrics-tls",
    is_flag=True,
    default=None,
    help="Serve metrics over HTTPS with the node's certificate (needs TLS).",
)
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Serve plaintext gRPC on an address other than loopback (without TLS, a node "
    "binds only loopback).",
)
@click.option(
    "--auth-key",
    type=click.Path(path_type=Path),
    help="Ed25519 private key (PEM) that signs and verifies client tokens "
    "(a node alone; in a cluster, the file's [auth] key). Unset: no authentication.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    envvar="PLEXUS_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(LOG_LEVELS),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    envvar="PLEXUS_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(LOG_FORMATS),
    help="text: one line per event; json: one JSON object per line.",
)
def run(
    config_file: Path | None,
    cluster_file: Path | None,
    region: str | None,
    join_via: str | None,
    raft: str | None,
    links: tuple[str, ...],
    no_metrics: bool,
    log_level: str,
    log_format: LogFormat,
    **flags: object,
) -> None:
    """Run a region node until SIGTERM or SIGINT."""
    from federation.cluster_file import load_cluster_file, region_spec
    from node.config import METRICS_OFF, load_config
    from node.joining import JoinRequest

    setup_logging(log_level, log_format)
    if no_metrics:
        if flags["metrics"] is not None:
            raise click.UsageError("--metrics and --no-metrics contradict each other")
        flags["metrics"] = METRICS_OFF
    try:
        topology = join = None
        if cluster_file is not None:
            if not region:
                raise click.UsageError("--cluster needs --region NAME")
            topology = load_cluster_file(cluster_file)
            tls = topology.tls.for_region(region) if topology.tls else {}
            if join_via:
                if not raft:
                    raise click.UsageError("--join needs --raft HOST:PORT")
                join = JoinRequest(join_via, raft, links)
                flags = {"name": region, **tls, **_given(flags)}
            else:
                spec = region_spec(topology, region)
                from_file = {
                    "listen": spec.grpc,
                    "data": spec.data,
                    "metrics": spec.metrics,
                    "mqtt": spec.mqtt,
                    "http": spec.http,
                }
                flags = {"name": region, **tls, **_given(from_file), **_given(flags)}
        elif region or join_via:
            raise click.UsageError("--region and --join need --cluster FILE")
        config = load_config(config_file, flags)
        _run(run_node(config, topology, join))
    except PlexusError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


async def run_node(
    config: NodeConfig, topology: Topology | None = None, join: JoinRequest | None = None
) -> None:
    """Run a node until SIGTERM, SIGINT, an admin Shutdown or its region's removal."""
    from node.server import Node

    node = Node(config, topology, join)
    try:
        await node.start()
    except lmdb.Error as exc:  # a damaged page found past the start-up check of the data file
        raise translate_open_error(exc, config.data) from exc
    # What start-up made lives as long as the process: frozen, a full collection no longer
    # walks it (~10 ms here, a pause every event in flight would wait for).
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    try:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.request_stop)
        scheme = "https" if config.metrics_tls else "http"
        serving = (
            f", metrics on {scheme}://{node.metrics_address}/metrics"
            if node.metrics_address
            else ""
        )
        if node.mqtt_address:
            serving += f", mqtt on {'mqtts' if config.tls else 'mqtt'}://{node.mqtt_address}"
        if node.http_address:
            serving += f", http on {'https' if config.tls else 'http'}://{node.http_address}"
        # plexus/local/launcher.py and the tests read this line: keep it as it is.
        print(f"plexus node {config.name} listening on {node.address}{serving}", flush=True)
        await node.wait_stopped()
    finally:
        await node.stop()


def _given(flags: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in flags.items() if v is not None}


def _run(main: object) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux
        asyncio.run(main)  # type: ignore[arg-type]
    else:
        uvloop.run(main)  # type: ignore[arg-type]


def main() -> None:
    """Bad flags are one `error: ...` line on stderr (exit 2), never a usage screen."""
    try:
        cli.main(prog_name="python -m node", standalone_mode=False)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"error: {' '.join(exc.format_message().split())}{where}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)


if __name__ == "__main__":
    main()
