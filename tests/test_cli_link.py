"""`plexus link` against real regions: a 2-region cluster of node processes on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plexus.client import Client
from plexus.errors import NotFound
from tests.harness import Cluster, NodeProcess, free_port

pytestmark = pytest.mark.timeout(120)

PLEXUS = [sys.executable, "-m", "plexus.cli.main"]
# Links come up within about a second; allow for a loaded CI machine.
LINK_DEADLINE_S = 15.0


# ------------------------------------------------------------------ a 2-region cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, NodeProcess]]:
    """Regions `eu` and `us`, linked, with their links up; killed after the test."""
    made = Cluster(tmp_path, ["eu", "us"], [("eu", "us")])
    try:
        made.start()
        for node in made.nodes.values():
            poll_links(node.address, lambda view: all_up(view), "links up")
        yield made.nodes
    finally:
        made.close()


# ------------------------------------------------------------------ running the CLI


def plexus(address: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PLEXUS, *args, "--server", address],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def links_json(address: str) -> dict[str, Any]:
    proc = plexus(address, "link", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return json.loads(proc.stdout)


def poll_links(
    address: str,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = LINK_DEADLINE_S,
) -> dict[str, Any]:
    """`link list --json` until `predicate` holds of it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        view = links_json(address)
        if predicate(view):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {view}")


def all_up(view: dict[str, Any]) -> bool:
    return bool(view["links"]) and all(link["state"] == "up" for link in view["links"])


def none_up(view: dict[str, Any]) -> bool:
    return bool(view["links"]) and all(link["state"] != "up" for link in view["links"])


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


LINK_KEYS = [
    "peer",
    "regions",
    "state",
    "reason",
    "dialler",
    "rtt_ms",
    "events_in_per_s",
    "events_out_per_s",
    "bytes_in_per_s",
    "bytes_out_per_s",
    "events_in",
    "events_out",
    "direct_dropped",
    "spool_depth",
    "spool_oldest_age_ms",
    "held_down",
    "spool_discarded",
]


# ------------------------------------------------------------------ tests


def test_link_list_json_shows_the_link_up_on_both_ends(
    cluster: dict[str, NodeProcess],
) -> None:
    for here, peer in (("eu", "us"), ("us", "eu")):
        view = links_json(cluster[here].address)
        assert set(view) == {"region", "links", "interest"}
        assert view["region"] == here
        [link] = view["links"]
        assert list(link) == LINK_KEYS
        assert link["peer"] == peer and link["regions"] == [here, peer]
        assert link["state"] == "up" and link["reason"] == "" and link["held_down"] is False
        # The region whose name sorts first dials.
        assert link["dialler"] is (here == "eu")
        assert link["rtt_ms"] >= 0 and link["direct_dropped"] == 0
        assert link["spool_depth"] == 0 and link["spool_oldest_age_ms"] == 0
        assert link["spool_discarded"] == 0
        # Interest: this region first, then the other one, reached over the link.
        assert [i["region"] for i in view["interest"]] == [here, peer]
        mine, theirs = view["interest"]
        assert set(mine) == {"region", "version", "patterns", "next_hop", "reachable"}
        assert mine["next_hop"] == "" and mine["reachable"] is True
        assert theirs["next_hop"] == peer and theirs["reachable"] is True


def test_link_list_table_and_learned_interest(cluster: dict[str, NodeProcess]) -> None:
    eu, us = cluster["eu"].address, cluster["us"].address
    sub = subprocess.Popen(
        [*PLEXUS, "sub", "orders/>", "--timeout", "60", "--server", us],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        view = poll_links(
            eu,
            lambda v: "orders/>" in v["interest"][1]["patterns"],
            "us's subscription learned in eu",
        )
        assert view["interest"][1]["region"] == "us"
        assert view["interest"][1]["version"] > 0
        proc = plexus(eu, "link", "list")
    finally:
        sub.kill()
        sub.wait(10)
        assert sub.stderr is not None
        sub.stderr.close()
    assert proc.returncode == 0 and proc.stderr == ""
    out = proc.stdout
    assert "link eu-us" in out and "✔ up" in out and "dialler (eu dials us)" in out
    for field in ("round-trip", "events/s in / out", "bytes/s in / out", "direct dropped"):
        assert field in out
    assert "spooled" in out and "held down" in out and "reason" not in out
    assert "interest learned" in out and "eu (here)" in out
    assert "1: orders/>" in out


def test_link_down_and_up_from_the_dialler(cluster: dict[str, NodeProcess]) -> None:
    eu, us = cluster["eu"].address, cluster["us"].address
    proc = plexus(eu, "link", "down", "us")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("link to us: ✖ down, held down")
    assert "operator" in proc.stdout and len(proc.stdout.splitlines()) == 1

    here = poll_links(eu, none_up, "eu's link to us down")
    there = poll_links(us, none_up, "us's link to eu down")
    assert here["links"][0]["held_down"] is True
    assert "operator" in here["links"][0]["reason"]
    assert "operator" in there["links"][0]["reason"]
    # The other region is no longer reachable from either end.
    assert poll_links(eu, lambda v: not v["interest"][1]["reachable"], "us unreachable")
    table = plexus(eu, "link", "list")
    assert table.returncode == 0
    assert "✖ down" in table.stdout and "operator" in table.stdout and "yes" in table.stdout

    proc = plexus(eu, "link", "up", "us")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.strip() == "link to us: ✔ up"
    poll_links(eu, all_up, "eu's link to us up again")
    view = poll_links(us, all_up, "us's link to eu up again")
    assert view["links"][0]["held_down"] is False and view["links"][0]["reason"] == ""


def test_link_held_down_by_the_acceptor_stays_down_until_released(
    cluster: dict[str, NodeProcess],
) -> None:
    eu, us = cluster["eu"].address, cluster["us"].address
    proc = plexus(us, "link", "down", "eu", "--json")
    assert proc.returncode == 0, proc.stderr
    link = json.loads(proc.stdout)
    assert link["peer"] == "eu" and link["state"] == "down" and link["held_down"] is True
    poll_links(eu, none_up, "eu's link to us down")
    # eu keeps dialling and us keeps refusing: the link stays down for many
    # heartbeats and re-dials (an observation window, not a synchronisation).
    window = time.monotonic() + 1.5
    while time.monotonic() < window:
        assert none_up(links_json(eu)) and none_up(links_json(us))
    # Each re-dial is refused with the operator's reason (its code, at least).
    assert "taken_down" in links_json(eu)["links"][0]["reason"].lower()
    assert "operator" in links_json(us)["links"][0]["reason"]

    proc = plexus(us, "link", "up", "eu", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["held_down"] is False
    poll_links(eu, all_up, "eu's link to us up again")
    poll_links(us, all_up, "us's link to eu up again")


def test_unknown_peer_is_a_one_line_error(cluster: dict[str, NodeProcess]) -> None:
    eu = cluster["eu"].address
    for verb in ("down", "up"):
        assert_one_line_error(plexus(eu, "link", verb, "mars"), "mars", "no link")
    assert_one_line_error(plexus(eu, "link", "down", "eu"), "no link")
    # Nothing changed.
    assert all_up(links_json(eu))


def test_sdk_list_links_and_set_link(cluster: dict[str, NodeProcess]) -> None:
    async def go() -> None:
        async with await Client.connect(cluster["us"].address) as client:
            view = await client.list_links()
            assert view.region == "us"
            link = view.link("eu")
            assert link is not None and link.up and not link.dialler
            assert view.link("mars") is None
            assert [i.region for i in view.interest] == ["us", "eu"]
            with pytest.raises(NotFound, match="mars"):
                await client.set_link("mars", up=False)
            down = await client.set_link("eu", up=False)
            assert down.state == "down" and down.held_down
            up = await client.set_link("eu", up=True)
            assert not up.held_down

    asyncio.run(go())
    poll_links(cluster["us"].address, all_up, "link up again")


def test_a_node_outside_a_cluster_runs_alone(node: NodeProcess) -> None:
    proc = plexus(node.address, "link", "list")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.strip() == "region us runs alone: no links"
    assert links_json(node.address) == {"region": "us", "links": [], "interest": []}
    assert_one_line_error(plexus(node.address, "link", "down", "eu"), "runs alone")


def test_unreachable_server_is_a_one_line_error() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    for args in (("list",), ("list", "--json"), ("down", "us"), ("up", "us")):
        assert_one_line_error(plexus(nowhere, "link", *args), f"cannot reach node at {nowhere}")
    bad = plexus("nowhere", "link", "list")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
