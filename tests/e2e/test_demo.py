"""The walking skeleton end to end: ``edgefleet demo`` with real server and agent processes.

Once on the embedded defaults (SQLite + in-process broker, exactly what ``make demo`` runs) and
once on the scale-out settings (PostgreSQL + Mosquitto): the same code path, other URLs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import external_mqtt_url, fresh_postgres_database

ROOT = Path(__file__).resolve().parents[2]


def _demo(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "edgefleet", "demo", "--duration", "60", "--devices", "3",
            "--telemetry-interval", "1", "--data-dir", str(tmp_path / "demo"), *extra]  # fmt: skip
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240)


def _check(result: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted((tmp_path / "demo" / "logs").glob("*.log"))
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:] + logs
    out = result.stdout
    assert "every device reported telemetry for the new version" in out
    devices = set(re.findall(r"^(demo-[0-9a-f]{4}-\d)\s", out, flags=re.M))
    assert len(devices) == 3, out[-3000:]
    assert "rollout completed" in out and "stage_passed" in out, out[-3000:]
    # The last table shows each device online, serving digits@2.0.0 with inferences counted.
    last_table = out.rsplit("[demo] t+", 1)[1]
    for device in devices:
        row = next(line for line in last_table.splitlines() if line.startswith(device))
        assert "yes" in row and "digits@2.0.0" in row, row


@pytest.mark.integration
@pytest.mark.slow
def test_demo_on_embedded_defaults(tmp_path: Path) -> None:
    _check(_demo(tmp_path), tmp_path)


@pytest.mark.integration
@pytest.mark.slow
def test_demo_on_postgresql_and_mosquitto(tmp_path: Path) -> None:
    broker = external_mqtt_url()
    with fresh_postgres_database() as database:
        result = _demo(tmp_path, "--database-url", database, "--broker-url", broker)
    _check(result, tmp_path)
