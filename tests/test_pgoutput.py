"""The pgoutput decoder and what a change becomes: hand-built messages, then a real server's.

The real server's messages are read through SQL (`pg_logical_slot_peek_binary_changes`),
the same bytes the streaming protocol carries, so no replication connection is needed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plexus.connectors.pgevents import TopicTemplate, change_key, change_payload, json_row
from plexus.connectors.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Origin,
    PgOutputDecoder,
    PgOutputError,
    Relation,
    Truncate,
    Type,
    Update,
    format_lsn,
    parse_lsn,
)
from tests.postgres import PostgresServer, postgres_server

pytestmark = pytest.mark.timeout(60)

# 2026-01-02 03:04:05.678 UTC, in microseconds since 2000-01-01 (PostgreSQL's epoch).
AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
AT_US = int((AT - datetime(2000, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)


def string(text: str) -> bytes:
    return text.encode() + b"\0"


def values(*items: object) -> bytes:
    out = struct.pack(">h", len(items))
    for item in items:
        if item is None:
            out += b"n"
        elif item is UNCHANGED:
            out += b"u"
        else:
            raw = str(item).encode()
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


def relation(oid: int = 16385, identity: bytes = b"d") -> bytes:
    columns = [(1, "id", 23), (0, "region", 25), (0, "note", 25)]
    out = b"R" + struct.pack(">I", oid) + string("public") + string("orders") + identity
    out += struct.pack(">h", len(columns))
    for flags, name, type_oid in columns:
        out += struct.pack(">b", flags) + string(name) + struct.pack(">Ii", type_oid, -1)
    return out


@pytest.fixture
def decoder() -> PgOutputDecoder:
    decoder = PgOutputDecoder()
    decoder.decode(relation())
    return decoder


def test_begin_and_commit_carry_lsns_time_and_xid(decoder: PgOutputDecoder) -> None:
    begin = decoder.decode(b"B" + struct.pack(">QqI", 0x16B3748, AT_US, 730))
    assert begin == Begin(final_lsn=0x16B3748, commit_time=AT, xid=730)
    commit = decoder.decode(b"C" + struct.pack(">bQQq", 0, 0x16B3748, 0x16B3778, AT_US))
    assert commit == Commit(flags=0, commit_lsn=0x16B3748, end_lsn=0x16B3778, commit_time=AT)


def test_a_relation_names_its_columns_and_key() -> None:
    message = PgOutputDecoder().decode(relation(identity=b"f"))
    assert isinstance(message, Relation)
    assert (message.oid, message.schema, message.name) == (16385, "public", "orders")
    assert message.replica_identity == "f"
    assert message.columns == (
        Column("id", 23, -1, key=True),
        Column("region", 25, -1, key=False),
        Column("note", 25, -1, key=False),
    )


def test_insert_update_delete_decode_text_null_and_unchanged_values(
    decoder: PgOutputDecoder,
) -> None:
    oid = struct.pack(">I", 16385)
    insert = decoder.decode(b"I" + oid + b"N" + values("1", "us", None))
    assert isinstance(insert, Insert) and insert.new == {"id": "1", "region": "us", "note": None}
    update = decoder.decode(b"U" + oid + b"N" + values("1", "eu", UNCHANGED))
    assert isinstance(update, Update) and update.old is None
    assert update.new == {"id": "1", "region": "eu", "note": UNCHANGED}
    keyed = decoder.decode(
        b"U" + oid + b"K" + values("1", None, None) + b"N" + values("2", "eu", "x")
    )
    assert isinstance(keyed, Update) and keyed.old_kind == "K" and keyed.old == {
        "id": "1", "region": None, "note": None,
    }  # fmt: skip
    delete = decoder.decode(b"D" + oid + b"O" + values("2", "eu", "x"))
    assert isinstance(delete, Delete) and delete.old_kind == "O"
    assert delete.old == {"id": "2", "region": "eu", "note": "x"}


def test_truncate_origin_and_type(decoder: PgOutputDecoder) -> None:
    truncate = decoder.decode(b"T" + struct.pack(">ibI", 1, 3, 16385))
    assert isinstance(truncate, Truncate)
    assert truncate.cascade and truncate.restart_identity
    assert [r.name for r in truncate.relations] == ["orders"]
    assert decoder.decode(b"O" + struct.pack(">Q", 42) + string("pg_1")) == Origin(42, "pg_1")
    assert decoder.decode(b"Y" + struct.pack(">I", 99) + string("") + string("mood")) == Type(
        99, "pg_catalog", "mood"
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty message"),
        (b"Z", "unknown message type 'Z'"),
        (b"B" + struct.pack(">Q", 1), "truncated"),
        (b"I" + struct.pack(">I", 99) + b"N" + values("1"), "relation 99 before its Relation"),
        (b"I" + struct.pack(">I", 16385) + b"N" + values("1"), "has 3 columns, the row has 1"),
        (b"I" + struct.pack(">I", 16385) + b"X", "expected 'N'"),
        (b"O" + struct.pack(">Q", 1) + b"no end", "unterminated string"),
        (b"O" + struct.pack(">Q", 1) + string("x") + b"!", "1 bytes left over"),
        (
            b"I" + struct.pack(">I", 16385) + b"N" + struct.pack(">h", 3) + b"b",
            "unsupported value kind 'b'",
        ),
        (
            b"I"
            + struct.pack(">I", 16385)
            + b"N"
            + struct.pack(">h", 3)
            + b"t"
            + struct.pack(">i", 9),
            "overruns the message",
        ),
    ],
)
def test_a_message_out_of_protocol_is_refused_saying_why(
    decoder: PgOutputDecoder, data: bytes, why: str
) -> None:
    with pytest.raises(PgOutputError, match=why):
        decoder.decode(data)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsns_print_as_postgresql_does_and_read_back(lsn: int) -> None:
    text = format_lsn(lsn)
    assert parse_lsn(text) == lsn
    assert text == text.upper() and "/" in text


def test_lsn_examples() -> None:
    assert format_lsn(0x16B3748) == "0/16B3748"
    assert format_lsn((1 << 32) | 0xA) == "1/A"
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn("16B3748")


# ---------------------------------------------------------------- what a change becomes


def test_topic_levels_from_values_are_escaped_and_never_empty() -> None:
    template = TopicTemplate("db/{schema}/{table}/{region}/{op}")
    assert template.columns == ("region",)
    row = {"region": "eu/west*>%\n"}
    assert template.render("insert", "public", "orders", row) == (
        "db/public/orders/eu%2Fwest%2A%3E%25%0A/insert"
    )
    assert template.render("delete", "s", "t", {"region": None}) == "db/s/t/_/delete"
    assert template.render("truncate", "s", "t", {}) == "db/s/t/_/truncate"
    assert template.render("insert", "s", "t", {"region": True}) == "db/s/t/true/insert"
    assert template.render("insert", "s", "t", {"region": ""}) == "db/s/t/_/insert"


def test_values_are_json_typed_only_where_exact() -> None:
    rel = Relation(
        1, "public", "t", "d",
        tuple(
            Column(name, oid, -1, key=name == "i")
            for name, oid in [("i", 20), ("b", 16), ("f", 701), ("n", 1700), ("j", 3802),
                              ("nan", 701), ("t", 25), ("u", 25)]
        ),
    )  # fmt: skip
    row = {
        "i": "12", "b": "f", "f": "1.5", "n": "0.1", "j": '{"a": 1}',
        "nan": "NaN", "t": None, "u": UNCHANGED,
    }  # fmt: skip
    assert json_row(rel, row) == {
        "i": 12, "b": False, "f": 1.5, "n": "0.1", "j": {"a": 1}, "nan": "NaN", "t": None,
    }  # fmt: skip
    assert json_row(rel, row, keys_only=True) == {"i": 12}


def test_the_payload_and_key() -> None:
    rel = Relation(1, "public", "orders", "d", (Column("id", 23, -1, key=True),))
    body = json.loads(change_payload("delete", rel, {"id": 1}, None, AT, 0x16B3748, 730))
    assert body == {
        "op": "delete", "schema": "public", "table": "orders", "before": {"id": 1},
        "after": None, "commit_time": "2026-01-02T03:04:05.678000+00:00",
        "lsn": "0/16B3748", "xid": 730,
    }  # fmt: skip
    assert change_key("orders-cdc", 0x16B3748, 2) == "pg/orders-cdc/0/16B3748/2"


# ---------------------------------------------------------------- a real server's messages


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        server.execute(
            "postgres",
            "create table orders (id int primary key, region text, doc text);"
            "create table lines (id int primary key, qty int);"
            "alter table lines replica identity full;"
            "create publication p for table orders, lines",
        )
        server.execute("postgres", "select pg_create_logical_replication_slot('s', 'pgoutput')")
        yield server


def test_a_real_servers_stream_decodes(pg: PostgresServer) -> None:
    big = "".join(f"{i:08x}" for i in range(4000))  # TOASTed out of line
    for statement in [
        ("insert into orders values (1, 'us', %s)", big),
        ("update orders set region = 'eu' where id = 1",),
        ("update orders set id = 2 where id = 1",),
        ("delete from orders where id = 2",),
        ("insert into lines values (1, 5)",),
        ("update lines set qty = 6",),
        ("delete from lines",),
        ("truncate orders, lines restart identity",),
    ]:
        pg.execute("postgres", *statement)
    rows = pg.execute(
        "postgres",
        "select data from pg_logical_slot_peek_binary_changes('s', null, null,"
        " 'proto_version', '1', 'publication_names', 'p')",
    )
    decoder = PgOutputDecoder()
    messages = [decoder.decode(bytes(data)) for (data,) in rows]
    changes = [m for m in messages if not isinstance(m, Begin | Commit | Relation)]
    kinds = [type(m).__name__ for m in changes]
    assert kinds == [
        "Insert",
        "Update",
        "Update",
        "Delete",
        "Insert",
        "Update",
        "Delete",
        "Truncate",
    ]
    insert, update, keyed, delete, _, full_update, full_delete, truncate = changes
    assert isinstance(insert, Insert) and insert.new == {"id": "1", "region": "us", "doc": big}
    assert isinstance(update, Update) and update.old is None
    assert update.new == {"id": "1", "region": "eu", "doc": UNCHANGED}
    assert isinstance(keyed, Update) and keyed.old_kind == "K" and keyed.old is not None
    assert json_row(keyed.relation, keyed.old, keys_only=True) == {"id": 1}
    assert isinstance(delete, Delete) and delete.old_kind == "K"
    assert isinstance(full_update, Update) and full_update.old == {"id": "1", "qty": "5"}
    assert isinstance(full_delete, Delete) and full_delete.old == {"id": "1", "qty": "6"}
    assert isinstance(truncate, Truncate) and truncate.restart_identity
    assert {r.name for r in truncate.relations} == {"orders", "lines"}
    # Every transaction: Begin first, Commit last, the commit LSN agreeing.
    begins = [m for m in messages if isinstance(m, Begin)]
    commits = [m for m in messages if isinstance(m, Commit)]
    assert len(begins) == len(commits) == 8
    assert all(
        b.final_lsn == c.commit_lsn < c.end_lsn for b, c in zip(begins, commits, strict=True)
    )
