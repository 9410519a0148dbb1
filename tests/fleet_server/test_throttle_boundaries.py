"""One owner for credential-guessing throttles: the table, the policies and the /metrics shape
live in ``fleet_server/services/throttle/``; the two doors (HTTP, the embedded broker) only say
which keys a credential charges and who passes. Before the merge each door had its own bounded
OrderedDict, clock arithmetic and prometheus families; these tests keep it from growing back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "fleet_server" / "services" / "throttle"
DOORS = [CORE / "http.py", ROOT / "fleet_server" / "broker" / "throttle.py"]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_doors_keep_no_table_or_metric_families_of_their_own() -> None:
    for door in DOORS:
        own = {
            name
            for name in _imports(door)
            if name.startswith(("prometheus_client", "collections.OrderedDict"))
        }
        assert own == set(), (door.name, own)


def test_the_core_is_a_leaf_the_broker_can_import() -> None:
    outside = {
        f"{path.name}: {name}"
        for path in CORE.glob("*.py")
        for name in _imports(path)
        if name.startswith("fleet_server") and not name.startswith("fleet_server.services.throttle")
    }
    assert outside == set()
    code = (
        "import sys, fleet_server.broker.throttle; "
        "print(sorted(m for m in sys.modules if m.startswith(('fleet_server.api', "
        "'fleet_server.runtime', 'fleet_server.db', 'sqlmodel', 'fastapi'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
