"""The static cluster file: a TOML description of regions, links and settings.

`load_cluster_file` validates everything and reports every problem at once in a
`ConfigError`, each naming the key (`region[1].grpc`), the value and, where it
can be found, the line.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from federation.cluster_secret import cluster_secret
from federation.topology import (
    REGION_NAME,
    REGION_NAME_RULE,
    ClusterSettings,
    RegionSpec,
    TlsFiles,
    Topology,
    parse_address,
    settings_problems,
)
from plexus.errors import ConfigError

__all__ = ["load_cluster_file", "region_spec"]

CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOP_KEYS = ("cluster", "settings", "region", "link", "tls", "auth")
CLUSTER_KEYS = ("name", "secret", "secret_file")
AUTH_KEYS = ("key",)
REGION_KEYS = ("name", "grpc", "data", "raft", "metrics", "mqtt", "http")
LINK_KEYS = ("regions",)
TLS_KEYS = ("ca", "cert", "key")
SETTINGS_KEYS = tuple(ClusterSettings.__dataclass_fields__)


def load_cluster_file(path: Path) -> Topology:
    """The topology described by the cluster file at `path` (version 0)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot read: {exc}"]) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line N, column M)".
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    check = _Checker(_key_lines(text))
    topology = check.document(doc, path.absolute().parent, source)
    if check.problems or topology is None:
        raise ConfigError(source, check.sorted_problems())
    return topology


def region_spec(topology: Topology, name: str) -> RegionSpec:
    """The region called `name`, or a ConfigError listing the regions there are."""
    spec = topology.regions.get(name)
    if spec is None:
        source = topology.source or "the cluster"
        known = ", ".join(topology.regions)
        raise ConfigError(source, [f"region {name!r} is not in {source} (regions: {known})"])
    return spec


class _Checker:
    """Collects problems while reading a parsed document; never stops at the first."""

    def __init__(self, lines: Mapping[str, int]) -> None:
        self.key_lines = lines
        self.problems: list[str] = []
        self._order: list[int] = []
        self.names: set[str] = set()  # every region name given, valid or not

    def add(self, key: str, text: str) -> None:
        line = self.key_lines.get(key)
        if line is None and "." in key:  # a missing key: point at its table
            line = self.key_lines.get(key.rsplit(".", 1)[0])
        self.problems.append(f"{key}: {text}" + (f" (line {line})" if line else ""))
        self._order.append(line or 1 << 30)

    def sorted_problems(self) -> list[str]:
        """In file order, so they read top to bottom; those without a line last."""
        order = sorted(range(len(self.problems)), key=self._order.__getitem__)
        return [self.problems[i] for i in order]

    def document(self, doc: dict[str, Any], base: Path, source: str) -> Topology | None:
        self.unknown_keys(doc, TOP_KEYS, "")
        cluster = self.table(doc, "cluster", required=True)
        name = self.string(cluster, "cluster", "name", required=True)
        if name is not None and not CLUSTER_NAME.match(name):
            self.add(
                "cluster.name",
                f"{name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
            )
        secret, problems = cluster_secret(cluster, base)
        for key, text in problems:
            self.add(key, text)
        settings = self.settings(self.table(doc, "settings", required=False))
        regions = self.regions(doc.get("region"), base)
        links = self.links(doc.get("link", []), regions)
        tls = self.tls(self.table(doc, "tls", required=False), base) if "tls" in doc else None
        auth_key = self.auth_key(self.table(doc, "auth", required=False), base)
        if self.problems or name is None or secret is None or settings is None:
            return None
        return Topology(
            cluster=name,
            secret=secret,
            regions={spec.name: spec for spec in regions.values()},
            links=frozenset(links),
            settings=settings,
            source=source,
            tls=tls,
            auth_key=auth_key,
        )

    # --- shapes ---

    def table(self, doc: dict[str, Any], key: str, *, required: bool) -> dict[str, Any]:
        value = doc.get(key)
        if value is None:
            if required:
                self.add(key, f"missing (required): add a [{key}] table")
            return {}
        if not isinstance(value, dict):
            self.add(key, f"must be a [{key}] table, got {value!r}")
            return {}
        known = {
            "cluster": CLUSTER_KEYS,
            "settings": SETTINGS_KEYS,
            "tls": TLS_KEYS,
            "auth": AUTH_KEYS,
        }[key]
        self.unknown_keys(value, known, key)
        return value

    def array_of_tables(self, value: Any, key: str) -> list[Any]:
        if isinstance(value, dict):
            self.add(key, f"must be an array of tables: write [[{key}]], not [{key}]")
            return []
        if not isinstance(value, list):
            self.add(key, f"must be an array of tables ([[{key}]]), got {value!r}")
            return []
        return value

    def unknown_keys(self, table: dict[str, Any], known: tuple[str, ...], where: str) -> None:
        for key in table:
            if key in known:
                continue
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = (
                f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(known)})"
            )
            self.add(f"{where}.{key}" if where else key, "unknown key" + suggestion)

    def string(self, table: dict[str, Any], where: str, key: str, *, required: bool) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.add(f"{where}.{key}", "missing (required)")
            return None
        if not isinstance(value, str):
            self.add(f"{where}.{key}", f"must be a string, got {value!r}")
            return None
        return value

    # --- sections ---

    def auth_key(self, table: dict[str, Any], base: Path) -> str:
        """The token signing key's PEM text, from the file `[auth] key` names ("" if none)."""
        value = self.string(table, "auth", "key", required=False)
        if value is None:
            return ""
        path = base / value
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            self.add("auth.key", f"cannot read the token signing key {str(path)!r}: {exc}")
            return ""
        if "PRIVATE KEY" not in text:
            self.add("auth.key", f"{str(path)!r} is not a PEM private key")
            return ""
        return text

    def settings(self, table: dict[str, Any]) -> ClusterSettings | None:
        values: dict[str, Any] = {}
        defaults = ClusterSettings()
        for key in SETTINGS_KEYS:
            if key not in table:
                continue
            value = table[key]
            expected = type(getattr(defaults, key))
            # TOML booleans are Python ints; `heartbeat_ms = true` is a mistake.
            if not isinstance(value, expected) or isinstance(value, bool):
                kind = "an integer" if expected is int else "a string"
                self.add(f"settings.{key}", f"must be {kind}, got {value!r}")
                continue
            values[key] = value
        bad = settings_problems(values)
        for key, text in bad:
            self.add(f"settings.{key}", text)
        if bad or len(values) != len(set(table) & set(SETTINGS_KEYS)):
            return None
        return ClusterSettings(**values)

    def tls(self, table: dict[str, Any], base: Path) -> TlsFiles | None:
        """[tls]: ca, cert and key (`{region}` in cert and key), relative to the file."""
        paths = {}
        for key in TLS_KEYS:
            value = self.string(table, "tls", key, required=True)
            if value is not None and not value.strip():
                self.add(f"tls.{key}", "must not be empty")
            elif value is not None:
                paths[key] = os.path.normpath(base / os.path.expanduser(value))
        for key in ("cert", "key"):
            if key in paths and "{region}" not in paths[key]:
                self.add(f"tls.{key}", "must contain {region}: each region has its own")
        if len(paths) != len(TLS_KEYS):
            return None
        return TlsFiles(**paths)

    def regions(self, value: Any, base: Path) -> dict[int, RegionSpec]:
        """The valid regions by index; every problem with the others is recorded."""
        if value is None:
            self.add("region", "no regions: add at least one [[region]] table")
            return {}
        tables = self.array_of_tables(value, "region")
        if isinstance(value, list) and not tables:
            self.add("region", "no regions: add at least one [[region]] table")
        found: dict[int, RegionSpec] = {}
        # First use of each name, address and data directory: value -> "region[i] (name)".
        names: dict[str, int] = {}
        used: dict[str, str] = {}
        for i, table in enumerate(tables):
            where = f"region[{i}]"
            if not isinstance(table, dict):
                self.add(where, f"must be a table, got {table!r}")
                continue
            self.unknown_keys(table, REGION_KEYS, where)
            errors = len(self.problems)
            name = self.string(table, where, "name", required=True)
            if name is not None:
                # Links may name a region whose other fields are wrong: say so only once.
                self.names.add(name)
                if not REGION_NAME.match(name):
                    self.add(f"{where}.name", f"{name!r} {REGION_NAME_RULE}")
                elif name in names:
                    self.add(
                        f"{where}.name", f"duplicate region {name!r} (first: region[{names[name]}])"
                    )
                else:
                    names[name] = i
            label = f"{where} ({name or '?'})"
            addresses: dict[str, str] = {}
            for key in ("grpc", "raft", "metrics", "mqtt", "http"):
                address = self.string(table, where, key, required=key == "grpc")
                if address is None:
                    continue
                if parse_address(address) is None:
                    self.add(f"{where}.{key}", f"{address!r} is not HOST:PORT (port 1-65535)")
                    continue
                other = used.setdefault(f"address {address.lower()}", f"{label}.{key}")
                if other != f"{label}.{key}":
                    self.add(f"{where}.{key}", f"{address!r} is also the address of {other}")
                addresses[key] = address
            data = self.string(table, where, "data", required=False)
            if data is not None:
                if not data.strip():
                    self.add(f"{where}.data", "must not be empty")
                else:
                    # Relative to the file, so the cluster runs the same from any directory.
                    resolved = os.path.normpath(base / os.path.expanduser(data))
                    other = used.setdefault(f"data {resolved}", label)
                    if other != label:
                        self.add(f"{where}.data", f"{data!r} is also the data directory of {other}")
                    data = resolved
            if len(self.problems) == errors and name is not None and "grpc" in addresses:
                found[i] = RegionSpec(
                    name,
                    addresses["grpc"],
                    data,
                    addresses.get("raft"),
                    addresses.get("metrics"),
                    addresses.get("mqtt"),
                    addresses.get("http"),
                )
        return found

    def links(self, value: Any, regions: dict[int, RegionSpec]) -> set[frozenset[str]]:
        tables = self.array_of_tables(value, "link")
        found: dict[frozenset[str], int] = {}
        for i, table in enumerate(tables):
            where = f"link[{i}]"
            if not isinstance(table, dict):
                self.add(where, f"must be a table, got {table!r}")
                continue
            self.unknown_keys(table, LINK_KEYS, where)
            ends = table.get("regions")
            if ends is None:
                self.add(f"{where}.regions", 'missing (required): regions = ["a", "b"]')
                continue
            if not isinstance(ends, list) or not all(isinstance(e, str) for e in ends):
                self.add(f"{where}.regions", f"must be two region names, got {ends!r}")
                continue
            if len(ends) != 2:
                self.add(f"{where}.regions", f"a link joins two regions, got {len(ends)}: {ends!r}")
                continue
            if ends[0] == ends[1]:
                self.add(
                    f"{where}.regions", f"a link joins two different regions, got {ends[0]!r} twice"
                )
                continue
            unknown = [e for e in ends if e not in self.names]
            for end in unknown:
                self.add(f"{where}.regions", f"unknown region {end!r}")
            if unknown:
                continue
            link = frozenset(ends)
            first = found.setdefault(link, i)
            if first != i:
                self.add(
                    where, f"duplicate of link[{first}] ({'-'.join(tables[first]['regions'])})"
                )
        if not self.problems and regions:
            self.connected(set(found), [spec.name for spec in regions.values()])
        return set(found)

    def connected(self, links: set[frozenset[str]], names: list[str]) -> None:
        """Every region must reach every other: routes only exist along links."""
        groups: list[list[str]] = []
        placed: set[str] = set()
        for start in names:
            if start in placed:
                continue
            group, todo = [start], [start]
            placed.add(start)
            while todo:
                here = todo.pop()
                for link in links:
                    if here in link:
                        (there,) = link - {here}
                        if there not in placed:
                            placed.add(there)
                            group.append(there)
                            todo.append(there)
            groups.append(sorted(group, key=names.index))
        if len(groups) > 1:
            shown = " | ".join(", ".join(group) for group in groups)
            self.add(
                "link",
                f"the links leave {len(groups)} separate groups of regions: {shown} "
                "(every region must reach every other)",
            )


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _key_lines(text: str) -> dict[str, int]:
    """Best-effort line numbers of tables and keys: `region[1]`, `region[1].grpc`.

    tomllib reports no positions for valid TOML, so this scans the lines; keys it
    cannot place (inline tables, dotted keys) are reported without a line.
    """
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    table = ""
    in_string = False
    for number, line in enumerate(text.splitlines(), start=1):
        # Skip the inside of multi-line strings, where brackets and '=' mean nothing.
        quotes = line.count('"""') + line.count("'''")
        if in_string:
            in_string = quotes % 2 == 0
            continue
        if quotes % 2 == 1:
            in_string = True
        header = _HEADER.match(line)
        if header:
            name = header.group(2)
            if header.group(1) == "[[":
                index = counts.get(name, 0)
                counts[name] = index + 1
                table = f"{name}[{index}]"
            else:
                table = name
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(f"{table}.{key.group(1)}" if table else key.group(1), number)
    return lines
