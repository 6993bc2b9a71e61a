"""TLS on every listener: certificates made by `plexus cert`, nodes serving TLS, clients
verifying them, links proving which region each end is, metrics over HTTPS, and the
refusals a user sees when one side has TLS and the other has not."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from federation.tls import PROOF_SKEW_MS, LinkProof, load_node_tls
from node.config import load_config
from plexus.certs import make_ca, make_node_cert
from plexus.client import Client
from plexus.errors import ConfigError, Unavailable
from tests.harness import Cluster, eventually, free_port, wait_for
from tests.inprocess import InProcessNodes

pytestmark = pytest.mark.timeout(90)

HOSTS = ["127.0.0.1", "localhost"]


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    """A cluster CA and certificates for regions us, eu and ap, as `plexus cert` makes them."""
    out = tmp_path / "tls"
    make_ca(out)
    for region in ("us", "eu", "ap"):
        make_node_cert(out, region, HOSTS, out)
    return out


def tls_settings(tls_dir: Path, region: str) -> dict[str, Path]:
    return {
        "tls_cert": tls_dir / f"{region}.crt",
        "tls_key": tls_dir / f"{region}.key",
        "tls_ca": tls_dir / "ca.crt",
    }


# ------------------------------------------------------------------ clients


async def test_tls_client_with_the_ca_publishes_and_subscribes(
    inproc_nodes: InProcessNodes, tls_dir: Path
) -> None:
    node = await inproc_nodes.start("us", **tls_settings(tls_dir, "us"))
    async with await Client.connect(node.address, ca=tls_dir / "ca.crt") as client:
        async with client.subscribe("orders/>") as sub:
            await client.publish("orders/us/1", b"over tls")
            async with asyncio.timeout(10):
                event = await sub.__anext__()
        assert (event.topic, event.payload) == ("orders/us/1", b"over tls")


async def test_plaintext_client_is_refused_by_a_tls_node_saying_tls(
    inproc_nodes: InProcessNodes, tls_dir: Path
) -> None:
    node = await inproc_nodes.start("us", **tls_settings(tls_dir, "us"))
    with pytest.raises(Unavailable, match="TLS") as refused:
        await Client.connect(node.address, timeout=5, reconnect=False)
    assert node.address in str(refused.value)


async def test_tls_client_against_a_plaintext_node_says_it_does_not_serve_tls(
    inproc_node, tls_dir: Path
) -> None:
    with pytest.raises(Unavailable, match="does not serve TLS"):
        await Client.connect(inproc_node.address, timeout=5, ca=tls_dir / "ca.crt")


async def test_a_node_signed_by_another_ca_is_not_trusted(
    inproc_nodes: InProcessNodes, tls_dir: Path, tmp_path: Path
) -> None:
    node = await inproc_nodes.start("us", **tls_settings(tls_dir, "us"))
    make_ca(tmp_path / "other")
    with pytest.raises(Unavailable, match="not signed by the CA given"):
        await Client.connect(node.address, timeout=5, ca=tmp_path / "other" / "ca.crt")


async def test_a_ca_that_is_not_a_certificate_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate")
    with pytest.raises(Exception, match=f"{bad} is not a PEM certificate"):
        await Client.connect("127.0.0.1:1", ca=bad)


async def test_metrics_over_https_verify_with_the_cluster_ca(
    inproc_nodes: InProcessNodes, tls_dir: Path
) -> None:
    node = await inproc_nodes.start(
        "us", metrics="127.0.0.1:0", metrics_tls=True, **tls_settings(tls_dir, "us")
    )
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    url = f"https://{node.metrics_address}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, context=context).read())
    assert b"plexus_" in body


# ------------------------------------------------------------------ node start-up


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "run", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_a_missing_certificate_stops_the_node_naming_the_file(
    tls_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.crt"
    out = run_node(
        *("--name", "us", "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "d")),
        *("--tls-cert", str(missing), "--tls-key", str(tls_dir / "us.key")),
        *("--tls-ca", str(tls_dir / "ca.crt"), "--no-metrics"),
    )
    assert f"{missing}: file not found" in one_error_line(out)


def test_a_key_of_another_certificate_stops_the_node_naming_the_key(
    tls_dir: Path, tmp_path: Path
) -> None:
    out = run_node(
        *("--name", "us", "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "d")),
        *("--tls-cert", str(tls_dir / "us.crt"), "--tls-key", str(tls_dir / "eu.key")),
        *("--tls-ca", str(tls_dir / "ca.crt"), "--no-metrics"),
    )
    line = one_error_line(out)
    assert f"{tls_dir / 'eu.key'}: is not the key of the certificate" in line


def test_plaintext_on_a_non_loopback_address_needs_insecure(tmp_path: Path) -> None:
    out = run_node("--name", "us", "--listen", "0.0.0.0:0", "--data", str(tmp_path / "d"))
    line = one_error_line(out)
    assert "'0.0.0.0:0' is not a loopback address and TLS is off" in line
    assert "--insecure" in line
    with pytest.raises(ConfigError, match="--insecure"):
        load_config(None, {"name": "us", "listen": "0.0.0.0:0", "data": tmp_path})


def test_insecure_allows_plaintext_on_any_address(tmp_path: Path) -> None:
    config = load_config(
        None, {"name": "us", "listen": "0.0.0.0:0", "data": tmp_path, "insecure": True}
    )
    assert not config.tls


def test_tls_needs_certificate_key_and_ca_together(tls_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_key, tls_ca missing"):
        load_config(None, {"name": "us", "data": tmp_path, "tls_cert": tls_dir / "us.crt"})


# ------------------------------------------------------------------ link proofs (no sockets)


@pytest.fixture
def now_ms() -> int:
    """Now, read when the test runs: certificates made for it are valid from a few minutes ago."""
    return int(time.time() * 1000)


def node_tls(tls_dir: Path, region: str):
    return load_node_tls(tls_dir / f"{region}.crt", tls_dir / f"{region}.key", tls_dir / "ca.crt")


def test_a_link_proof_certifies_the_dialler_once(tls_dir: Path, now_ms: int) -> None:
    eu, us = LinkProof(node_tls(tls_dir, "eu"), "c"), LinkProof(node_tls(tls_dir, "us"), "c")
    proof = eu.metadata("eu", "us", now_ms=now_ms)
    assert us.certified(proof, "us", now_ms=now_ms + 500) == (("eu",), "")
    assert us.certified(proof, "us", now_ms=now_ms + 600) == ((), "a replayed proof")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("other region", "does not verify with its certificate"),
        ("other cluster", "does not verify with its certificate"),
        ("late", "s off this node's clock"),
        ("no proof", "no certificate presented"),
    ],
)
def test_a_link_proof_for_something_else_is_refused(
    tls_dir: Path, change: str, why: str, now_ms: int
) -> None:
    eu = LinkProof(node_tls(tls_dir, "eu"), "other" if change == "other cluster" else "c")
    ap = LinkProof(node_tls(tls_dir, "ap"), "c")
    proof = [] if change == "no proof" else eu.metadata("eu", "us", now_ms=now_ms)
    at = "ap" if change == "other region" else "us"  # a proof made for us, shown to ap
    now = now_ms + (PROOF_SKEW_MS + 1 if change == "late" else 0)
    regions, reason = ap.certified(proof, at, now_ms=now)
    assert regions == () and why in reason


def test_a_link_proof_from_another_ca_is_refused(
    tls_dir: Path, tmp_path: Path, now_ms: int
) -> None:
    other = tmp_path / "other"
    make_ca(other)
    make_node_cert(other, "eu", HOSTS, other)
    forged = LinkProof(node_tls(other, "eu"), "c").metadata("eu", "us", now_ms=now_ms)
    us = LinkProof(node_tls(tls_dir, "us"), "c")
    assert us.certified(forged, "us", now_ms=now_ms) == (
        (),
        "its certificate is not signed by this cluster's CA",
    )


# ------------------------------------------------------------------ links


def tls_cluster(root: Path, tls_dir: Path, raft: bool = False) -> Cluster:
    """us and eu linked, TLS from the cluster file's [tls] (paths relative to the file)."""
    cluster = Cluster(root, ["us", "eu"], [("us", "eu")], raft=raft)
    shutil.copytree(tls_dir, root / "certs")
    with cluster.file.open("a") as file:
        file.write('[tls]\nca = "certs/ca.crt"\ncert = "certs/{region}.crt"\n')
        file.write('key = "certs/{region}.key"\n')
    return cluster


async def test_regions_link_over_tls_and_route_events(tmp_path: Path, tls_dir: Path) -> None:
    cluster = tls_cluster(tmp_path / "c", tls_dir)
    ca = tls_dir / "ca.crt"
    try:
        cluster.start()
        async with (
            await Client.connect(cluster.address("us"), ca=ca) as us,
            await Client.connect(cluster.address("eu"), ca=ca) as eu,
        ):
            await eventually(lambda: _link_up(us, "eu"), 20, "link us-eu up over TLS")
            async with eu.subscribe("orders/>") as sub:
                await eventually(lambda: _routed(us, "orders/us/1", "eu"), 10, "eu interest at us")
                await us.publish("orders/us/1", b"across")
                async with asyncio.timeout(10):
                    event = await sub.__anext__()
            assert event.payload == b"across"
    finally:
        cluster.close()


async def _link_up(client: Client, peer: str) -> bool:
    link = (await client.list_links(interest=False)).link(peer)
    return link is not None and link.up


async def test_a_region_joins_a_tls_cluster_and_links_over_tls(
    tmp_path: Path, tls_dir: Path
) -> None:
    cluster = tls_cluster(tmp_path / "c", tls_dir, raft=True)
    ca = tls_dir / "ca.crt"
    try:
        cluster.start()
        async with await Client.connect(cluster.address("us"), ca=ca) as us:
            await eventually(lambda: _link_up(us, "eu"), 20, "link us-eu up")
            await asyncio.to_thread(cluster.join, "ap", "us", ["us"])
            await eventually(lambda: _link_up(us, "ap"), 30, "link ap-us up after the join")
            assert "ap" in {r["name"] for r in (await us.membership())["regions"]}
    finally:
        cluster.close()


async def _routed(client: Client, topic: str, region: str) -> bool:
    return any(r["region"] == region and r["subscribers"] for r in await client.explain(topic))


def test_a_region_presenting_another_regions_certificate_is_refused(
    tmp_path: Path, tls_dir: Path
) -> None:
    cluster = tls_cluster(tmp_path / "c", tls_dir)
    certs = cluster.root / "certs"
    # eu's files are really ap's: eu (which dials us) shows a certificate naming ap.
    shutil.copy(certs / "ap.crt", certs / "eu.crt")
    shutil.copy(certs / "ap.key", certs / "eu.key")
    try:
        cluster.start()
        us_log, eu_log = cluster.nodes["us"].log_path, cluster.nodes["eu"].log_path
        wait_for(
            lambda: (
                "wrong_certificate" in us_log.read_text()
                and "WRONG_CERTIFICATE" in eu_log.read_text()
            ),
            20,
            "both ends log the refusal",
        )
        refused = next(line for line in us_log.read_text().splitlines() if "refused" in line)
        assert "region 'eu'" in refused and "its certificate names 'ap'" in refused
        down = next(line for line in eu_log.read_text().splitlines() if "is down" in line)
        assert "link eu-us" in down and "this node's certificate names 'ap'" in down
        assert "names 'ap', not region eu" in eu_log.read_text()
        assert "link us-eu is up" not in us_log.read_text()
        assert "is up" not in eu_log.read_text()
    finally:
        cluster.close()


def test_a_dialler_refuses_an_acceptor_whose_certificate_names_another_region(
    tmp_path: Path, tls_dir: Path
) -> None:
    cluster = tls_cluster(tmp_path / "c", tls_dir)
    certs = cluster.root / "certs"
    # us (which eu dials) shows ap's certificate: eu's TLS checks it names us.
    shutil.copy(certs / "ap.crt", certs / "us.crt")
    shutil.copy(certs / "ap.key", certs / "us.key")
    try:
        cluster.start()
        eu_log = cluster.nodes["eu"].log_path
        wait_for(lambda: "link eu-us is down" in eu_log.read_text(), 20, "eu logs the link down")
        down = next(line for line in eu_log.read_text().splitlines() if "is down" in line)
        assert "TLS: its certificate does not name the region dialled" in down, down
    finally:
        cluster.close()
