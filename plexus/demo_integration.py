"""`python -m plexus.demo_integration` (`make demo-integration`): issue 12's example, run.

A throwaway PostgreSQL (Debian's `postgresql`, `wal_level = logical`) with
databases shop and replica, and `plexus up` (us, eu, ap) in a temporary state
directory; then, each as its own `plexus connector run FILE.toml --region NAME`
process, as users run them: a postgres-cdc source on shop's orders table in us,
a postgres-sink into replica's orders table in eu, and a webhook sink in ap
posting to a receiver this demo serves. Rows written to shop reach eu's table
and ap's endpoint; then a new region (sa) joins live with a file-sink, the
others untouched: their processes and counters stay as they were. Connectors,
cluster and PostgreSQL are stopped and the directory deleted at the end, even
when something fails or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from plexus.client import Client
from plexus.connectors.postgres_cdc import slot_name
from plexus.connectors.webhook_request import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from plexus.demo import wait_routed
from plexus.local import membership, ops
from plexus.local.launcher import terminate
from plexus.local.postgres import PostgresServer, postgres_server
from plexus.local.state import STATE_ENV, LocalClusterError, StateDir

ARRIVAL_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05
PLEXUS = Path(sys.executable).with_name("plexus")  # the command next to this Python
SECRET = "demo-secret"  # signs the webhook's bodies; the receiver checks each one
TABLE = "create table orders (id int primary key, customer text not null, amount int not null)"
COLUMNS = "id, customer, amount"
COUNTERS = ("client_id", "events_in", "events_out", "retries", "errors")

console = Console(highlight=False)


class DemoFailed(Exception):
    """A step of the demo that did not happen in time: the line says which."""


def until(done: Callable[[], bool], what: str, check: Callable[[], None] = lambda: None) -> None:
    """Poll `done()` until true; `check()` raises when a part died meanwhile."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while not done():
        check()
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what}: not within {ARRIVAL_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)


# ------------------------------------------------------------------ the webhook receiver


class Receiver:
    """An HTTP endpoint in a thread: each POST's change event, once its signature checked."""

    def __init__(self) -> None:
        self.changes: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                expected = sign(SECRET.encode(), self.headers.get(TIMESTAMP_HEADER, ""), body)
                signed = hmac.compare_digest(expected, self.headers.get(SIGNATURE_HEADER, ""))
                if signed:
                    with receiver.lock:
                        receiver.changes.append(json.loads(body)["payload"])
                self.send_response(200 if signed else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/orders"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(POLL_S,))

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.changes)


# ------------------------------------------------------------------ connector processes


class Connectors:
    """`plexus connector run FILE --region NAME` processes, each logging to NAME.log."""

    def __init__(self, root: Path, state: StateDir) -> None:
        self.root = root
        self.env = {**os.environ, STATE_ENV: str(state.path)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def write(self, name: str, text: str) -> Path:
        """The connector's file, written and shown once."""
        path = self.root / f"{name}.toml"
        path.write_text(text)
        console.print(f"[dim]{path}[/dim]")
        console.print(Syntax(text.strip(), "toml", theme="ansi_dark", background_color="default"))
        return path

    def run(self, name: str, region: str, path: Path) -> None:
        """Start it and wait for its ready line (a sink: consuming its queue)."""
        console.print(f"$ [bold]plexus connector run {path.name} --region {region}[/bold]")
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:
            self.procs[name] = subprocess.Popen(
                [str(PLEXUS), "connector", "run", str(path), "--region", region],
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        until(lambda: "running in region" in log.read_text(), f"connector {name} ready", self.check)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                lines = (self.root / f"{name}.log").read_text().strip().splitlines()
                last = lines[-1] if lines else "(no output)"
                raise DemoFailed(f"connector {name} exited ({proc.returncode}): {last}")

    def listed(self) -> dict[str, dict[str, Any]]:
        """`plexus connector list --json`, by connector name."""
        done = subprocess.run(
            [str(PLEXUS), "connector", "list", "--json"],
            capture_output=True, text=True, env=self.env, timeout=STOP_TIMEOUT_S,
        )  # fmt: skip
        if done.returncode != 0:
            raise DemoFailed(f"plexus connector list: {done.stderr.strip()}")
        return {row["name"]: row for row in json.loads(done.stdout)}

    def stop(self) -> None:
        terminate(self.procs.values(), STOP_TIMEOUT_S)


# ------------------------------------------------------------------ the tour


class Demo:
    def __init__(self, pg: PostgresServer, state: StateDir, receiver: Receiver, root: Path):
        self.pg = pg
        self.state = state
        self.receiver = receiver
        self.root = root
        self.connectors = Connectors(root, state)
        self.changes = 0  # row changes written to shop so far

    def sql(self, statement: str) -> None:
        console.print(f"  shop=# [cyan]{statement}[/cyan]")
        self.pg.execute("shop", statement)

    def routed_to(self, *queues: tuple[str, str]) -> None:
        """Until us routes the orders' events to each (region, queue)."""

        async def wait() -> None:
            us = self.state.load().region("us")
            async with await Client.connect(
                us.grpc, ca=us.ca, token=self.state.client_token()
            ) as client:
                for region, queue in queues:
                    await wait_routed(client, "shop/orders/insert", region, queue)

        asyncio.run(wait())

    def start_pipeline(self) -> None:
        console.rule("[bold]2. Connectors: a source in us, sinks in eu and ap")
        pg, c = self.pg, self.connectors
        table = f'[postgres]\ndsn = "{pg.dsn("replica")}"\ntable = "orders"\nkey = ["id"]\n'
        replica = c.write("orders-eu", sink_file("orders-eu", "postgres-sink", table))
        webhook = (
            f'[webhook]\nurl = "{self.receiver.url}"\nsecret = "{SECRET}"\n'
            "concurrency = 1  # one POST at a time: in commit order\n"
        )
        hook = c.write("orders-hook", sink_file("orders-hook", "webhook", webhook))
        source = c.write("orders-cdc", source_file(pg.dsn("shop")))
        c.run("orders-eu", "eu", replica)
        c.run("orders-hook", "ap", hook)
        self.routed_to(("eu", "orders-eu"), ("ap", "orders-hook"))
        c.run("orders-cdc", "us", source)
        # Changes count from the slot's creation: wait until the source streams from it.
        streaming = "select 1 from pg_replication_slots where slot_name = %s and active"
        slot = slot_name("orders-cdc")
        until(lambda: bool(pg.execute("shop", streaming, slot)), f"slot {slot}", c.check)
        console.print("all three running; us routes shop/orders/> to queues in eu and ap")

    def write_rows(self, statements: list[str], changes: int) -> None:
        for statement in statements:
            self.sql(statement)
        self.changes += changes

    def show_arrivals(self, file: Path | None = None, since: int = 0) -> None:
        """Until eu's table equals shop's and ap (and the file in sa) saw every change."""
        c = self.connectors
        want = self.pg.table_digest("shop", "orders", COLUMNS)
        until(lambda: self.pg.table_digest("replica", "orders", COLUMNS) == want, "eu", c.check)
        rows = self.pg.execute("replica", f"select {COLUMNS} from orders order by id")
        console.print(f"  eu  [green]replica.orders equals shop.orders[/green]: {_rows(rows)}")
        until(lambda: len(self.receiver.received()) >= self.changes, "ap webhook", c.check)
        posts = self.receiver.received()
        console.print(f"  ap  [green]webhook received[/green] {len(posts)} signed POSTs:")
        console.print("      " + ", ".join(_change(p) for p in posts))
        if file is not None:
            until(lambda: len(_jsonl(file)) >= self.changes - since, "sa file", c.check)
            changes = [json.loads(line["payload"]) for line in _jsonl(file)]
            console.print(
                f"  sa  [green]{file.name} has[/green] " + ", ".join(map(_change, changes))
            )

    def counters(self, missed: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
        """`plexus connector list --json`, shown once every connector reported every change
        (but those it `missed`: changes before it started)."""
        listed: dict[str, dict[str, Any]] = {}

        def reported() -> bool:
            listed.clear()
            listed.update(self.connectors.listed())
            return len(listed) == len(self.connectors.procs) and all(
                row["events_out"] >= self.changes - (missed or {}).get(name, 0)
                for name, row in listed.items()
            )

        until(reported, "connector list", self.connectors.check)
        table = Table(*("connector", "region", "kind", "in", "out", "retries", "errors"))
        for name, row in listed.items():
            table.add_row(name, row["region"], row["kind"], *(str(row[k]) for k in COUNTERS[1:]))
        console.print(table)
        return listed

    def region_added_live(self) -> Path:
        console.rule("[bold]4. A new region, sa, with a file-sink: nothing else touched")
        before = {name: {k: row[k] for k in COUNTERS} for name, row in self.counters().items()}
        console.print("$ [bold]plexus region add sa --link eu[/bold]")
        region, seconds = membership.add_region(self.state, "sa", ["eu"])
        console.print(f"sa joined on {region.grpc} in {seconds:.2f} s, linked to eu")
        path = self.root / "orders-sa.jsonl"
        archive = self.connectors.write(
            "orders-sa", sink_file("orders-sa", "file-sink", f'[file]\npath = "{path}"\n')
        )
        self.connectors.run("orders-sa", "sa", archive)
        self.routed_to(("sa", "orders-sa"))
        after = {n: {k: r[k] for k in COUNTERS} for n, r in self.connectors.listed().items()}
        for name, counters in before.items():
            if after.get(name) != counters:
                raise DemoFailed(f"{name} changed while sa joined: {counters} -> {after.get(name)}")
        console.print(
            "  orders-cdc, orders-eu and orders-hook: same processes (client ids), "
            "[green]counters untouched[/green]"
        )
        return path

    def run(self) -> None:
        self.start_pipeline()
        console.rule("[bold]3. Rows written in us reach eu's table and ap's endpoint")
        self.write_rows(
            [
                "insert into orders values (1, 'ada', 30), (2, 'grace', 12), (3, 'linus', 7)",
                "update orders set amount = 45 where id = 1",
                "delete from orders where id = 3",
            ],
            changes=5,
        )
        self.show_arrivals()
        file = self.region_added_live()
        console.rule("[bold]5. More rows: they reach all three sinks")
        first = self.changes
        self.write_rows(
            ["insert into orders values (4, 'barbara', 21), (5, 'edsger', 9)",
             "update orders set amount = 13 where id = 2"],
            changes=3,
        )  # fmt: skip
        self.show_arrivals(file, since=first)
        self.counters({"orders-sa": first})


def _jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


def _rows(rows: list[tuple[Any, ...]]) -> str:
    return ", ".join(f"({', '.join(map(str, row))})" for row in rows) or "(empty)"


def _change(event: dict[str, Any]) -> str:
    row = event.get("after") or event.get("before") or {}
    return f"{event['op']} {row.get('id')}"


def source_file(dsn: str) -> str:
    return f"""[connector]
name = "orders-cdc"
kind = "postgres-cdc"
[postgres]
dsn = "{dsn}"
tables = ["orders"]
[publish]
topic = "shop/{{table}}/{{op}}"
"""


def sink_file(name: str, kind: str, section: str) -> str:
    """A sink's file: its own queue in its region, on every change of shop's orders."""
    return f"""[connector]
name = "{name}"
kind = "{kind}"
[consume]
queue = "{name}"
subscribe = ["shop/orders/>"]
{section}"""


def _down(state: StateDir) -> None:
    with contextlib.suppress(LocalClusterError):  # no cluster: `plexus up` failed and cleaned up
        ops.down(state, purge=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def main() -> int:
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _terminate)
    with (
        tempfile.TemporaryDirectory(prefix="plexus-demo-integration-") as tmp,
        ExitStack() as stack,
    ):
        root = Path(tmp)
        root.chmod(0o711)  # PostgreSQL runs as the postgres user when we are root: it walks in
        try:
            console.rule("[bold]1. A throwaway PostgreSQL and a local cluster")
            pg = stack.enter_context(postgres_server(root))
            for database in ("shop", "replica"):
                pg.create_database(database)
                pg.execute(database, TABLE)
            console.print(
                f"PostgreSQL on 127.0.0.1:{pg.port} (wal_level logical), databases shop and "
                f"replica, each with [cyan]{TABLE}[/cyan]"
            )
            receiver = stack.enter_context(Receiver())
            state = StateDir(root / "cluster")
            console.print("$ [bold]plexus up[/bold]")
            stack.callback(_down, state)
            result = ops.up(state, None)
            console.print(
                f"cluster up in {result.elapsed_s:.2f} s: "
                + ", ".join(f"{r.name} {r.grpc}" for r in result.record.regions)
            )
            demo = Demo(pg, state, receiver, root)
            stack.callback(demo.connectors.stop)
            demo.run()
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: stopping everything")
            return 130
        except Exception as exc:
            console.print(f"[red]demo failed:[/red] {exc}")
            return 1
    console.rule()
    console.print(
        f"connectors, cluster and PostgreSQL stopped, state deleted; "
        f"demo done in {time.monotonic() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
