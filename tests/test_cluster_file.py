"""Cluster files and topology snapshots: every problem named with file, key, value and line."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from federation.cluster_file import load_cluster_file, region_spec
from federation.cluster_secret import SECRET_ENV
from federation.topology import (
    ClusterSettings,
    RegionSpec,
    StaticTopology,
    Topology,
    diff,
)
from plexus.errors import AlreadyExists, ConfigError, InvalidArgument, NotFound

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
[cluster]
name = "demo"
secret = "s3cret-of-16-bytes"

[[region]]
name = "us"
grpc = "127.0.0.1:7101"
data = "state/us"

[[region]]
name = "eu"
grpc = "127.0.0.1:7102"

[[link]]
regions = ["us", "eu"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_cluster_file(path)
    assert err.value.source == str(path)
    assert str(err.value).startswith(f"{path}: ")
    return err.value.problems


def region(name: str, port: int, **more: str) -> str:
    extra = "".join(f'{key} = "{value}"\n' for key, value in more.items())
    return f'\n[[region]]\nname = "{name}"\ngrpc = "127.0.0.1:{port}"\n{extra}'


def link(a: str, b: str) -> str:
    return f'\n[[link]]\nregions = ["{a}", "{b}"]\n'


def load_shipped(name: str) -> Topology:
    """A shipped cluster file, run as its comments say: the secret in the environment."""
    with mock.patch.dict(os.environ, {SECRET_ENV: "a-secret-from-the-environment"}):
        return load_cluster_file(ROOT / "cluster-configs" / f"{name}.toml")


@pytest.fixture(autouse=True)
def no_secret_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)


HEAD = '[cluster]\nname = "demo"\nsecret = "x-secret-of-16-bytes"\n'


# --- the shipped files ---


@pytest.mark.parametrize(
    ("name", "regions", "links"),
    [("three-regions", 3, 3), ("hub-and-spoke", 4, 3), ("chain-5", 5, 4)],
)
def test_shipped_cluster_files_load(name: str, regions: int, links: int):
    topology = load_shipped(name)
    assert (len(topology.regions), len(topology.links)) == (regions, links)
    for spec in topology.regions.values():
        # Data directories are relative to the file: state/<region> at the repository root.
        assert spec.data == str(ROOT / "state" / spec.name)
        assert spec.raft is not None


def test_shipped_cluster_files_carry_no_secret_and_need_one_from_outside():
    for path in (ROOT / "cluster-configs").glob("*.toml"):
        text = path.read_text()
        assert not any(line.startswith(("secret =", "secret_file =")) for line in text.splitlines())
        if "[cluster]" in text:
            with pytest.raises(ConfigError, match=f"cluster.secret_file: .*{SECRET_ENV}"):
                load_cluster_file(path)


def test_three_regions_is_a_full_mesh_on_ports_7101_to_7103():
    topology = load_shipped("three-regions")
    assert list(topology.regions) == ["us", "eu", "ap"]
    assert [spec.grpc for spec in topology.regions.values()] == [
        "127.0.0.1:7101",
        "127.0.0.1:7102",
        "127.0.0.1:7103",
    ]
    assert all(topology.neighbours(r) == set(topology.regions) - {r} for r in topology.regions)


def test_hub_and_spoke_and_chain_have_their_shapes():
    hub = load_shipped("hub-and-spoke")
    assert hub.neighbours("hub") == {"spoke-a", "spoke-b", "spoke-c"}
    assert hub.neighbours("spoke-a") == {"hub"}
    chain = load_shipped("chain-5")
    assert [len(chain.neighbours(r)) for r in chain.regions] == [1, 2, 2, 2, 1]


# --- the secret ---

NO_SECRET = '[cluster]\nname = "demo"\n{}\n[[region]]\nname = "us"\ngrpc = "127.0.0.1:7101"\n'


def test_the_secret_is_read_from_secret_file_relative_to_the_cluster_file(tmp_path: Path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "cluster.secret").write_text("0123456789abcdef0123\n")
    path = write(tmp_path, NO_SECRET.format('secret_file = "keys/cluster.secret"'))
    assert load_cluster_file(path).secret == "0123456789abcdef0123"


def test_a_secret_file_others_can_read_is_used_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    secret = tmp_path / "cluster.secret"
    secret.write_text("0123456789abcdef0123\n")
    path = write(tmp_path, NO_SECRET.format('secret_file = "cluster.secret"'))
    secret.chmod(0o600)
    load_cluster_file(path)
    assert "readable by others" not in caplog.text
    secret.chmod(0o644)
    assert load_cluster_file(path).secret == "0123456789abcdef0123"
    assert f"{secret} is readable by others (mode 644): chmod 600 it" in caplog.text


def test_the_secret_comes_from_the_environment_when_the_file_names_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(SECRET_ENV, "from-the-environment-1234")
    assert load_cluster_file(write(tmp_path, NO_SECRET.format(""))).secret.startswith("from-the")


@pytest.mark.parametrize(
    ("setting", "env", "says"),
    [
        ('secret = "short-secret"', None, "cluster.secret: the secret is 12 bytes, at least 16"),
        ("", "short", f"{SECRET_ENV}: the secret is 5 bytes, at least 16"),
        ('secret_file = "nope"', None, "cluster.secret_file: '"),
        ('secret_file = "short"', None, "cluster.secret_file: the secret is 9 bytes"),
        (
            'secret = "0123456789abcdef"\nsecret_file = "short"',
            None,
            "cluster.secret_file: give either secret or secret_file, not both",
        ),
    ],
)
def test_a_short_missing_or_doubled_secret_is_refused_naming_the_key_not_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, env: str | None, says: str
):
    (tmp_path / "short").write_text("too-short\n")
    if env is None:
        monkeypatch.delenv(SECRET_ENV, raising=False)
    else:
        monkeypatch.setenv(SECRET_ENV, env)
    (problem,) = problems_of(tmp_path, NO_SECRET.format(setting))
    assert says in problem, problem
    for value in ("short-secret", "too-short"):
        assert value not in problem


# --- a good file ---


def test_a_minimal_file_loads_with_default_settings(tmp_path: Path):
    topology = load_cluster_file(write(tmp_path, GOOD))
    assert (topology.cluster, topology.secret, topology.version) == (
        "demo",
        "s3cret-of-16-bytes",
        0,
    )
    assert topology.settings == ClusterSettings()
    assert topology.regions["us"] == RegionSpec("us", "127.0.0.1:7101", str(tmp_path / "state/us"))
    assert topology.regions["eu"].data is None
    assert topology.links == {frozenset({"us", "eu"})}
    assert "s3cret" not in repr(topology)


def test_a_region_may_name_its_metrics_address(tmp_path: Path):
    text = HEAD + region("us", 7101, metrics="127.0.0.1:9101")
    assert load_cluster_file(write(tmp_path, text)).regions["us"].metrics == "127.0.0.1:9101"


def test_settings_are_read(tmp_path: Path):
    text = GOOD + '\n[settings]\nheartbeat_ms = 200\nspool_full = "discard-oldest"\n'
    settings = load_cluster_file(write(tmp_path, text)).settings
    assert (settings.heartbeat_ms, settings.spool_full) == (200, "discard-oldest")
    assert settings.dead_after_ms == 600  # three beats by default


def test_three_regions_vote_unless_the_file_asks_for_five(tmp_path: Path):
    six = HEAD + "".join(
        region(name, 7101 + i, raft=f"127.0.0.1:{7201 + i}") for i, name in enumerate("abcdef")
    )
    six += "".join(link("a", name) for name in "bcdef")
    assert load_cluster_file(write(tmp_path, six)).raft_voters() == ["a", "b", "c"]
    five = load_cluster_file(write(tmp_path, six + "[settings]\nraft_voters = 5\n"))
    assert five.raft_voters() == ["a", "b", "c", "d", "e"]


def test_a_single_region_needs_no_links(tmp_path: Path):
    topology = load_cluster_file(write(tmp_path, HEAD + region("us", 7101)))
    assert topology.links == frozenset()


# --- bad files: each problem names the key and the value ---


US = region("us", 7101)
US_EU = US + region("eu", 7102)
OF_US = "the address of region[0] (us).grpc"

BAD_BODIES = [
    (US_EU + link("us", "eu") + link("eu", "xx"), "link[1].regions: unknown region 'xx'"),
    (US + region("us", 7102), "region[1].name: duplicate region 'us'"),
    (US + link("us", "us"), "link[0].regions: a link joins two different regions, got 'us' twice"),
    (US.replace(":7101", ""), "region[0].grpc: '127.0.0.1' is not HOST:PORT"),
    (US.replace("7101", "99999"), "region[0].grpc: '127.0.0.1:99999' is not HOST:PORT"),
    (region("us", 7101, raft="localhost"), "region[0].raft: 'localhost' is not HOST:PORT"),
    (US_EU + link("us", "eu") + link("eu", "us"), "link[1]: duplicate of link[0] (us-eu)"),
    (region("US", 7101), "region[0].name: 'US' must be 1-32 lower-case letters"),
    (region("9x", 7101), "region[0].name: '9x' must be"),
    (US + region("eu", 7101), f"region[1].grpc: '127.0.0.1:7101' is also {OF_US}"),
    (
        region("us", 7101, raft="127.0.0.1:7101"),
        f"region[0].raft: '127.0.0.1:7101' is also {OF_US}",
    ),
    (region("us", 7101, metrics="nowhere"), "region[0].metrics: 'nowhere' is not HOST:PORT"),
    (
        region("us", 7101, metrics="127.0.0.1:7101"),
        f"region[0].metrics: '127.0.0.1:7101' is also {OF_US}",
    ),
    (
        region("us", 7101, data="d") + region("eu", 7102, data="./d"),
        "region[1].data: './d' is also the data directory of region[0] (us)",
    ),
    (US + 'colour = "blue"\n', "region[0].colour: unknown key"),
    (US.replace("grpc", "grcp"), "region[0].grcp: unknown key (did you mean 'grpc'?)"),
    ('[[region]]\nname = "us"\n', "region[0].grpc: missing (required)"),
    ('[[region]]\ngrpc = "127.0.0.1:1"\n', "region[0].name: missing (required)"),
    ('[[region]]\nname = 7\ngrpc = "h:1"\n', "region[0].name: must be a string, got 7"),
    ("", "region: no regions"),
    ('[region]\nname = "us"\n', "region: must be an array of tables: write [[region]]"),
    (US + '[[link]]\nregions = ["us"]\n', "link[0].regions: a link joins two regions, got 1"),
    (US + "[[link]]\nfrom = 1\n", "link[0].regions: missing (required)"),
    (US + "[[link]]\nregions = [1, 2]\n", "link[0].regions: must be two region names, got [1, 2]"),
    (
        US_EU + region("ap", 7103) + link("us", "eu"),
        "link: the links leave 2 separate groups of regions: us, eu | ap",
    ),
    (
        US + "[settings]\nheartbeat_ms = 1\n",
        "settings.heartbeat_ms: 1 is out of range (10 to 60000)",
    ),
    (
        US + "[settings]\nheartbeat_ms = true\n",
        "settings.heartbeat_ms: must be an integer, got True",
    ),
    (US + '[settings]\nspool_full = "drop"\n', "settings.spool_full: 'drop' is not 'reject' or"),
    (
        US + "[settings]\nreconnect_min_ms = 900\nreconnect_max_ms = 500\n",
        "settings.reconnect_min_ms: 900 is above reconnect_max_ms (500)",
    ),
    (US + "[settings]\nraft_voters = 4\n", "settings.raft_voters: 4 is not 3 or 5"),
    (US + "[settings]\nheartbeat = 100\n", "settings.heartbeat: unknown key (did you mean"),
    (US + "[clusters]\n", "clusters: unknown key (did you mean 'cluster'?)"),
]


@pytest.mark.parametrize(("body", "says"), BAD_BODIES)
def test_each_bad_input_is_named_with_key_and_value(tmp_path: Path, body: str, says: str):
    problems = problems_of(tmp_path, HEAD + body)
    assert any(says in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("head", "says"),
    [
        ('[cluster]\nsecret = "x-secret-of-16-bytes"\n', "cluster.name: missing (required)"),
        ('[cluster]\nname = "demo"\n', "cluster.secret_file: missing (required)"),
        ('[cluster]\nname = "demo"\nsecret = "  "\n', "cluster.secret: the secret is 0 bytes"),
        ('[cluster]\nname = "demo"\nsecret = 7\n', "cluster.secret: must be a string"),
        ('[cluster]\nname = "a b"\nsecret = "x"\n', "cluster.name: 'a b' must be"),
        ("", "cluster: missing (required)"),
        ('cluster = "demo"\n', "cluster: must be a [cluster] table, got 'demo'"),
    ],
)
def test_the_cluster_table_is_checked(tmp_path: Path, head: str, says: str):
    problems = problems_of(tmp_path, head + region("us", 7101))
    assert any(says in problem for problem in problems), problems


def test_every_problem_is_reported_together_with_its_line(tmp_path: Path):
    text = (
        '[cluster]\nname = "demo"\n'  # no secret
        + region("us", 7101)
        + region("us", 7102)  # duplicate
        + region("eu", 7103).replace("7103", "x")  # bad address
        + link("us", "xx")  # unknown region
        + link("eu", "eu")  # self-link
    )
    problems = problems_of(tmp_path, text)
    assert len(problems) == 5, problems
    lines = text.splitlines()
    expected = {
        "cluster.secret_file: missing": "[cluster]",
        "region[1].name: duplicate region 'us'": 'name = "us"',
        "region[2].grpc: '127.0.0.1:x' is not HOST:PORT": 'grpc = "127.0.0.1:x"',
        "link[0].regions: unknown region 'xx'": 'regions = ["us", "xx"]',
        "link[1].regions: a link joins two different": 'regions = ["eu", "eu"]',
    }
    for start, line_text in expected.items():
        (problem,) = [p for p in problems if p.startswith(start)]
        number = int(problem.rsplit("(line ", 1)[1].rstrip(")"))
        assert lines[number - 1] == line_text, (problem, lines[number - 1])


def test_a_region_with_a_bad_field_still_counts_for_links(tmp_path: Path):
    body = region("us", 7101) + region("eu", 7102).replace("7102", "x") + link("us", "eu")
    problems = problems_of(tmp_path, HEAD + body)
    assert len(problems) == 1 and problems[0].startswith("region[1].grpc"), problems


def test_bad_toml_is_reported_with_its_line(tmp_path: Path):
    problems = problems_of(tmp_path, HEAD + '\n[[region]]\nname = "us\n')
    assert problems[0].startswith("not valid TOML") and "line 6" in problems[0], problems


def test_missing_and_unreadable_files_are_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_cluster_file(tmp_path / "nope.toml")
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read"):
        load_cluster_file(path)


def test_region_spec_names_the_file_and_its_regions(tmp_path: Path):
    path = write(tmp_path, GOOD)
    topology = load_cluster_file(path)
    assert region_spec(topology, "eu").grpc == "127.0.0.1:7102"
    with pytest.raises(ConfigError) as err:
        region_spec(topology, "xx")
    assert f"region 'xx' is not in {path} (regions: us, eu)" in str(err.value)


# --- topology snapshots and their source ---


def three() -> Topology:
    return load_shipped("three-regions")


def test_the_smaller_name_dials_on_both_ends():
    topology = three()
    assert topology.dialer("us", "eu") == topology.dialer("eu", "us") == "eu"
    with pytest.raises(ValueError, match="twice"):
        topology.dialer("us", "us")


def test_snapshots_are_immutable_and_hashable():
    topology = three()
    with pytest.raises(TypeError):
        topology.regions["xx"] = RegionSpec("xx", "h:1")  # type: ignore[index]
    assert hash(topology) == hash(three()) and topology == three()


def test_changes_return_the_next_version_and_leave_the_old_one_alone():
    old = three()
    new = old.with_region(RegionSpec("sa", "127.0.0.1:7104"), links=["us"])
    assert (new.version, new.neighbours("sa")) == (1, {"us"})
    assert "sa" not in old.regions
    new = new.with_link("sa", "eu").without_link("us", "ap").without_region("eu")
    assert new.version == 4
    assert new.links == {frozenset({"us", "sa"})}
    changes = diff(old, new)
    assert changes.regions_added == {"sa"} and changes.regions_removed == {"eu"}
    assert changes.links_removed == {
        frozenset(p) for p in (("us", "eu"), ("us", "ap"), ("eu", "ap"))
    }
    assert not diff(old, three())
    assert diff(old, old.with_settings(ClusterSettings(heartbeat_ms=100))).settings_changed


def test_bad_changes_are_refused_with_clear_errors():
    topology = three()
    with pytest.raises(AlreadyExists, match="region 'us' already exists"):
        topology.with_region(RegionSpec("us", "127.0.0.1:9"))
    with pytest.raises(AlreadyExists, match=r"127\.0\.0\.1:7101 is already used by region 'us'"):
        topology.with_region(RegionSpec("sa", "127.0.0.1:7101"))
    with pytest.raises(InvalidArgument, match="'SA'"):
        topology.with_region(RegionSpec("SA", "127.0.0.1:9"))
    with pytest.raises(NotFound, match="no region 'xx'"):
        topology.with_region(RegionSpec("sa", "127.0.0.1:9"), links=["xx"])
    with pytest.raises(NotFound, match="no region 'xx'"):
        topology.without_region("xx")
    with pytest.raises(AlreadyExists, match="link eu-us already exists"):
        topology.with_link("us", "eu")
    with pytest.raises(InvalidArgument, match="twice"):
        topology.with_link("us", "us")
    with pytest.raises(NotFound, match="no link"):
        topology.without_region("ap").without_link("us", "ap")


def test_a_topology_with_an_unknown_link_end_cannot_be_built():
    with pytest.raises(ValueError, match="unknown region 'xx'"):
        Topology("c", "s", {"us": RegionSpec("us", "h:1")}, frozenset({frozenset({"us", "xx"})}))


def test_settings_are_checked_when_built():
    with pytest.raises(ValueError, match="dead_after_heartbeats"):
        ClusterSettings(dead_after_heartbeats=1)


def test_static_source_hands_new_snapshots_to_watchers():
    source = StaticTopology(three())
    seen: list[int] = []
    source.watch(lambda topology: seen.append(topology.version))
    changed = source.current().without_link("us", "ap")
    source.replace(changed)
    assert source.current() is changed and seen == [1]
    with pytest.raises(ValueError, match="older"):
        source.replace(three())


# ------------------------------------------------------------------ [tls]

TLS = """
[tls]
ca = "certs/ca.crt"
cert = "certs/{region}.crt"
key = "/etc/plexus/{region}.key"
"""


def test_tls_paths_are_relative_to_the_file_with_the_region_filled_in(tmp_path: Path):
    topology = load_cluster_file(write(tmp_path, GOOD + TLS))
    assert topology.tls is not None
    assert topology.tls.for_region("eu") == {
        "tls_ca": str(tmp_path / "certs" / "ca.crt"),
        "tls_cert": str(tmp_path / "certs" / "eu.crt"),
        "tls_key": "/etc/plexus/eu.key",
    }


def test_a_file_without_tls_has_none(tmp_path: Path):
    assert load_cluster_file(write(tmp_path, GOOD)).tls is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('\n[tls]\nca = "ca.crt"\ncert = "{region}.crt"\n', "tls.key: missing (required)"),
        ('\n[tls]\nca = "ca.crt"\ncert = "node.crt"\nkey = "{region}.key"\n', "tls.cert: must"),
        (TLS + 'certificate = "x"\n', "tls.certificate: unknown key (known: ca, cert, key)"),
        ('\n[tls]\nca = 7\ncert = "{region}.crt"\nkey = "{region}.key"\n', "tls.ca: must be a"),
    ],
)
def test_each_bad_tls_key_is_named(tmp_path: Path, body: str, says: str):
    problems = problems_of(tmp_path, GOOD + body)
    assert any(says in p for p in problems), problems
