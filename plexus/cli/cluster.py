"""Local clusters: `plexus up`, `down`, `status`, `region start` and the `fault` drills.

Every command works on one state directory (`--state-dir`, default
$PLEXUS_STATE_DIR, else ~/.local/state/plexus) that holds the cluster file,
the record of the node processes, and each region's data and log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from plexus.cli.script import require_extra

__all__ = ["add_commands", "fault_group", "region_group"]

F = TypeVar("F", bound=Callable[..., Any])

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

_STATES = {
    "up": ("✔", "green"),
    "running": ("✔", "green"),
    "connecting": ("…", "yellow"),
    "down": ("✖", "red"),
    "stopped": ("✖", "red"),
}


def _default_state_dir() -> str:
    from plexus.local.state import default_state_dir

    return str(default_state_dir())


def state_dir_option(func: F) -> F:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=_default_state_dir,
        show_default="$PLEXUS_STATE_DIR or ~/.local/state/plexus",
        help="Where the local cluster keeps its record, data and logs.",
    )(func)


def _state(path: Path) -> Any:
    from plexus.local.state import StateDir

    return StateDir(path)


def _timeout_option(default: float) -> Callable[[F], F]:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=default,
        show_default=True,
        metavar="SECONDS",
        help="Give up (and stop what was started) after this long.",
    )


# ------------------------------------------------------------------ up / down / status


@click.command("up")
@click.argument("config", required=False, type=click.Path(path_type=Path, dir_okay=False))
@state_dir_option
@_timeout_option(30.0)
@_json_option
def up(config: Path | None, state_dir: Path, timeout: float, as_json: bool) -> None:
    """Start a local cluster from CONFIG (a cluster file) or the default: us, eu, ap.

    Each region runs as a background node with its data and log under the state
    directory; returns once every region serves and every link is up. Run again
    on a stopped cluster, it restarts the same cluster with its data.
    """
    require_extra("server", "plexus up")
    from plexus.cli.output import print_json
    from plexus.local import ops

    state = _state(state_dir)
    if config is not None and not config.exists():
        from plexus.local.state import LocalClusterError

        raise LocalClusterError(f"{config}: file not found")
    result = ops.up(state, config, timeout)
    record = result.record
    if as_json:
        print_json(
            {
                "cluster": record.cluster,
                "state_dir": str(state.path),
                "already_up": result.already_up,
                "started": result.started,
                "ready_s": round(result.elapsed_s, 3),
                "ca": str(state.ca_cert) if state.ca_cert.exists() else None,
                "regions": [
                    {
                        "name": r.name,
                        "address": r.grpc,
                        "grpc": r.grpc,
                        "pid": r.pid,
                        "metrics": r.metrics,
                        "mqtt": r.mqtt,
                        "http": r.http,
                        "tls": r.ca is not None,
                    }
                    for r in record.regions
                ],
            }
        )
        return
    if result.already_up:
        click.echo(f"cluster {record.cluster} is already up (state: {state.path})")
    else:
        what = (
            "is up"
            if len(result.started) == len(record.regions)
            else (f"is up ({', '.join(result.started)} restarted)")
        )
        click.echo(
            f"cluster {record.cluster} {what} in {result.elapsed_s:.2f} s (state: {state.path})"
        )
    width = max(len(r.name) for r in record.regions)
    for region in record.regions:
        extra = "".join(
            f"  {key} {address}"
            for key in ("mqtt", "http", "metrics")
            if (address := getattr(region, key))
        )
        click.echo(f"  {region.name:<{width}}  {region.grpc:<21}  pid {region.pid!s:<7}{extra}")
    if record.links and not result.already_up:
        shown = ", ".join(f"{a}-{b}" for a, b in record.links)
        click.echo(f"links up: {shown}")
    if state.ca_cert.exists():
        click.echo(f"TLS on: clients verify the nodes with {state.ca_cert} (--region does)")
    first = record.regions[0].name
    click.echo(f"try: plexus sub '>' --region {first}   ·   plexus status   ·   plexus down")


@click.command("down")
@click.option("--purge", is_flag=True, help="Also delete the state: data, logs, cluster file.")
@state_dir_option
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long each node gets to stop after SIGTERM before SIGKILL.",
)
@_json_option
def down(purge: bool, state_dir: Path, grace: float, as_json: bool) -> None:
    """Stop every node of the local cluster; data stays unless --purge."""
    from plexus.cli.output import print_json
    from plexus.local import ops

    state = _state(state_dir)
    stopped = ops.down(state, purge=purge, grace_s=grace)
    if as_json:
        print_json({"stopped": stopped, "purged": purge, "state_dir": str(state.path)})
        return
    what = f"stopped {', '.join(stopped)}" if stopped else "nothing was running"
    kept = f"deleted {state.path}" if purge else f"data kept in {state.path}"
    click.echo(f"{what}; {kept}")


@click.command("status")
@state_dir_option
@_json_option
def status(state_dir: Path, as_json: bool) -> None:
    """Regions, links and their state, queues and spools of the local cluster."""
    from plexus.cli.output import print_json
    from plexus.local import ops

    view = ops.status(_state(state_dir))
    if as_json:
        print_json(view)
    else:
        print_status(view)


def print_status(view: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from plexus.cli.output import Column, print_table

    console = Console(highlight=False)
    regions = Table(title=f"cluster {view['cluster']}")
    for column in ("region", "address", "pid", "state", "mqtt", "http", "metrics"):
        regions.add_column(column)
    for r in view["regions"]:
        state = _cell(r["state"])
        if r.get("error"):
            state += f" ({_escape(r['error'])})"
        listeners = (r.get(key) or "-" for key in ("mqtt", "http", "metrics"))
        regions.add_row(r["name"], r["address"], str(r["pid"] or "-"), state, *listeners)
    console.print(regions)
    if view.get("ca"):
        console.print(f"TLS on every region, CA {_escape(view['ca'])}")
    if view["links"]:
        links = Table(title="links")
        for column in ("link", "state", "spooled"):
            links.add_column(column)
        for link in view["links"]:
            a, b = link["regions"]
            state = _cell(link["state"])
            if link["held_down"]:
                state += " (held down)"
            spool = ", ".join(f"{end}: {n}" for end, n in link["spool"].items() if n is not None)
            links.add_row(f"{a}-{b}", state, f"{link['spool_depth']} ({spool})" if spool else "-")
        console.print(links)
    if view["queues"]:  # plain text: thousands of rows print at once (see print_table)
        queues = view["queues"]
        columns = (
            Column("region"),
            Column("queue"),
            Column("depth", True),
            Column("consumers", True),
        )
        rows = ((q["region"], q["name"], str(q["depth"]), str(q["consumers"])) for q in queues)
        print_table(f"queues ({len(queues)})", columns, rows)
    else:
        console.print("no queues")


def _cell(state: str) -> str:
    symbol, colour = _STATES.get(state, ("?", "white"))
    return f"[{colour}]{symbol} {state}[/{colour}]"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# ------------------------------------------------------------------ region, fault


@click.group("region")
def region_group() -> None:
    """Regions of the local cluster."""


@region_group.command("start")
@click.argument("name")
@state_dir_option
@_timeout_option(30.0)
@_json_option
def region_start(name: str, state_dir: Path, timeout: float, as_json: bool) -> None:
    """Restart region NAME (after `plexus fault kill` or a crash) with the same command."""
    from plexus.cli.output import print_json
    from plexus.local import ops

    region, started, seconds = ops.start_region(_state(state_dir), name, timeout)
    if as_json:
        print_json(
            {
                "name": name,
                "address": region.grpc,
                "pid": region.pid,
                "metrics": region.metrics,
                "mqtt": region.mqtt,
                "http": region.http,
                "started": started,
                "ready_s": round(seconds, 3),
            }
        )
    elif started:
        click.echo(
            f"region {name} started on {region.grpc} (pid {region.pid}), "
            f"links up, in {seconds:.2f} s"
        )
    else:
        click.echo(f"region {name} is already running (pid {region.pid})")


@region_group.command("add")
@click.argument("name")
@click.option("--link", "links", multiple=True, metavar="REGION", help="Link it to REGION.")
@state_dir_option
@_timeout_option(30.0)
@_json_option
def region_add(
    name: str, links: tuple[str, ...], state_dir: Path, timeout: float, as_json: bool
) -> None:
    """Start a new local region NAME and join it to the running cluster, live."""
    from plexus.cli.output import print_json
    from plexus.local import membership

    region, seconds = membership.add_region(_state(state_dir), name, list(links), timeout)
    if as_json:
        print_json(
            {
                "name": name,
                "address": region.grpc,
                "raft": region.raft,
                "pid": region.pid,
                "metrics": region.metrics,
                "mqtt": region.mqtt,
                "http": region.http,
                "links": list(links),
                "ready_s": round(seconds, 3),
            }
        )
    else:
        linked = f", linked to {', '.join(links)}" if links else ""
        click.echo(f"region {name} joined on {region.grpc}{linked}, links up, in {seconds:.2f} s")


@region_group.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Do not wait for its spools to drain.")
@state_dir_option
def region_remove(name: str, force: bool, state_dir: Path) -> None:
    """Remove region NAME live: it drains its spools and stops, then leaves the cluster."""
    from plexus.local import membership

    view = membership.remove_region(_state(state_dir), name, force)
    left = ", ".join(r["name"] for r in view["regions"])
    click.echo(f"region {name} removed; regions now: {left}")


@click.group("fault")
def fault_group() -> None:
    """Drills on the local cluster: kill a region, cut and heal a link."""


@fault_group.command("kill")
@click.argument("region")
@state_dir_option
def fault_kill(region: str, state_dir: Path) -> None:
    """kill -9 the node of REGION (`plexus region start REGION` brings it back)."""
    from plexus.local import ops

    pid = ops.kill_region(_state(state_dir), region)
    click.echo(f"killed region {region} (pid {pid}); 'plexus region start {region}' restarts it")


@fault_group.command("cut")
@click.argument("a")
@click.argument("b")
@state_dir_option
def fault_cut(a: str, b: str, state_dir: Path) -> None:
    """Take the link between regions A and B down (held down at A until `fault heal`)."""
    from plexus.local import ops

    ops.cut_link(_state(state_dir), a, b)
    click.echo(f"link {a}-{b} cut (held down at {a}); 'plexus fault heal {a} {b}' brings it back")


@fault_group.command("heal")
@click.argument("a")
@click.argument("b")
@state_dir_option
@_timeout_option(10.0)
def fault_heal(a: str, b: str, state_dir: Path, timeout: float) -> None:
    """Let the link between regions A and B come back up after `fault cut A B`."""
    from plexus.local import ops

    if ops.heal_link(_state(state_dir), a, b, timeout):
        click.echo(f"link {a}-{b} is up")
    else:
        click.echo(f"link {a}-{b} released, not up yet (see 'plexus status')")


def add_commands(cli: click.Group) -> None:
    """Register the local-cluster commands on the `plexus` group."""
    for command in (up, down, status, region_group, fault_group):
        cli.add_command(command)
