"""The SDK as a library: what `pip install plexus-mesh` brings, and what it leaves out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from plexus.cli import script

ROOT = Path(__file__).resolve().parent.parent
# What `import plexus` and the SDK modules may load: the base dependencies only.
SDK_MODULES = (
    "plexus",
    "plexus.client",
    "plexus.errors",
    "plexus.topics",
    "plexus.v1",
    "plexus.v1.plexus_pb2",
    "plexus.v1.plexus_pb2_grpc",
    "plexus.v1.link_pb2",
    "plexus.v1.link_pb2_grpc",
)
# Top-level modules of the extras (and the server's own packages).
EXTRA_MODULES = (
    "click",
    "rich",
    "textual",
    "lmdb",
    "pysyncobj",
    "cryptography",
    "pydantic",
    "prometheus_client",
    "pythonjsonlogger",
    "uvloop",
    "aiohttp",
    "psycopg2",
    "tenacity",
    "grpc_health",
    "grpc_reflection",
    "node",
    "federation",
    "storage",
)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "plexus", "node", "federation", "storage")

LOADED_EXTRAS = f"""
import json, sys
for name in {SDK_MODULES!r}:
    __import__(name)
import plexus
plexus.Client, plexus.PlexusError
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({EXTRA_MODULES!r}))))
"""


def _loaded_extras(python: Path | str) -> list[str]:
    out = subprocess.run(
        [str(python), "-c", LOADED_EXTRAS], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


# `import grpc` itself loads these when they are installed (as grpc.health, grpc.reflection).
LOADED_BY_GRPC = ["grpc_health", "grpc_reflection"]


def test_importing_the_sdk_loads_nothing_from_the_extras() -> None:
    # In the project's environment, where every extra is installed; the slow
    # test below checks a fresh environment without them.
    assert [m for m in _loaded_extras(sys.executable) if m not in LOADED_BY_GRPC] == []


def test_plexus_command_without_the_cli_extra_names_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(script, "find_spec", lambda name: None if name == "click" else object())
    with pytest.raises(SystemExit) as exited:
        script.main()
    assert exited.value.code == script.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'plexus-mesh[cli]'" in err
    assert "click" in err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installs_the_sdk_alone_into_a_fresh_venv(tmp_path: Path) -> None:
    """Build the wheel, install it with its base dependencies only, use it.

    Uses the network (or pip's cache) like any install; offline, point pip at a
    wheelhouse: PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels.
    """
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dist), str(src)], check=True)
    (wheel,) = dist.glob("plexus_mesh-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    assert "plexus/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    base = sorted(r.split(">")[0].split("<")[0].split("=")[0] for r in requires if "extra" not in r)
    assert base == ["googleapis-common-protos", "grpcio", "grpcio-status", "protobuf"]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "--quiet", "install", "-c", str(ROOT / "constraints.txt"),
         str(wheel)],
        check=True,
    )  # fmt: skip

    assert _loaded_extras(python) == []
    absent = subprocess.run(
        [str(python), "-c", "import importlib.util as u, sys; "
         f"print(' '.join(m for m in {EXTRA_MODULES[:6]!r} if u.find_spec(m)))"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert absent.stdout.strip() == ""

    command = subprocess.run(
        [str(venv / "bin" / "plexus"), "status"], capture_output=True, text=True, cwd=tmp_path
    )
    assert command.returncode == script.EXIT_ERROR
    assert command.stdout == ""
    assert command.stderr.count("\n") == 1, command.stderr
    assert "pip install 'plexus-mesh[cli]'" in command.stderr
    assert "Traceback" not in command.stderr


def test_commands_needing_another_extra_name_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    monkeypatch.setattr(script, "find_spec", lambda name: None)
    for extra, what in (("tui", "plexus top"), ("server", "plexus up")):
        with pytest.raises(click.ClickException, match=rf"pip install 'plexus-mesh\[{extra}\]'"):
            script.require_extra(extra, what)
