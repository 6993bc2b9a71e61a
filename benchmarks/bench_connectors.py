"""Connectors (issue 12): PostgreSQL commits in us reaching sinks in eu, as users run them.

A throwaway PostgreSQL (Debian's, `wal_level = logical`, started by
plexus/local/postgres.py, as the tests and `make demo-integration` start it),
the default local cluster (`plexus up`: us, eu, ap) and `plexus connector run
FILE --region NAME` processes: a `postgres-cdc` source in us and sinks in eu. The rows are
100 bytes (`body`), with `created_at timestamptz default clock_timestamp()`
set when the row is written. PostgreSQL paces the inserts itself (a procedure
that commits and sleeps), so this process only waits on one CALL.

- Sustained rows/s: a burst of rows committed 100 per transaction as fast as
  PostgreSQL takes them, timed from the first commit until the replica table
  in eu (a `postgres-sink`) holds every row.
- Commit-to-sink lag at 1,000 rows/s, one row per commit: a `webhook` sink in
  eu posts to a receiver in this process that notes each row's arrival, and
  the replica table's `applied_at default clock_timestamp()` notes when the
  `postgres-sink` wrote it; lag = that time - `created_at` (one machine, one clock).
  The webhook sink is added after the burst (and touches nothing else).

Source and replica are two databases of one PostgreSQL server, as in the
check `connectors-cdc`; everything shares the machine's cores.

    .venv/bin/python benchmarks/bench_connectors.py
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cluster import local_cluster
from common import CpuMeter, figure, free_port, load, percentile, wait_for_quiet

from plexus.local.launcher import terminate
from plexus.local.postgres import LocalPostgresError, PostgresServer, postgres_bin, postgres_server
from plexus.local.state import STATE_ENV

BURST_ROWS = 50_000
ROWS_PER_COMMIT = 100
LAG_RATE = 1_000  # rows/s, one row per commit
LAG_SECONDS = 15
ROW_BYTES = 100
ARRIVAL_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 60.0
WARM_UP_WAIT_S = 0.5
POLL_S = 0.1
STOP_TIMEOUT_S = 10.0
PLEXUS = Path(sys.executable).with_name("plexus")

SOURCE_SQL = f"""
create table items (
    id bigint generated always as identity primary key,
    body text not null,
    created_at timestamptz not null default clock_timestamp()
);
create procedure burst(total int, per_commit int) language plpgsql as $$
begin
    for i in 1..(total / per_commit) loop
        insert into items (body)
            select repeat('x', {ROW_BYTES}) from generate_series(1, per_commit);
        commit;
    end loop;
end $$;
create procedure pace(total int, rate int) language plpgsql as $$
declare
    started timestamptz := clock_timestamp();
    ahead float8;
begin
    for i in 1..total loop
        insert into items (body) values (repeat('x', {ROW_BYTES}));
        commit;
        ahead := extract(epoch from started + i * interval '1 second' / rate - clock_timestamp());
        if ahead > 0 then perform pg_sleep(ahead); end if;
    end loop;
end $$;
"""
REPLICA_SQL = """
create table items (
    id bigint primary key,
    body text not null,
    created_at timestamptz not null,
    applied_at timestamptz not null default clock_timestamp()
);
"""

# ------------------------------------------------------------------ PostgreSQL


def count(pg: PostgresServer, db: str, since_id: int = 0) -> int:
    return int(pg.execute(db, "select count(*) from items where id > %s", since_id)[0][0])


def times(pg: PostgresServer, db: str, column: str, since_id: int) -> dict[int, float]:
    """Row id -> `column` as Unix seconds, for the rows after `since_id`."""
    sql = f"select id, extract(epoch from {column}) from items where id > %s"
    return {int(i): float(t) for i, t in pg.execute(db, sql, since_id)}


def _tail(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1] if lines else "(no output)"


# ------------------------------------------------------------------ webhook receiver


class Receiver:
    """An HTTP server in a thread noting when each row (by `after.id`) first arrived."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}  # row id -> first arrival, Unix seconds
        self.posts = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                now = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                row = _row(json.loads(body))
                with receiver.lock:
                    receiver.posts += 1
                    if row is not None:
                        receiver.arrived.setdefault(int(row["id"]), now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def since(self, since_id: int) -> dict[int, float]:
        """Row id -> first arrival, for the rows after `since_id`."""
        with self.lock:
            return {i: t for i, t in self.arrived.items() if i > since_id}


def _row(body: Any) -> dict[str, Any] | None:
    """The row image of a change event (`after`, else `before`) in a webhook body."""
    if isinstance(body, dict):
        if "op" in body and ("after" in body or "before" in body):
            return body.get("after") or body.get("before")
        for value in body.values():
            found = _row(value)
            if found is not None:
                return found
    return None


# ------------------------------------------------------------------ connectors


class Connectors:
    """`plexus connector run` processes against the local cluster; stopped on exit."""

    def __init__(self, root: Path, state: Path) -> None:
        self.root = root
        self.env = {**os.environ, STATE_ENV: str(state)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, name: str, region: str, config: str) -> int:
        path = self.root / f"{name}.toml"
        path.write_text(config)
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [str(PLEXUS), "connector", "run", str(path), "--region", region],
                stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        self.procs[name] = proc
        return proc.pid

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"connector {name} exited ({proc.returncode}): "
                    f"{_tail(self.root / f'{name}.log')}"
                )

    def __enter__(self) -> Connectors:
        return self

    def __exit__(self, *exc: object) -> None:
        terminate(self.procs.values(), STOP_TIMEOUT_S)


def source_config(pg: PostgresServer) -> str:
    return f"""[connector]
name = "bench-cdc"
kind = "postgres-cdc"
[postgres]
dsn = "{pg.dsn("shop")}"
tables = ["items"]
[publish]
topic = "bench/{{table}}/{{op}}"
"""


def replica_config(pg: PostgresServer) -> str:
    return f"""[connector]
name = "bench-replica"
kind = "postgres-sink"
[consume]
queue = "bench-replica"
subscribe = ["bench/items/>"]
[postgres]
dsn = "{pg.dsn("replica")}"
table = "items"
key = ["id"]
"""


def webhook_config(url: str) -> str:
    return f"""[connector]
name = "bench-hook"
kind = "webhook"
[consume]
queue = "bench-hook"
subscribe = ["bench/items/>"]
[webhook]
url = "{url}"
"""


# ------------------------------------------------------------------ the runs


def _until(done: Callable[[], bool], connectors: Connectors, timeout: float) -> bool:
    """Poll `done()` until true or `timeout`; a connector that exited raises."""
    deadline = time.monotonic() + timeout
    while not done():
        connectors.check()
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def _warm_up(pg: PostgresServer, has: Callable[[int], bool], connectors: Connectors) -> int:
    """Write a row until one reaches the sink (`has(id)`): the source's slot exists and the
    sink's queue subscribes. Sinks apply in order, so every row before it is in too; the
    measurement counts the rows after it (its id is returned)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        insert = f"insert into items (body) values (repeat('w', {ROW_BYTES})) returning id"
        row = int(pg.execute("shop", insert)[0][0])
        if _until(functools.partial(has, row), connectors, WARM_UP_WAIT_S):
            return row
        if time.monotonic() > deadline:
            raise RuntimeError(f"no row reached the sink within {READY_TIMEOUT_S:.0f} s")


def burst(pg: PostgresServer, connectors: Connectors, pids: dict[str, int]) -> dict[str, Any]:
    since = _warm_up(pg, lambda row: count(pg, "replica", row - 1) > 0, connectors)
    meters = {role: CpuMeter(pid) for role, pid in pids.items()}
    load_before = load()
    started = time.monotonic()
    pg.execute("shop", f"call burst({BURST_ROWS}, {ROWS_PER_COMMIT})")
    committed_s = time.monotonic() - started
    _until(lambda: count(pg, "replica", since) >= BURST_ROWS, connectors, ARRIVAL_TIMEOUT_S)
    elapsed = time.monotonic() - started
    arrived = count(pg, "replica", since)
    return figure(
        "connectors",
        f"PostgreSQL in us → postgres-sink in eu, sustained ({ROW_BYTES}-byte rows)",
        round(arrived / elapsed),
        "rows/s",
        rows=BURST_ROWS,
        arrived=arrived,
        rows_per_commit=ROWS_PER_COMMIT,
        commit_rows_per_s=round(BURST_ROWS / committed_s),
        **{f"{role}_cpu_pct": meter.percent() for role, meter in meters.items()},
        load=load_before,
    )


def lag(pg: PostgresServer, receiver: Receiver, connectors: Connectors) -> list[dict[str, Any]]:
    since = _warm_up(pg, lambda row: row in receiver.arrived, connectors)
    total = LAG_RATE * LAG_SECONDS
    load_before = load()
    started = time.monotonic()
    pg.execute("shop", f"call pace({total}, {LAG_RATE})")
    rate = total / (time.monotonic() - started)
    _until(lambda: len(receiver.since(since)) >= total, connectors, ARRIVAL_TIMEOUT_S)
    _until(lambda: count(pg, "replica", since) >= total, connectors, ARRIVAL_TIMEOUT_S)
    created = times(pg, "shop", "created_at", since)
    sinks = {
        "webhook": receiver.since(since),
        "postgres-sink": times(pg, "replica", "applied_at", since),
    }
    rows = []
    for sink, arrived in sinks.items():
        lags = [(t - created[i]) * 1000 for i, t in arrived.items() if i in created]
        rows.append(
            figure(
                "connectors",
                f"commit in us → {sink} in eu, lag p50 at {LAG_RATE:,} rows/s",
                round(percentile(lags, 50), 1),
                "ms",
                higher_is_better=False,
                p99_ms=round(percentile(lags, 99), 1),
                max_ms=round(max(lags), 1) if lags else float("nan"),
                rows=total,
                arrived=len(lags),
                commit_rate=round(rate),
                load=load_before,
            )
        )
    return rows


@contextmanager
def pipeline() -> Iterator[tuple[PostgresServer, Connectors]]:
    """PostgreSQL with the source and replica tables, the local cluster, no connector yet."""
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plexus-bench-")))
        root.chmod(0o755)  # the postgres user walks into the server's directory in root
        pg = stack.enter_context(postgres_server(root))
        pg.create_database("shop")
        pg.create_database("replica")
        pg.execute("shop", SOURCE_SQL)
        pg.execute("replica", REPLICA_SQL)
        state, _ = stack.enter_context(local_cluster())
        connectors = stack.enter_context(Connectors(root, state.path))
        yield pg, connectors


def run() -> list[dict[str, Any]]:
    try:
        postgres_bin()
    except LocalPostgresError as exc:
        missing = f"not run: {exc}"
        return [{"benchmark": "connectors", "measure": missing, "value": float("nan"), "unit": ""}]
    wait_for_quiet()
    # The receiver outlives the connectors, so the webhook sink stops without errors.
    with Receiver() as receiver, pipeline() as (pg, connectors):
        pids = {"sink": connectors.run("replica", "eu", replica_config(pg))}
        pids["source"] = connectors.run("source", "us", source_config(pg))
        rows = [burst(pg, connectors, pids)]
        # A second sink joins: nothing else is touched.
        connectors.run("hook", "eu", webhook_config(receiver.url))
        rows += lag(pg, receiver, connectors)
    return rows


if __name__ == "__main__":
    from run_all import main

    main(["--only", "connectors"])
