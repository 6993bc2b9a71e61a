"""`postgres-cdc`: each row change of PostgreSQL tables as a guaranteed event, in commit order.

It reads the tables' logical replication stream (the built-in `pgoutput`
plugin, through a publication and a replication slot it creates if absent)
and publishes one event per inserted, updated or deleted row (and per
truncated table), keyed by the transaction's commit LSN and the change's place
in it. It confirms a transaction's end LSN to PostgreSQL only once the mesh
acked every event of that transaction and of all before it, so a restart, a
kill -9 or a broken connection resumes from the slot's confirmed position and
the node stores a resent event once (its de-duplication window).

A slot that is not confirmed keeps WAL on the server: `ctx.stats.position`
is the confirmed LSN, and the README says how to drop an abandoned slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import select
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import psycopg2
import psycopg2.errors
import psycopg2.extras
from psycopg2 import sql
from pydantic import Field, field_validator

from plexus.connectors.base import (
    ConnectorSection,
    Context,
    Outgoing,
    PublishSection,
    Section,
    Source,
)
from plexus.connectors.pgevents import TopicTemplate, change_key, change_payload, json_row
from plexus.connectors.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    PgOutputDecoder,
    Relation,
    Truncate,
    Update,
    format_lsn,
)
from plexus.connectors.postgres import (
    DbThread,
    check_dsn,
    connect,
    describe,
    split_table,
    transient,
    translate,
)
from plexus.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PlexusError,
    Timeout,
)
from plexus.topics import validate_topic

__all__ = ["PostgresCdcSection", "PostgresCdcSettings", "PostgresCdcSource", "slot_name"]

POLL_S: Final = 0.2  # longest a read waits for WAL: how soon a stop or an ack is noticed
MAX_READ_MESSAGES: Final = 2000  # per read from the replication connection
MAX_IN_FLIGHT_EVENTS: Final = 10_000  # published, not yet acked by the mesh
KEEPALIVE_S: Final = 5.0  # a status update while waiting for acks (wal_sender_timeout is 60 s)
STOP_ACKS_S: Final = 5.0  # on stop, how long to wait for outstanding acks before confirming
FIRST_BACKOFF_S: Final = 0.1
MAX_BACKOFF_S: Final = 5.0
SLOT_BUSY_S: Final = 30.0  # at start, how long to wait for a dead predecessor's slot to free
MAX_NAME_CHARS: Final = 63  # PostgreSQL's identifiers (NAMEDATALEN - 1)


class PostgresCdcSection(Section):
    """`[postgres]` of a postgres-cdc connector."""

    dsn: str = Field(min_length=1)
    tables: list[str] = Field(min_length=1)
    # Default: plexus_ + the connector's name, lower case, other characters as "_".
    slot: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,63}$")
    publication: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, dsn: str) -> str:
        return check_dsn(dsn)

    @field_validator("tables")
    @classmethod
    def _tables(cls, tables: list[str]) -> list[str]:
        for table in tables:
            split_table(table)
        doubles = {t for t in tables if tables.count(t) > 1}
        if doubles:
            raise ValueError(f"{sorted(doubles)} listed twice")
        return tables


class TopicSection(PublishSection):
    """`[publish]` of a postgres-cdc connector: `topic` is a template (TopicTemplate)."""

    @field_validator("topic")
    @classmethod
    def _topic(cls, topic: str) -> str:
        try:
            template = TopicTemplate(topic)
        except ValueError as exc:
            raise ValueError(f"{topic!r}: {exc}") from None
        sample = template.render("insert", "public", "t", dict.fromkeys(template.columns, "x"))
        try:
            validate_topic(sample)
        except InvalidArgument as exc:
            raise ValueError(f"{topic!r} makes topics like {exc}") from None
        return topic


class PostgresCdcSettings(Section):
    """A postgres-cdc connector's whole file."""

    connector: ConnectorSection
    postgres: PostgresCdcSection
    publish: TopicSection


def slot_name(connector: str) -> str:
    """The default slot (and publication) of a connector: valid in PostgreSQL, stable."""
    return ("plexus_" + re.sub(r"[^a-z0-9_]", "_", connector.lower()))[:MAX_NAME_CHARS]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What `_prepare` found and made: the names the stream uses."""

    slot: str
    publication: str
    tables: frozenset[tuple[str, str]]
    confirmed: str  # the slot's confirmed LSN when the session starts


@dataclass(slots=True)
class _Transaction:
    """A transaction's events, from its Begin until the mesh acked them all."""

    begin: Begin
    changes: int = 0  # read so far: the next change's index in the transaction
    end_lsn: int | None = None  # known at its Commit
    outstanding: int = 0  # events published, not yet acked
    failure: BaseException | None = None  # the mesh's first refusal of one of them


class Unconfirmed:
    """Transactions read (in commit order) whose end LSN is not confirmed yet, and the
    window of events published but not acked, which bounds the reading."""

    def __init__(self) -> None:
        self._txs: deque[_Transaction] = deque()
        self.in_flight = 0
        self._acked = asyncio.Event()

    def begin(self, begin: Begin) -> _Transaction:
        tx = _Transaction(begin)
        self._txs.append(tx)
        return tx

    def track(self, tx: _Transaction, ack: asyncio.Future[Any]) -> None:
        tx.outstanding += 1
        self.in_flight += 1
        ack.add_done_callback(functools.partial(self._on_ack, tx))

    def _on_ack(self, tx: _Transaction, ack: asyncio.Future[Any]) -> None:
        tx.outstanding -= 1
        self.in_flight -= 1
        error = _Retry("a publish was cancelled") if ack.cancelled() else ack.exception()
        if error is not None and tx.failure is None:
            tx.failure = error
        self._acked.set()

    def acked(self) -> _Transaction | None:
        """Drop the committed transactions the mesh acked in full, oldest first, up to
        the first that is not; the last one dropped (its end LSN may be confirmed).
        Raises the mesh's refusal of an event of the oldest transaction."""
        last = None
        while self._txs:
            tx = self._txs[0]
            if tx.failure is not None:
                raise tx.failure
            if tx.end_lsn is None or tx.outstanding:
                break
            last = self._txs.popleft()
        return last

    async def wait_ack(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for the next ack, if any is outstanding."""
        self._acked.clear()
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._acked.wait()


class _Retry(Exception):
    """This session cannot go on, but a new one (from the confirmed LSN) may."""


class PostgresCdcSource(Source):
    """Publishes the row changes of `[postgres] tables` to `[publish] topic`."""

    kind: ClassVar[str] = "postgres-cdc"
    settings: ClassVar[type[PostgresCdcSettings]] = PostgresCdcSettings

    def __init__(self, config: PostgresCdcSettings) -> None:  # type: ignore[override]
        super().__init__(config)
        self.config: PostgresCdcSettings = config
        pg = config.postgres
        self.name = config.connector.name
        self.dsn = pg.dsn
        self.slot = pg.slot or slot_name(self.name)
        self.publication = pg.publication or self.slot
        self.tables = [split_table(t) for t in pg.tables]
        self.template = TopicTemplate(config.publish.topic)
        self._conn: Any = None  # the replication connection, owned by the DbThread
        self._cursor: Any = None

    async def run(self, ctx: Context) -> None:
        thread = DbThread(f"postgres-cdc-{self.name}")
        streamed = False
        backoff = FIRST_BACKOFF_S
        busy_since: float | None = None
        try:
            while not ctx.stopping.is_set():
                began = time.monotonic()
                try:
                    plan = await thread.run(self._prepare)
                    await thread.run(self._start, plan)
                    streamed, busy_since = True, None
                    ctx.stats.state = "running"
                    ctx.ready.set()  # the slot exists: every change from now on is captured
                    ctx.stats.position = ctx.stats.position or plan.confirmed
                    await self._stream(ctx, thread, plan)
                except (psycopg2.Error, _Retry) as exc:
                    error = exc if isinstance(exc, _Retry) else translate(exc, self.dsn)
                    if isinstance(exc, psycopg2.errors.ObjectInUse) and not streamed:
                        # A killed predecessor's walsender may hold the slot a moment longer.
                        busy_since = busy_since or time.monotonic()
                        if time.monotonic() - busy_since > SLOT_BUSY_S:
                            raise error from exc
                    elif isinstance(exc, psycopg2.Error) and not (streamed and transient(exc)):
                        raise error from exc
                    if time.monotonic() - began > MAX_BACKOFF_S:
                        backoff = FIRST_BACKOFF_S  # that session went well for a while
                    ctx.stats.state = "retrying"
                    ctx.stats.retries += 1
                    ctx.stats.failed(error)
                    await thread.run(self._close)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff * random.uniform(0.5, 1.0)):
                            await ctx.stopping.wait()
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            ctx.stats.state = "stopped"
            await thread.close(self._close)

    # ------------------------------------------------------------ on the DbThread

    def _prepare(self) -> _Plan:
        """Check the server and the tables; make the publication and the slot if absent."""
        conn = connect(self.dsn, self.name)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("show wal_level")
                (wal_level,) = cur.fetchone()
                if wal_level != "logical":
                    raise FailedPrecondition(
                        f"{describe(self.dsn)}: wal_level is {wal_level!r}; logical replication "
                        "needs wal_level = logical (in postgresql.conf, then restart PostgreSQL)"
                    )
                for schema, table in self.tables:
                    self._check_table(cur, schema, table)
                self._ensure_publication(cur)
                self._ensure_slot(cur)
                cur.execute(
                    "select confirmed_flush_lsn::text from pg_replication_slots"
                    " where slot_name = %s",
                    (self.slot,),
                )
                (confirmed,) = cur.fetchone()
        finally:
            conn.close()
        return _Plan(self.slot, self.publication, frozenset(self.tables), confirmed)

    def _check_table(self, cur: Any, schema: str, table: str) -> None:
        cur.execute(
            "select c.relreplident, array_agg(a.attname::text order by a.attnum),"
            " coalesce((select array_agg(k.attname::text) from pg_index i"
            "   join pg_attribute k on k.attrelid = i.indrelid and k.attnum = any(i.indkey)"
            "   where i.indrelid = c.oid and (case c.relreplident when 'i' then i.indisreplident"
            "   else i.indisprimary end)), '{}')"
            " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
            " where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')"
            " group by c.oid, c.relreplident",
            (schema, table),
        )
        row = cur.fetchone()
        name = f"{schema}.{table}"
        if row is None:
            raise NotFound(f"{describe(self.dsn)}: no table {name} (postgres.tables)")
        identity, columns, keys = row
        if identity == "n" or (identity in ("d", "i") and not keys):
            raise FailedPrecondition(
                f"{describe(self.dsn)}: table {name} has no primary key (replica identity), so "
                "PostgreSQL would refuse its updates and deletes once published: add a "
                f"primary key, or ALTER TABLE {name} REPLICA IDENTITY FULL"
            )
        for column in self.template.columns:
            if column not in columns:
                raise NotFound(
                    f"{describe(self.dsn)}: publish.topic uses {{{column}}}, "
                    f"which table {name} has no column for"
                )
            if identity != "f" and column not in keys:
                raise FailedPrecondition(
                    f"{describe(self.dsn)}: publish.topic uses {{{column}}}, which a delete "
                    f"from {name} does not carry (only its key columns {sorted(keys)}): "
                    f"ALTER TABLE {name} REPLICA IDENTITY FULL, or use key columns only"
                )

    def _ensure_publication(self, cur: Any) -> None:
        cur.execute(
            "select schemaname::text, tablename::text from pg_publication_tables"
            " where pubname = %s",
            (self.publication,),
        )
        published = set(cur.fetchall())
        cur.execute("select 1 from pg_publication where pubname = %s", (self.publication,))
        exists = cur.fetchone() is not None
        missing = [t for t in self.tables if t not in published]
        if exists and not missing:
            return
        names = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in missing)
        pub = sql.Identifier(self.publication)
        statement = (
            sql.SQL("alter publication {} add table {}").format(pub, names)
            if exists
            else sql.SQL("create publication {} for table {}").format(pub, names)
        )
        try:
            cur.execute(statement)
        except psycopg2.errors.InsufficientPrivilege as exc:
            doing = f"{'adding tables to' if exists else 'creating'} publication {self.publication}"
            raise translate(exc, self.dsn, doing) from exc

    def _ensure_slot(self, cur: Any) -> None:
        cur.execute(
            "select plugin, database from pg_replication_slots where slot_name = %s", (self.slot,)
        )
        found = cur.fetchone()
        cur.execute("select current_database()")
        (database,) = cur.fetchone()
        if found is not None:
            plugin, slot_database = found
            if plugin != "pgoutput" or slot_database != database:
                raise FailedPrecondition(
                    f"{describe(self.dsn)}: replication slot {self.slot} exists for "
                    f"{plugin or 'physical replication'} in database {slot_database}: "
                    "choose another postgres.slot"
                )
            return
        repl = connect(
            self.dsn, self.name, connection_factory=psycopg2.extras.LogicalReplicationConnection
        )
        try:
            with repl.cursor() as rcur:
                rcur.create_replication_slot(self.slot, output_plugin="pgoutput")
        except psycopg2.errors.DuplicateObject:
            pass  # made by another process since the look-up: the same slot
        finally:
            repl.close()

    def _start(self, plan: _Plan) -> None:
        """Stream from the slot's confirmed position."""
        self._conn = connect(
            self.dsn, self.name, connection_factory=psycopg2.extras.LogicalReplicationConnection
        )
        self._cursor = self._conn.cursor()
        self._cursor.start_replication(
            slot_name=plan.slot,
            decode=False,
            options={"proto_version": "1", "publication_names": plan.publication},
            status_interval=1,
        )

    def _read(self) -> list[bytes]:
        """What the server sent, waiting up to POLL_S for the first message."""
        out: list[bytes] = []
        deadline = time.monotonic() + POLL_S
        while len(out) < MAX_READ_MESSAGES:
            message = self._cursor.read_message()
            if message is not None:
                out.append(message.payload)
                continue
            left = deadline - time.monotonic()
            if out or left <= 0:
                break
            select.select([self._cursor], [], [], left)
        return out

    def _confirm(self, lsn: int) -> None:
        self._cursor.send_feedback(write_lsn=lsn, flush_lsn=lsn, force=True)

    def _keepalive(self) -> None:
        self._cursor.send_feedback(force=True)

    def _close(self) -> None:
        conn, self._conn, self._cursor = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    # ------------------------------------------------------------ on the event loop

    async def _stream(self, ctx: Context, thread: DbThread, plan: _Plan) -> None:
        decoder = PgOutputDecoder()
        unconfirmed = Unconfirmed()
        tx: _Transaction | None = None
        confirmed = 0
        while not ctx.stopping.is_set():
            for data in await thread.run(self._read):
                message = decoder.decode(data)
                if isinstance(message, Begin):
                    tx = unconfirmed.begin(message)
                elif isinstance(message, Commit):
                    if tx is not None:
                        tx.end_lsn = message.end_lsn
                    tx = None
                elif isinstance(message, Insert | Update | Delete | Truncate):
                    if tx is None:
                        raise _Retry("a row change outside a transaction")
                    for op, relation, before, after in _changes(message):
                        if (relation.schema, relation.name) in plan.tables:
                            ctx.stats.events_in += 1
                            unconfirmed.track(
                                tx, self._publish(ctx, tx, op, relation, before, after)
                            )
                        tx.changes += 1
                while unconfirmed.in_flight >= MAX_IN_FLIGHT_EVENTS:
                    await unconfirmed.wait_ack(KEEPALIVE_S)
                    confirmed = await self._settle(ctx, thread, unconfirmed, confirmed)
                    await thread.run(self._keepalive)
            # Bounded, so that a stop is noticed while the node is away: the in-flight
            # window above is what bounds the reading.
            with contextlib.suppress(Timeout):
                await ctx.client.drain(timeout=KEEPALIVE_S)
            confirmed = await self._settle(ctx, thread, unconfirmed, confirmed)
        # Stopping: what the mesh acks in time is confirmed; the rest is read again.
        deadline = time.monotonic() + STOP_ACKS_S
        while unconfirmed.in_flight and time.monotonic() < deadline:
            await unconfirmed.wait_ack(deadline - time.monotonic())
        await self._settle(ctx, thread, unconfirmed, confirmed)

    def _publish(
        self,
        ctx: Context,
        tx: _Transaction,
        op: str,
        relation: Relation,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> asyncio.Future[Any]:
        begin, row = tx.begin, {**(before or {}), **(after or {})}
        topic = self.template.render(op, relation.schema, relation.name, row)
        payload = change_payload(
            op, relation, before, after, begin.commit_time, begin.final_lsn, begin.xid
        )
        try:
            return ctx.publish(
                Outgoing(topic, payload), key=change_key(self.name, begin.final_lsn, tx.changes)
            )
        except InvalidArgument as exc:
            raise InvalidArgument(
                f"{op} in {relation.schema}.{relation.name} committed at "
                f"{format_lsn(begin.final_lsn)}: {exc}"
            ) from exc

    async def _settle(
        self, ctx: Context, thread: DbThread, unconfirmed: Unconfirmed, confirmed: int
    ) -> int:
        """Confirm the end LSN of the newest transaction the mesh acked in full."""
        try:
            tx = unconfirmed.acked()
        except PlexusError as exc:
            if exc.retriable:
                raise _Retry(f"the node refused an event: {exc}") from exc
            raise
        if tx is None or tx.end_lsn <= confirmed:
            return confirmed
        await thread.run(self._confirm, tx.end_lsn)
        ctx.stats.position = format_lsn(tx.end_lsn)
        ctx.stats.lag_s = max(0.0, time.time() - tx.begin.commit_time.timestamp())
        return tx.end_lsn


def _changes(
    message: Insert | Update | Delete | Truncate,
) -> list[tuple[str, Relation, dict[str, Any] | None, dict[str, Any] | None]]:
    """(op, relation, before, after) for each change a message holds."""
    if isinstance(message, Insert):
        return [("insert", message.relation, None, json_row(message.relation, message.new))]
    if isinstance(message, Update):
        rel = message.relation
        before = None
        if message.old is not None:
            before = json_row(rel, message.old, keys_only=message.old_kind == "K")
        return [("update", rel, before, json_row(rel, message.new))]
    if isinstance(message, Delete):
        rel = message.relation
        return [
            ("delete", rel, json_row(rel, message.old, keys_only=message.old_kind == "K"), None)
        ]
    return [("truncate", rel, None, None) for rel in message.relations]
