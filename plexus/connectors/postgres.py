"""What both PostgreSQL kinds share: the `[postgres] dsn`, the thread that makes
every blocking psycopg2 call, and PostgreSQL's errors as one line each.

psycopg2 blocks, so each connector owns one thread (`DbThread`) that makes all
of its database calls in order, and the event loop only awaits them.

An error is either worth retrying (`transient`: the server is down, starting
up or shutting down, the connection broke, a serialization failure or a
deadlock) or not (authentication, privileges, a missing database or table);
`one_line` says what happened in one line, naming the server but never the
password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import psycopg2
import psycopg2.extensions

from plexus.errors import FailedPrecondition, NotFound, PermissionDenied, PlexusError, Unavailable

__all__ = [
    "DbThread",
    "check_dsn",
    "connect",
    "describe",
    "one_line",
    "split_table",
    "transient",
    "translate",
]

T = TypeVar("T")

# libpq settings a connector uses unless its dsn says otherwise: give up on an
# unreachable server after a few seconds, and notice a dead peer in about 20 s.
CONNECT_DEFAULTS: Final = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
}
# SQLSTATE classes worth retrying: 08 connection exception, 40 transaction
# rollback (serialization failure, deadlock), 53 insufficient resources (too many
# connections), 57 operator intervention (shutdown, crash, starting up).
TRANSIENT_CLASSES: Final = ("08", "40", "53", "57")
# libpq reports a server's refusal at connect time without a SQLSTATE: these are
# the refusals that go away by themselves.
TRANSIENT_REFUSALS: Final = (
    "starting up",
    "shutting down",
    "recovery mode",
    "not yet accepting connections",
    "too many clients",
    "connection slots are reserved",
    "administrator command",
)


def check_dsn(dsn: str) -> str:
    """`dsn` if libpq can parse it; ValueError saying why not (for settings validators)."""
    try:
        psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    return dsn


def split_table(table: str) -> tuple[str, str]:
    """`NAME` or `SCHEMA.NAME` -> (schema, name), in schema public by default; names
    as the catalog has them (lower case unless created quoted)."""
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"{table!r} is not a table name (NAME or SCHEMA.NAME)")
    return (parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0])


def describe(dsn: str) -> str:
    """`PostgreSQL at HOST:PORT, database DB, user USER`: the dsn without secrets."""
    params = psycopg2.extensions.parse_dsn(dsn)
    host = params.get("host") or params.get("hostaddr") or "the local socket"
    where = f"{host}:{params['port']}" if params.get("port") else host
    parts = [f"PostgreSQL at {where}"]
    if params.get("dbname"):
        parts.append(f"database {params['dbname']}")
    if params.get("user"):
        parts.append(f"user {params['user']}")
    return ", ".join(parts)


def connect(dsn: str, name: str, **kwargs: Any) -> Any:
    """A psycopg2 connection to `dsn` (blocking: call it from the DbThread)."""
    params = psycopg2.extensions.parse_dsn(dsn)
    defaults = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in params}
    if "application_name" not in params:
        defaults["application_name"] = f"plexus {name}"[:63]
    # Text values and names reach the decoder in UTF-8 whatever the database's encoding.
    return psycopg2.connect(dsn, client_encoding="UTF8", **defaults, **kwargs)


def transient(exc: BaseException) -> bool:
    """True when trying the same thing again later may work."""
    if isinstance(exc, psycopg2.InterfaceError):  # the connection was already closed
        return True
    if not isinstance(exc, psycopg2.Error):
        return False
    code = exc.pgcode or ""
    if code:
        return code[:2] in TRANSIENT_CLASSES
    # No SQLSTATE and not a misuse of the driver: libpq lost the server (refused, timed
    # out, closed mid-stream), or the server refused the connection ("FATAL" says so).
    if type(exc) not in (psycopg2.OperationalError, psycopg2.DatabaseError):
        return False
    message = str(exc)
    return "FATAL" not in message or any(r in message for r in TRANSIENT_REFUSALS)


def one_line(exc: BaseException) -> str:
    """PostgreSQL's message, on one line, without libpq's severity prefixes."""
    text = getattr(exc, "pgerror", None) or str(exc) or type(exc).__name__
    first = text.strip().splitlines()[0] if text.strip() else text
    for prefix in ("FATAL:", "ERROR:"):
        first = first.replace(prefix, "")
    return " ".join(first.split())


def translate(exc: BaseException, dsn: str, doing: str = "") -> PlexusError:
    """`exc` (a psycopg2 error) as the PlexusError a user reads, naming the server."""
    what = f"{describe(dsn)}: {doing + ': ' if doing else ''}{one_line(exc)}"
    code = getattr(exc, "pgcode", None) or ""
    message = str(exc)
    if transient(exc):
        return Unavailable(what)
    if code == "42501" or code[:2] == "28" or _says(message, "authentication", "pg_hba", "role"):
        return PermissionDenied(what)
    if code in ("3D000", "42P01", "42704") or "does not exist" in message:
        return NotFound(what)
    return FailedPrecondition(what)


def _says(message: str, *words: str) -> bool:
    return any(w in message for w in words)


class DbThread:
    """The one thread that makes a connector's blocking database calls, in order."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self, last: Callable[[], object] | None = None) -> None:
        """Run `last` (e.g. closing the connection) on the thread, then end the thread."""
        if last is not None:
            await self.run(last)
        await asyncio.to_thread(self._pool.shutdown)
