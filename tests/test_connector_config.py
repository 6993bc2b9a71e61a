"""Connector files: every bad one is refused with one line naming the file, the key and the
value, before anything connects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plexus.connectors import config
from plexus.connectors.config import ConnectorConfigError, load
from plexus.connectors.file_sink import FileSink

pytestmark = pytest.mark.timeout(30)

PLEXUS = [sys.executable, "-m", "plexus.cli.main"]

GOOD = """\
[connector]
name = "archive"
kind = "file-sink"
[consume]
queue = "archive"
subscribe = ["orders/>"]
[file]
path = "out.jsonl"
"""


def refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConnectorConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


def test_a_good_file_loads_its_kind_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    loaded = load(path)
    assert (loaded.name, loaded.kind, loaded.cls) == ("archive", "file-sink", FileSink)
    assert loaded.settings.consume.max_deliveries == 5  # type: ignore[attr-defined]
    assert loaded.transform is None


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConnectorConfigError, match=r"nope\.toml: no such file"):
        load(tmp_path / "nope.toml")


def test_bad_toml_names_the_line(tmp_path: Path) -> None:
    assert "bad TOML" in (problem := refused(tmp_path, GOOD + "oops\n"))
    assert "line 9" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace('"file-sink"', '"kafka"'),
            "[connector] kind 'kafka' is unknown "
            "(known: file-sink, postgres-cdc, postgres-sink, webhook)",
        ),
        (
            GOOD.replace('kind = "file-sink"\n', ""),
            "[connector] kind: missing (expected one of file-sink, postgres-cdc, "
            "postgres-sink, webhook)",
        ),
        (GOOD.replace('queue = "archive"\n', ""), "[consume] queue: missing"),
        (
            GOOD.replace("[file]", 'colour = "red"\n[file]'),
            "[consume] colour: unknown key"
            " (expected: queue, subscribe, max_deliveries, prefetch, retry_for)",
        ),
        (
            GOOD.replace("[file]", "[files]"),
            "[file]: missing; [files]: unknown section (expected: connector, consume, file)",
        ),
        (
            GOOD.replace("[file]", "max_deliveries = 0\n[file]"),
            "[consume] max_deliveries: 0 is not valid: input should be greater than or equal to 1",
        ),
        (
            GOOD.replace('"archive"\nkind', '"my archive"\nkind'),
            "[connector] name: 'my archive' is not valid",
        ),
        (GOOD.replace('["orders/>"]', "[]"), "[consume] subscribe: [] is not valid"),
        (GOOD.replace('["orders/>"]', '"orders/>"'), "[consume] subscribe: 'orders/>' is not"),
    ],
)
def test_each_bad_key_is_named_with_its_value(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in refused(tmp_path, text)


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        ("shaping", "'shaping': expected module:function"),
        ("no_such_module_here:f", "'no_such_module_here:f': no module named 'no_such_module_here'"),
        ("shaping:missing", "'shaping:missing': shaping has no 'missing'"),
        ("shaping:NOT_CALLABLE", "'shaping:NOT_CALLABLE': NOT_CALLABLE is not callable"),
        ("broken:f", "'broken:f': importing broken failed: ZeroDivisionError"),
    ],
)
def test_a_bad_transform_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transform: str, expected: str
) -> None:
    (tmp_path / "shaping.py").write_text("NOT_CALLABLE = 3\ndef f(event):\n    return None\n")
    (tmp_path / "broken.py").write_text("1 / 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    text = GOOD.replace('kind = "file-sink"', f'kind = "file-sink"\ntransform = "{transform}"')
    assert f"[connector] transform {expected}" in refused(tmp_path, text)


def test_a_kind_whose_module_cannot_be_imported_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(config.KINDS, "file-sink", "plexus.connectors.not_there:Nope")
    assert "[connector] kind 'file-sink' cannot be loaded: No module named" in refused(
        tmp_path, GOOD
    )


def test_connector_run_of_a_bad_file_exits_1_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace('queue = "archive"\n', ""))
    out = subprocess.run(
        [*PLEXUS, "connector", "run", str(path), "--server", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1, out
    assert out.stderr == f"error: {path}: [consume] queue: missing\n"


def test_the_readme_transform_example_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    from plexus.client import Event
    from plexus.v1 import plexus_pb2 as pb

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "def shape" in b]
    (tmp_path / "readme_shaping.py").write_text(example)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    shape = config.load_transform("readme_shaping:shape")
    event = Event(pb.Event(topic="orders/1", payload=b"x", origin_region="us"))
    (out,) = shape(event)
    assert (out.topic, out.payload, out.headers) == ("archive/orders/1", b"x", {"source": "us"})
    assert shape(Event(pb.Event(topic="orders/test"))) == []
