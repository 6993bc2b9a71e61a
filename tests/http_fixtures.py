"""Fixtures of the HTTP tests (loaded with `pytest_plugins`): an in-process node with a
token key, the HTTP front door on it, an httpx client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from node.http_api import HttpFrontDoor
from node.server import Node


@pytest.fixture
async def http_node(keyed_node: Node) -> Node:
    return keyed_node


@pytest.fixture
async def front_door(http_node: Node) -> AsyncIterator[HttpFrontDoor]:
    assert http_node.gateway is not None
    door = HttpFrontDoor(http_node.gateway, "127.0.0.1:0", None, "us")
    await door.start()
    try:
        yield door
    finally:
        await door.stop()


@pytest.fixture
async def http(front_door: HttpFrontDoor) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{front_door.address}", timeout=10) as client:
        yield client
