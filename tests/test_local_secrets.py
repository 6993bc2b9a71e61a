"""Secrets at rest: `plexus up` keeps its secret in a 0600 file, state and data dirs are 0700,
every file holding a secret or events is 0600, and no status command shows the secret."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.cluster_file import load_cluster_file
from plexus.local import ops
from plexus.local.state import StateDir
from storage.environment import Environment
from tests.test_local_cluster import CONFIGS, Local

pytestmark = pytest.mark.timeout(180)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def lax_umask() -> Iterator[None]:
    """The usual 022: what is private must be so whatever the umask."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    cluster = Local(tmp_path / "state")
    cluster.env.pop(ops.SECRET_ENV, None)
    try:
        yield cluster
    finally:
        cluster.close()


def test_up_keeps_the_secret_in_a_private_file_and_everything_it_writes_private(
    local: Local,
) -> None:
    with lax_umask():
        local.run("up")
    state = local.state
    secret_file = state / "cluster.secret"
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    copy = (state / "cluster.toml").read_text()
    assert secret not in copy and f'secret_file = "{secret_file}"' in copy
    assert load_cluster_file(state / "cluster.toml").secret == secret

    assert mode(state) == 0o700
    for name in ("cluster.secret", "cluster.toml", "cluster.json", "lock"):
        assert mode(state / name) == 0o600, name
    for region in ("us", "eu", "ap"):
        here = state / "regions" / region
        assert mode(here) == mode(here / "data") == 0o700, region
        assert mode(here / "node.log") == 0o600, region
        lmdb_files = list((here / "data").rglob("*.mdb"))
        assert lmdb_files and all(mode(p) == 0o600 for p in lmdb_files), region

    shown = local.run("status").stdout + local.run("status", "--json").stdout
    logs = "".join((state / "regions" / r / "node.log").read_text() for r in ("us", "eu", "ap"))
    assert secret not in shown and secret not in logs


def test_a_node_makes_its_data_dir_0700_and_its_lmdb_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with lax_umask():
        env = Environment(data)
    try:
        assert mode(data) == 0o700
        files = list(data.rglob("*.mdb"))
        assert files and all(mode(p) == 0o600 for p in files)
    finally:
        env.close()


def test_an_older_world_readable_data_dir_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    Environment(data).close()
    assert mode(data) == 0o700


def test_up_of_a_shipped_file_without_a_secret_generates_one_keeping_the_line_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ops.SECRET_ENV, raising=False)
    state = StateDir(tmp_path / "state")
    source = CONFIGS / "three-regions.toml"
    ops._create(state, source)
    copy = state.cluster_file.read_text()
    lines, original = copy.splitlines(), source.read_text().splitlines()
    # Lines are edited in place (errors name lines of the user's file); [auth] is appended.
    assert "\n".join(lines[len(original) :]).strip().startswith("[auth]")
    assert any("secret_file" in line for line in lines[: len(original)])
    assert f'secret_file = "{state.secret_file}"' in copy
    assert mode(state.secret_file) == 0o600
    assert load_cluster_file(state.cluster_file).secret == state.secret_file.read_text().strip()


def test_up_of_a_file_naming_a_relative_secret_file_points_the_copy_at_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ops.SECRET_ENV, raising=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "team.secret").write_text("a-team-secret-of-many-bytes\n")
    text = (CONFIGS / "three-regions.toml").read_text()
    config = mine / "cluster.toml"
    config.write_text(text.replace("[cluster]", '[cluster]\nsecret_file = "team.secret"'))
    state = StateDir(tmp_path / "state")
    ops._create(state, config)
    assert load_cluster_file(state.cluster_file).secret == "a-team-secret-of-many-bytes"
    assert not state.secret_file.exists()


def test_up_with_the_secret_in_the_environment_writes_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ops.SECRET_ENV, "a-secret-from-the-environment")
    state = StateDir(tmp_path / "state")
    ops._create(state, CONFIGS / "three-regions.toml")
    lines = state.cluster_file.read_text().splitlines()
    assert not any(line.startswith("secret") for line in lines)
    assert not state.secret_file.exists()
