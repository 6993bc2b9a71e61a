"""The `plexus` entry point: the command tree and the one place errors are printed.

A user's mistake (a usage error, or a PlexusError such as an invalid topic or an
unreachable node) prints one `error: ...` line on stderr and exits 1 (usage
errors exit 2). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from plexus import __version__
from plexus.cli.options import connect, run, server_option
from plexus.cli.script import require_extra
from plexus.errors import PlexusError

__all__ = ["cli", "main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _one_line(text: str) -> str:
    return " ".join(text.split())


class PlexusGroup(click.Group):
    """A click group whose errors are one line on stderr, never a traceback."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = ""
            if exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            _fail(f"{_one_line(_lower_first(exc.format_message()))}{hint}", EXIT_USAGE)
        except click.ClickException as exc:
            _fail(_one_line(exc.format_message()), exc.exit_code)
        except click.Abort:
            sys.exit(EXIT_INTERRUPTED)
        except PlexusError as exc:
            _fail(_one_line(str(exc)), EXIT_ERROR)
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader of our output went away (`plexus sub x | head`): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        sys.exit(code if isinstance(code, int) else 0)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


@click.group(cls=PlexusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="plexus")
def cli() -> None:
    """Plexus, an event mesh: publish, subscribe and manage queues on a node."""


@cli.group("node")
def node_group() -> None:
    """Run a broker node."""


@node_group.command(
    "run",
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def node_run(args: tuple[str, ...]) -> None:
    """Run a node: `plexus node run --help` lists its options."""
    require_extra("server", "plexus node run")
    os.execv(sys.executable, [sys.executable, "-m", "node", "run", *args])


@cli.command("info")
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(server: str, as_json: bool) -> None:
    """Show what the node says about itself."""
    from plexus.cli.output import print_json, print_node_info

    async def go() -> None:
        async with await connect(server) as client:
            node = await client.node_info()
        if as_json:
            print_json(node.to_dict())
        else:
            print_node_info(node)

    run(go())


def _register() -> None:
    from plexus.cli.cert import cert_group
    from plexus.cli.clients import clients, subscriptions
    from plexus.cli.cluster import add_commands as add_cluster_commands
    from plexus.cli.connector import connector_group
    from plexus.cli.explain import explain
    from plexus.cli.link import link_group
    from plexus.cli.publish import pub
    from plexus.cli.queue import queue_group
    from plexus.cli.subscribe import sub
    from plexus.cli.token import token_group
    from plexus.cli.top import top

    cli.add_command(pub)
    cli.add_command(sub)
    cli.add_command(queue_group)
    cli.add_command(link_group)
    cli.add_command(explain)
    cli.add_command(clients)
    cli.add_command(subscriptions)
    cli.add_command(top)
    cli.add_command(cert_group)
    cli.add_command(token_group)
    cli.add_command(connector_group)
    add_cluster_commands(cli)  # up, down, status, region, fault


_register()


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="plexus")


if __name__ == "__main__":
    main()
