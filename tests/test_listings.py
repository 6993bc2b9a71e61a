"""Listings stay whole and quick with 10,000 items: `plexus queue list` and its table."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from node.server import Node
from plexus import Client
from plexus.cli.output import Column, print_table
from tests.inprocess import InProcessNodes

PLEXUS = [sys.executable, "-m", "plexus.cli.main"]
QUEUES = 10_000
# A guard, not a figure (benchmarks/bench_listing.py has the figure): rich's
# table took ~40 s for 10,000 queues.
CLI_TIMEOUT_S = 30.0
CREATE_CONCURRENCY = 200


async def _create_queues(node: Node, count: int) -> None:
    async with await Client.connect(node.address) as client:
        for start in range(0, count, CREATE_CONCURRENCY):
            stop = min(count, start + CREATE_CONCURRENCY)
            await asyncio.gather(
                *(client.create_queue(f"q{i:05d}", [f"orders/{i}/>"]) for i in range(start, stop))
            )


async def _plexus(node: Node, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *PLEXUS,
        *args,
        "--server",
        node.address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CLI_TIMEOUT_S):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.slow
async def test_queue_list_prints_every_one_of_10000_queues(
    inproc_nodes: InProcessNodes,
) -> None:
    node = await inproc_nodes.start()
    await _create_queues(node, QUEUES)  # most of the test's time (~20 s)
    names = {f"q{i:05d}" for i in range(QUEUES)}

    table = await _plexus(node, "queue", "list")
    lines = table.splitlines()
    listed = {line.split()[0] for line in lines[3:]}  # title, header, rule, then rows
    assert names <= listed  # each with its dead-message queue
    assert listed == names | {f"{n}.dmq" for n in names}
    assert lines[0] == f"{len(listed)} queues"
    row = next(line.split() for line in lines if line.startswith("q00042 "))
    assert row[:3] == ["q00042", "orders/42/>", "0"]

    as_json = json.loads(await _plexus(node, "queue", "list", "--json"))
    assert {q["name"] for q in as_json} == listed


def test_a_table_aligns_columns_numbers_right_and_wide_characters_by_cells(
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    columns = (Column("name"), Column("count", right=True), Column("note"))
    print_table("2 rows", columns, [("a", "1", "x"), ("日本", "1000", "")])
    assert capsys.readouterr().out.splitlines() == [
        "2 rows",
        "name  count  note",
        "----  -----  ----",
        "a         1  x",
        "日本   1000",
    ]
