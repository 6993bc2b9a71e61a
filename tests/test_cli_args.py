"""CLI argument errors caught before any node is needed: one line, right exit code."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from plexus.cli.main import cli
from tests.harness import free_port

pytestmark = pytest.mark.timeout(60)

NOWHERE = "127.0.0.1:1"


def invoke(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["pub", "a/b", "x", "--count", "-3"], ["--count", "-3"]),
        (["pub", "a/b", "x", "--count", "0"], ["--count"]),
        (["pub", "a/b", "x", "--count", "many"], ["--count", "many"]),
        (["pub", "a/b", "x", "--header", "novalue"], ["--header", "novalue", "KEY=VALUE"]),
        (["pub", "a/b", "x", "--header", "=v"], ["--header"]),
        (["pub", "a/b", "x", "--rate", "-1"], ["--rate"]),
        (["pub", "a/b", "x", "--ttl-ms", "-5"], ["--ttl-ms"]),
        (["pub", "a/b", "x", "--server", "localhost"], ["--server", "HOST:PORT"]),
        (["pub", "a/b", "x", "--server", "host:notaport"], ["--server", "port"]),
        (["pub", "a/b", "x", "--server", "host:70000"], ["--server"]),
        (["pub"], ["TOPIC"]),
        (["sub", "a/>", "--timeout", "0"], ["--timeout"]),
        (["sub", "a/>", "--count", "-1"], ["--count"]),
        (["queue", "create", "q"], ["--subscribe"]),
        (["queue", "create", "q", "--subscribe", "a/>", "--max-depth", "-1"], ["--max-depth"]),
        (["queue", "consume", "q", "--prefetch", "0"], ["--prefetch"]),
        (["nosuchcommand"], ["nosuchcommand"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], needles: list[str]) -> None:
    code, _, stderr = invoke(*args)
    assert code == 2, stderr
    assert_one_line_error(stderr, *needles)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["pub", "a//b", "x"], ["invalid topic 'a//b' at level 2", "empty level"]),
        (["pub", "a/*/b", "x"], ["invalid topic 'a/*/b'", "level 2"]),
        (["pub", "a/>", "x"], ["invalid topic"]),
        (["pub", "t" * 300, "x"], ["invalid topic", "250 bytes"]),
        (["pub", "a//{seq}", "x", "--count", "3"], ["invalid topic"]),
        (["sub", "a/>/b"], ["invalid pattern 'a/>/b'", "level 2"]),
        (["sub", ""], ["invalid pattern ''"]),
        (["queue", "create", "q", "--subscribe", "a/>/c"], ["invalid pattern 'a/>/c'"]),
    ],
)
def test_bad_topics_and_patterns_are_refused_locally(args: list[str], needles: list[str]) -> None:
    code, _, stderr = invoke(*args, "--server", NOWHERE)
    assert code == 1, stderr
    assert_one_line_error(stderr, *needles)
    assert "cannot reach" not in stderr


def test_oversize_payload_from_stdin_is_refused_locally() -> None:
    code, _, stderr = invoke("pub", "a/b", "--server", NOWHERE, stdin=b"x" * (1024 * 1024 + 1))
    assert code == 1
    assert_one_line_error(stderr, "payload", "limit")


def test_server_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEXUS_SERVER", "nohostport")
    code, _, stderr = invoke("info")
    assert code == 2
    assert_one_line_error(stderr, "nohostport")


def test_unreachable_node_fails_fast_with_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "plexus.cli.main", "pub", "a/b", "x", "--server", address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert time.monotonic() - started < 10
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, f"cannot reach node at {address}")


@pytest.mark.parametrize("command", [["sub", "a/>"], ["queue", "list"], ["info"]])
def test_every_client_command_reports_an_unreachable_node(command: list[str]) -> None:
    code, _, stderr = invoke(*command, "--server", NOWHERE, "--help")
    assert code == 0 and "--server" in _  # documented
    code, _, stderr = invoke(*command, "--server", NOWHERE)
    assert code == 1
    assert_one_line_error(stderr, f"cannot reach node at {NOWHERE}")


def test_client_side_never_imports_the_server_packages() -> None:
    code = (
        "import sys, plexus, plexus.client, plexus.cli.main, plexus.cli.publish, "
        "plexus.cli.subscribe, plexus.cli.queue, plexus.cli.output, plexus.demo\n"
        "plexus.Client\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('node', 'federation', 'storage'))\n"
        "print(','.join(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


# ------------------------------------------------------------------ plexus cert


def test_cert_ca_then_node_write_private_files(tmp_path: Path) -> None:
    code, _, err = invoke("cert", "ca", "--out", str(tmp_path / "ca"))
    assert code == 0, err
    code, _, err = invoke(
        "cert", "node", "--ca", str(tmp_path / "ca"), "--region", "eu",
        "--host", "10.0.0.2", "--host", "eu.example.com", "--out", str(tmp_path / "eu"),
    )  # fmt: skip
    assert code == 0, err
    for path in ("ca/ca.crt", "ca/ca.key", "eu/eu.crt", "eu/eu.key"):
        assert (tmp_path / path).stat().st_mode & 0o777 == 0o600, path
    assert (tmp_path / "ca").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--region", "EU", "--host", "h"], ["'EU'", "lower-case"]),
        (["--region", "eu", "--host", "not a host"], ["'not a host'"]),
        (["--region", "eu"], ["--host"]),
    ],
)
def test_cert_node_bad_input_is_one_line(tmp_path: Path, args: list[str], needles: list[str]):
    assert invoke("cert", "ca", "--out", str(tmp_path / "ca"))[0] == 0
    code, _, err = invoke("cert", "node", "--ca", str(tmp_path / "ca"), "--out", "x", *args)
    assert code != 0
    assert_one_line_error(err, *needles)


def test_cert_node_without_a_ca_names_the_file(tmp_path: Path) -> None:
    code, _, err = invoke(
        "cert", "node", "--ca", str(tmp_path), "--region", "eu", "--host", "h", "--out", "x"
    )
    assert code == 1
    assert_one_line_error(err, str(tmp_path / "ca.crt"))


def test_cert_ca_never_overwrites_a_ca(tmp_path: Path) -> None:
    assert invoke("cert", "ca", "--out", str(tmp_path))[0] == 0
    code, _, err = invoke("cert", "ca", "--out", str(tmp_path))
    assert code == 1
    assert_one_line_error(err, "exists already")
