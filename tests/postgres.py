"""Throwaway PostgreSQL servers for the connector tests (Debian's `postgresql` package).

PostgreSQL refuses to run as root, and tests run as root in CI: `initdb` and
`postgres` then run as the `postgres` user (`runuser -u postgres --`) on a
directory it owns, under a directory it can traverse (pytest's own temporary
directories are private to their owner, so the server gets one of its own).
`runuser` forks: the server's pid is the first line of `DATA/postmaster.pid`,
and that is the process stopped. A machine without PostgreSQL fails the test,
naming the package: `make test` installs it.
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
import pytest

from tests.harness import free_port

START_TIMEOUT_S = 30.0
SETTINGS = {
    "wal_level": "logical",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "fsync": "off",  # a throwaway server: nothing here must survive a power cut
}
USER = "plexus"  # the superuser initdb makes; tests make less privileged roles themselves


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory; fails the test when there is none."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(n) for n in p.parent.parent.name.split(".") if n.isdigit()],
    )
    if not found:
        pytest.fail(
            "PostgreSQL is not installed: these tests need Debian's package `postgresql` "
            "(`make postgresql` installs it)"
        )
    return found[-1].parent


class PostgresServer:
    """One throwaway server: `start()`, `restart()`, `stop()`, and SQL for the tests."""

    def __init__(self, **settings: str) -> None:
        self.bin = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="plexus-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.settings = {**SETTINGS, **settings}
        self._runuser: subprocess.Popen[bytes] | None = None
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._run([str(self.bin / "initdb"), "-N", "-D", str(self.data), "-U", USER, "-A", "trust"])

    def _run(self, command: Sequence[str]) -> None:
        done = subprocess.run([*self._as_postgres, *command], capture_output=True, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{command[0]} failed: {done.stderr.decode()[-2000:]}")

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
                raise AssertionError(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
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
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(self.pid, sig)
        try:
            self._runuser.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._runuser.kill()
            self._runuser.wait(5)
        self._runuser = None

    def restart(self, sig: signal.Signals = signal.SIGINT) -> None:
        self.stop(sig)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def execute(self, database: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; the rows it returns, if any."""
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
        """(rows, md5 of the rows ordered by the first column), as the outside check compares."""
        order = columns.split(",")[0].strip()
        row = " || ':' || ".join(f"coalesce({c.strip()}::text, 'NULL')" for c in columns.split(","))
        sql = f"select count(*), md5(string_agg({row}, ',' order by {order})) from {table}"
        return self.execute(database, sql)[0]


@contextlib.contextmanager
def postgres_server(**settings: str) -> Iterator[PostgresServer]:
    """A started server (SETTINGS, overridden by `settings`), stopped and removed after."""
    server = PostgresServer(**settings)
    try:
        yield server.start()
    finally:
        server.close()
