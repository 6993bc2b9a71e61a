"""Reading a connector file: its kind, its settings, its transform; every problem in one line.

The file is TOML. `[connector] kind` names the kind; the kind's class is
imported only then (a kind's dependencies load only when it is used) and its
`settings` model validates the whole file, unknown keys refused. Each problem
names the file, the key (`[consume] queue`), the value and what was expected;
all of them are raised together as one `ConnectorConfigError`, one line.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from plexus.client import Event
from plexus.connectors.base import ConnectorSection, Outgoing, Sink, Source
from plexus.errors import ConfigError

__all__ = ["KINDS", "ConnectorConfigError", "LoadedConnector", "load", "load_transform"]

# Each kind's class, as "module:Class", imported when a file names the kind.
KINDS: dict[str, str] = {
    "postgres-cdc": "plexus.connectors.postgres_cdc:PostgresCdcSource",
    "postgres-sink": "plexus.connectors.postgres_sink:PostgresSink",
    "webhook": "plexus.connectors.webhook:WebhookSink",
    "file-sink": "plexus.connectors.file_sink:FileSink",
}

Transform = Callable[[Event], list[Outgoing]]


class ConnectorConfigError(ConfigError):
    """A connector file that cannot run: its path and every problem, each naming its key."""


@dataclass(frozen=True, slots=True)
class LoadedConnector:
    """A validated connector file: what the runtime needs to run it."""

    path: Path
    name: str
    kind: str
    cls: type[Source] | type[Sink]
    settings: BaseModel
    transform: Transform | None

    def build(self) -> Source | Sink:
        return self.cls(self.settings)


def load(path: Path | str) -> LoadedConnector:
    """Read and validate the connector file at `path`; ConnectorConfigError naming each problem."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConnectorConfigError(where, ["no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConnectorConfigError(where, [f"cannot read: {reason}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConnectorConfigError(where, [f"bad TOML: {exc}"]) from None

    section = data.get("connector")
    kind = section.get("kind") if isinstance(section, dict) else None
    known = ", ".join(sorted(KINDS))
    if not isinstance(kind, str):
        got = "missing" if kind is None else f"{kind!r} is not text"
        raise ConnectorConfigError(where, [f"[connector] kind: {got} (expected one of {known})"])
    if kind not in KINDS:
        raise ConnectorConfigError(
            where, [f"[connector] kind {kind!r} is unknown (known: {known})"]
        )
    cls = _kind_class(where, kind)
    try:
        settings = cls.settings.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(cls.settings, e) for e in exc.errors()]
        raise ConnectorConfigError(where, problems) from None
    connector = getattr(settings, "connector", None)
    if not isinstance(connector, ConnectorSection):
        raise TypeError(f"{cls.__name__}.settings has no [connector] section")
    transform = None
    if connector.transform is not None:
        try:
            transform = load_transform(connector.transform)
        except ValueError as exc:
            raise ConnectorConfigError(where, [f"[connector] transform {exc}"]) from None
    return LoadedConnector(path, connector.name, kind, cls, settings, transform)


def _kind_class(where: str, kind: str) -> type[Source] | type[Sink]:
    module_name, _, attr = KINDS[kind].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or ""
        hint = (
            "it is not part of this installation"
            if missing.startswith("plexus")
            else "pip install 'plexus-mesh[connectors]'"
        )
        problem = f"[connector] kind {kind!r} cannot be loaded: {exc} ({hint})"
        raise ConnectorConfigError(where, [problem]) from None
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, Source | Sink)):
        raise TypeError(f"{KINDS[kind]} is not a Source or a Sink")
    return cls


def _problem(model: type[BaseModel], error: Mapping[str, Any]) -> str:
    """One pydantic error as `[section] key: what is wrong`."""
    loc = [str(part) for part in error["loc"]]
    key = _key(loc)
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return f"{key}: missing"
    if kind == "extra_forbidden":
        what = "section" if len(loc) == 1 else "key"
        allowed = _keys_at(model, loc[:-1])
        expected = f" (expected: {', '.join(allowed)})" if allowed else ""
        return f"{key}: unknown {what}{expected}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {_shown(value)} is not valid: {message[:1].lower()}{message[1:]}"


def _keys_at(model: type[BaseModel], loc: Sequence[str]) -> list[str]:
    """The keys the settings model takes at `loc` ([] when it cannot tell)."""
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _key(loc: Sequence[str]) -> str:
    if not loc:
        return "file"
    if len(loc) == 1:
        return f"[{loc[0]}]"
    rest = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[2:])
    return f"[{loc[0]}] {loc[1]}{rest}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_transform(spec: str) -> Transform:
    """The user's `module:function` (imported from the working directory or PYTHONPATH),
    wrapped so that it always returns a list of Outgoing; ValueError saying what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r}: expected module:function")
    cwd = os.getcwd()
    if cwd not in sys.path:  # `plexus` runs as a script: its directory, not the cwd, is on it
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"{spec!r}: no module named {exc.name!r}") from None
    except Exception as exc:
        raise ValueError(f"{spec!r}: importing {module_name} failed: {_one_line(exc)}") from None
    func = getattr(module, attr, None)
    if func is None:
        raise ValueError(f"{spec!r}: {module_name} has no {attr!r}")
    if not callable(func):
        raise ValueError(f"{spec!r}: {attr} is not callable")

    def transform(event: Event) -> list[Outgoing]:
        try:
            result = func(event)
        except Exception as exc:
            raise TransformFailed(f"transform {spec} raised {_one_line(exc)}") from exc
        return as_outgoing(spec, result)

    return transform


class TransformFailed(Exception):
    """The user's transform raised, or returned something it should not."""


def as_outgoing(spec: str, result: object) -> list[Outgoing]:
    if result is None:
        return []
    if isinstance(result, Outgoing):
        return [result]
    if isinstance(result, list | tuple) and all(isinstance(o, Outgoing) for o in result):
        return list(result)
    raise TransformFailed(
        f"transform {spec} returned {type(result).__name__}: "
        "expected an Outgoing, a list of them, or None"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
