"""Fault drills of the connectors with real processes throughout: a real PostgreSQL server, a
local cluster started with `plexus up` (TLS and tokens), `plexus connector run` processes
(postgres-cdc in us, postgres-sink in eu, webhook in ap posting to a real HTTP receiver) and
a writer changing rows all along.

- Mid-stream, one after the other: kill -9 of the source connector, of the sink connector in
  eu, and a PostgreSQL restart; then the replica equals the source table and the receiver saw
  every change, repeats only where the webhook counted them. The same after a kill -9 of the
  source region's node (a test of its own).
- A file sink added live in a region added live leaves the other connectors' counters alone,
  and gets exactly the changes published once its queue existed (a queue holds what is
  published after it exists: the changes before it are not replayed into it).
- An unreachable database: one clear line from `plexus connector run`, no traceback.
"""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.harness import NodeProcess, free_port, wait_for
from tests.postgres import PostgresServer, postgres_server
from tests.test_connector_runtime import PLEXUS, ROOT, ConnectorProcess, lines
from tests.test_local_cluster import Local
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.timeout(120)

COLUMNS = "id, region, amount"
TABLE = "create table orders (id int primary key, region text not null, amount int not null)"
# Each recovery must let at least this many new changes through every connector.
FLOWING = 30
DEADLINE_S = 30.0


# ---------------------------------------------------------------- the pieces


class Writer:
    """Changes rows of `orders` until stopped, paced, through its own connection: each id is
    inserted; some are then updated, some deleted. A statement that fails because the server
    went away is run again once it is back, and each is idempotent (an insert that may have
    committed does nothing the second time), so `changes` is exactly what was committed."""

    PACE_S = 0.004  # the writer's own rate (~100 rows/s with its updates and deletes)

    def __init__(self, pg: PostgresServer, database: str) -> None:
        self.pg, self.database = pg, database
        self.changes: set[tuple[Any, ...]] = set()  # (op, id, amount); (delete, id) for deletes
        self.reconnects = 0
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="writer")

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(DEADLINE_S)
        assert not self._thread.is_alive(), "the writer did not stop"
        if self._conn is not None:
            self._conn.close()
        if self.failure is not None:
            raise AssertionError(f"the writer failed: {self.failure!r}")

    @property
    def inserted(self) -> int:
        return sum(1 for c in self.changes if c[0] == "insert")

    def _run(self) -> None:
        try:
            i = 0
            while not self.stopping.wait(self.PACE_S):
                i += 1
                self._do("insert into orders values (%s, 'us', %s) on conflict do nothing", i, i)
                self.changes.add(("insert", i, i))
                if i % 4 == 0:  # ids 3, 7, 11...: updated once, one step later
                    self._do("update orders set amount = %s where id = %s", i * 10, i - 1)
                    self.changes.add(("update", i - 1, i * 10))
                if i % 10 == 0:  # ids 5, 15, 25...: deleted (after 15's update)
                    self._do("delete from orders where id = %s", i - 5)
                    self.changes.add(("delete", i - 5))
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def _do(self, statement: str, *args: Any) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                if self._conn is None:
                    self._conn = psycopg2.connect(self.pg.dsn(self.database), connect_timeout=2)
                    self._conn.autocommit = True
                with self._conn.cursor() as cur:
                    cur.execute(statement, args)
                return
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if time.monotonic() > deadline:
                    raise
                with contextlib.suppress(psycopg2.Error):
                    if self._conn is not None:
                        self._conn.close()
                self._conn = None
                self.reconnects += 1
                self.stopping.wait(0.05)  # the server is restarting: try again shortly


def cdc_file(path: Path, pg: PostgresServer) -> Path:
    path.write_text(
        '[connector]\nname = "orders-cdc"\nkind = "postgres-cdc"\n'
        f'[postgres]\ndsn = "{pg.dsn("shop")}"\ntables = ["orders"]\n'
        '[publish]\ntopic = "shop/{table}/{op}"\n'
    )
    return path


def replica_file(path: Path, dsn: str) -> Path:
    path.write_text(
        '[connector]\nname = "orders-eu"\nkind = "postgres-sink"\n'
        '[consume]\nqueue = "orders-eu"\nsubscribe = ["shop/orders/>"]\n'
        f'[postgres]\ndsn = "{dsn}"\ntable = "orders"\nkey = ["id"]\n'
    )
    return path


def hook_file(path: Path, url: str) -> Path:
    path.write_text(
        '[connector]\nname = "orders-hook"\nkind = "webhook"\n'
        '[consume]\nqueue = "orders-hook"\nsubscribe = ["shop/orders/>"]\n'
        f'[webhook]\nurl = "{url}"\n'
    )
    return path


def archive_file(path: Path) -> Path:
    path.write_text(
        '[connector]\nname = "orders-archive"\nkind = "file-sink"\n'
        '[consume]\nqueue = "orders-archive"\nsubscribe = ["shop/orders/>"]\n'
        f'[file]\npath = "{path.with_suffix(".jsonl")}"\n'
    )
    return path


def change_of(body: dict[str, Any]) -> tuple[Any, ...]:
    """A webhook body's change as the writer tells it: (op, id, amount), or (delete, id)."""
    change = body["payload"]  # a JSON payload is posted as JSON
    if change["op"] == "delete":
        return ("delete", change["before"]["id"])
    return (change["op"], change["after"]["id"], change["after"]["amount"])


class Pipeline:
    """The source in us, the replica in eu and the webhook in ap, on one local cluster."""

    def __init__(self, tmp_path: Path, pg: PostgresServer, local: Local, receiver: Receiver):
        self.tmp_path, self.pg, self.local, self.receiver = tmp_path, pg, local, receiver
        self.started: list[ConnectorProcess] = []
        for db in ("shop", "replica"):
            pg.create_database(db)
            pg.execute(db, TABLE)
        self.files = {
            "source": cdc_file(tmp_path / "source.toml", pg),
            "replica": replica_file(tmp_path / "replica.toml", pg.dsn("replica")),
            "hook": hook_file(tmp_path / "hook.toml", receiver.url),
        }
        self.regions = {"source": "us", "replica": "eu", "hook": "ap"}
        self.running: dict[str, ConnectorProcess] = {}

    def start(self, which: str) -> ConnectorProcess:
        file, region = self.files[which], self.regions[which]
        process = ConnectorProcess(file, f"region:{region}", env=self.local.env)
        self.started.append(process)
        self.running[which] = process
        return process

    def kill(self, which: str) -> None:
        self.running.pop(which).kill()

    def close(self) -> None:
        for process in self.started:
            process.kill()
            if process.proc.stdout is not None:
                process.proc.stdout.close()

    def replica_rows(self) -> int:
        return self.pg.execute("replica", "select count(*) from orders")[0][0]

    def listed(self) -> dict[str, dict[str, Any]]:
        rows = json.loads(self.local.run("connector", "list", "--json").stdout)
        return {row["name"]: row for row in rows}

    def wait_flowing(self, after: str) -> None:
        """Changes written from now on reach the replica and the webhook: the pipeline
        recovered from `after` while the writer kept writing."""
        posts, rows = len(self.receiver.posts), self.replica_rows()
        wait_for(
            lambda: (
                len(self.receiver.posts) >= posts + FLOWING
                and self.replica_rows() >= rows + FLOWING // 2
            ),
            DEADLINE_S,
            f"changes to flow to eu and ap again after {after}",
        )

    def wait_caught_up(self, timeout: float = DEADLINE_S) -> tuple[int, str]:
        """Once the writer stopped: the replica equals the source; that digest."""
        want = self.pg.table_digest("shop", "orders", COLUMNS)
        try:
            wait_for(
                lambda: self.pg.table_digest("replica", "orders", COLUMNS) == want,
                timeout,
                f"the replica in eu to equal the source ({want[0]} rows)",
            )
        except AssertionError as exc:
            source, replica = (
                set(self.pg.execute(db, f"select {COLUMNS} from orders"))
                for db in ("shop", "replica")
            )
            only = f"only in the source {source - replica}, only in eu {replica - source}"
            ids = {r[0] for r in source ^ replica}
            hooked = [
                (p.json["id"], p.json["delivery_count"], change_of(p.json))
                for p in self.receiver.posts
                if change_of(p.json)[1] in ids
            ]
            logs = {p.stderr.name: p.stderr.read_text()[-3000:] for p in self.started}
            raise AssertionError(f"{exc}: {only}; hooked {hooked}; logs {logs}") from None
        return want

    def wait_hooked(self, writer: Writer) -> None:
        """Once the writer stopped: the webhook receiver saw each of its changes."""
        wait_for(
            lambda: set(self.received()) >= writer.changes,
            DEADLINE_S,
            "the webhook in ap to have seen every change",
        )

    def received(self) -> collections.Counter[tuple[Any, ...]]:
        """Each change the receiver confirmed, with how often."""
        return collections.Counter(
            change_of(p.json) for p in self.receiver.posts if p.status == 200
        )


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    try:
        yield hook
    finally:
        hook.close()


@pytest.fixture
def pipeline(tmp_path: Path, pg: PostgresServer, receiver: Receiver) -> Iterator[Pipeline]:
    local = Local(tmp_path / "state")
    flow = Pipeline(tmp_path, pg, local, receiver)
    try:
        local.run("up")
        flow.start("replica")  # the sinks first: their queues hold everything the source sends
        flow.start("hook")
        flow.start("source")
        yield flow
    finally:
        flow.close()
        local.close()
        assert not local.processes(), "nodes left running"


# ---------------------------------------------------------------- the drills


def caught_up_with_everything(
    pipeline: Pipeline, writer: Writer, timeout: float = DEADLINE_S
) -> None:
    """Once the writer stopped: the replica equals the source, the webhook saw every change
    (and nothing else), and posted one twice only where it counted a lost answer."""
    rows, _ = pipeline.wait_caught_up(timeout)
    assert rows == writer.inserted - sum(1 for c in writer.changes if c[0] == "delete")
    pipeline.wait_hooked(writer)
    assert set(pipeline.received()) == writer.changes
    keys = collections.Counter(p.headers["idempotency-key"] for p in pipeline.receiver.posts)
    repeated = sum(n - 1 for n in keys.values())
    hook = pipeline.listed()["orders-hook"]
    assert hook["duplicates"] == repeated, (hook, repeated)


@pytest.mark.slow
def test_kill_9_of_each_connector_and_a_postgres_restart_mid_stream_lose_nothing(
    pipeline: Pipeline, pg: PostgresServer
) -> None:
    with Writer(pg, "shop") as writer:
        pipeline.wait_flowing("the start")

        pipeline.kill("source")
        pipeline.start("source")
        pipeline.wait_flowing("a kill -9 of the source connector")

        pipeline.kill("replica")
        pipeline.start("replica")
        pipeline.wait_flowing("a kill -9 of the sink connector in eu")

        pg.restart()
        pipeline.wait_flowing("a PostgreSQL restart")
    assert writer.reconnects > 0, "the PostgreSQL restart did not happen mid-stream"
    caught_up_with_everything(pipeline, writer)


@pytest.mark.slow
def test_kill_9_of_the_source_regions_node_mid_stream_loses_nothing(
    pipeline: Pipeline, pg: PostgresServer
) -> None:
    with Writer(pg, "shop") as writer:
        pipeline.wait_flowing("the start")
        pipeline.local.run("fault", "kill", "us")
        pipeline.local.run("region", "start", "us")
        pipeline.wait_flowing("a kill -9 of the node in us")
    # Caught up within seconds when nothing is out of order: the expected failure is quick.
    caught_up_with_everything(pipeline, writer, timeout=10)


@pytest.mark.slow
def test_a_sink_added_live_in_a_new_region_leaves_the_others_alone(
    pipeline: Pipeline, pg: PostgresServer, tmp_path: Path
) -> None:
    with Writer(pg, "shop") as writer:
        pipeline.wait_flowing("the start")
        before = pipeline.listed()
        samples = [before]
        assert set(before) == {"orders-cdc", "orders-eu", "orders-hook"}

        pipeline.local.run("region", "add", "sa", "--link", "eu")
        launched_ms = time.time() * 1000  # its queue is made after this
        archive = ConnectorProcess(
            archive_file(tmp_path / "archive.toml"), "region:sa", env=pipeline.local.env
        )
        pipeline.started.append(archive)
        assert "running in region sa" in archive.first_line
        out = tmp_path / "archive.jsonl"
        wait_for(lambda: len(lines(out)) >= FLOWING, DEADLINE_S, "changes in the new file sink")
        samples.append(pipeline.listed())
        pipeline.wait_flowing("the new sink")
        samples.append(pipeline.listed())

    pipeline.wait_caught_up()
    pipeline.wait_hooked(writer)
    hooked = {int(p.json["id"]) for p in pipeline.receiver.posts}
    first = int(lines(out)[0]["id"])
    wait_for(
        lambda: {int(line["id"]) for line in lines(out)} >= {i for i in hooked if i >= first},
        DEADLINE_S,
        "the file sink to have every change from its first one on",
    )
    archived = lines(out)
    wait_for(
        lambda: pipeline.listed()["orders-archive"]["events_out"] == len(archived),
        DEADLINE_S,
        "the file sink's counters to be reported",
    )
    listed = pipeline.listed()
    samples.append(listed)

    # Every connector, in every region, with its counters (`connector list` over the cluster).
    assert {name: (row["region"], row["kind"], row["state"]) for name, row in listed.items()} == {
        "orders-cdc": ("us", "postgres-cdc", "running"),
        "orders-eu": ("eu", "postgres-sink", "running"),
        "orders-hook": ("ap", "webhook", "running"),
        "orders-archive": ("sa", "file-sink", "running"),
    }
    assert all({"events_in", "events_out", "lag_ms"} <= set(row) for row in listed.values())

    # The others: the same connections all along, counters only growing, nothing failed.
    for name in before:
        seen = [sample[name] for sample in samples]
        assert {row["client_id"] for row in seen} == {before[name]["client_id"]}, name
        outs = [row["events_out"] for row in seen]
        assert outs == sorted(outs) and outs[-1] > outs[0], (name, outs)
        assert all(row["errors"] == 0 and row["retries"] == 0 for row in seen), (name, seen)
        assert all(row["lag_ms"] < 5000 for row in seen), (name, seen)
    # The new sink: a suffix of the stream (as the webhook saw it), nothing missing from its
    # first change on, nothing published before it was launched (before its queue existed).
    ids = [int(line["id"]) for line in archived]
    assert ids == sorted(set(ids))
    assert set(ids) == {i for i in hooked if i >= ids[0]}
    assert min(line["publish_time_ms"] for line in archived) >= launched_ms


# ---------------------------------------------------------------- what users get wrong


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    process = NodeProcess("us", tmp_path / "us")
    try:
        yield process.start()
    finally:
        process.kill()


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path, node: NodeProcess) -> None:
    port = free_port()
    dsn = f"host=127.0.0.1 port={port} dbname=shop user=plexus"
    source = tmp_path / "source.toml"
    source.write_text(
        '[connector]\nname = "orders-cdc"\nkind = "postgres-cdc"\n'
        f'[postgres]\ndsn = "{dsn}"\ntables = ["orders"]\n[publish]\ntopic = "shop/{{op}}"\n'
    )
    done = subprocess.run(
        [*PLEXUS, "connector", "run", str(source), "--server", node.address],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        cwd=ROOT,
    )
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and f"127.0.0.1:{port}" in error[0] and "refused" in error[0], done


def test_a_sink_whose_database_is_unreachable_retries_saying_why_in_one_line(
    tmp_path: Path, node: NodeProcess
) -> None:
    """A sink waits for its database (a down destination loses nothing: the queue holds the
    events): one log line per failure, the error in `connector list`, a clean stop."""
    port = free_port()
    sink = replica_file(tmp_path / "replica.toml", f"host=127.0.0.1 port={port} dbname=r user=u")
    stderr = tmp_path / "replica.stderr"
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [*PLEXUS, "connector", "run", str(sink), "--server", node.address],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
        )
    try:

        def listed() -> dict[str, Any]:
            out = subprocess.run(
                [*PLEXUS, "connector", "list", "--server", node.address, "--json"],
                capture_output=True, text=True, timeout=DEADLINE_S, check=True, cwd=ROOT,
            )  # fmt: skip
            rows = json.loads(out.stdout)
            return rows[0] if rows else {}

        wait_for(lambda: listed().get("retries", 0) >= 2, DEADLINE_S, "the sink to retry")
        row = listed()
        assert row["state"] == "retrying" and f"127.0.0.1:{port}" in row["last_error"], row
        assert "Connection refused" in row["last_error"] and "\n" not in row["last_error"]
        process.terminate()
        assert process.wait(DEADLINE_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    logged = stderr.read_text()
    assert "Traceback" not in logged
    errors = [line for line in logged.splitlines() if " ERROR " in line]
    assert errors and all(f"127.0.0.1:{port}" in line for line in errors), logged
