"""The cluster's regions and links, and the one interface through which a node learns them.

A `Topology` is an immutable snapshot. A `TopologySource` hands out the current
snapshot and calls watchers with each new one: the static cluster file now
(`StaticTopology`), Raft-replicated membership later. The `with_*`/`without_*`
helpers return the next snapshot (version + 1) so a replicated state machine can
apply a membership command as a pure function of the previous snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, Protocol, get_args

from plexus.errors import AlreadyExists, InvalidArgument, NotFound

__all__ = [
    "REGION_NAME",
    "SETTINGS_RANGES",
    "ClusterSettings",
    "RegionSpec",
    "SpoolFullPolicy",
    "StaticTopology",
    "TlsFiles",
    "Topology",
    "TopologyDiff",
    "TopologySource",
    "diff",
    "link_name",
    "parse_address",
    "settings_problems",
]

REGION_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
REGION_NAME_RULE = "must be 1-32 lower-case letters, digits or '-', starting with a letter"

SpoolFullPolicy = Literal["reject", "discard-oldest"]
SPOOL_FULL_POLICIES: tuple[str, ...] = get_args(SpoolFullPolicy)

# How many regions may vote in Raft: three tolerate one lost voter, five two;
# every voter more costs each of them heartbeats (docs/benchmarks.md).
RAFT_VOTER_COUNTS = (3, 5)

# Inclusive bounds for the integer settings. Heartbeats faster than 10 ms would
# cost more than the events; fewer than 2 missed beats would flap on one GC pause.
SETTINGS_RANGES: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "heartbeat_ms": (10, 60_000),
        "dead_after_heartbeats": (2, 1_000),
        "link_spool_quota_bytes": (1 << 20, 1 << 44),
        "reconnect_min_ms": (1, 600_000),
        "reconnect_max_ms": (1, 600_000),
    }
)


def parse_address(value: str) -> tuple[str, int] | None:
    """(host, port) of a dialable `HOST:PORT` (port 1-65535, `[v6]:port` allowed), else None."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or any(c.isspace() for c in host):
        return None
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            return None
    elif ":" in host:  # a bare IPv6 address is ambiguous: its last group looks like a port
        return None
    return host, int(port)


def link_name(a: str, b: str) -> str:
    """The operator-facing name of a link, the same whichever end names it: `eu-us`."""
    return "-".join(sorted((a, b)))


def settings_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, problem) for every out-of-range or inconsistent value in `values`.

    Shared by `ClusterSettings` and the cluster file loader so both enforce one rule set.
    """
    problems: list[tuple[str, str]] = []
    for key, (low, high) in SETTINGS_RANGES.items():
        value = values.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            problems.append((key, f"{value} is out of range ({low} to {high})"))
    policy = values.get("spool_full")
    if policy is not None and policy not in SPOOL_FULL_POLICIES:
        choices = " or ".join(repr(p) for p in SPOOL_FULL_POLICIES)
        problems.append(("spool_full", f"{policy!r} is not {choices}"))
    voters = values.get("raft_voters")
    if voters is not None and voters not in RAFT_VOTER_COUNTS:
        problems.append(("raft_voters", f"{voters!r} is not 3 or 5"))
    low_ms, high_ms = values.get("reconnect_min_ms"), values.get("reconnect_max_ms")
    if isinstance(low_ms, int) and isinstance(high_ms, int) and low_ms > high_ms:
        problems.append(("reconnect_min_ms", f"{low_ms} is above reconnect_max_ms ({high_ms})"))
    return problems


@dataclass(frozen=True)
class RegionSpec:
    """Where one region listens and keeps its data."""

    name: str
    grpc: str  # HOST:PORT that clients and peer regions dial
    data: str | None = None  # data directory; absolute once loaded from a file
    raft: str | None = None  # HOST:PORT of the membership (Raft) port
    metrics: str | None = None  # HOST:PORT of Prometheus metrics (node-local, not replicated)
    mqtt: str | None = None  # HOST:PORT of the MQTT listener (node-local, not replicated)
    http: str | None = None  # HOST:PORT of the HTTP gateway (node-local, not replicated)


@dataclass(frozen=True)
class TlsFiles:
    """The cluster file's [tls]: absolute paths, `{region}` standing for each region's name."""

    ca: str
    cert: str
    key: str

    def for_region(self, region: str) -> dict[str, str]:
        """The node settings (tls_ca, tls_cert, tls_key) of region `region`."""
        return {
            "tls_ca": self.ca.replace("{region}", region),
            "tls_cert": self.cert.replace("{region}", region),
            "tls_key": self.key.replace("{region}", region),
        }


@dataclass(frozen=True)
class ClusterSettings:
    """Settings every region of a cluster shares."""

    # An idle link's heartbeat, each way (it also carries the round trip and
    # the interest digest). Each costs both ends ~0.7 ms of gRPC work: twelve
    # idle regions' CPU is mostly this and Raft (docs/benchmarks.md). A crashed
    # peer is seen at once (its stream breaks); these only catch a hung one.
    heartbeat_ms: int = 2000
    # A silent peer is declared down after this many heartbeat intervals.
    dead_after_heartbeats: int = 3
    link_spool_quota_bytes: int = 256 << 20
    spool_full: SpoolFullPolicy = "reject"
    reconnect_min_ms: int = 100
    reconnect_max_ms: int = 5000
    # Regions beyond this many follow the membership without voting in Raft.
    raft_voters: int = 3

    def __post_init__(self) -> None:
        problems = settings_problems(vars(self))
        if problems:
            raise ValueError("; ".join(f"{key}: {text}" for key, text in problems))

    @property
    def dead_after_ms(self) -> int:
        return self.heartbeat_ms * self.dead_after_heartbeats


@dataclass(frozen=True)
class Topology:
    """One snapshot of the cluster: its regions, the links between them, its settings.

    `regions` keeps the order it was given in (the file's order), read-only.
    `links` holds 2-element frozensets of region names. `version` grows by one
    with each change; `source` names where the snapshot came from, for messages.
    """

    cluster: str
    secret: str = field(repr=False)  # never in logs or reprs
    regions: Mapping[str, RegionSpec]
    links: frozenset[frozenset[str]]
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    version: int = 0
    source: str = field(default="", compare=False)
    # Regions whose nodes vote in Raft; empty means the default choice (`raft_voters`).
    voters: frozenset[str] = frozenset()
    # Where each region's node finds its certificates: node-local, never replicated.
    tls: TlsFiles | None = field(default=None, compare=False)
    # The PEM key that signs client tokens, from the cluster file's [auth] key; it seeds
    # the replicated token state (federation/auth_state.py). Empty: no authentication.
    auth_key: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        # Copy, so a caller mutating its dict cannot change a published snapshot.
        regions = MappingProxyType(dict(self.regions))
        links = frozenset(frozenset(link) for link in self.links)
        object.__setattr__(self, "regions", regions)
        object.__setattr__(self, "links", links)
        problems = [
            f"regions[{key!r}] holds region {spec.name!r}"
            for key, spec in regions.items()
            if key != spec.name
        ]
        problems += [
            f"region {name!r}: {REGION_NAME_RULE}"
            for name in regions
            if not REGION_NAME.match(name)
        ]
        for link in links:
            if len(link) != 2:
                problems.append(f"link {sorted(link)}: a link joins two different regions")
            problems += [
                f"link {sorted(link)}: unknown region {n!r}" for n in sorted(link - regions.keys())
            ]
        if problems:
            raise ValueError("; ".join(problems))

    def __hash__(self) -> int:
        return hash(
            (
                self.cluster,
                self.secret,
                frozenset(self.regions.items()),  # equality ignores order, so must this
                self.links,
                self.settings,
                self.version,
                self.voters,
            )
        )

    def raft_voters(self) -> list[str]:
        """Regions that vote in Raft: those recorded, else the first `settings.raft_voters` by name.

        The other regions follow the membership without voting, so a large
        cluster keeps its Raft traffic (and its elections) small.
        """
        if self.voters:
            return sorted(self.voters)
        with_raft = sorted(name for name, spec in self.regions.items() if spec.raft)
        return with_raft[: self.settings.raft_voters]

    def neighbours(self, region: str) -> frozenset[str]:
        """Regions linked to `region` (empty for a region not in the cluster)."""
        return frozenset(
            name for link in self.links if region in link for name in link if name != region
        )

    def dialer(self, a: str, b: str) -> str:
        """The end that dials the link a-b: the lexically smaller name.

        Both ends compute the same answer, so exactly one of them dials and a
        link never ends up as two crossed connections.
        """
        if a == b:
            raise ValueError(f"a link joins two different regions, got {a!r} twice")
        return min(a, b)

    def has_link(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.links

    # Changes, for live membership: each returns the next snapshot, version + 1.

    def with_region(self, spec: RegionSpec, links: Iterable[str] = ()) -> Topology:
        """Add a region, linked to the existing regions named in `links`."""
        if spec.name in self.regions:
            raise AlreadyExists(f"region {spec.name!r} already exists")
        if not REGION_NAME.match(spec.name):
            raise InvalidArgument(f"region name {spec.name!r} {REGION_NAME_RULE}")
        for address in (spec.grpc, spec.raft):
            if address is not None and parse_address(address) is None:
                raise InvalidArgument(f"region {spec.name!r}: {address!r} is not HOST:PORT")
            if address is not None and address in self._addresses():
                raise AlreadyExists(
                    f"address {address} is already used by region {self._addresses()[address]!r}"
                )
        peers = list(links)
        self._require(*peers)
        new_links = {frozenset((spec.name, peer)) for peer in peers}
        return self._next(regions={**self.regions, spec.name: spec}, links=self.links | new_links)

    def without_region(self, name: str) -> Topology:
        """Remove a region and every link it has."""
        self._require(name)
        regions = {key: spec for key, spec in self.regions.items() if key != name}
        return self._next(
            regions=regions, links=frozenset(link for link in self.links if name not in link)
        )

    def with_link(self, a: str, b: str) -> Topology:
        self._require(a, b)
        if a == b:
            raise InvalidArgument(f"a link joins two different regions, got {a!r} twice")
        if self.has_link(a, b):
            raise AlreadyExists(f"link {link_name(a, b)} already exists")
        return self._next(links=self.links | {frozenset((a, b))})

    def without_link(self, a: str, b: str) -> Topology:
        if not self.has_link(a, b):
            raise NotFound(f"no link {link_name(a, b)}")
        return self._next(links=self.links - {frozenset((a, b))})

    def with_settings(self, settings: ClusterSettings) -> Topology:
        return self._next(settings=settings)

    def _next(self, **changes: Any) -> Topology:
        return replace(self, version=self.version + 1, **changes)

    def _require(self, *names: str) -> None:
        for name in names:
            if name not in self.regions:
                raise NotFound(f"no region {name!r} (regions: {', '.join(self.regions)})")

    def _addresses(self) -> dict[str, str]:
        return {
            address: spec.name
            for spec in self.regions.values()
            for address in (spec.grpc, spec.raft)
            if address is not None
        }


@dataclass(frozen=True)
class TopologyDiff:
    """What changed between two snapshots: what a link supervisor acts on."""

    regions_added: frozenset[str] = frozenset()
    regions_removed: frozenset[str] = frozenset()
    # Same name, different addresses or data: links to it must be re-dialled.
    regions_changed: frozenset[str] = frozenset()
    links_added: frozenset[frozenset[str]] = frozenset()
    links_removed: frozenset[frozenset[str]] = frozenset()
    settings_changed: bool = False

    def __bool__(self) -> bool:
        return any(
            (
                self.regions_added,
                self.regions_removed,
                self.regions_changed,
                self.links_added,
                self.links_removed,
                self.settings_changed,
            )
        )


def diff(old: Topology, new: Topology) -> TopologyDiff:
    """The changes that turn `old` into `new`."""
    both = old.regions.keys() & new.regions.keys()
    return TopologyDiff(
        regions_added=frozenset(new.regions.keys() - old.regions.keys()),
        regions_removed=frozenset(old.regions.keys() - new.regions.keys()),
        regions_changed=frozenset(n for n in both if old.regions[n] != new.regions[n]),
        links_added=new.links - old.links,
        links_removed=old.links - new.links,
        settings_changed=old.settings != new.settings,
    )


class TopologySource(Protocol):
    """Where a node learns the cluster's regions and links."""

    def current(self) -> Topology:
        """The latest snapshot."""
        ...

    def watch(self, callback: Callable[[Topology], None]) -> None:
        """Call `callback` with each later snapshot, on the node's event loop.

        It is not called with the current snapshot: read `current()` first, then
        watch (both on the loop, so no snapshot falls in between).
        """
        ...


class StaticTopology:
    """A `TopologySource` over a snapshot held in memory: the cluster file, and tests.

    `replace` publishes a new snapshot to the watchers, as a live source would.
    """

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._watchers: list[Callable[[Topology], None]] = []

    def current(self) -> Topology:
        return self._topology

    def watch(self, callback: Callable[[Topology], None]) -> None:
        self._watchers.append(callback)

    def replace(self, topology: Topology) -> None:
        """Make `topology` current and hand it to every watcher, in the order they watched."""
        if topology.version < self._topology.version:
            # A source must never go back in time: watchers act on differences.
            raise ValueError(
                f"topology version {topology.version} is older than {self._topology.version}"
            )
        self._topology = topology
        for callback in list(self._watchers):
            callback(topology)
