"""Fixtures of the HTTP tests (loaded with `pytest_plugins`): an in-process node with a
token key, the HTTP front door on it, an httpx client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from node.http_api import HttpFrontDoor
from node.server import Node
from tests.inprocess import InProcessNodes


@pytest.fixture
async def http_node(inproc_nodes: InProcessNodes, tmp_path: Path, key: bytes) -> Node:
    """A node with a token key and its HTTP gateway, as `node run --http` makes it."""
    return await inproc_nodes.start("us", auth_key=tmp_path / "signing.key", http="127.0.0.1:0")


@pytest.fixture
def front_door(http_node: Node) -> HttpFrontDoor:
    assert http_node.http is not None
    return http_node.http


@pytest.fixture
async def http(front_door: HttpFrontDoor) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{front_door.address}", timeout=10) as client:
        yield client
