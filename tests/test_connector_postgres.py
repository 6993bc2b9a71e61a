"""The PostgreSQL connectors against real PostgreSQL servers and an in-process node.

One server for the module (tests/postgres.py), a fresh database per test. The
source publishes to a queue of the node; the tests read the queue as a sink
would, and the sink writes a replica database on the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from node.server import Node
from plexus import Client
from plexus.client import Event
from plexus.connectors import postgres_cdc, postgres_sink
from plexus.connectors.base import Context, PermanentError, Stats, TransientError
from plexus.connectors.pgoutput import Begin, parse_lsn
from plexus.connectors.postgres_cdc import PostgresCdcSettings, PostgresCdcSource, Unconfirmed
from plexus.connectors.postgres_sink import PostgresSink, PostgresSinkSettings
from plexus.errors import FailedPrecondition, NotFound, PermissionDenied, QueueFull, Unavailable
from plexus.v1 import plexus_pb2 as pb
from tests.harness import eventually, free_port, wait_for
from tests.inprocess import InProcessNodes
from tests.postgres import PostgresServer, postgres_server

pytestmark = pytest.mark.timeout(90)

ORDERS = "create table orders (id int primary key, region text not null, amount int not null)"
_databases = itertools.count()


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    """Each connector's database thread ends with it."""
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("postgres-")]
    assert not left, f"threads left running: {left}"


@pytest.fixture
def shop(pg: PostgresServer) -> Iterator[str]:
    """A fresh database with an `orders` table: its name. Its replication slots (a
    slot belongs to the whole server) are dropped after the test."""
    name = f"shop{next(_databases)}"
    pg.create_database(name)
    pg.execute(name, ORDERS)
    yield name

    def released() -> bool:
        active = "select 1 from pg_replication_slots where database = %s and active"
        return not pg.execute("postgres", active, name)

    # The test's connectors have closed their replication connections, but a server
    # process may still be ending: its slot stays active, and a drop fails, until it has.
    wait_for(released, 10, f"the replication slots of {name} to be released")
    pg.execute(
        "postgres",
        "select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = %s",
        name,
    )


@pytest.fixture
async def client(inproc_node: Node) -> Any:
    """A client of an in-process node with a queue `cdc` of `shop/>`; every source a
    test started is gone after it."""
    async with await Client.connect(inproc_node.address) as connected:
        await connected.create_queue("cdc", ["shop/>"])
        yield connected
        left, Running.started = Running.started, []
        for running in left:
            running.task.cancel()
        await asyncio.gather(*(r.task for r in left), return_exceptions=True)


def cdc_settings(dsn: str, topic: str = "shop/{table}/{op}", **postgres: Any) -> Any:
    return PostgresCdcSettings.model_validate(
        {
            "connector": {"name": "orders-cdc", "kind": "postgres-cdc"},
            "postgres": {"dsn": dsn, "tables": ["orders"], **postgres},
            "publish": {"topic": topic},
        }
    )


def sink_settings(dsn: str, **postgres: Any) -> Any:
    return PostgresSinkSettings.model_validate(
        {
            "connector": {"name": "orders-replica", "kind": "postgres-sink"},
            "consume": {"queue": "cdc", "subscribe": ["shop/>"]},
            "postgres": {"dsn": dsn, "table": "orders", "key": ["id"], **postgres},
        }
    )


class Running:
    """A source's run() as a task, with the context the runtime would give it."""

    started: ClassVar[list[Running]] = []

    def __init__(self, source: PostgresCdcSource, client: Client) -> None:
        self.ctx = Context(source.name, client, Stats(), asyncio.Event())
        self.task = asyncio.create_task(source.run(self.ctx))
        Running.started.append(self)

    async def streaming(self) -> Running:
        await eventually(
            lambda: self.ctx.stats.state == "running" or self.task.done(), 30, "streaming"
        )
        if self.task.done():
            self.task.result()
        return self

    async def stop(self) -> None:
        self.ctx.stopping.set()
        async with asyncio.timeout(20):
            await self.task

    async def crash(self) -> None:
        """As close to kill -9 as a task gets: no stop, no last confirmation."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_source(pg: PostgresServer, db: str, client: Client, **settings: Any) -> Running:
    settings.setdefault("dsn", pg.dsn(db))
    return await Running(PostgresCdcSource(cdc_settings(**settings)), client).streaming()


async def take(
    client: Client, count: int, queue: str = "cdc", *, exact: bool = True
) -> list[Event]:
    """The next `count` events of `queue` (or more when not `exact`: a batch may end
    past it), acked; fails if they do not come in time."""
    out: list[Event] = []
    async with client.consume(queue) as consumer:
        async with asyncio.timeout(30):
            while len(out) < count:
                batch = await consumer.next_batch()
                out.extend(batch)
                await asyncio.gather(*(d.ack() for d in batch))
    assert not exact or len(out) == count, f"{len(out) - count} events more than {count}"
    return out


def changes(events: list[Event]) -> list[tuple[Any, ...]]:
    """(op, before, after) of each event, in queue order."""
    out = []
    for event in events:
        body = json.loads(event.payload)
        out.append((body["op"], body["before"], body["after"]))
    return out


async def sql(pg: PostgresServer, db: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(pg.execute, db, statement, *args)


def row(id_: int, amount: int, region: str = "us") -> dict[str, Any]:
    return {"id": id_, "region": region, "amount": amount}


async def confirmed_lsn(pg: PostgresServer, db: str) -> str:
    rows = await sql(pg, db, "select confirmed_flush_lsn::text from pg_replication_slots")
    return rows[0][0]


# ---------------------------------------------------------------- the source


async def test_only_a_fully_acked_prefix_of_transactions_is_confirmable() -> None:
    loop = asyncio.get_running_loop()
    unconfirmed = Unconfirmed()
    acks = [loop.create_future() for _ in range(3)]
    first = unconfirmed.begin(Begin(100, datetime.now(UTC), 1))
    unconfirmed.track(first, acks[0])
    second = unconfirmed.begin(Begin(200, datetime.now(UTC), 2))
    unconfirmed.track(second, acks[1])
    unconfirmed.track(second, acks[2])
    first.end_lsn, second.end_lsn = 150, 250
    acks[1].set_result([1])
    acks[2].set_result([2])
    await unconfirmed.wait_ack(1.0)
    assert unconfirmed.in_flight == 1
    assert unconfirmed.acked() is None  # the second is acked, the first is not
    acks[0].set_result([0])
    await unconfirmed.wait_ack(1.0)
    tx = unconfirmed.acked()
    assert tx is second and tx.end_lsn == 250 and unconfirmed.in_flight == 0
    third = unconfirmed.begin(Begin(300, datetime.now(UTC), 3))
    refused = loop.create_future()
    unconfirmed.track(third, refused)
    refused.set_exception(QueueFull("q", "max_depth", 1))
    await unconfirmed.wait_ack(1.0)
    with pytest.raises(QueueFull):
        unconfirmed.acked()  # the mesh refused an event of the oldest transaction


async def test_row_changes_reach_a_queue_in_commit_order_with_their_payload(
    pg: PostgresServer, shop: str, client: Client
) -> None:
    source = await start_source(pg, shop, client)
    assert source.ctx.stats.position == await confirmed_lsn(pg, shop)  # the slot's, from the start
    await sql(pg, shop, "insert into orders values (1, 'us', 10), (2, 'eu', 20), (3, 'us', 30)")
    await sql(pg, shop, "update orders set amount = 11 where id = 1")
    await sql(pg, shop, "update orders set id = 4 where id = 3")
    await sql(pg, shop, "delete from orders where id = 2")
    events = await take(client, 6)
    assert changes(events) == [
        ("insert", None, row(1, 10)),
        ("insert", None, row(2, 20, "eu")),
        ("insert", None, row(3, 30)),
        ("update", None, row(1, 11)),
        ("update", {"id": 3}, row(4, 30)),  # the key changed: the old key comes too
        ("delete", {"id": 2}, None),
    ]
    assert [e.topic for e in events] == [
        *["shop/orders/insert"] * 3,
        "shop/orders/update",
        "shop/orders/update",
        "shop/orders/delete",
    ]
    bodies = [json.loads(e.payload) for e in events]
    first = bodies[0]
    assert (first["schema"], first["table"]) == ("public", "orders")
    assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", first["lsn"])
    committed = datetime.fromisoformat(first["commit_time"])
    assert abs(datetime.now(UTC) - committed) < timedelta(minutes=1)
    # One transaction, one LSN and xid; each later statement its own.
    assert len({(b["lsn"], b["xid"]) for b in bodies[:3]}) == 1
    assert len({b["lsn"] for b in bodies}) == 4
    # Confirmed to PostgreSQL once acked: the slot moved, and the counters say so.
    stats = source.ctx.stats
    last = parse_lsn(bodies[-1]["lsn"])
    await eventually(lambda: parse_lsn(stats.position) > last, 10, "the last commit confirmed")
    assert stats.events_in == 6 and stats.lag_s >= 0
    await source.stop()
    assert await confirmed_lsn(pg, shop) == stats.position
    assert stats.state == "stopped"


async def test_values_are_typed_in_json_where_nothing_is_lost(
    pg: PostgresServer, shop: str, client: Client
) -> None:
    await sql(
        pg,
        shop,
        "create table kinds (id bigint primary key, flag bool, ratio float8, price numeric,"
        " doc jsonb, at timestamptz, tags int[], note text, big text)",
    )
    source = await start_source(pg, shop, client, tables=["kinds"])
    big = "".join(f"{i:08x}" for i in range(4000))  # large enough to be TOASTed
    await sql(
        pg,
        shop,
        "insert into kinds values (9007199254740993, true, 0.1, 12345678901234567890.123,"
        " '{\"a\": [1, 2]}', '2026-01-02 03:04:05.678+00', '{1,2}', null, %s)",
        big,
    )
    await sql(pg, shop, "update kinds set note = 'a/b' where id = 9007199254740993")
    insert, update = changes(await take(client, 2))
    assert insert[2] == {
        "id": 9007199254740993,
        "flag": True,
        "ratio": 0.1,
        "price": "12345678901234567890.123",
        "doc": {"a": [1, 2]},
        "at": "2026-01-02 03:04:05.678+00",
        "tags": "{1,2}",
        "note": None,
        "big": big,
    }
    # The TOASTed value the update did not touch is not sent: its column is absent.
    assert "big" not in update[2] and update[2]["note"] == "a/b"
    await source.stop()


async def test_row_columns_in_the_topic_are_escaped_to_one_level(
    pg: PostgresServer, shop: str, client: Client
) -> None:
    await sql(pg, shop, "alter table orders replica identity full")
    source = await start_source(pg, shop, client, topic="shop/{region}/{table}/{op}")
    await sql(pg, shop, "insert into orders values (1, 'eu/west', 1), (2, '', 2)")
    await sql(pg, shop, "delete from orders where id = 1")
    events = await take(client, 3)
    assert [e.topic for e in events] == [
        "shop/eu%2Fwest/orders/insert",
        "shop/_/orders/insert",
        "shop/eu%2Fwest/orders/delete",  # REPLICA IDENTITY FULL: a delete carries the row
    ]
    await source.stop()


async def test_a_stopped_source_resumes_where_it_confirmed(
    pg: PostgresServer, shop: str, client: Client
) -> None:
    source = await start_source(pg, shop, client)
    await sql(pg, shop, "insert into orders select g, 'us', g from generate_series(1, 50) g")
    assert len(await take(client, 50)) == 50
    await source.stop()
    await sql(pg, shop, "insert into orders select g, 'us', g from generate_series(51, 100) g")
    again = await start_source(pg, shop, client)  # a new object on the same slot
    await sql(pg, shop, "insert into orders values (0, 'marker', 0)")
    assert changes(await take(client, 51)) == [
        *[("insert", None, row(i, i)) for i in range(51, 101)],
        ("insert", None, row(0, 0, "marker")),
    ]
    await again.stop()


async def test_a_crash_before_confirming_resends_and_the_node_stores_each_event_once(
    pg: PostgresServer, shop: str, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PostgresCdcSource, "_confirm", lambda self, lsn: None)
    source = await start_source(pg, shop, client)
    created_at = await confirmed_lsn(pg, shop)
    await sql(pg, shop, "insert into orders select g, 'us', g from generate_series(1, 50) g")
    await sql(pg, shop, "update orders set amount = -id where id <= 10")
    assert len(await take(client, 60)) == 60
    await source.crash()
    assert await confirmed_lsn(pg, shop) == created_at  # nothing was confirmed
    monkeypatch.undo()

    again = await start_source(pg, shop, client)
    await sql(pg, shop, "insert into orders values (0, 'marker', 0)")
    # Everything was read and published again; the queue got only what it lacked.
    assert changes(await take(client, 1)) == [("insert", None, row(0, 0, "marker"))]
    await eventually(lambda: again.ctx.stats.events_in == 61, 10, "all 61 changes read again")
    await again.stop()


async def test_a_transaction_larger_than_the_in_flight_window_gets_through(
    pg: PostgresServer, shop: str, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_cdc, "MAX_IN_FLIGHT_EVENTS", 8)
    source = await start_source(pg, shop, client)
    await sql(pg, shop, "insert into orders select g, 'us', g from generate_series(1, 500) g")
    assert changes(await take(client, 500)) == [("insert", None, row(i, i)) for i in range(1, 501)]
    await source.stop()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGQUIT], ids=["fast", "immediate"])
async def test_a_postgres_restart_mid_stream_loses_nothing(
    pg: PostgresServer, shop: str, client: Client, how: signal.Signals
) -> None:
    source = await start_source(pg, shop, client)
    for first in range(1, 201, 20):  # ten transactions of 20 rows
        await sql(
            pg, shop, "insert into orders select g, 'us', g from generate_series(%s, %s) g",
            first, first + 19,
        )  # fmt: skip
    await asyncio.to_thread(pg.restart, how)
    await sql(pg, shop, "insert into orders select g, 'us', g from generate_series(201, 300) g")
    await sql(pg, shop, "insert into orders values (0, 'marker', 0)")
    assert changes(await take(client, 301)) == [
        *[("insert", None, row(i, i)) for i in range(1, 301)],
        ("insert", None, row(0, 0, "marker")),
    ]
    assert source.ctx.stats.retries >= 1 and source.ctx.stats.state == "running"
    await source.stop()


async def test_a_node_restart_mid_stream_loses_nothing(
    pg: PostgresServer,
    shop: str,
    client: Client,
    inproc_nodes: InProcessNodes,
    inproc_node: Node,
) -> None:
    source = await start_source(pg, shop, client)
    await sql(pg, shop, "insert into orders select g, 'us', g from generate_series(1, 100) g")
    await inproc_nodes.restart(inproc_node)  # the client reconnects and sends unacked again
    await sql(pg, shop, "insert into orders select g, 'us', g from generate_series(101, 200) g")
    await sql(pg, shop, "insert into orders values (0, 'marker', 0)")
    assert changes(await take(client, 201)) == [
        *[("insert", None, row(i, i)) for i in range(1, 201)],
        ("insert", None, row(0, 0, "marker")),
    ]
    await source.stop()


# A source in its own process, for kill -9: what `plexus connector run` does, minus the file.
SOURCE_PROCESS = """
import asyncio, sys
from plexus import Client
from plexus.connectors.base import Context, Stats
from plexus.connectors.postgres_cdc import PostgresCdcSettings, PostgresCdcSource

async def main(address, dsn):
    async with await Client.connect(address) as client:
        settings = PostgresCdcSettings.model_validate({
            "connector": {"name": "orders-cdc", "kind": "postgres-cdc"},
            "postgres": {"dsn": dsn, "tables": ["orders"]},
            "publish": {"topic": "shop/{table}/{op}"},
        })
        ctx = Context("orders-cdc", client, Stats(), asyncio.Event())
        task = asyncio.create_task(PostgresCdcSource(settings).run(ctx))
        ready = asyncio.create_task(ctx.ready.wait())
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        print("running", flush=True)
        await task

asyncio.run(main(*sys.argv[1:]))
"""


async def source_process(address: str, dsn: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SOURCE_PROCESS, address, dsn, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        assert await proc.stdout.readline() == b"running\n"
    return proc


@pytest.mark.slow
async def test_a_source_killed_mid_stream_resumes_without_loss_or_duplicates(
    pg: PostgresServer, shop: str, client: Client, inproc_node: Node
) -> None:
    proc = await source_process(inproc_node.address, pg.dsn(shop))
    try:

        async def write() -> None:
            for first in range(1, 301, 10):  # 30 transactions of 10 rows, as fast as they go
                await sql(
                    pg, shop, "insert into orders select g, 'us', g from generate_series(%s, %s) g",
                    first, first + 9,
                )  # fmt: skip

        writer = asyncio.create_task(write())
        received = await take(client, 60, exact=False)
        proc.kill()  # kill -9, mid-stream
        await proc.wait()
        await writer
        proc = await source_process(inproc_node.address, pg.dsn(shop))
        await sql(pg, shop, "insert into orders values (0, 'marker', 0)")
        received += await take(client, 301 - len(received))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert changes(received) == [
        *[("insert", None, row(i, i)) for i in range(1, 301)],
        ("insert", None, row(0, 0, "marker")),
    ]


async def test_truncate_is_published_per_table(
    pg: PostgresServer, shop: str, client: Client
) -> None:
    source = await start_source(pg, shop, client)
    await sql(pg, shop, "insert into orders values (1, 'us', 1)")
    await sql(pg, shop, "truncate orders")
    events = await take(client, 2)
    assert changes(events)[1] == ("truncate", None, None)
    assert events[1].topic == "shop/orders/truncate"
    await source.stop()


# ---------------------------------------------------------------- the sink


async def apply(sink: PostgresSink, events: list[Event], batch: int = 64) -> None:
    for start in range(0, len(events), batch):
        await sink.write(events[start : start + batch])


async def test_the_sink_makes_a_replica_equal_to_the_source(
    pg: PostgresServer, shop: str, client: Client
) -> None:
    replica = f"{shop}_replica"
    await asyncio.to_thread(pg.create_database, replica)
    await sql(pg, replica, ORDERS)
    source = await start_source(pg, shop, client)
    await sql(pg, shop, "insert into orders select g, 'us', g * 10 from generate_series(1, 300) g")
    await sql(pg, shop, "update orders set amount = amount + 1 where id <= 50")
    await sql(pg, shop, "update orders set id = id + 1000 where id between 51 and 60")
    await sql(pg, shop, "delete from orders where id > 280 and id < 1000")
    events = await take(client, 300 + 50 + 10 + 20)
    await source.stop()

    sink = PostgresSink(sink_settings(pg.dsn(replica)))
    await sink.open()
    try:
        await apply(sink, events)
        want = pg.table_digest(shop, "orders", "id, region, amount")
        assert pg.table_digest(replica, "orders", "id, region, amount") == want
        # Written again after a crash lost the acks: the same table.
        await apply(sink, events[-64:])
        assert pg.table_digest(replica, "orders", "id, region, amount") == want
        await apply(sink, events)
        assert pg.table_digest(replica, "orders", "id, region, amount") == want
    finally:
        await sink.close()


def event(payload: Any, event_id: int = 7) -> Event:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Event(pb.Event(topic="shop/orders/x", payload=raw, id=event_id))


def upsert(id_: int, amount: int, **extra: Any) -> Event:
    return event({"op": "insert", "before": None, "after": {**row(id_, amount), **extra}}, id_)


async def test_the_sink_writes_the_events_before_a_bad_one_and_names_it(
    pg: PostgresServer, shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = PostgresSink(sink_settings(pg.dsn(shop)))
    await sink.open()
    try:
        with pytest.raises(PermanentError, match=r"event 2 .*\['note'\] not in table"):
            await sink.write([upsert(1, 1), upsert(2, 2, note="x"), upsert(3, 3)])
        assert pg.execute(shop, "select id from orders") == [(1,)]
        with pytest.raises(
            PermanentError, match=r"event 5 .*invalid input syntax for type integer"
        ):
            await sink.write([upsert(4, 4), event({"op": "insert", "after": row(5, "x")}, 5)])  # type: ignore[arg-type]
        assert pg.execute(shop, "select id from orders order by id") == [(1,), (4,)]
        for bad, why in [
            (b"not json", "payload is not JSON"),
            ({"op": "merge"}, "op is 'merge'"),
            (
                {"op": "delete", "before": {"region": "us"}},
                r"no value for key column\(s\) \['id'\]",
            ),
            ({"op": "update", "after": None}, "update without an object in 'after'"),
        ]:
            with pytest.raises(PermanentError, match=why):
                await sink.write([event(bad)])
    finally:
        await sink.close()


async def test_the_sink_can_ignore_columns_its_table_lacks(
    pg: PostgresServer, shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = PostgresSink(sink_settings(pg.dsn(shop), unknown_columns="ignore"))
    await sink.open()
    try:
        await sink.write([upsert(1, 1, note="x")])
        # A column added to the table later is written from then on.
        monkeypatch.setattr(postgres_sink, "TABLE_REFRESH_S", 0.0)
        await sql(pg, shop, "alter table orders add column note text")
        await sink.write([upsert(2, 2, note="y")])
        assert pg.execute(shop, "select id, note from orders order by id") == [(1, None), (2, "y")]
    finally:
        await sink.close()


async def test_a_least_privileged_role_runs_the_sink(pg: PostgresServer, shop: str) -> None:
    await sql(pg, shop, "create role sink_writer login")
    await sql(pg, shop, "grant select, insert, update, delete on orders to sink_writer")
    sink = PostgresSink(sink_settings(pg.dsn(shop, user="sink_writer")))
    await sink.open()
    try:
        await sink.write([upsert(1, 1), upsert(1, 2), upsert(2, 2)])
        await sink.write([event({"op": "delete", "before": {"id": 2}, "after": None})])
        await sink.write([event({"op": "truncate", "before": None, "after": None})])
        assert pg.execute(shop, "select count(*) from orders") == [(0,)]
    finally:
        await sink.close()


async def test_a_sink_whose_database_restarts_retries_the_batch(
    pg: PostgresServer, shop: str
) -> None:
    sink = PostgresSink(sink_settings(pg.dsn(shop)))
    await sink.open()
    try:
        await sink.write([upsert(1, 1)])
        await asyncio.to_thread(pg.stop)
        with pytest.raises(TransientError) as caught:
            await sink.write([upsert(2, 2)])
        assert "\n" not in str(caught.value) and f"127.0.0.1:{pg.port}" in str(caught.value)
        await asyncio.to_thread(pg.start)
        await sink.write([upsert(2, 2)])  # reconnects
        assert pg.execute(shop, "select id from orders order by id") == [(1,), (2,)]
    finally:
        await sink.close()


async def test_a_sink_refuses_a_table_and_key_it_cannot_upsert(
    pg: PostgresServer, shop: str
) -> None:
    await sql(pg, shop, "create table nokey (id int, amount int)")
    for table, key, why in [
        ("missing", ["id"], NotFound),
        ("orders", ["region"], FailedPrecondition),
        ("nokey", ["id"], FailedPrecondition),
        ("orders", ["nope"], NotFound),
    ]:
        sink = PostgresSink(sink_settings(pg.dsn(shop), table=table, key=key))
        with pytest.raises(why) as caught:
            await sink.open()
        await sink.close()
        assert "\n" not in str(caught.value) and table in str(caught.value)


# ---------------------------------------------------------------- what users get wrong


async def test_an_unreachable_database_is_one_clear_line(client: Client) -> None:
    port = free_port()
    source = PostgresCdcSource(cdc_settings(f"host=127.0.0.1 port={port} dbname=x user=y"))
    with pytest.raises(Unavailable) as caught:
        await Running(source, client).streaming()
    message = str(caught.value)
    assert "\n" not in message and f"127.0.0.1:{port}" in message and "refused" in message


async def test_wal_level_replica_is_one_clear_line(client: Client) -> None:
    with postgres_server(wal_level="replica") as replica_only:
        source = PostgresCdcSource(cdc_settings(replica_only.dsn()))
        with pytest.raises(
            FailedPrecondition, match=r"wal_level is 'replica'.*wal_level = logical"
        ):
            await Running(source, client).streaming()


async def test_what_the_source_cannot_work_with_is_one_clear_line(
    pg: PostgresServer, shop: str, client: Client
) -> None:
    await sql(pg, shop, "create table nokey (id int, amount int)")
    await sql(pg, shop, "create role app login")
    dsn = pg.dsn(shop)
    for settings, error, why in [
        ({"tables": ["missing"]}, NotFound, "no table public.missing"),
        ({"tables": ["nokey"]}, FailedPrecondition, "nokey has no primary key"),
        ({"topic": "shop/{nope}"}, NotFound, "uses {nope}, which table public.orders has no"),
        ({"topic": "shop/{region}"}, FailedPrecondition, "REPLICA IDENTITY FULL"),
        ({"dsn": pg.dsn(shop, user="app")}, PermissionDenied, "publication plexus_orders_cdc: "),
    ]:
        source = PostgresCdcSource(cdc_settings(**{"dsn": dsn, **settings}))
        with pytest.raises(error, match=re.escape(why)) as caught:
            await Running(source, client).streaming()
        assert "\n" not in str(caught.value)


async def test_a_second_source_on_a_busy_slot_waits_then_says_who_holds_it(
    pg: PostgresServer, shop: str, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await start_source(pg, shop, client)
    monkeypatch.setattr(postgres_cdc, "SLOT_BUSY_S", 0.5)
    second = Running(PostgresCdcSource(cdc_settings(pg.dsn(shop))), client)
    with pytest.raises(FailedPrecondition, match=r"slot \"plexus_orders_cdc\" is active for PID"):
        await second.streaming()
    assert second.ctx.stats.retries >= 1
    await first.stop()


async def test_a_least_privileged_role_runs_the_source(
    pg: PostgresServer, shop: str, client: Client
) -> None:
    # As the README says: a REPLICATION role, and the publication made by the tables' owner.
    await sql(pg, shop, "create role cdc_reader login replication")
    await sql(pg, shop, "create publication orders_pub for table orders")
    source = await start_source(
        pg, shop, client, dsn=pg.dsn(shop, user="cdc_reader"), publication="orders_pub"
    )
    await sql(pg, shop, "insert into orders values (1, 'us', 1)")
    assert changes(await take(client, 1)) == [("insert", None, row(1, 1))]
    await source.stop()
    # Without REPLICATION it cannot read the slot: one line says so.
    await sql(pg, shop, "alter role cdc_reader noreplication")
    source2 = PostgresCdcSource(
        cdc_settings(pg.dsn(shop, user="cdc_reader"), publication="orders_pub")
    )
    with pytest.raises(PermissionDenied, match="replication role"):
        await Running(source2, client).streaming()


@pytest.mark.parametrize(
    ("section", "value", "why"),
    [
        ("postgres", {"dsn": "nonsense"}, "dsn"),
        ("postgres", {"tables": ["a.b.c"]}, "not a table name"),
        ("postgres", {"tables": []}, "tables"),
        ("postgres", {"slot": "Bad-Slot"}, "slot"),
        ("postgres", {"extra": 1}, "extra"),
        ("publish", {"topic": "shop/{op!r}"}, "no format spec or conversion"),
        ("publish", {"topic": "shop//{op}"}, "empty level"),
        ("publish", {"topic": "shop/{0}"}, "is not a placeholder"),
    ],
)
def test_bad_settings_name_the_key(section: str, value: dict[str, Any], why: str) -> None:
    file: dict[str, Any] = {
        "connector": {"name": "c", "kind": "postgres-cdc"},
        "postgres": {"dsn": "host=x", "tables": ["orders"]},
        "publish": {"topic": "t/{op}"},
    }
    file[section] = {**file[section], **value}
    with pytest.raises(ValueError, match=why) as caught:
        PostgresCdcSettings.model_validate(file)
    assert section in str(caught.value)
