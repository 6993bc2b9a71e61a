"""`postgres-sink`: the row changes a postgres-cdc source publishes, applied to a table.

Each batch is one transaction, in queue order: an insert or an update is an
upsert on `[postgres] key` (`INSERT ... ON CONFLICT (key) DO UPDATE`) of the
columns the event carries, mapped by name; a delete deletes the key of its
`before`; an update that changed the key deletes the old key first; a
truncate deletes every row. Applying the same events again gives the same
table, so a batch written again after a crash (its acks lost) changes nothing.

A column the table lacks is refused (the event is named, and dead-lettered
after `max_deliveries`) unless `unknown_columns = "ignore"`: a replica with
fewer columns than its source says so once, in its file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Final, Literal

import psycopg2
from psycopg2 import sql
from pydantic import Field, field_validator

from plexus.client import Event
from plexus.connectors.base import (
    ConnectorSection,
    ConsumeSection,
    PermanentError,
    Section,
    Sink,
    TransientError,
)
from plexus.connectors.postgres import (
    DbThread,
    check_dsn,
    connect,
    describe,
    one_line,
    split_table,
    transient,
)
from plexus.errors import FailedPrecondition, NotFound

__all__ = ["PostgresSink", "PostgresSinkSection", "PostgresSinkSettings"]

JSON_TYPES: Final = ("json", "jsonb")
# Columns an event has and the table had not: read the table's columns again at
# most this often, to write the ones added since.
TABLE_REFRESH_S: Final = 1.0


class PostgresSinkSection(Section):
    """`[postgres]` of a postgres-sink connector."""

    dsn: str = Field(min_length=1)
    table: str = Field(min_length=1)  # NAME or SCHEMA.NAME
    key: list[str] = Field(min_length=1)
    unknown_columns: Literal["refuse", "ignore"] = "refuse"

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, dsn: str) -> str:
        return check_dsn(dsn)

    @field_validator("table")
    @classmethod
    def _table(cls, table: str) -> str:
        split_table(table)
        return table


class PostgresSinkSettings(Section):
    """A postgres-sink connector's whole file."""

    connector: ConnectorSection
    consume: ConsumeSection
    postgres: PostgresSinkSection


class _BadEvent(Exception):
    """What is wrong with one event (becomes a PermanentError naming it)."""


class PostgresSink(Sink):
    """Applies row-change events to `[postgres] table`."""

    kind: ClassVar[str] = "postgres-sink"
    settings: ClassVar[type[PostgresSinkSettings]] = PostgresSinkSettings

    def __init__(self, config: PostgresSinkSettings) -> None:  # type: ignore[override]
        super().__init__(config)
        self.config: PostgresSinkSettings = config
        pg = config.postgres
        self.dsn = pg.dsn
        self.table = split_table(pg.table)
        self.ident = sql.Identifier(*self.table)
        self.table_name = f"{self.table[0]}.{self.table[1]}"
        self.key = pg.key
        self.ignore_unknown = pg.unknown_columns == "ignore"
        self._thread = DbThread(f"postgres-sink-{config.connector.name}")
        self._conn: Any = None
        self._types: dict[str, str] = {}  # the table's columns -> their type names
        self._read_at = 0.0  # when _types was read (time.monotonic())

    async def open(self) -> None:
        await self._thread.run(self._connect)

    async def write(self, events: Sequence[Event]) -> None:
        await self._thread.run(self._apply, events)

    async def close(self) -> None:
        await self._thread.close(self._disconnect)

    # ------------------------------------------------------------ on the DbThread

    def _connect(self) -> None:
        try:
            self._conn = connect(self.dsn, self.config.connector.name)
            self._read_table()
        except psycopg2.Error as exc:
            self._disconnect()
            if transient(exc):
                raise TransientError(f"{describe(self.dsn)}: {one_line(exc)}") from exc
            raise FailedPrecondition(f"{describe(self.dsn)}: {one_line(exc)}") from exc

    def _read_table(self) -> None:
        """The table's columns and types; checks that the key is a unique key of it."""
        with self._conn.cursor() as cur:
            cur.execute(
                "select a.attname::text, t.typname::text from pg_attribute a"
                " join pg_type t on t.oid = a.atttypid"
                " where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped",
                (self.ident.as_string(self._conn),),
            )
            self._types = dict(cur.fetchall())
            self._read_at = time.monotonic()
            if not self._types:
                raise NotFound(f"{describe(self.dsn)}: no table {self.table_name} (postgres.table)")
            missing = [k for k in self.key if k not in self._types]
            if missing:
                raise NotFound(
                    f"{describe(self.dsn)}: postgres.key {missing} not in table {self.table_name}"
                )
            cur.execute(
                "select array_agg(a.attname::text) from pg_index i join pg_attribute a"
                " on a.attrelid = i.indrelid and a.attnum = any(i.indkey)"
                " where i.indrelid = to_regclass(%s) and i.indisunique and i.indpred is null"
                " group by i.indexrelid",
                (self.ident.as_string(self._conn),),
            )
            if not any(set(cols) == set(self.key) for (cols,) in cur.fetchall()):
                raise FailedPrecondition(
                    f"{describe(self.dsn)}: postgres.key {self.key} is not the primary key or a "
                    f"unique index of {self.table_name}, which ON CONFLICT needs"
                )
        self._conn.commit()

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # psycopg2 closes a broken connection without raising

    def _apply(self, events: Sequence[Event]) -> None:
        """Write `events` in one transaction; the good ones before a bad one, then refuse it."""
        if self._conn is None:
            self._connect()
        statements: list[bytes] = []
        good: list[Event] = []
        bad: tuple[Event, str] | None = None
        try:
            for event in events:
                try:
                    statements.extend(self._statements(event))
                except _BadEvent as exc:
                    bad = (event, str(exc))
                    break
                good.append(event)
        except psycopg2.Error as exc:  # re-reading the table's columns
            self._rollback(exc)
            raise FailedPrecondition(f"{describe(self.dsn)}: {one_line(exc)}") from exc
        if statements:
            self._execute(statements, good)
        if bad is not None:
            event, why = bad
            raise PermanentError(f"event {event.id} on {event.topic!r}: {why}")

    def _execute(self, statements: list[bytes], events: Sequence[Event]) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.execute(b";\n".join(statements))
            self._conn.commit()
        except psycopg2.Error as exc:
            self._rollback(exc)
            # One event failed the batch: write the ones before it, refuse it.
            self._one_by_one(events)

    def _rollback(self, exc: psycopg2.Error) -> None:
        """Roll back; a transient failure ends the write for the runtime to retry."""
        if transient(exc) or self._conn.closed:
            self._disconnect()
            raise TransientError(f"{describe(self.dsn)}: {one_line(exc)}") from exc
        self._conn.rollback()

    def _one_by_one(self, events: Sequence[Event]) -> None:
        with self._conn.cursor() as cur:
            for event in events:
                try:
                    cur.execute("savepoint plexus_event")
                    for statement in self._statements(event):
                        cur.execute(statement)
                except psycopg2.Error as exc:
                    if transient(exc) or self._conn.closed:
                        self._rollback(exc)
                    cur.execute("rollback to savepoint plexus_event")
                    self._conn.commit()
                    raise PermanentError(
                        f"event {event.id} on {event.topic!r}: {self.table_name}: {one_line(exc)}"
                    ) from exc
        self._conn.commit()  # nothing failed this time

    def _statements(self, event: Event) -> list[bytes]:
        """The SQL that applies `event` (raises _BadEvent saying what is wrong with it)."""
        try:
            change = json.loads(event.payload)
        except ValueError as exc:
            raise _BadEvent(f"payload is not JSON ({exc})") from None
        if not isinstance(change, dict):
            raise _BadEvent("payload is not a JSON object")
        op = change.get("op")
        if op == "truncate":
            return [self._sql(sql.SQL("delete from {}").format(self.ident), [])]
        if op not in ("insert", "update", "delete"):
            raise _BadEvent(f"op is {op!r}, not insert, update, delete or truncate")
        side = "before" if op == "delete" else "after"
        row = change.get(side)
        if not isinstance(row, dict):
            raise _BadEvent(f"{op} without an object in {side!r}")
        if op == "delete":
            return [self._delete(self._key_of(row, "before"))]
        row = self._known(row)
        out = []
        before = change.get("before")
        if op == "update" and isinstance(before, dict) and all(k in before for k in self.key):
            old = self._key_of(before, "before")
            if old != self._key_of(row, "after"):
                out.append(self._delete(old))
        out.append(self._upsert(row))
        return out

    def _known(self, row: dict[str, Any]) -> dict[str, Any]:
        unknown = [c for c in row if c not in self._types]
        if unknown and time.monotonic() - self._read_at >= TABLE_REFRESH_S:
            # Columns added to the table since it was read are columns it has now.
            self._read_table()
            unknown = [c for c in row if c not in self._types]
        if not unknown:
            return row
        if self.ignore_unknown:
            return {c: v for c, v in row.items() if c in self._types}
        raise _BadEvent(
            f"column(s) {unknown} not in table {self.table_name} (add them, or set "
            '[postgres] unknown_columns = "ignore")'
        )

    def _key_of(self, row: dict[str, Any], side: str) -> list[Any]:
        missing = [k for k in self.key if row.get(k) is None]
        if missing:
            raise _BadEvent(f"{side!r} has no value for key column(s) {missing}")
        return [self._param(k, row[k]) for k in self.key]

    def _delete(self, key: list[Any]) -> bytes:
        where = sql.SQL(" and ").join(
            sql.SQL("{} = %s").format(sql.Identifier(k)) for k in self.key
        )
        return self._sql(sql.SQL("delete from {} where {}").format(self.ident, where), key)

    def _upsert(self, row: dict[str, Any]) -> bytes:
        self._key_of(row, "after")
        columns = list(row)
        rest = [c for c in columns if c not in self.key]
        action = sql.SQL("do nothing")
        if rest:
            sets = sql.SQL(", ").join(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in rest
            )
            action = sql.SQL("do update set {}").format(sets)
        statement = sql.SQL("insert into {} ({}) values ({}) on conflict ({}) {}").format(
            self.ident,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            sql.SQL(", ").join(map(sql.Identifier, self.key)),
            action,
        )
        return self._sql(statement, [self._param(c, row[c]) for c in columns])

    def _sql(self, statement: sql.Composable, params: list[Any]) -> bytes:
        with self._conn.cursor() as cur:
            return bytes(cur.mogrify(statement, params))

    def _param(self, column: str, value: Any) -> str | None:
        """The value as PostgreSQL's text input for the column: its type parses it."""
        if value is None:
            return None
        if self._types.get(column) in JSON_TYPES or isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
