"""The committed gRPC code is what `make proto` makes from proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted((ROOT / "proto/plexus/v1").glob("*.proto"))


def test_generated_code_matches_the_proto_sources(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *map(str, PROTOS),
        ],
        check=True,
    )
    suffixes = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    for name in [f"{proto.stem}{suffix}" for proto in PROTOS for suffix in suffixes]:
        fresh = (tmp_path / "plexus/v1" / name).read_text()
        committed = (ROOT / "plexus/v1" / name).read_text()
        assert fresh == committed, f"plexus/v1/{name} is stale: run `make proto` and commit"
