"""The `plexus` console script: the CLI, or one line saying which extra installs it.

The SDK installs without the CLI's packages (`pip install plexus-mesh`); the
command needs `plexus-mesh[cli]`. This module imports nothing beyond the
standard library until it knows those packages are there.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

# Top-level modules that each extra provides (a sample is enough to tell).
EXTRA_MODULES = {
    "cli": ("click", "rich"),
    "tui": ("textual",),
    "server": ("lmdb", "pysyncobj", "pydantic", "grpc_health", "prometheus_client"),
    "connectors": ("pydantic", "prometheus_client", "tenacity"),
}
EXIT_ERROR = 1


def missing_modules(extra: str) -> list[str]:
    return [name for name in EXTRA_MODULES[extra] if find_spec(name) is None]


def require_extra(extra: str, what: str) -> None:
    """Stop a command with one line when `extra` is not installed (needs click)."""
    missing = missing_modules(extra)
    if missing:
        import click

        raise click.ClickException(
            f"{what} needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"pip install 'plexus-mesh[{extra}]'"
        )


def main() -> None:
    missing = missing_modules("cli")
    if missing:
        print(
            f"error: the plexus command needs the 'cli' extra ({', '.join(missing)} not "
            "installed): pip install 'plexus-mesh[cli]'",
            file=sys.stderr,
        )
        sys.exit(EXIT_ERROR)
    from plexus.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
