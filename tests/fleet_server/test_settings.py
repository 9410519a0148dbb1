"""Settings: defaults, environment, validation; no I/O when built."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet_server.settings import ServerSettings


def test_defaults_do_no_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = ServerSettings()
    assert settings.broker_url is None and settings.embedded_broker_port == 1884
    assert settings.port == 8080 and settings.max_bundle_bytes == 256 * 1024 * 1024
    assert settings.resolved_public_url == "http://127.0.0.1:8080"
    assert settings.resolved_database_url == (
        f"sqlite:///{(tmp_path / 'edgefleet-data').resolve()}/edgefleet.db"
    )
    assert settings.artifact_root == Path("edgefleet-data") / "artifacts"
    assert settings.resolved_mqtt_client_id.startswith("edgefleet-server-")
    # Stable across restarts (the broker keeps the server's session), unique per host + port.
    assert settings.resolved_mqtt_client_id.endswith(f"-{settings.port}")
    assert list(tmp_path.iterdir()) == []


def test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EDGEFLEET_HOST", "0.0.0.0")
    monkeypatch.setenv("EDGEFLEET_PORT", "9000")
    monkeypatch.setenv("EDGEFLEET_OPERATOR_TOKEN", "x" * 20)
    monkeypatch.setenv("EDGEFLEET_TRUSTED_KEYS", "a.pem, b.pem")
    monkeypatch.setenv("EDGEFLEET_MAX_BUNDLE_BYTES", "1000")
    settings = ServerSettings()
    assert settings.data_dir == tmp_path and settings.port == 9000
    assert settings.resolved_public_url == "http://127.0.0.1:9000"
    assert settings.trusted_keys == [Path("a.pem"), Path("b.pem")]
    assert settings.operator_token is not None
    assert "xxxx" not in repr(settings)
    monkeypatch.setenv("EDGEFLEET_TRUSTED_KEYS", '["c.pem"]')
    assert ServerSettings().trusted_keys == [Path("c.pem")]
    # Flags (init values) win over the environment.
    assert ServerSettings(port=9100).port == 9100


@pytest.mark.parametrize(
    "values",
    [
        {"port": 70000},
        {"max_bundle_bytes": 0},
        {"operator_token": "short"},
        {"require_signed": True},
        {"ingest_batch_size": 0},
        {"log_level": "loud"},
        {"no_such_setting": 1},
        {"artifact_store": {"kind": "s3"}},
    ],
)
def test_invalid_settings(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ServerSettings(**values)  # type: ignore[arg-type]


def test_public_url_override() -> None:
    settings = ServerSettings(public_url="https://fleet.example.com/", port=1)
    assert settings.resolved_public_url == "https://fleet.example.com"
