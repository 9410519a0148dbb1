"""``edgefleet server``: the parser, and a real server process started and stopped by SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fleet_server import cli
from fleet_server.db import DatabaseError, make_engine, migrate
from tests.conftest import fresh_postgres_database
from tests.utils.net import free_port

ROOT = Path(__file__).resolve().parents[2]
#: The real entry point, as installed: ``edgefleet = "edgefleet.cli:main"``.
LAUNCH = [sys.executable, "-m", "edgefleet", "server"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefleet")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_flags_become_settings() -> None:
    args = _parser().parse_args(
        [
            "server",
            "--data-dir",
            "/srv/ef",
            "--port",
            "9000",
            "--broker-port",
            "1999",
            "--broker-url",
            "mqtt://b:1883",
            "--log-level",
            "debug",
        ]
    )
    assert args.handler is cli.run
    assert cli.settings_overrides(args) == {
        "data_dir": "/srv/ef",
        "port": 9000,
        "embedded_broker_port": 1999,
        "broker_url": "mqtt://b:1883",
        "log_level": "debug",
    }
    assert cli.settings_overrides(_parser().parse_args(["server"])) == {}
    with pytest.raises(SystemExit):
        _parser().parse_args(["server", "--port", "eighty"])


def test_invalid_setting_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["server", "--port", "70000"])
    assert cli.run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgefleet server: invalid setting port") and err.count("\n") == 1


@pytest.mark.integration
def test_server_process_starts_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, broker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [
            *LAUNCH,
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(port),
            "--broker-port",
            str(broker_port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == (
            f"edgefleet server listening on http://127.0.0.1:{port} "
            f"(broker mqtt://127.0.0.1:{broker_port}, "
            f"db sqlite:///{(tmp_path / 'data').resolve()}/edgefleet.db)\n"
        )
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        token_file = tmp_path / "data" / "operator_token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        listed = httpx.get(
            f"{base}/api/v1/devices", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert listed.status_code == 200 and listed.json() == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    lines = [json.loads(raw) for raw in proc.stderr.read().splitlines() if raw.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)
    messages = [entry["msg"] for entry in lines]
    assert "fleet server started" in messages and "fleet server stopped" in messages
    generated = next(e for e in lines if e["msg"] == "generated the operator token")
    assert generated["secret_file"] == str(token_file.resolve())
    assert token not in "".join(json.dumps(e) for e in lines)


@pytest.mark.integration
def test_a_sql_ascii_database_is_one_clear_line(tmp_path: Path) -> None:
    """A PostgreSQL database created with SQL_ASCII: the server exits 3 with one line naming
    the encoding and the fix, and logs no traceback (it crashed in SQLAlchemy's version check)."""
    with fresh_postgres_database(encoding="SQL_ASCII") as url:
        name = url.rsplit("/", 1)[1]
        engine = make_engine(url)
        with pytest.raises(DatabaseError, match="has encoding SQL_ASCII; EdgeFleet needs UTF8"):
            migrate(engine)
        engine.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
        env["PYTHONPATH"] = str(ROOT)
        result = subprocess.run(  # the timeout is the hang guard
            [*LAUNCH, "--data-dir", str(tmp_path), "--port", str(free_port()),
             "--broker-port", str(free_port()), "--database-url", url],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 3 and result.stdout == "", result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"edgefleet server: cannot start: StartupError: PostgreSQL database '{name}' has "
        f"encoding SQL_ASCII; EdgeFleet needs UTF8 (createdb -E UTF8 -T template0 {name})"
    )


@pytest.mark.integration
def test_startup_failure_exits_nonzero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env["PYTHONPATH"] = str(ROOT)
    env["EDGEFLEET_BROKER_CONNECT_TIMEOUT_S"] = "1"
    result = subprocess.run(  # the timeout is the hang guard; no wall-clock bound on a busy host
        [
            *LAUNCH,
            "--data-dir",
            str(tmp_path),
            "--port",
            str(free_port()),
            "--broker-url",
            f"mqtt://127.0.0.1:{free_port()}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3 and result.stdout == ""
    last = result.stderr.splitlines()[-1]
    assert last.startswith("edgefleet server: cannot start: StartupError: no connection to mqtt")
