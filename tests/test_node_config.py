"""Node settings: every problem named with its source and key, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import load_config
from plexus.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_node_config_loads_and_flags_override_it():
    config = load_config(ROOT / "cluster-configs/node-us.toml", {"listen": "127.0.0.1:0"})
    assert (config.name, config.listen) == ("us", "127.0.0.1:0")


def test_every_problem_in_a_file_is_reported_with_file_and_key(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('[node]\nname = "US!"\nlisten = "nowhere"\ncolour = "blue"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    text = str(err.value)
    assert str(path) in text
    for part in (
        "name: must be",
        "'US!'",
        "listen: must be HOST:PORT",
        "data: missing",
        "colour: unknown key",
    ):
        assert part in text, text


@pytest.mark.parametrize(
    ("content", "says"),
    [("[node\nname=1", "not valid TOML"), ("node = 3", r"\[node\] must be a table")],
)
def test_unreadable_files_are_named(tmp_path: Path, content: str, says: str):
    path = tmp_path / "c.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=says):
        load_config(path, {})


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", {})


def test_flags_alone_are_validated():
    with pytest.raises(ConfigError, match=r"command line: .*listen: must be HOST:PORT.*99999"):
        load_config(None, {"name": "us", "data": "/tmp/x", "listen": "127.0.0.1:99999"})


def test_mqtt_and_http_addresses_are_checked_like_the_grpc_one(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"mqtt: must be HOST:PORT.*'nowhere'"):
        load_config(None, {"name": "us", "data": tmp_path, "mqtt": "nowhere"})
    # Plaintext MQTT or HTTP where others can reach it needs TLS, or --insecure said aloud.
    with pytest.raises(ConfigError, match=r"http: '0.0.0.0:8080' is not a loopback address"):
        load_config(None, {"name": "us", "data": tmp_path, "http": "0.0.0.0:8080"})
    config = load_config(None, {"name": "us", "data": tmp_path, "mqtt": "127.0.0.1:1883"})
    assert (config.mqtt, config.http) == ("127.0.0.1:1883", None)
