"""`plexus up` is authenticated by default: a signing key and an admin token in the state
dir (0600), local commands use the admin token, and a limited token is held to its
permissions in every region of the local cluster, through the CLI."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from plexus.tokens import Grants, generate_key, new_claims, sign
from tests.harness import free_port, wait_for
from tests.test_local_cluster import Local

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def default(tmp_path: Path) -> Iterator[Local]:
    cluster = Local(tmp_path / "state")
    try:
        cluster.run("up")
        yield cluster
    finally:
        cluster.close()


def as_token(local: Local, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    local.env["PLEXUS_TOKEN"] = token
    try:
        return local.run(*args, ok=False)
    finally:
        del local.env["PLEXUS_TOKEN"]


def test_up_makes_a_private_key_and_admin_token_and_names_the_key(default: Local) -> None:
    for name in ("signing.key", "admin.token"):
        mode = stat.S_IMODE((default.state / "auth" / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    assert '[auth]\nkey = "auth/signing.key"' in (default.state / "cluster.toml").read_text()
    key = (default.state / "auth" / "signing.key").read_text()
    for region in ("us", "eu", "ap"):
        assert key not in (default.state / "regions" / region / "node.log").read_text()


def test_a_limited_token_is_held_to_its_permissions_in_every_region(default: Local) -> None:
    made = default.run(
        "token", "create", "--name", "limited", "--publish", "orders/>",
        "--subscribe", "orders/>", "--json",
    )  # fmt: skip
    token = json.loads(made.stdout)["token"]
    assert as_token(default, token, "pub", "orders/us/1", "ok", "--region", "us").returncode == 0
    refused = as_token(default, token, "pub", "payments/us/1", "no", "--region", "us")
    assert refused.returncode == 1 and "payments/us/1" in refused.stderr
    refused = as_token(default, token, "region", "remove", "ap")
    assert refused.returncode == 1 and "permission denied" in refused.stderr
    assert "limited" in refused.stderr
    assert "ap" in {r["name"] for r in default.status()["regions"]}
    default.run("token", "revoke", "limited")

    def revoked_in_eu() -> bool:
        result = as_token(default, token, "pub", "orders/eu/9", "x", "--region", "eu")
        return result.returncode == 1 and "'limited' is revoked" in result.stderr

    wait_for(revoked_in_eu, 5, "the revocation to reach eu")


def test_up_of_a_file_with_its_own_key_signs_the_admin_token_with_it(tmp_path: Path) -> None:
    key = generate_key()
    (tmp_path / "my.key").write_bytes(key)
    file = tmp_path / "own.toml"
    file.write_text(
        '[cluster]\nname = "own"\nsecret = "own-secret-of-24-bytes-x"\n'
        f'[[region]]\nname = "solo"\ngrpc = "127.0.0.1:{free_port()}"\n'
        '[auth]\nkey = "my.key"\n'
    )
    local = Local(tmp_path / "state")
    try:
        local.run("up", str(file))
        assert (local.state / "auth" / "signing.key").read_bytes() == key
        assert local.run("pub", "a/b", "x", "--region", "solo").returncode == 0
        forged = sign(new_claims("admin", Grants(admin=True)), generate_key())
        refused = as_token(local, forged, "pub", "a/b", "x", "--region", "solo")
        assert refused.returncode == 1 and "forged" in refused.stderr
    finally:
        local.close()
