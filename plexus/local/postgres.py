"""Throwaway PostgreSQL servers on this machine, for demos, benchmarks and tests.

Debian's `postgresql` package gives the binaries; its own cluster and service
are not used: `initdb` makes a fresh data directory and `postgres` serves it on
a loopback port with `wal_level = logical` (what postgres-cdc needs) and
`fsync = off` (nothing here must survive a power cut). PostgreSQL refuses to
run as root: as root, `initdb` and `postgres` run as the `postgres` user
(`runuser -u postgres --`) on a directory it owns, under directories it can
traverse. `runuser` forks: the server's pid is the first line of
`DATA/postmaster.pid`, and that is the process stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg2

from plexus.local.default import free_ports
from plexus.local.state import LocalClusterError

__all__ = [
    "SETTINGS",
    "USER",
    "LocalPostgresError",
    "PostgresServer",
    "postgres_bin",
    "postgres_server",
]

START_TIMEOUT_S = 30.0
POLL_S = 0.05
SETTINGS = {
    "wal_level": "logical",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "fsync": "off",
}
USER = "plexus"  # the superuser initdb makes (trusted on loopback)
BIN_ROOT = Path("/usr/lib/postgresql")


class LocalPostgresError(LocalClusterError):
    """A throwaway PostgreSQL that cannot be started: not installed, initdb or the server failed."""


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory."""
    found = sorted(
        BIN_ROOT.glob("*/bin/initdb"),
        key=lambda p: [int(n) for n in p.parent.parent.name.split(".") if n.isdigit()],
    )
    if not found:
        raise LocalPostgresError(
            f"PostgreSQL is not installed (no {BIN_ROOT}/*/bin/initdb): install Debian's "
            "package `postgresql` (`make postgresql` does, without a cluster or a service)"
        )
    return found[-1].parent


class PostgresServer:
    """One throwaway server: `start()`, `restart()`, `stop()`, `close()`, and SQL.

    Its directory is made under `parent` (default: the system's temporary
    directory), which the `postgres` user must be able to traverse when run as root.
    """

    def __init__(self, parent: Path | None = None, port: int | None = None, **settings: str):
        self.bin = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="plexus-pg-", dir=parent))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = port or free_ports(1)[0]
        self.settings = {**SETTINGS, **settings}
        self._runuser: subprocess.Popen[bytes] | None = None
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._run([str(self.bin / "initdb"), "-N", "-D", str(self.data), "-U", USER, "-A", "trust"])

    def _run(self, command: Sequence[str]) -> None:
        done = subprocess.run([*self._as_postgres, *command], capture_output=True, check=False)
        if done.returncode != 0:
            error = _last_line(done.stderr.decode(errors="replace"))
            raise LocalPostgresError(f"{Path(command[0]).name} failed: {error}")

    def dsn(self, database: str = "postgres", user: str = USER) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={database} user={user}"

    @property
    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def start(self) -> PostgresServer:
        options = [f"-c{name}={value}" for name, value in self.settings.items()]
        command = [
            str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
            *options,
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self._runuser = subprocess.Popen([*self._as_postgres, *command], stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._accepting():
            if self._runuser.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LocalPostgresError(
                    f"PostgreSQL did not start on port {self.port}: "
                    f"{_last_line(self.log.read_text(errors='replace'))}"
                )
            time.sleep(POLL_S)
        return self

    def _accepting(self) -> bool:
        try:
            psycopg2.connect(self.dsn(), connect_timeout=1).close()
        except psycopg2.OperationalError:
            return False
        return True

    def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """A fast shutdown (SIGINT) by default; SIGQUIT is an immediate one (a crash)."""
        if self._runuser is None:
            return
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(self.pid, sig)
        try:
            self._runuser.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                os.kill(self.pid, signal.SIGKILL)
            self._runuser.kill()
            self._runuser.wait(5)
        self._runuser = None

    def restart(self, sig: signal.Signals = signal.SIGINT) -> None:
        self.stop(sig)
        self.start()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def execute(self, database: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run one statement (or several, without `args`) in autocommit; the rows it returns."""
        conn = psycopg2.connect(self.dsn(database))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement, args or None)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """A fresh database; its dsn."""
        self.execute("postgres", f'create database "{name}"')
        return self.dsn(name)

    def table_digest(self, database: str, table: str, columns: str) -> tuple[int, str]:
        """(rows, md5 of the rows ordered by the first column): equal digests, equal tables."""
        order = columns.split(",")[0].strip()
        row = " || ':' || ".join(f"coalesce({c.strip()}::text, 'NULL')" for c in columns.split(","))
        sql = f"select count(*), md5(string_agg({row}, ',' order by {order})) from {table}"
        count, digest = self.execute(database, sql)[0]
        return count, digest


@contextlib.contextmanager
def postgres_server(
    parent: Path | None = None, port: int | None = None, **settings: str
) -> Iterator[PostgresServer]:
    """A started server (SETTINGS, overridden by `settings`), stopped and deleted after."""
    server = PostgresServer(parent, port, **settings)
    try:
        yield server.start()
    finally:
        server.close()


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"
