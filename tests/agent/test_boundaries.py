"""The agent ships alone to a device: it imports no other part and nothing heavy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "fleet_server",
    "converters",
    "fastapi",
    "sqlmodel",
    "sqlalchemy",
    "tensorflow",
    "torch",
    "sklearn",
    "onnx",
    "amqtt",
    "httpx",
}


def test_no_forbidden_imports_in_source() -> None:
    offenders = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_runtime_is_imported_only_when_a_model_loads() -> None:
    code = (
        "import sys, agent.service, agent.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(FORBIDDEN | {'onnxruntime', 'ai_edge_litert'})!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
