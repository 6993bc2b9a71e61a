"""The layers point down: plexus (client) -> node -> federation -> storage, sharing the contract."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The contract every layer may use: generated code and its wire encoding, topic grammar
# (MQTT's mapping onto it included), errors, tokens.
CONTRACT = (
    "plexus.v1",
    "plexus.wire",
    "plexus.topics",
    "plexus.mqtt_topics",
    "plexus.errors",
    "plexus.tokens",
    "plexus",
)
LAYERS = ["plexus", "node", "federation", "storage"]
# What each layer may import from the project, besides itself and the contract.
ALLOWED = {
    "plexus": set(),
    "node": {"federation", "storage"},
    "federation": {"storage"},
    "storage": set(),
}


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in LAYERS}


def is_contract(module: str) -> bool:
    return module in CONTRACT or module.startswith("plexus.v1.")


def test_imports_only_point_down_the_layers():
    wrong = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            for module in project_imports(path):
                top = module.split(".")[0]
                if top == layer and not (layer != "plexus" and is_contract(module)):
                    continue
                if is_contract(module) or top in ALLOWED[layer]:
                    continue
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_client_side_never_imports_the_server_packages():
    for path in (ROOT / "plexus").rglob("*.py"):
        for module in project_imports(path):
            assert module.split(".")[0] == "plexus", f"{path} imports {module}"
