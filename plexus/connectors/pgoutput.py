"""A decoder of PostgreSQL's `pgoutput` logical replication protocol, version 1.

Sans-IO: `PgOutputDecoder.decode(data)` takes the payload of one XLogData
message (what `START_REPLICATION ... (proto_version '1', publication_names
'...')` streams) and returns the message as a frozen dataclass. The decoder
keeps the Relation messages it has seen, because a row change names its table
by OID only and PostgreSQL sends each Relation once per session (again after a
schema change): use one decoder per replication session.

Tuple values come in PostgreSQL's text format (`str`, `None` for NULL, or
`UNCHANGED` for a TOASTed value an update did not change and so did not send).
Reference: "Logical Replication Message Formats" in PostgreSQL's documentation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Final, Literal

__all__ = [
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "PgOutputDecoder",
    "PgOutputError",
    "Relation",
    "Row",
    "Truncate",
    "Type",
    "Unchanged",
    "Update",
    "format_lsn",
    "parse_lsn",
]

POSTGRES_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


class PgOutputError(ValueError):
    """A message this decoder cannot read: truncated, unknown, or out of protocol."""


class Unchanged(Enum):
    """A TOASTed column an update left alone: PostgreSQL does not resend its value."""

    TOKEN = "unchanged"

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged.TOKEN

# Column name -> text value, None for NULL, UNCHANGED for an unsent TOAST value.
Row = dict[str, str | Unchanged | None]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    key: bool  # part of the replica identity


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    # d: default (primary key), n: nothing, f: full row, i: a unique index
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # the commit record's LSN
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # the end of the commit record: what a client confirms
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Type:
    oid: int
    schema: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation: Relation
    new: Row


@dataclass(frozen=True, slots=True)
class Update:
    relation: Relation
    new: Row
    # The old row: its key columns ("K", when the key changed) or all of it ("O",
    # with REPLICA IDENTITY FULL); None when PostgreSQL sent neither.
    old: Row | None = None
    old_kind: Literal["K", "O"] | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relation: Relation
    old: Row
    old_kind: Literal["K", "O"]


@dataclass(frozen=True, slots=True)
class Truncate:
    relations: tuple[Relation, ...]
    cascade: bool
    restart_identity: bool


Message = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate

_TRUNCATE_CASCADE = 1
_TRUNCATE_RESTART_IDENTITY = 2


class _Reader:
    """Big-endian fields read in order from one message."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _unpack(self, fmt: struct.Struct) -> int:
        try:
            (value,) = fmt.unpack_from(self.data, self.pos)
        except struct.error:
            raise PgOutputError(f"message truncated at byte {self.pos}") from None
        self.pos += fmt.size
        return int(value)

    def int8(self) -> int:
        return self._unpack(_INT8)

    def int16(self) -> int:
        return self._unpack(_INT16)

    def int32(self) -> int:
        return self._unpack(_INT32)

    def uint32(self) -> int:
        return self._unpack(_UINT32)

    def int64(self) -> int:
        return self._unpack(_INT64)

    def uint64(self) -> int:
        return self._unpack(_UINT64)

    def byte(self) -> str:
        if self.pos >= len(self.data):
            raise PgOutputError(f"message truncated at byte {self.pos}")
        self.pos += 1
        return chr(self.data[self.pos - 1])

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise PgOutputError(f"unterminated string at byte {self.pos}")
        raw, self.pos = self.data[self.pos : end], end + 1
        return _text(raw, self.pos)

    def text(self, size: int) -> str:
        if size < 0 or self.pos + size > len(self.data):
            raise PgOutputError(f"value of {size} bytes overruns the message at byte {self.pos}")
        raw, self.pos = self.data[self.pos : self.pos + size], self.pos + size
        return _text(raw, self.pos)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise PgOutputError(f"{len(self.data) - self.pos} bytes left over after the message")


_INT8 = struct.Struct(">b")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT64 = struct.Struct(">q")
_UINT64 = struct.Struct(">Q")


def _text(raw: bytes, pos: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # The replication connection asks for client_encoding UTF8, so this is a bug.
        raise PgOutputError(f"text before byte {pos} is not UTF-8") from None


def _time(microseconds: int) -> datetime:
    return POSTGRES_EPOCH + timedelta(microseconds=microseconds)


class PgOutputDecoder:
    """Decodes the messages of one replication session, in the order they arrive."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}

    def decode(self, data: bytes) -> Message:
        if not data:
            raise PgOutputError("empty message")
        reader = _Reader(data)
        kind = reader.byte()
        decode = _DECODERS.get(kind)
        if decode is None:
            raise PgOutputError(f"unknown message type {kind!r}")
        message = decode(self, reader)
        reader.end()
        return message

    def _begin(self, r: _Reader) -> Begin:
        return Begin(final_lsn=r.uint64(), commit_time=_time(r.int64()), xid=r.uint32())

    def _commit(self, r: _Reader) -> Commit:
        flags, commit_lsn, end_lsn = r.int8(), r.uint64(), r.uint64()
        return Commit(flags, commit_lsn, end_lsn, _time(r.int64()))

    def _origin(self, r: _Reader) -> Origin:
        return Origin(commit_lsn=r.uint64(), name=r.string())

    def _relation(self, r: _Reader) -> Relation:
        oid, schema, name, identity = r.uint32(), r.string(), r.string(), r.byte()
        columns = []
        for _ in range(r.int16()):
            flags, column = r.int8(), r.string()
            columns.append(Column(column, r.uint32(), r.int32(), key=bool(flags & 1)))
        # An empty namespace is pg_catalog, as the protocol says.
        relation = Relation(oid, schema or "pg_catalog", name, identity, tuple(columns))
        self.relations[oid] = relation
        return relation

    def _type(self, r: _Reader) -> Type:
        return Type(oid=r.uint32(), schema=r.string() or "pg_catalog", name=r.string())

    def _insert(self, r: _Reader) -> Insert:
        relation = self._known(r.uint32())
        _expect(r, "N")
        return Insert(relation, self._tuple(r, relation))

    def _update(self, r: _Reader) -> Update:
        relation = self._known(r.uint32())
        kind = r.byte()
        old, old_kind = None, None
        if kind in ("K", "O"):
            old, old_kind = self._tuple(r, relation), kind
            kind = r.byte()
        if kind != "N":
            raise PgOutputError(f"update of {relation.schema}.{relation.name}: got {kind!r}")
        return Update(relation, self._tuple(r, relation), old, old_kind)

    def _delete(self, r: _Reader) -> Delete:
        relation = self._known(r.uint32())
        kind = r.byte()
        if kind not in ("K", "O"):
            raise PgOutputError(f"delete from {relation.schema}.{relation.name}: got {kind!r}")
        return Delete(relation, self._tuple(r, relation), kind)

    def _truncate(self, r: _Reader) -> Truncate:
        count, options = r.int32(), r.int8()
        relations = tuple(self._known(r.uint32()) for _ in range(count))
        return Truncate(
            relations,
            cascade=bool(options & _TRUNCATE_CASCADE),
            restart_identity=bool(options & _TRUNCATE_RESTART_IDENTITY),
        )

    def _known(self, oid: int) -> Relation:
        relation = self.relations.get(oid)
        if relation is None:
            raise PgOutputError(f"row change for relation {oid} before its Relation message")
        return relation

    def _tuple(self, r: _Reader, relation: Relation) -> Row:
        count = r.int16()
        if count != len(relation.columns):
            raise PgOutputError(
                f"{relation.schema}.{relation.name} has {len(relation.columns)} columns, "
                f"the row has {count}"
            )
        row: Row = {}
        for column in relation.columns:
            kind = r.byte()
            if kind == "t":
                row[column.name] = r.text(r.int32())
            elif kind == "n":
                row[column.name] = None
            elif kind == "u":
                row[column.name] = UNCHANGED
            else:  # "b" (binary) only comes when asked for, and this decoder never asks
                raise PgOutputError(f"column {column.name}: unsupported value kind {kind!r}")
        return row


def _expect(r: _Reader, kind: str) -> None:
    got = r.byte()
    if got != kind:
        raise PgOutputError(f"expected {kind!r} at byte {r.pos - 1}, got {got!r}")


_DECODERS = {
    "B": PgOutputDecoder._begin,
    "C": PgOutputDecoder._commit,
    "O": PgOutputDecoder._origin,
    "R": PgOutputDecoder._relation,
    "Y": PgOutputDecoder._type,
    "I": PgOutputDecoder._insert,
    "U": PgOutputDecoder._update,
    "D": PgOutputDecoder._delete,
    "T": PgOutputDecoder._truncate,
}


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL writes it: `0/16B3748`."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """`0/16B3748` -> its 64-bit value; ValueError for anything else."""
    high, sep, low = text.partition("/")
    if not sep or not high or not low:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)
