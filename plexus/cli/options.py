"""Options and argument types shared by the client commands, and the async runner."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from plexus.errors import PlexusError

if TYPE_CHECKING:
    from plexus.client import Client
    from plexus.client.connection import StateChange

__all__ = [
    "DEFAULT_SERVER",
    "connect",
    "connect_streaming",
    "parse_headers",
    "run",
    "server_option",
]

DEFAULT_SERVER = "127.0.0.1:7000"
SERVER_ENV = "PLEXUS_SERVER"
CA_ENV = "PLEXUS_CA"
# Where server_option leaves the CA the command's connections verify nodes with.
CA_META = "plexus.ca"
TOKEN_ENV = "PLEXUS_TOKEN"
# Where server_option leaves the command's token (click's per-invocation metadata).
TOKEN_META = "plexus.token"
# True when the command was told where to go (--server, $PLEXUS_SERVER or --region).
SERVER_GIVEN_META = "plexus.server_given"

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _check_server(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from plexus.client.channel import parse_address

    try:
        parse_address(value)
    except PlexusError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def server_option(func: F) -> F:
    """`--server HOST:PORT` (from $PLEXUS_SERVER by default, else 127.0.0.1:7000), or
    `--region NAME`: a region of the local cluster in $PLEXUS_STATE_DIR (see `plexus up`).

    The command receives `server` either way; `--region` is resolved here, in one place.
    `--ca FILE` (or $PLEXUS_CA) connects over TLS; with `--region` the local cluster's CA
    is the default. With it comes `--token` ($PLEXUS_TOKEN); with `--region` and no token
    given, the local cluster's admin token. `connect` and `connect_streaming` use both.
    """

    @functools.wraps(func)
    def resolved(
        *args: Any, region: str | None, ca: str | None, token: str | None, **kwargs: Any
    ) -> Any:
        ctx = click.get_current_context()
        if region is not None:
            if ctx.get_parameter_source("server") is ParameterSource.COMMANDLINE:
                raise click.UsageError("give --server or --region, not both", ctx=ctx)
            from plexus.local.state import (
                StateDir,
                default_state_dir,
                resolve_region,
                resolve_region_ca,
            )

            kwargs["server"] = resolve_region(region)
            if ca is None:
                ca = resolve_region_ca(region)
            token = token or StateDir(default_state_dir()).client_token()
        ctx.meta[CA_META] = ca
        ctx.meta[TOKEN_META] = token
        source = ctx.get_parameter_source("server")
        ctx.meta[SERVER_GIVEN_META] = region is not None or source is not ParameterSource.DEFAULT
        return func(*args, **kwargs)

    with_token = click.option(
        "--token",
        envvar=TOKEN_ENV,
        default=None,
        metavar="TOKEN",
        help=f"Client token (from 'plexus token create'); default ${TOKEN_ENV}.",
    )(resolved)

    with_ca = click.option(
        "--ca",
        metavar="FILE",
        default=None,
        envvar=CA_ENV,
        show_envvar=True,
        help="The cluster CA certificate: connect over TLS, verifying the node with it "
        "(with --region: the local cluster's).",
    )(with_token)

    with_region = click.option(
        "--region",
        metavar="NAME",
        default=None,
        help="A region of the local cluster ($PLEXUS_STATE_DIR, see 'plexus up'), "
        "instead of --server.",
    )(with_ca)
    return click.option(
        "--server",
        default=lambda: os.environ.get(SERVER_ENV) or DEFAULT_SERVER,
        show_default=f"${SERVER_ENV} or {DEFAULT_SERVER}",
        callback=_check_server,
        metavar="HOST:PORT",
        help="Address of the node to talk to.",
    )(with_region)  # type: ignore[return-value]


def parse_headers(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """`--header K=V` (repeatable) into a dict; a missing `=` or key is a usage error."""
    headers: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        headers[key] = value
    return headers


def command_token() -> str | None:
    """The token of the running command (see `server_option`)."""
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().meta.get(TOKEN_META) if ctx is not None else None


async def connect(server: str, **options: Any) -> Client:
    """A client of the node at `server` with the command's token, over TLS when the
    command was given a CA."""
    from plexus.client import Client

    ca = click.get_current_context().meta.get(CA_META)
    return await Client.connect(server, ca=ca, token=command_token(), **options)


async def connect_streaming(server: str, timeout: float | None = None, **options: Any) -> Client:
    """A client for a command that streams (pub, sub, queue consume, connector run): it
    rides through a restart of its node, trying to reconnect for at most `timeout` seconds
    (None: for as long as it runs), and says on stderr when it lost and regained the node."""
    return await connect(server, max_reconnect_s=timeout, on_state=_report_state, **options)


def _report_state(change: StateChange) -> None:
    state = change.state.value
    if state == "disconnected":
        sys.stderr.write(f"lost node at {change.address} ({change.reason}): reconnecting\n")
    elif state == "reconnected":
        sys.stderr.write(f"reconnected to node at {change.address}\n")
    elif state == "closed" and change.reason != "closed by the application":
        sys.stderr.write(f"stopped reconnecting: {change.reason}\n")
    else:
        return
    sys.stderr.flush()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on a fresh event loop.

    Everything imported so far (grpc, protobuf, click) is moved out of the
    cyclic GC's reach first: full collections then stop walking it, which
    saves about a quarter of the CPU per event at high rates.
    """
    gc.freeze()
    return asyncio.run(coro)
