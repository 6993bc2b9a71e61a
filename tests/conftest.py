"""Shared fixtures: real node processes on free loopback ports (see tests/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import NodeProcess, Nodes


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    """Start nodes with `nodes.start(name)`; every one is killed after the test."""
    started = Nodes(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def node(nodes: Nodes) -> NodeProcess:
    """One running node `us` with a fresh data directory; `node.address` is HOST:PORT."""
    return nodes.start("us")
