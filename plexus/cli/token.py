"""`plexus token create|revoke|list`: client tokens, signed by the cluster.

Without --server or --region, the commands go to the local cluster of
`plexus up` when there is one (with its admin token). `create --key FILE`
signs offline with the key file and asks no node: how the first admin token
of a cluster is made (`plexus up` makes one itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from plexus.cli.options import (
    CA_META,
    SERVER_GIVEN_META,
    TOKEN_META,
    connect,
    run,
    server_option,
)

__all__ = ["token_group"]


@click.group("token")
def token_group() -> None:
    """Client tokens: create, revoke, list."""


@token_group.command("create")
@click.option("--name", required=True, help="The token's name: shown in refusals and audit lines.")
@click.option("--publish", multiple=True, metavar="PATTERN", help="May publish matching topics.")
@click.option("--subscribe", multiple=True, metavar="PATTERN", help="May subscribe within it.")
@click.option("--consume", multiple=True, metavar="QUEUE", help="May consume QUEUE ('*': any).")
@click.option("--create", multiple=True, metavar="QUEUE", help="May create QUEUE ('*': any).")
@click.option("--purge", multiple=True, metavar="QUEUE", help="May purge QUEUE ('*': any).")
@click.option("--admin", is_flag=True, help="Every permission, and the admin calls.")
@click.option(
    "--expires", metavar="DURATION", help="Valid for e.g. 30d, 12h, 15m (default: no end)."
)
@click.option(
    "--key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Sign offline with this Ed25519 key file; no node is asked.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object with the token.")
@server_option
def create(
    name: str,
    publish: tuple[str, ...],
    subscribe: tuple[str, ...],
    consume: tuple[str, ...],
    create: tuple[str, ...],
    purge: tuple[str, ...],
    admin: bool,
    expires: str | None,
    key: Path | None,
    as_json: bool,
    server: str,
) -> None:
    """Create a token and print it (the token itself is printed only here, once)."""
    from plexus.cli.output import print_json
    from plexus.tokens import Grants, new_claims, parse_duration, sign
    from plexus.topics import validate_pattern

    for pattern in (*publish, *subscribe):
        validate_pattern(pattern)
    expires_in_s = parse_duration(expires) if expires else None
    if key is not None:
        try:
            pem = key.read_bytes()
        except OSError as exc:
            raise click.UsageError(
                f"cannot read the key file {str(key)!r}: {exc.strerror}"
            ) from None
        grants = Grants(publish, subscribe, consume, create, purge, admin)
        claims = new_claims(name, grants, expires_in_s)
        made: dict[str, Any] = {"token": sign(claims, pem), "name": name, "id": claims.jti}
    else:

        async def go() -> dict[str, Any]:
            async with await connect(_target(server)) as client:
                return await client.create_token(
                    name,
                    publish=publish,
                    subscribe=subscribe,
                    consume=consume,
                    create=create,
                    purge=purge,
                    admin=admin,
                    expires_in_s=expires_in_s,
                )

        made = run(go())
    if as_json:
        print_json(made)
    else:
        click.echo(made["token"])


@token_group.command("revoke")
@click.argument("name", required=False, default="")
@click.option("--id", "token_id", default="", help="Revoke only the token with this id.")
@server_option
def revoke(name: str, token_id: str, server: str) -> None:
    """Revoke every token named NAME (or one by --id) in every region."""
    if not (name or token_id):
        raise click.UsageError("give a token NAME or --id ID")

    async def go() -> None:
        async with await connect(_target(server)) as client:
            await client.revoke_token(name, id=token_id)

    run(go())
    click.echo(f"token {token_id or name} revoked")


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines, one per token.")
@server_option
def list_(as_json: bool, server: str) -> None:
    """The tokens made through the cluster (those signed offline are not known to it)."""
    from plexus.cli.output import print_json

    async def go() -> list[dict[str, Any]]:
        async with await connect(_target(server)) as client:
            return await client.list_tokens()

    tokens = run(go())
    for token in tokens:
        if as_json:
            print_json(token)
            continue
        grants = [
            f"{what} {','.join(token[what])}"
            for what in ("publish", "subscribe", "consume", "create", "purge")
            if token[what]
        ]
        if token["admin"]:
            grants.insert(0, "admin")
        state = "revoked" if token["revoked"] else "valid"
        click.echo(f"{token['name']}\t{token['id']}\t{state}\t{'; '.join(grants) or '-'}")


def _target(server: str) -> str:
    """`server`, or a running region of the local cluster when no address was given."""
    ctx = click.get_current_context()
    if ctx.meta.get(SERVER_GIVEN_META):
        return server
    from plexus.local.state import StateDir, default_state_dir

    state = StateDir(default_state_dir())
    if not state.exists():
        return server
    record = state.load()
    ctx.meta[TOKEN_META] = ctx.meta.get(TOKEN_META) or record.client_token()
    from plexus.local.launcher import is_running

    running = [r for r in record.regions if is_running(r.pid, record.cluster_file)]
    if not running:
        return server
    ctx.meta[CA_META] = ctx.meta.get(CA_META) or running[0].ca
    return running[0].grpc
