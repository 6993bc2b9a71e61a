"""What the local-cluster commands do: up, down, status, region start, faults.

Each operation works on one state directory (see `state`); the CLI prints.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plexus.errors import PlexusError
from plexus.local.clusterfile import (
    ClusterSpec,
    read_cluster_file,
    rewrite_data_paths,
    spec_of,
    with_secret_file,
)
from plexus.local.default import DEFAULT_REGIONS, HOST, default_cluster_toml, free_ports
from plexus.local.launcher import (
    NodeFailed,
    Started,
    find_processes,
    is_running,
    kill_now,
    node_command,
    start_node,
    stop_processes,
    wait_listening,
)
from plexus.local.private import private_dir, write_private
from plexus.local.state import (
    LOCAL_LISTENERS,
    ClusterRecord,
    LocalClusterError,
    RegionRecord,
    StateDir,
    write_secret,
)

if TYPE_CHECKING:
    from plexus.client import Client
    from plexus.client.info import LinksView

__all__ = [
    "UpResult",
    "cut_link",
    "down",
    "heal_link",
    "kill_region",
    "link_state",
    "start_region",
    "status",
    "up",
]

DEFAULT_TIMEOUT_S = 30.0
# Where a node takes the secret when its file names none (federation/cluster_secret.py).
SECRET_ENV = "PLEXUS_CLUSTER_SECRET"
LINK_POLL_S = 0.05
CONNECT_TIMEOUT_S = 2.0


@dataclass
class UpResult:
    record: ClusterRecord
    started: list[str] = field(default_factory=list)  # regions started by this call
    elapsed_s: float = 0.0

    @property
    def already_up(self) -> bool:
        return not self.started


# ------------------------------------------------------------------ up / down


def up(state: StateDir, config: Path | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> UpResult:
    """Start the cluster of `state` (made from `config` or the default the first time).

    Starts only the regions that are not running; returns once every region
    serves and every link is up. When a node fails, the nodes this call started
    are stopped again and a LocalClusterError carries the node's one-line error.
    """
    t0 = time.monotonic()
    with state.locked():
        fresh = not state.exists()
        if fresh:
            record = _create(state, config)
        else:
            record = state.load()
            if config is not None and str(config.absolute()) != record.source:
                raise LocalClusterError(
                    f"{state.path} holds cluster {record.cluster} started from {record.source}: "
                    "'plexus down --purge' first, or use another --state-dir"
                )
        marker = record.cluster_file
        to_start = [r for r in record.regions if not is_running(r.pid, marker)]
        if not to_start:
            return UpResult(record, [], time.monotonic() - t0)
        deadline = t0 + timeout_s
        try:
            start_regions(state, record, to_start, deadline)
            asyncio.run(wait_links(record, [r.name for r in record.regions], deadline))
            from plexus.local.membership import wait_leader  # it builds on this module

            asyncio.run(wait_leader(record, deadline))
        except BaseException:
            if fresh:
                _discard(state, record)
            raise
        return UpResult(record, [r.name for r in to_start], time.monotonic() - t0)


def _create(state: StateDir, config: Path | None) -> ClusterRecord:
    """Write the cluster file into the state dir and the record (no pids yet)."""
    private_dir(state.path)
    if config is None:
        data = {name: state.data_dir(name) for name in DEFAULT_REGIONS}
        text = default_cluster_toml(data, _generated_secret(state))
        import tomllib

        spec = spec_of(tomllib.loads(text))
        source = "default"
    else:
        spec, original = read_cluster_file(config)
        data_dirs = [state.data_dir(r.name) if _safe_name(r.name) else None for r in spec.regions]
        text = rewrite_data_paths(original, _per_table(original, spec, data_dirs))
        secret_file = _secret_file_for(state, config, original)
        if secret_file is not None:
            text = with_secret_file(text, secret_file)
        source = str(config.absolute())
    text = _with_auth(state, text, config)
    write_private(state.cluster_file, text)
    if not spec.regions:
        # Nothing we can start: let the node say what is wrong with the file.
        _discard_files(state)
        raise LocalClusterError(_node_verdict(state, config, "?", text))
    missing = sum(not getattr(r, key) for r in spec.regions for key in LOCAL_LISTENERS)
    picked = iter(free_ports(missing, avoid=_ports_of(spec)))
    regions = []
    for r in spec.regions:
        # What the file does not give a region (metrics, MQTT, HTTP) gets a free loopback port.
        listeners = {key: getattr(r, key) or f"{HOST}:{next(picked)}" for key in LOCAL_LISTENERS}
        extra = [f"--{key}={listeners[key]}" for key in LOCAL_LISTENERS if not getattr(r, key)]
        tls = region_tls_flags(state, r.name, r.grpc) if _safe_name(r.name) else []
        extra += tls
        regions.append(
            RegionRecord(
                name=r.name,
                grpc=r.grpc,
                raft=r.raft,
                data=str(state.data_dir(r.name)),
                log=str(state.log_path(r.name)),
                command=node_command(state.cluster_file, r.name, extra),
                ca=str(state.ca_cert) if tls else None,
                **listeners,
            )
        )
    record = ClusterRecord(
        cluster=spec.name,
        source=source,
        cluster_file=str(state.cluster_file),
        links=[list(link) for link in spec.links],
        regions=regions,
    )
    state.save(record)
    return record


def _generated_secret(state: StateDir) -> Path:
    """A random cluster secret in the state dir, readable by this user only."""
    write_private(state.secret_file, secrets.token_hex(32) + "\n")
    return state.secret_file


def _secret_file_for(state: StateDir, config: Path, text: str) -> Path | None:
    """Where the copy of `config` finds its secret, when the copy must say so itself.

    A secret_file relative to `config` is made absolute (the copy lives elsewhere);
    a file with neither a secret nor a secret_file, run without $PLEXUS_CLUSTER_SECRET
    (what the shipped files expect beyond a laptop), gets a generated one.
    """
    import tomllib

    try:
        cluster = tomllib.loads(text).get("cluster")
    except tomllib.TOMLDecodeError:
        return None  # the node names the problem
    if not isinstance(cluster, dict):
        return None
    named = cluster.get("secret_file")
    if isinstance(named, str) and named.strip():
        return config.absolute().parent / Path(named).expanduser()
    if "secret" in cluster or "secret_file" in cluster or SECRET_ENV in os.environ:
        return None
    return _generated_secret(state)


def region_tls_flags(state: StateDir, region: str, grpc: str) -> list[str]:
    """Make region `region`'s certificate (and the cluster CA, the first time) in the state
    dir; the node flags that serve TLS with them. The certificate names the region and
    the host it is dialled on, and localhost and 127.0.0.1 for local clients."""
    from plexus.certs import make_ca, make_node_cert

    if not state.ca_cert.exists():
        make_ca(state.tls_dir, "plexus local cluster CA")
    host = grpc.rpartition(":")[0].strip("[]")
    hosts = list(dict.fromkeys([host, "127.0.0.1", "localhost"]))
    files = make_node_cert(state.tls_dir, region, hosts, state.tls_dir)
    return [
        "--tls-cert",
        str(files.cert),
        "--tls-key",
        str(files.key),
        "--tls-ca",
        str(state.ca_cert),
    ]


def _with_auth(state: StateDir, text: str, source: Path | None) -> str:
    """Client tokens on by default: the signing key in the state dir (made, or copied from
    the `[auth] key` of the file `source`), an admin token signed with it, and the cluster
    file's `[auth] key` naming the copy."""
    import tomllib

    from plexus.tokens import Grants, generate_key, new_claims, sign

    auth = tomllib.loads(text).get("auth")
    given = auth.get("key") if isinstance(auth, dict) else None
    if isinstance(given, str) and source is not None:
        try:
            key = (source.parent / given).read_bytes()
        except OSError:
            return text  # the node names the file it cannot read
    elif auth is None:
        key = generate_key()
    else:
        return text  # a malformed [auth]: the node says what is wrong with it
    write_secret(state.signing_key, key)
    write_secret(state.admin_token, sign(new_claims("admin", Grants(admin=True)), key).encode())
    relative = state.signing_key.relative_to(state.cluster_file.parent)
    if auth is None:
        return text.rstrip("\n") + f'\n\n[auth]\nkey = "{relative}"\n'
    return _AUTH_KEY_LINE.sub(rf'\g<1>"{relative}"', text, count=1)


# The `key = "..."` line of the [auth] table (before any other table starts).
_AUTH_KEY_LINE = re.compile(r"""(^\[auth\][^\[]*?^\s*key\s*=\s*)(?:"[^"]*"|'[^']*')""", re.M | re.S)


def _ports_of(spec: ClusterSpec) -> set[int]:
    """The ports the cluster file gives its regions (free now, taken once they run)."""
    addresses = [a for r in spec.regions for a in (r.grpc, r.raft, r.metrics, r.mqtt, r.http) if a]
    return {int(port) for port in (a.rpartition(":")[2] for a in addresses) if port.isdigit()}


def _safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


def _per_table(text: str, spec: ClusterSpec, dirs: list[Path | None]) -> list[Path | None]:
    """Data dirs in the order of the `[[region]]` tables (regions the reader skipped get None)."""
    import tomllib

    tables = tomllib.loads(text).get("region")
    by_name = {r.name: d for r, d in zip(spec.regions, dirs, strict=True)}
    out: list[Path | None] = []
    for table in tables if isinstance(tables, list) else []:
        name = table.get("name") if isinstance(table, dict) else None
        out.append(by_name.pop(name, None) if isinstance(name, str) else None)
    return out


def _node_verdict(state: StateDir, config: Path | None, region: str, text: str) -> str:
    """Run the node on the cluster file just to get its error (it validates before serving)."""
    import subprocess

    write_private(state.cluster_file, text)
    try:
        out = subprocess.run(
            node_command(state.cluster_file, region),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=15,
        )
        line = _error_of(out.stderr) or "the cluster file has no regions"
    finally:
        _discard_files(state)
    return _name_source(line, state, str(config) if config else "the default cluster")


def _error_of(text: str) -> str:
    from plexus.local.launcher import error_line

    return error_line(text)


def _name_source(line: str, state: StateDir, source: str) -> str:
    """The node names the copy in the state dir; name the file the user gave instead."""
    return line.replace(str(state.cluster_file), source)


def start_regions(
    state: StateDir, record: ClusterRecord, regions: list[RegionRecord], deadline: float
) -> list[Started]:
    """Start `regions` and wait until each serves; on failure stop them all and raise."""
    started: list[Started] = []
    try:
        for region in regions:
            private_dir(Path(region.data))
            node = start_node(region.name, region.command, Path(region.log), state.path)
            started.append(node)
            region.pid = node.pid
        state.save(record)
        wait_listening(started, deadline)
    except BaseException as exc:
        stop_processes([s.pid for s in started], record.cluster_file, grace_s=5.0)
        for s in started:
            s.process.poll()
        for region in regions:
            region.pid = None
        if state.exists():
            state.save(record)
        if isinstance(exc, NodeFailed):
            raise LocalClusterError(_failure(state, record, exc)) from None
        raise
    return started


def _failure(state: StateDir, record: ClusterRecord, exc: NodeFailed) -> str:
    """The node's one line, naming the file the user gave, and the key when it is an address."""
    source = record.source if record.source != "default" else "the default cluster"
    line = _name_source(exc.line, state, source)
    region = record.region(exc.name)
    index = record.regions.index(region)
    where = ""
    for key in ("grpc", "raft", *LOCAL_LISTENERS):
        address = getattr(region, key)
        if address and address in line and source not in line:
            where = f"{source}: region[{index}].{key} ({exc.name}): "
            break
    return f"region {exc.name} did not start: {where}{line} (log: {region.log})"


def _discard(state: StateDir, record: ClusterRecord) -> None:
    """Undo a first `up` that failed: nothing of it stays in the state dir."""
    stop_processes([r.pid for r in record.regions if r.pid], record.cluster_file, grace_s=5.0)
    _discard_files(state)
    for region in record.regions:  # the logs stay: the error points at them
        shutil.rmtree(region.data, ignore_errors=True)


def _discard_files(state: StateDir) -> None:
    secret_files = (state.secret_file, state.signing_key, state.admin_token)
    for path in (state.record_path, state.cluster_file, *secret_files):
        path.unlink(missing_ok=True)
    shutil.rmtree(state.tls_dir, ignore_errors=True)


def down(state: StateDir, purge: bool = False, grace_s: float = 10.0) -> list[str]:
    """Stop every node of the state dir (SIGTERM, then SIGKILL after `grace_s`); names stopped.

    Data stays unless `purge`, which deletes the whole state directory.
    """
    with state.locked():
        record = state.load()
        marker = record.cluster_file
        running = [r for r in record.regions if is_running(r.pid, marker)]
        strays = set(find_processes(marker)) - {r.pid for r in running}
        stop_processes([r.pid for r in running if r.pid] + sorted(strays), marker, grace_s)
        for region in record.regions:
            region.pid = None
        state.save(record)
    if purge:
        shutil.rmtree(state.path, ignore_errors=True)
    return [r.name for r in running]


# ------------------------------------------------------------------ regions and faults


def start_region(
    state: StateDir, name: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[RegionRecord, bool, float]:
    """Restart region `name` with its recorded command; (region, started?, seconds)."""
    t0 = time.monotonic()
    with state.locked():
        record = state.load()
        region = record.region(name)
        if is_running(region.pid, record.cluster_file):
            return region, False, 0.0
        deadline = t0 + timeout_s
        start_regions(state, record, [region], deadline)
        running = [r.name for r in record.regions if is_running(r.pid, record.cluster_file)]
        asyncio.run(wait_links(record, running, deadline, touching=name))
        return region, True, time.monotonic() - t0


def kill_region(state: StateDir, name: str) -> int:
    """kill -9 the node of region `name`; returns its pid."""
    record = state.load()
    region = record.region(name)
    if not region.pid or not is_running(region.pid, record.cluster_file):
        raise LocalClusterError(f"region {name} is not running")
    pid = region.pid
    kill_now(pid, record.cluster_file)
    return pid


def _running_region(record: ClusterRecord, name: str) -> RegionRecord:
    region = record.region(name)
    if not is_running(region.pid, record.cluster_file):
        raise LocalClusterError(
            f"region {name} is not running: 'plexus region start {name}' restarts it"
        )
    return region


def _linked(record: ClusterRecord, a: str, b: str) -> None:
    record.region(a)
    record.region(b)
    if {a, b} not in [set(link) for link in record.links]:
        raise LocalClusterError(f"there is no link between {a} and {b} in cluster {record.cluster}")


def cut_link(state: StateDir, a: str, b: str) -> dict[str, Any]:
    """Take the link a-b down (held down at a) and wait until a reports it down."""
    record = state.load()
    _linked(record, a, b)
    region = _running_region(record, a)

    async def go() -> dict[str, Any]:
        from plexus.client import Client

        async with await Client.connect(
            region.grpc, timeout=CONNECT_TIMEOUT_S, ca=region.ca, token=record.client_token()
        ) as client:
            link = await client.set_link(b, up=False)
        return link.to_dict(a)

    return asyncio.run(go())


def heal_link(state: StateDir, a: str, b: str, timeout_s: float = 10.0) -> bool:
    """Release the link a-b at a; True once both ends report it up within `timeout_s`."""
    record = state.load()
    _linked(record, a, b)
    region = _running_region(record, a)

    async def go() -> bool:
        from plexus.client import Client

        async with await Client.connect(
            region.grpc, timeout=CONNECT_TIMEOUT_S, ca=region.ca, token=record.client_token()
        ) as client:
            await client.set_link(b, up=True)
        if not is_running(record.region(b).pid, record.cluster_file):
            return False
        try:
            await wait_links(record, [a, b], time.monotonic() + timeout_s, touching=a)
        except LocalClusterError:
            return False
        return True

    return asyncio.run(go())


# ------------------------------------------------------------------ waiting for links


async def wait_links(
    record: ClusterRecord, running: list[str], deadline: float, touching: str | None = None
) -> None:
    """Until every link between `running` regions (or those of `touching`) is up at both ends."""
    from plexus.client import Client

    wanted = [
        (a, b)
        for a, b in record.links
        if a in running and b in running and (touching is None or touching in (a, b))
    ]
    if not wanted:
        return
    names = sorted({n for link in wanted for n in link})
    clients: dict[str, Client] = {}
    try:
        for name in names:
            region = record.region(name)
            clients[name] = await Client.connect(
                region.grpc,
                timeout=max(0.5, deadline - time.monotonic()),
                ca=region.ca,
                token=record.client_token(),
            )
        while True:
            views = await asyncio.gather(*(clients[n].list_links(interest=False) for n in names))
            by_name = dict(zip(names, views, strict=True))
            down = [(a, b) for a, b in wanted if link_state(by_name[a], by_name[b], a, b) != "up"]
            if not down:
                return
            if time.monotonic() > deadline:
                shown = ", ".join(f"{a}-{b}" for a, b in down)
                raise LocalClusterError(f"links not up in time: {shown} (see 'plexus status')")
            await asyncio.sleep(LINK_POLL_S)
    except PlexusError as exc:
        if isinstance(exc, LocalClusterError):
            raise
        raise LocalClusterError(f"waiting for links: {exc}") from None
    finally:
        for client in clients.values():
            await client.close()


def link_state(va: LinksView | None, vb: LinksView | None, a: str, b: str) -> str:
    """The state of link a-b from what its two ends report (`va` from a, `vb` from b;
    None for an end that did not answer): "up" only if both ends say up; "down" if
    an end is gone, has no such link, or says down; else "connecting".

    `plexus status` and `plexus top` both combine a link's ends this way.
    """
    la = va.link(b) if va is not None else None
    lb = vb.link(a) if vb is not None else None
    if la is None or lb is None:
        return "down"
    if la.up and lb.up:
        return "up"
    if "down" in (la.state, lb.state):
        return "down"
    return "connecting"


# ------------------------------------------------------------------ status


def status(state: StateDir) -> dict[str, Any]:
    """The cluster as `plexus status --json` prints it."""
    record = state.load()
    return asyncio.run(_status(record))


async def _status(record: ClusterRecord) -> dict[str, Any]:
    marker = record.cluster_file
    running = {r.name: is_running(r.pid, marker) for r in record.regions}
    token = record.client_token()
    asked = await asyncio.gather(
        *(_ask(r, token) if running[r.name] else _nothing() for r in record.regions)
    )
    views: dict[str, Any] = {}
    queues: list[dict[str, Any]] = []
    regions: list[dict[str, Any]] = []
    for region, answer in zip(record.regions, asked, strict=True):
        view, region_queues, membership, error = answer
        views[region.name] = view
        entry: dict[str, Any] = {
            "name": region.name,
            "address": region.grpc,
            "grpc": region.grpc,
            "pid": region.pid if running[region.name] else None,
            "state": "running" if running[region.name] else "stopped",
            "raft": {"address": region.raft, **membership["raft"]}
            if region.raft and membership
            else ({"address": region.raft} if region.raft else None),
            "data": region.data,
            "log": region.log,
            # Where Prometheus scrapes the region: http://ADDRESS/metrics.
            "metrics": region.metrics,
            # MQTT clients connect here (with TLS when `tls`: mosquitto_sub --cafile CA).
            "mqtt": region.mqtt,
            # The HTTP gateway: https://ADDRESS/v1/... when `tls`.
            "http": region.http,
            "tls": region.ca is not None,
        }
        if error:
            entry["error"] = error
        regions.append(entry)
        for q in region_queues:
            queues.append(
                {
                    "region": region.name,
                    "name": q.name,
                    "depth": q.depth,
                    "consumers": q.consumers,
                    "unacked": q.unacked,
                }
            )
    links = []
    for a, b in record.links:
        va, vb = views.get(a), views.get(b)
        la = va.link(b) if va is not None else None
        lb = vb.link(a) if vb is not None else None
        spool = {a: la.spool_depth if la else None, b: lb.spool_depth if lb else None}
        links.append(
            {
                "regions": [a, b],
                "state": link_state(va, vb, a, b),
                "ends": {a: la.state if la else None, b: lb.state if lb else None},
                "held_down": bool((la and la.held_down) or (lb and lb.held_down)),
                "spool_depth": sum(v for v in spool.values() if v),
                "spool": spool,
                # Events per second each way, as each sending end counts them.
                "rate_ab": la.events_out_per_s if la else 0.0,
                "rate_ba": lb.events_out_per_s if lb else 0.0,
            }
        )
    cas = {r.ca for r in record.regions if r.ca}
    return {
        "cluster": record.cluster,
        "source": record.source,
        "cluster_file": record.cluster_file,
        # The CA certificate clients verify the regions with (--ca, Client.connect(ca=...)).
        "ca": cas.pop() if len(cas) == 1 else None,
        "regions": regions,
        "links": links,
        "queues": queues,
    }


async def _nothing() -> tuple[None, list[Any], None, str | None]:
    return None, [], None, None


async def _ask(
    region: RegionRecord, token: str | None
) -> tuple[LinksView | None, list[Any], dict[str, Any] | None, str | None]:
    from plexus.client import Client

    try:
        async with await Client.connect(
            region.grpc, timeout=CONNECT_TIMEOUT_S, ca=region.ca, token=token
        ) as client:
            view, queues, membership = await asyncio.gather(
                client.list_links(interest=False), client.list_queues(), client.membership()
            )
        return view, queues, membership, None
    except PlexusError as exc:
        return None, [], None, str(exc)
