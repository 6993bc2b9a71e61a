"""Throwaway PostgreSQL servers for the connector tests: plexus/local/postgres.py's, on
ports from tests/harness.free_port (never handed out twice, split between xdist workers).

A machine without PostgreSQL fails the test with one line naming Debian's package
`postgresql` (`make test` installs it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from plexus.local import postgres
from plexus.local.postgres import SETTINGS, USER, postgres_bin
from tests.harness import free_port

__all__ = ["SETTINGS", "USER", "PostgresServer", "postgres_bin", "postgres_server"]


class PostgresServer(postgres.PostgresServer):
    def __init__(self, parent: Path | None = None, port: int | None = None, **settings: str):
        super().__init__(parent, port or free_port(), **settings)


@contextlib.contextmanager
def postgres_server(**settings: str) -> Iterator[PostgresServer]:
    """A started server (SETTINGS, overridden by `settings`), stopped and removed after."""
    server = PostgresServer(**settings)
    try:
        yield server.start()
    finally:
        server.close()
