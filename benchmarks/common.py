"""Shared pieces of the benchmarks: a node process, worker processes, RSS, figures.

Every benchmark starts its own node (`python -m node run`) on a free loopback
port in a temporary directory and stops it in a `finally`; client work that
must not share a core with the measuring process runs in worker processes
started with `spawn` (`start_worker`), also stopped in a `finally`.

Setting PLEXUS_BENCH_PROFILE=DIR (`run_all.py --profile DIR`) makes
`profile()` record py-spy profiles (raw, collapsed stacks) of the node and the
workers into DIR during a run; the figures of a profiled run are lower.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import multiprocessing
import multiprocessing.process
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # runnable as a script from the repository root
    sys.path.insert(0, str(REPO))

PAYLOAD_BYTES = 100
PAYLOAD = b"x" * PAYLOAD_BYTES
NODE_START_TIMEOUT_S = 15.0
NODE_STOP_TIMEOUT_S = 10.0
READY_LINE = b"plexus node us listening on"
PROFILE_ENV = "PLEXUS_BENCH_PROFILE"

from plexus.client import Client  # noqa: E402 - after the path is set
from plexus.local.launcher import terminate  # noqa: E402

_SPAWN = multiprocessing.get_context("spawn")


# ------------------------------------------------------------------ node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Target:
    """Where clients connect and how (the CA for TLS, a token): it travels to workers."""

    address: str
    ca: str | None = None
    token: str | None = None

    async def connect(self) -> Client:
        return await Client.connect(self.address, ca=self.ca, token=self.token)


class Node:
    """A node process in its own temporary data directory, stopped on exit.

    `secure=True` serves TLS with a CA and certificate made for it and checks
    tokens signed by a key made for it; `target` carries the CA and an admin token.

    ::

        with Node() as node:
            client = await node.target.connect()
    """

    def __init__(self, settings: str = "", secure: bool = False) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self._tmp = tempfile.TemporaryDirectory(prefix="plexus-bench-")
        self.dir = Path(self._tmp.name)
        self.log_path = self.dir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # Lines of the node's [node] table (e.g. "dedup_window_events = 0").
        self.settings = settings
        self.secure_flags: list[str] = []
        self.target = Target(self.address)
        if secure:
            self._secure()

    def _secure(self) -> None:
        from plexus.certs import make_ca, make_node_cert
        from plexus.tokens import Grants, generate_key, new_claims, sign

        tls = self.dir / "tls"
        make_ca(tls, "plexus bench CA")
        files = make_node_cert(tls, "us", ["127.0.0.1"], tls)
        key = generate_key()
        key_path = self.dir / "signing.key"
        key_path.write_bytes(key)
        key_path.chmod(0o600)
        ca = str(tls / "ca.crt")
        self.secure_flags = ["--tls-cert", str(files.cert), "--tls-key", str(files.key),
                             "--tls-ca", ca, "--auth-key", str(key_path)]  # fmt: skip
        token = sign(new_claims("bench", Grants(admin=True)), key)
        self.target = Target(self.address, ca, token)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Node:
        cmd = [sys.executable, "-m", "node", "run", "--name", "us",
               "--listen", self.address, "--data", str(self.dir / "data"),
               *self.secure_flags]  # fmt: skip
        if self.settings:
            config = self.dir / "node.toml"
            config.write_text(f"[node]\n{self.settings}\n")
            cmd += ["--config", str(config)]
        with open(self.log_path, "ab") as log:
            since = log.tell()  # a restart appends to the log of the first start
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while READY_LINE not in self.log_path.read_bytes()[since:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                self.stop()
                raise RuntimeError(f"the node did not start:\n{tail}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """kill -9; the data directory stays for `start()` to restart on."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        try:
            terminate([self.proc] if self.proc is not None else [], NODE_STOP_TIMEOUT_S)
        finally:
            self._tmp.cleanup()

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LinkedRegions:
    """Regions of one cluster file as node processes, every pair linked, plaintext and open
    (as `Node`), stopped on exit; `targets[name]` is where clients of a region connect.

    ::

        with LinkedRegions(("us", "eu")) as regions:
            client = await regions.targets["eu"].connect()
    """

    def __init__(self, names: Sequence[str] = ("us", "eu")) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="plexus-bench-regions-")
        self.dir = Path(self._tmp.name)
        self.names = tuple(names)
        self.targets = {name: Target(f"127.0.0.1:{free_port()}") for name in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        lines = ['[cluster]\nname = "bench"\n']
        for name in self.names:
            lines.append(
                f'[[region]]\nname = "{name}"\ngrpc = "{self.targets[name].address}"\n'
                f'raft = "127.0.0.1:{free_port()}"\ndata = "{self.dir / name}"\n'
            )
        for i, a in enumerate(self.names):
            for b in self.names[i + 1 :]:
                lines.append(f'[[link]]\nregions = ["{a}", "{b}"]\n')
        self.cluster_file = self.dir / "cluster.toml"
        self.cluster_file.write_text("\n".join(lines))

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def start(self) -> LinkedRegions:
        env = {**os.environ, "PLEXUS_CLUSTER_SECRET": os.urandom(16).hex()}
        for name in self.names:
            cmd = [sys.executable, "-m", "node", "run", "--cluster", str(self.cluster_file),
                   "--region", name, "--no-metrics"]  # fmt: skip
            with open(self.dir / f"{name}.log", "ab") as log:
                self.procs[name] = subprocess.Popen(
                    cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env
                )
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        for name in self.names:
            ready = f"plexus node {name} listening on".encode()
            while ready not in (self.dir / f"{name}.log").read_bytes():
                if self.procs[name].poll() is not None or time.monotonic() > deadline:
                    tail = (self.dir / f"{name}.log").read_text(errors="replace")[-1500:]
                    self.stop()
                    raise RuntimeError(f"region {name} did not start:\n{tail}")
                time.sleep(0.02)
        asyncio.run(self._links_up(deadline))
        return self

    async def _links_up(self, deadline: float) -> None:
        for name in self.names:
            async with await self.targets[name].connect() as client:
                while True:
                    view = await client.list_links(interest=False)
                    if len(view.links) == len(self.names) - 1 and all(
                        link.state == "up" for link in view.links
                    ):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the links of region {name} did not come up")
                    await asyncio.sleep(0.05)

    def stop(self) -> None:
        try:
            terminate(self.procs.values(), NODE_STOP_TIMEOUT_S)
        finally:
            self._tmp.cleanup()

    def __enter__(self) -> LinkedRegions:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def interest_reached(target: Target, pattern_topic: str, region: str, timeout: float) -> None:
    """Until the node at `target` would route `pattern_topic` to a subscriber in `region`."""
    deadline = time.monotonic() + timeout
    async with await target.connect() as client:
        while True:
            view = {r["region"]: r for r in await client.explain(pattern_topic)}
            if view.get(region, {}).get("subscribers"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.address} never learnt of a subscriber in {region}")
            await asyncio.sleep(0.01)


async def queue_reached(target: Target, topic: str, queue: str, timeout: float) -> None:
    """Until the node at `target` would store a guaranteed event on `topic` in `queue` (in
    whichever region holds it)."""
    deadline = time.monotonic() + timeout
    async with await target.connect() as client:
        while not any(queue in r["queues"] for r in await client.explain(topic)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.address} never learnt of queue {queue}")
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------ workers


class Workers:
    """Worker processes (spawned) and one result queue they report to.

    A worker is `target(results, *args)`; it puts a dict on `results`. On exit
    every worker still alive is terminated, then killed.
    """

    def __init__(self) -> None:
        self.results: Any = _SPAWN.Queue()
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.pids: dict[str, int] = {}

    def start(self, role: str, target: Callable[..., None], *args: object) -> int:
        """Start `target(results, *args)` in a new process; `role` names it in profiles."""
        proc = _SPAWN.Process(target=target, args=(self.results, *args), daemon=True)
        proc.start()
        self.procs.append(proc)
        assert proc.pid is not None
        self.pids[role] = proc.pid
        return proc.pid

    def event(self) -> Any:
        """A cross-process flag (multiprocessing.Event) to start workers together."""
        return _SPAWN.Event()

    def wait(self, *flags: Any, timeout: float = 30.0) -> None:
        """Wait until every flag (`event()`) is set; a dead worker or timeout raises."""
        deadline = time.monotonic() + timeout
        for flag in flags:
            while not flag.wait(0.1):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("benchmark workers did not get ready in time")

    def _check_alive(self) -> None:
        with contextlib.suppress(queue.Empty):
            result = self.results.get_nowait()
            raise RuntimeError(f"benchmark worker failed: {result.get('error', result)}")
        codes = [p.exitcode for p in self.procs]
        if any(code not in (None, 0) for code in codes):
            raise RuntimeError(f"benchmark workers failed (exit codes {codes})")

    def collect(self, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
        """`count` results, in the order they arrive; a failed worker raises."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            try:
                result = self.results.get(timeout=0.5)
            except queue.Empty:
                dead = [p.exitcode for p in self.procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    codes = [p.exitcode for p in self.procs]
                    raise RuntimeError(f"benchmark workers failed (exit codes {codes})") from None
                continue
            if "error" in result:
                raise RuntimeError(f"benchmark worker failed: {result['error']}")
            out.append(result)
        return out

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.join(timeout=5.0 if exc[0] is None else 0.1)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=3.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.results.close()


def report_errors(worker: Callable[..., None]) -> Callable[..., None]:
    """Wrap a worker body so an exception is reported on the results queue."""

    def wrapped(results: Any, *args: object) -> None:
        try:
            worker(results, *args)
        except BaseException as exc:
            results.put({"error": f"{type(exc).__name__}: {exc}"})
            raise

    wrapped.__name__ = worker.__name__
    wrapped.__qualname__ = worker.__qualname__
    wrapped.__module__ = worker.__module__
    return wrapped


def run_async_worker(main: Any) -> Any:
    """Run a worker's coroutine on uvloop when present (as the node does)."""
    import asyncio
    import gc

    gc.freeze()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# ------------------------------------------------------------------ measuring


def rss(pid: int) -> dict[str, float]:
    """Memory of `pid` from /proc/PID/status, MiB: `rss` (VmRSS), `anon` (RssAnon:
    the process's own heap), `file` (RssFile: mapped file pages, e.g. LMDB's,
    which the kernel may drop) and `peak` (VmHWM)."""
    names = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in names:
            out[names[key]] = int(value.split()[0]) / 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU use of a process over a stretch of wall time, as % of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu0, self.wall0 = cpu_seconds(pid), time.monotonic()

    def percent(self) -> float:
        cpu, wall = cpu_seconds(self.pid) - self.cpu0, time.monotonic() - self.wall0
        return round(100 * cpu / wall) if wall > 0 else 0.0


class OwnCpu:
    """This process's CPU use from creation to `percent()`, as % of one core."""

    def __init__(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()

    def percent(self) -> float:
        cpu, wall = time.process_time() - self.cpu0, time.monotonic() - self.wall0
        return round(100 * cpu / wall) if wall > 0 else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank p-th percentile (0 < p <= 100) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


def median_row(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose `key` is the median (the lower middle one for an even count)."""
    ordered = sorted(rows, key=lambda r: r[key])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs"] = ", ".join(f"{r[key]:,.0f}" for r in rows)
    return chosen


def load() -> str:
    """The 1-minute load average, as a short string for a row."""
    return f"{os.getloadavg()[0]:.2f}"


def wait_for_quiet(max_load: float = 1.5, max_wait_s: float = 5.0) -> None:
    """Give a busy machine (other engineers' tests) a moment before measuring."""
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(1.0)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, RuntimeError):
        ram = f"{_meminfo_kb('MemTotal') / 1024 / 1024:.1f} GiB"
    info = {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": cpu,
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    for package in ("grpcio", "protobuf", "lmdb", "uvloop"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "absent"
    with contextlib.suppress(ImportError):
        from google.protobuf.internal import api_implementation

        info["protobuf"] += f" ({api_implementation.Type()} backend)"
    with contextlib.suppress(ImportError, AttributeError):
        import lmdb

        info["lmdb"] += " (LMDB " + ".".join(map(str, lmdb.version())) + ")"
    info["python speed"] = f"{python_speed_ms():.0f} ms for a fixed loop (lower is faster)"
    return info


def python_speed_ms() -> float:
    """Best of 5 of one fixed pure-Python loop, in ms. The development machine read 74-106
    ms within one hour: the node's figures move with it, so the tables carry it."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _meminfo_kb(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/meminfo")


# ------------------------------------------------------------------ profiling


@contextlib.contextmanager
def profile(label: str, pids: dict[str, int], seconds: float = 5.0) -> Iterator[None]:
    """Record py-spy profiles of `pids` ({role: pid}) when PLEXUS_BENCH_PROFILE is set.

    The files are DIR/LABEL-ROLE.txt (collapsed stacks, `-f raw`). Without
    the variable this does nothing.
    """
    out_dir = os.environ.get(PROFILE_ENV)
    spies: list[subprocess.Popen[bytes]] = []
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).with_name("py-spy")
        for role, pid in pids.items():
            out = Path(out_dir) / f"{label}-{role}.txt"
            cmd = [str(py_spy), "record", "-p", str(pid), "-d", str(int(seconds)),
                   "-f", "raw", "-o", str(out), "--nonblocking"]  # fmt: skip
            spies.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
    try:
        yield
    finally:
        for spy in spies:
            try:
                spy.wait(timeout=seconds + 10)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


# ------------------------------------------------------------------ rows


def figure(
    benchmark: str,
    measure: str,
    value: float,
    unit: str,
    *,
    target: float | None = None,
    higher_is_better: bool = True,
    peers: str = "",
    **detail: object,
) -> dict[str, Any]:
    """One row: a measured figure, its target from issue 2 and whether it is met."""
    row: dict[str, Any] = {"benchmark": benchmark, "measure": measure, "value": value}
    row["unit"] = unit
    if target is not None:
        row["target"] = ("≥ " if higher_is_better else "< ") + fmt_number(target)
        met = value >= target if higher_is_better else value < target
        row["met"] = "yes" if met else "no"
    if peers:
        row["peers"] = peers
    row.update(detail)
    return row


def fmt_number(value: object) -> str:
    """Thousands separators for big numbers, two decimals for small ones."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
