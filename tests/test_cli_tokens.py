"""`plexus token` and `--token`/PLEXUS_TOKEN as a user runs them, against a node process
started with `--auth-key`: every permission allowed and refused, in one line naming what."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plexus.tokens import generate_key
from tests.harness import NodeProcess, Nodes, wait_for

pytestmark = pytest.mark.timeout(120)

PLEXUS = [sys.executable, "-m", "plexus.cli.main"]


def plexus(
    *args: str, token: str | None = None, server: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PLEXUS_TOKEN"}
    if token is not None:
        env["PLEXUS_TOKEN"] = token
    where = ["--server", server] if server else []
    return subprocess.run(
        [*PLEXUS, *args, *where], capture_output=True, text=True, timeout=30, env=env
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[NodeProcess, str, str]:
    root = tmp_path_factory.mktemp("cli-tokens")
    key = root / "signing.key"
    key.write_bytes(generate_key())
    nodes = Nodes(root)
    node = nodes.start("us", None, "--auth-key", str(key))
    made = plexus("token", "create", "--name", "ops", "--admin", "--key", str(key))
    assert made.returncode == 0, made.stderr
    yield node, made.stdout.strip(), str(key)
    nodes.close()


@pytest.fixture
def node(setup: tuple[NodeProcess, str, str]) -> NodeProcess:
    return setup[0]


@pytest.fixture
def admin(setup: tuple[NodeProcess, str, str]) -> str:
    return setup[1]


def create(node: NodeProcess, admin: str, name: str, *grants: str) -> str:
    made = plexus(
        "token", "create", "--name", name, *grants, "--json", token=admin, server=node.address
    )
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)["token"]


def assert_denied(result: subprocess.CompletedProcess[str], *named: str) -> None:
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert "permission denied" in line
    for text in named:
        assert text in line, line


def test_every_permission_allowed_and_refused_through_the_cli(
    node: NodeProcess, admin: str
) -> None:
    server = node.address
    assert (
        plexus(
            "queue", "create", "billing", "--subscribe", "b/>", token=admin, server=server
        ).returncode
        == 0
    )
    tok = create(
        node,
        admin,
        "clerk",
        "--publish",
        "orders/>",
        "--subscribe",
        "orders/>",
        "--create",
        "jobs",
        "--consume",
        "jobs",
        "--purge",
        "jobs",
    )
    ok = plexus("pub", "orders/us/1", "x", token=tok, server=server)
    assert ok.returncode == 0, ok.stderr
    assert_denied(
        plexus("pub", "payments/us/1", "x", token=tok, server=server),
        "payments/us/1",
        "publish",
        "clerk",
    )
    assert_denied(
        plexus("sub", "payments/>", "--count", "1", "--timeout", "5", token=tok, server=server),
        "payments/>",
        "subscribe",
        "clerk",
    )
    made = plexus("queue", "create", "jobs", "--subscribe", "orders/>", token=tok, server=server)
    assert made.returncode == 0, made.stderr
    assert_denied(
        plexus("queue", "create", "other", "--subscribe", "orders/>", token=tok, server=server),
        "other",
        "create",
    )
    assert plexus("queue", "purge", "jobs", "--yes", token=tok, server=server).returncode == 0
    assert_denied(
        plexus("queue", "purge", "billing", "--yes", token=tok, server=server), "billing", "purge"
    )
    assert_denied(
        plexus(
            "queue",
            "consume",
            "billing",
            "--count",
            "1",
            "--timeout",
            "5",
            token=tok,
            server=server,
        ),
        "billing",
        "consume",
    )
    assert_denied(plexus("queue", "delete", "jobs", token=tok, server=server), "admin", "clerk")
    assert_denied(plexus("clients", token=tok, server=server), "admin", "clerk")
    assert_denied(plexus("token", "list", token=tok, server=server), "admin", "clerk")


def test_missing_forged_and_revoked_tokens_are_unauthenticated_saying_which(
    node: NodeProcess, admin: str, tmp_path: Path
) -> None:
    server = node.address
    missing = plexus("pub", "orders/us/1", "x", server=server)
    assert missing.returncode != 0 and "token is missing" in missing.stderr
    other_key = tmp_path / "other.key"
    other_key.write_bytes(generate_key())
    forged = plexus("token", "create", "--name", "ops", "--admin", "--key", str(other_key)).stdout
    refused = plexus("pub", "orders/us/1", "x", token=forged.strip(), server=server)
    assert refused.returncode != 0 and "forged" in refused.stderr
    tok = create(node, admin, "temp", "--publish", ">")
    assert plexus("pub", "a/b", "x", token=tok, server=server).returncode == 0
    revoked = plexus("token", "revoke", "temp", token=admin, server=server)
    assert revoked.returncode == 0, revoked.stderr
    after = plexus("pub", "a/b", "x", token=tok, server=server)
    assert after.returncode != 0 and "'temp' is revoked" in after.stderr
    listed = plexus("token", "list", "--json", token=admin, server=server)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert any(r["name"] == "temp" and r["revoked"] for r in rows)
    assert tok not in listed.stdout


def test_an_expired_token_is_refused(
    node: NodeProcess, setup: tuple[NodeProcess, str, str]
) -> None:
    made = plexus(
        "token", "create", "--name", "brief", "--publish", ">", "--expires", "1s", "--key", setup[2]
    )
    tok = made.stdout.strip()
    refusals: list[str] = []

    def refused() -> bool:  # the token lives one second
        result = plexus("pub", "a/b", "x", token=tok, server=node.address)
        refusals.append(result.stderr)
        return result.returncode != 0

    wait_for(refused, 10, "the token to expire")
    assert "'brief' is expired" in refusals[-1]
