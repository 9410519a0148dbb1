"""``edgefleet agent enroll`` against a real fleet server (uvicorn, embedded broker, SQLite and
PostgreSQL): the credentials file, its use from the agent config, and every refusal."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from agent import cli
from agent.config import parse_config
from agent.errors import AgentConfigError
from tests.fleet_server.helpers import MqttProbe, with_credentials
from tests.utils.net import free_port
from tests.utils.server import live_server

pytestmark = pytest.mark.integration


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgefleet")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def _config(credentials: Path, broker: str, data_dir: Path, extra: str = "") -> str:
    return (
        f'credentials_file = "{credentials}"\ndata_dir = "{data_dir}"\n{extra}'
        f'[mqtt]\nurl = "{broker}"\n'
    )


def test_enroll_writes_credentials_the_agent_config_uses(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleet_server.client.api import FleetClient

    with live_server(tmp_path, database_url=database_url) as server:
        with FleetClient(server.url, server.token) as client:
            grant = client.create_enrollment_token(
                expires_in_s=600, uses=1, device_class="rpi4", tags=["lab"]
            )
        out = tmp_path / "etc" / "credentials.json"
        argv = ["agent", "enroll", "--server", server.url, "--out", str(out)]
        # "=": a random token may begin with "-", which argparse would take for an option.
        assert run([*argv, f"--enrollment-token={grant['token']}"]) == 0
        printed = capsys.readouterr().out
        assert "enrolled as dev-" in printed and str(out) in printed
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        saved = json.loads(out.read_text())
        assert saved["server_url"] == server.url and saved["device_class"] == "rpi4"
        assert saved["tags"] == ["lab"] and saved["mqtt_username"] == saved["device_id"]

        config = parse_config(_config(out, server.broker_url, tmp_path / "data"))
        assert config.device_id == saved["device_id"] and config.server_url == server.url
        assert config.bearer_token() == saved["token"] and config.device_class == "rpi4"
        assert config.mqtt.username == saved["device_id"]
        assert config.mqtt.password is not None
        assert config.mqtt.password.get_secret_value() == saved["mqtt_password"]
        # The credentials work on the server's broker (it refuses unknown logins).
        probe = MqttProbe(
            with_credentials(server.broker_url, saved["mqtt_username"], saved["mqtt_password"])
        )
        probe.close()

        # The one-use token is spent; the file is not touched by the refused second try.
        before = out.read_bytes()
        again = tmp_path / "second.json"
        assert run([*argv[:-1], str(again), f"--enrollment-token={grant['token']}"]) == 1
        err = capsys.readouterr().err
        assert "refused the enrollment (410)" in err and "used up" in err
        assert not again.exists() and out.read_bytes() == before
        # An existing file is kept unless --force, before any request is made.
        token_file = tmp_path / "enroll-token"
        token_file.write_text("unknown-token\n")
        kept = [*argv, "--enrollment-token-file", str(token_file)]
        assert run(kept) == 1 and "--force" in capsys.readouterr().err
        assert run([*kept, "--force"]) == 1
        assert "(401): unknown enrollment token" in capsys.readouterr().err
        assert out.read_bytes() == before


def test_enroll_refusals_without_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.json"
    down = f"http://127.0.0.1:{free_port()}"
    assert (
        run(["agent", "enroll", "--server", down, "--enrollment-token", "t", "--out", str(out)])
        == 1
    )
    assert "cannot reach the fleet server" in capsys.readouterr().err
    for url in ("ftp://x", "http://user:pw@host", "not a url"):
        code = run(
            ["agent", "enroll", "--server", url, "--enrollment-token", "t", "--out", str(out)]
        )
        assert code == 1
        assert "server URL" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        run(["agent", "enroll", "--server", down, "--out", str(out)])  # no token given


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{}", "not an enrollment credentials file"),
        (b"[]", "not an enrollment credentials file"),
        (b"x" * (70 * 1024), "larger than"),
        (None, "cannot read"),
    ],
)
def test_bad_credentials_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "c.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AgentConfigError, match=message):
        parse_config(_config(path, "mqtt://127.0.0.1:1883", tmp_path / "data"))


def test_config_naming_another_device_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "device_id": "dev-a",
                "server_url": "http://fleet.local:8080",
                "token": "t" * 40,
                "mqtt_username": "dev-a",
                "mqtt_password": "t" * 40,
            }
        )
    )
    config = parse_config(_config(path, "mqtt://127.0.0.1:1883", tmp_path / "d"))
    assert config.device_id == "dev-a" and config.server_url == "http://fleet.local:8080"
    with pytest.raises(AgentConfigError, match="differs from the credentials"):
        parse_config(
            _config(path, "mqtt://127.0.0.1:1883", tmp_path / "d", 'device_id = "dev-b"\n')
        )
