"""Local clusters with real processes: `plexus up`, `status`, `down`, `region start`, faults,
`--region` on client commands, and bad input. Every test leaves no node running."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plexus.client import Client
from plexus.local.launcher import find_processes, is_running
from plexus.local.state import StateDir
from tests.harness import eventually

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
PLEXUS = [sys.executable, "-m", "plexus.cli.main"]
CONFIGS = ROOT / "cluster-configs"
# Links come up within a second or two here; allow for a loaded CI machine.
DEADLINE_S = 20.0


class Local:
    """Runs `plexus` with PLEXUS_STATE_DIR set to one state directory."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.env = {**os.environ, "PLEXUS_STATE_DIR": str(state)}
        self.env.pop("PLEXUS_SERVER", None)

    def run(self, *args: str, ok: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [*PLEXUS, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if ok:
            assert out.returncode == 0, f"plexus {' '.join(args)}: {out.stderr}{out.stdout}"
        return out

    def fails(self, *args: str) -> str:
        """The one error line of a command that must fail with exit 1 and no traceback."""
        out = self.run(*args, ok=False)
        assert out.returncode == 1, f"plexus {' '.join(args)}: exit {out.returncode} {out.stderr}"
        assert "Traceback" not in out.stderr, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
        return lines[0]

    def status(self) -> dict[str, Any]:
        return json.loads(self.run("status", "--json").stdout)

    def address(self, region: str) -> str:
        return next(r["address"] for r in self.status()["regions"] if r["name"] == region)

    def processes(self) -> list[int]:
        return find_processes(str(self.state))

    def link_state(self, a: str, b: str) -> str:
        for link in self.status()["links"]:
            if set(link["regions"]) == {a, b}:
                return link["state"]
        raise AssertionError(f"no link {a}-{b}")

    def wait_link(self, a: str, b: str, state: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while (seen := self.link_state(a, b)) != state:
            assert time.monotonic() < deadline, f"link {a}-{b} is {seen}, not {state}"

    def close(self) -> None:
        if (self.state / "cluster.json").exists():
            self.run("down", "--grace", "5", ok=False, timeout=60)
        for pid in self.processes():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    cluster = Local(tmp_path / "state")
    try:
        yield cluster
    finally:
        cluster.close()
        assert not cluster.processes(), "nodes left running"


@pytest.fixture
def default(local: Local) -> Local:
    """The default cluster, up."""
    local.run("up")
    return local


def _ends_up(status: dict[str, Any]) -> set[frozenset[str]]:
    return {frozenset(link["regions"]) for link in status["links"] if link["state"] == "up"}


# ------------------------------------------------------------------ the default cluster


def test_up_default_starts_three_linked_regions(default: Local) -> None:
    status = default.status()
    regions = {r["name"]: r for r in status["regions"]}
    assert set(regions) == {"us", "eu", "ap"}
    assert all(r["state"] == "running" and r["pid"] for r in regions.values())
    assert _ends_up(status) == {
        frozenset(("us", "eu")),
        frozenset(("us", "ap")),
        frozenset(("eu", "ap")),
    }
    # Every node names the state directory on its command line, and runs in it.
    assert sorted(default.processes()) == sorted(r["pid"] for r in regions.values())
    for name in regions:
        assert (default.state / "regions" / name / "data").is_dir()
        assert "listening on" in (default.state / "regions" / name / "node.log").read_text()
    human = default.run("status").stdout
    assert "us" in human and "running" in human


def test_up_serves_tls_with_its_own_ca_and_refuses_plaintext(default: Local) -> None:
    status = default.status()
    ca = Path(status["ca"])
    assert ca == default.state / "tls" / "ca.crt" and ca.is_file()
    assert all(r["tls"] is True for r in status["regions"])
    tls = default.state / "tls"
    assert default.state.stat().st_mode & 0o777 == 0o700
    assert tls.stat().st_mode & 0o777 == 0o700
    for name in ("ca.crt", "ca.key", "us.crt", "us.key", "eu.key", "ap.key"):
        assert (tls / name).stat().st_mode & 0o777 == 0o600, name
    assert (default.state / "cluster.toml").stat().st_mode & 0o777 == 0o600
    refused = default.fails("info", "--server", default.address("us"))
    assert "TLS" in refused and "--ca" in refused
    token = StateDir(default.state).client_token()
    assert token is not None
    given = ("--server", default.address("us"), "--ca", str(ca), "--token", token)
    shown = json.loads(default.run("info", *given, "--json").stdout)
    assert shown["region"] == "us"


def test_up_again_while_running_says_already_up(default: Local) -> None:
    pids = {r["pid"] for r in default.status()["regions"]}
    out = default.run("up")
    assert "already up" in out.stdout
    assert {r["pid"] for r in default.status()["regions"]} == pids


def test_sub_in_eu_receives_what_pub_in_us_published(default: Local) -> None:
    sub = subprocess.Popen(
        [*PLEXUS, "sub", "orders/>", "--region", "eu", "--count", "5", "--json", "--timeout", "30"],
        env=default.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_interest(default, "us", "orders/x", "eu")
        default.run("pub", "orders/{seq}", "hello {seq}", "--count", "5", "--region", "us")
        out, err = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["payload"] for e in events] == [f"hello {i}" for i in range(5)], err
    assert {e["region"] for e in events} == {"us"}


def _wait_interest(local: Local, at: str, topic: str, region: str) -> None:
    """Until region `at` would route `topic` to a subscriber in `region`."""
    status = local.status()
    address = next(r["address"] for r in status["regions"] if r["name"] == at)
    token = StateDir(local.state).client_token()  # the admin token `plexus up` made

    async def go() -> None:
        async with await Client.connect(address, ca=status["ca"], token=token) as client:

            async def interested() -> bool:
                view = {r["region"]: r for r in await client.explain(topic)}
                return bool(view.get(region, {}).get("subscribers"))

            await eventually(interested, DEADLINE_S, f"interest from {region}")

    asyncio.run(go())


def test_fault_cut_and_heal(default: Local) -> None:
    default.run("fault", "cut", "us", "eu")
    assert default.link_state("us", "eu") == "down"
    assert default.link_state("us", "ap") == "up"
    out = default.run("fault", "heal", "us", "eu")
    assert "up" in out.stdout
    default.wait_link("us", "eu", "up")


def test_explain_shows_a_detour_for_direct_events_and_the_route_guaranteed_ones_wait_for(
    default: Local,
) -> None:
    default.run("queue", "create", "detour", "--subscribe", "detour/>", "--region", "eu")
    _wait_queue_interest(default, "us", "detour/1", "eu")
    default.run("fault", "cut", "us", "eu")
    default.wait_link("us", "eu", "down")
    out = default.run("explain", "detour/1", "--region", "us", "--json")
    [eu] = [r for r in json.loads(out.stdout)["regions"] if r["region"] == "eu"]
    assert (eu["path"], eu["guaranteed_path"]) == (["us", "ap", "eu"], ["us", "eu"])
    default.env["COLUMNS"] = "200"  # one line per region
    table = default.run("explain", "detour/1", "--region", "us").stdout
    assert "guaranteed: us → eu, spooled until it is up" in table


def _wait_queue_interest(local: Local, at: str, topic: str, region: str) -> None:
    """Until region `at` would route `topic` to a queue in `region`."""

    def queued() -> bool:
        out = local.run("explain", topic, "--region", at, "--json")
        return any(r["region"] == region and r["queues"] for r in json.loads(out.stdout)["regions"])

    deadline = time.monotonic() + DEADLINE_S
    while not queued():
        assert time.monotonic() < deadline, f"{at} never learnt of the queue in {region}"


def test_fault_kill_then_region_start(default: Local) -> None:
    before = {r["name"]: r for r in default.status()["regions"]}
    default.run("fault", "kill", "ap")
    assert not is_running(before["ap"]["pid"], str(default.state))
    status = default.status()
    ap = next(r for r in status["regions"] if r["name"] == "ap")
    assert ap["state"] == "stopped" and ap["pid"] is None
    assert {link["state"] for link in status["links"] if "ap" in link["regions"]} == {"down"}
    assert "not running" in default.fails("fault", "kill", "ap")
    assert "cannot reach" in default.fails("pub", "x", "--region", "ap")

    default.run("region", "start", "ap")
    status = default.status()
    ap = next(r for r in status["regions"] if r["name"] == "ap")
    assert ap["state"] == "running" and ap["address"] == before["ap"]["address"]
    assert len(_ends_up(status)) == 3
    assert "already running" in default.run("region", "start", "ap").stdout


def test_down_stops_everything_and_up_restarts_with_data(default: Local) -> None:
    default.run("queue", "create", "billing", "--subscribe", "orders/>", "--region", "ap")
    default.run("pub", "orders/1", "kept", "--guaranteed", "--region", "us")
    addresses = {r["name"]: r["address"] for r in default.status()["regions"]}
    pids = [r["pid"] for r in default.status()["regions"]]

    default.run("down")
    assert not default.processes()
    assert not any(is_running(pid, str(default.state)) for pid in pids)
    status = default.status()
    assert {r["state"] for r in status["regions"]} == {"stopped"}
    assert (default.state / "regions" / "ap" / "data").is_dir()

    default.run("up")
    status = default.status()
    assert {r["name"]: r["address"] for r in status["regions"]} == addresses
    assert len(_ends_up(status)) == 3
    queues = {(q["region"], q["name"]): q for q in status["queues"]}
    assert queues[("ap", "billing")]["depth"] == 1

    default.run("down", "--purge")
    assert not default.state.exists()
    assert "no local cluster" in default.fails("status")


# ------------------------------------------------------------------ shipped configs


@pytest.mark.parametrize(
    ("config", "regions", "links"),
    [
        ("three-regions.toml", {"us", "eu", "ap"}, 3),
        ("hub-and-spoke.toml", {"hub", "spoke-a", "spoke-b", "spoke-c"}, 3),
        pytest.param("chain-5.toml", {"r1", "r2", "r3", "r4", "r5"}, 4, marks=pytest.mark.slow),
    ],
)
def test_up_of_each_shipped_config(local: Local, config: str, regions: set, links: int) -> None:
    source = CONFIGS / config
    local.run("up", str(source))
    status = local.status()
    assert {r["name"] for r in status["regions"]} == regions
    assert len(_ends_up(status)) == links == len(status["links"])
    # The data lives in the state dir, not next to the shipped file.
    copy = (local.state / "cluster.toml").read_text()
    for name in regions:
        assert str(local.state / "regions" / name / "data") in copy
    # Line for line, plus the [auth] section (3 lines) naming the key `plexus up` made.
    assert copy.count("\n") == source.read_text().count("\n") + 3
    assert copy.endswith('\n[auth]\nkey = "auth/signing.key"\n')
    # The same file again: already up; another file on the same state dir: refused.
    assert "already up" in local.run("up", str(source)).stdout
    other = "chain-5.toml" if config != "chain-5.toml" else "three-regions.toml"
    assert "down --purge" in local.fails("up", str(CONFIGS / other))


# ------------------------------------------------------------------ bad input


def test_commands_without_a_cluster_say_so(local: Local) -> None:
    for args in (
        ("status",),
        ("down",),
        ("fault", "kill", "us"),
        ("region", "start", "us"),
        ("pub", "x", "--region", "us"),
        ("queue", "list", "--region", "us"),
    ):
        assert "no local cluster" in local.fails(*args), args


def test_unknown_region_is_named(default: Local) -> None:
    for args in (
        ("pub", "x", "--region", "zz"),
        ("sub", ">", "--region", "zz"),
        ("fault", "kill", "zz"),
        ("fault", "cut", "us", "zz"),
        ("region", "start", "zz"),
    ):
        line = default.fails(*args)
        assert "'zz'" in line and "us, eu, ap" in line, line
    out = default.run("pub", "x", "--region", "us", "--server", "127.0.0.1:1", ok=False)
    assert out.returncode == 2 and "not both" in out.stderr


def test_config_that_does_not_exist(local: Local, tmp_path: Path) -> None:
    line = local.fails("up", str(tmp_path / "nope.toml"))
    assert "nope.toml" in line and "not found" in line
    assert not (local.state / "cluster.json").exists()


def test_config_the_node_rejects_names_file_and_key(local: Local, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    text = (CONFIGS / "three-regions.toml").read_text()
    bad.write_text(text.replace('grpc = "127.0.0.1:7102"', 'grpc = "127.0.0.1:nope"'))
    line = local.fails("up", str(bad))
    assert str(bad) in line and "region[1].grpc" in line and "nope" in line, line
    assert not local.processes()
    assert not (local.state / "cluster.json").exists()
    # Fixed, the same state dir takes it.
    bad.write_text(text.replace("[cluster]", '[cluster]\nsecret = "short"'))
    line = local.fails("up", str(bad))
    assert "cluster.secret" in line and "at least 16" in line and "short" not in line, line
    bad.write_text("[cluster\n")
    assert "not valid TOML" in local.fails("up", str(bad))


def test_port_in_use_stops_what_was_started(local: Local, tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            other = probe.getsockname()[1]
        config = tmp_path / "busy.toml"
        config.write_text(
            '[cluster]\nname = "busy"\nsecret = "a-secret-of-24-bytes-xxx"\n\n'
            f'[[region]]\nname = "us"\ngrpc = "127.0.0.1:{other}"\n\n'
            f'[[region]]\nname = "eu"\ngrpc = "127.0.0.1:{port}"\n\n'
            '[[link]]\nregions = ["us", "eu"]\n'
        )
        line = local.fails("up", str(config))
    assert f"127.0.0.1:{port}" in line and "region[1].grpc" in line and str(config) in line
    assert not local.processes()
    assert not (local.state / "cluster.json").exists()


def test_region_added_live_receives_events_and_removed_region_is_gone(default: Local) -> None:
    added = default.run("region", "add", "sa", "--link", "us", "--json")
    assert json.loads(added.stdout)["links"] == ["us"]
    status = default.status()
    assert {r["name"] for r in status["regions"]} == {"us", "eu", "ap", "sa"}
    assert all(r["tls"] for r in status["regions"])
    assert (default.state / "tls" / "sa.crt").stat().st_mode & 0o777 == 0o600
    assert {r["raft"]["role"] for r in status["regions"]} >= {"leader", "follower"}
    sub = subprocess.Popen(
        [*PLEXUS, "sub", "lv/>", "--region", "sa", "--count", "20", "--json", "--timeout", "30"],
        env=default.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_interest(default, "eu", "lv/x", "sa")
        default.run("pub", "lv/{seq}", "v{seq}", "--count", "20", "--region", "eu")
        out, err = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    assert len(out.splitlines()) == 20, err
    default.run("region", "remove", "ap")
    assert {r["name"] for r in default.status()["regions"]} == {"us", "eu", "sa"}
    assert "named 'sa' already exists" in default.fails("region", "add", "sa")
    assert "mars" in default.fails("region", "remove", "mars")


def test_link_add_and_remove_change_the_live_topology(default: Local) -> None:
    default.run("link", "remove", "us", "eu")
    assert {frozenset(link["regions"]) for link in default.status()["links"]} == {
        frozenset(("us", "ap")),
        frozenset(("eu", "ap")),
    }
    default.run("link", "add", "us", "eu")
    default.wait_link("us", "eu", "up")
    assert "already exists" in default.fails("link", "add", "us", "eu")
    assert "mars" in default.fails("link", "add", "us", "mars")
