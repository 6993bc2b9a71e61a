"""Shared fixtures: in-process nodes (tests/inprocess.py) and real node processes on free
loopback ports (tests/harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from node.server import Node
from plexus.tokens import generate_key
from storage.environment import Environment
from storage.spool import Spool
from tests.harness import NodeProcess, Nodes
from tests.inprocess import InProcessNodes


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    """Start node processes with `nodes.start(name)`; every one is killed after the test."""
    started = Nodes(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def node(nodes: Nodes) -> NodeProcess:
    """One running node process `us` with a fresh data directory; `node.address` is HOST:PORT."""
    return nodes.start("us")


@pytest.fixture
async def inproc_nodes(tmp_path: Path) -> AsyncIterator[InProcessNodes]:
    """Start in-process nodes with `await inproc_nodes.start(name, **settings)`; every one
    is stopped after the test, and none may leave a thread running."""
    started = InProcessNodes(tmp_path)
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def inproc_node(inproc_nodes: InProcessNodes) -> Node:
    """One started in-process node `us` on 127.0.0.1:0; `inproc_node.address` is HOST:PORT."""
    return await inproc_nodes.start("us")


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    """A token signing key (PEM), also written to TMP/signing.key; `tests.signing.token`
    signs tokens with it."""
    pem = generate_key()
    (tmp_path / "signing.key").write_bytes(pem)
    return pem


@pytest.fixture
async def keyed_node(inproc_nodes: InProcessNodes, tmp_path: Path, key: bytes) -> Node:
    """An in-process node `us` that checks client tokens signed with `key`."""
    return await inproc_nodes.start("us", auth_key=tmp_path / "signing.key")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Environment]:
    """An LMDB environment in a fresh data directory, closed after the test."""
    opened = Environment(tmp_path / "data")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def spool(env: Environment) -> Spool:
    return Spool(env)
