"""What a PostgreSQL row change becomes on the mesh: its JSON payload, its topic, its key.

Pure code over the decoded pgoutput messages (plexus.connectors.pgoutput).

Values are typed in JSON where that loses nothing: smallint, integer, bigint
and oid as numbers, boolean as true/false, real and double precision as
numbers (their text is the shortest exact form; NaN and the infinities stay
strings), json and jsonb parsed; everything else, numeric included, is the
string PostgreSQL prints for it, so no precision is lost. A TOASTed value an
update did not change is not sent by PostgreSQL: its column is absent.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from plexus.connectors.pgoutput import UNCHANGED, Relation, Row, format_lsn

__all__ = [
    "BUILTIN_FIELDS",
    "TopicTemplate",
    "change_key",
    "change_payload",
    "json_row",
]

BOOL, INT8, INT2, INT4, OID, JSON, FLOAT4, FLOAT8, JSONB = 16, 20, 21, 23, 26, 114, 700, 701, 3802


def _float(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


_TYPED: Final[Mapping[int, Callable[[str], Any]]] = {
    BOOL: lambda text: text == "t",
    INT2: int,
    INT4: int,
    INT8: int,
    OID: int,
    FLOAT4: _float,
    FLOAT8: _float,
    JSON: json.loads,
    JSONB: json.loads,
}


def json_row(relation: Relation, row: Row, keys_only: bool = False) -> dict[str, Any]:
    """`row` with JSON-typed values; unchanged TOAST values (and, for `keys_only`,
    columns outside the replica identity) left out."""
    out: dict[str, Any] = {}
    for column in relation.columns:
        if keys_only and not column.key:
            continue
        text = row.get(column.name, UNCHANGED)
        if text is UNCHANGED:
            continue
        if text is None:
            out[column.name] = None
            continue
        typed = _TYPED.get(column.type_oid)
        out[column.name] = text if typed is None else typed(text)
    return out


def change_payload(
    op: str,
    relation: Relation,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    commit_time: datetime,
    commit_lsn: int,
    xid: int,
) -> bytes:
    """The event's JSON payload (the README's "postgres-cdc" section shows it)."""
    body = {
        "op": op,
        "schema": relation.schema,
        "table": relation.name,
        "before": before,
        "after": after,
        "commit_time": commit_time.isoformat(),
        "lsn": format_lsn(commit_lsn),
        "xid": xid,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def change_key(connector: str, commit_lsn: int, index: int) -> str:
    """The de-duplication key of the `index`-th change of the transaction committed at
    `commit_lsn`: the same change read again after a crash gets the same key."""
    return f"pg/{connector}/{format_lsn(commit_lsn)}/{index}"


# Placeholders every topic template may use besides the row's columns.
BUILTIN_FIELDS: Final = ("table", "schema", "op")
# Characters a topic level cannot hold, and "%" so that the escape is unambiguous.
_ESCAPED: Final = frozenset("/*>%") | frozenset(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))
MISSING: Final = "_"


class TopicTemplate:
    """`shop/{table}/{op}`: a topic with placeholders filled from each change.

    `{table}`, `{schema}` and `{op}` (insert, update, delete, truncate) are
    always there; any other name is a column, taken from the new row, or from
    the old one for a delete. A value becomes one topic level: its text (true
    and false for booleans), with `/`, `*`, `>`, `%` and control characters
    percent-encoded (`a/b` -> `a%2Fb`); NULL, an empty string or a column the
    change does not carry (a truncate has none) becomes `_`.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.parts: list[tuple[str, str | None]] = []
        for literal, field, spec, conversion in string.Formatter().parse(template):
            if field is not None:
                if not field.isidentifier():
                    raise ValueError(f"{{{field}}} is not a placeholder: use a column name")
                if spec or conversion:
                    raise ValueError(f"{{{field}}}: no format spec or conversion allowed")
            self.parts.append((literal, field))
        self.columns = tuple(
            dict.fromkeys(f for _, f in self.parts if f is not None and f not in BUILTIN_FIELDS)
        )

    def render(self, op: str, schema: str, table: str, row: Mapping[str, Any]) -> str:
        builtin = {"table": table, "schema": schema, "op": op}
        out: list[str] = []
        for literal, field in self.parts:
            out.append(literal)
            if field is not None:
                out.append(_level(builtin[field] if field in builtin else row.get(field)))
        return "".join(out)


def _level(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    if not text:
        return MISSING
    if not any(c in _ESCAPED for c in text):
        return text
    return "".join("".join(f"%{b:02X}" for b in c.encode()) if c in _ESCAPED else c for c in text)
