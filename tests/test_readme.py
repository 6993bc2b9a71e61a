"""The README's SDK example runs as written against a real node."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.harness import Nodes

ROOT = Path(__file__).resolve().parent.parent


def test_readme_sdk_example_runs(nodes: Nodes, tmp_path: Path):
    node = nodes.start("us")
    example = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert example, "README.md has no python example"
    script = tmp_path / "example.py"
    script.write_text(example.group(1).replace("127.0.0.1:7000", node.address))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "orders/us/2" in result.stdout and "orders/eu/1 us" in result.stdout
