"""Settings: defaults, environment, validation; no I/O when built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet_server.settings import ServerSettings
from fleet_server.storage.config import LocalStoreConfig, S3StoreConfig


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
    assert settings.resolved_mqtt_client_id.startswith("edgefleet.server.")
    # Stable across restarts (the broker keeps the server's session), unique per host + port.
    assert settings.resolved_mqtt_client_id.endswith(f".{settings.port}")
    # Never a device id: a device's client id is its device id (finding 4 of issue #11).
    assert not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", settings.resolved_mqtt_client_id)
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
        {"ingest_pg_statements": "copy"},
        {"ingest_pg_statements": ""},
        {"log_level": "loud"},
        {"no_such_setting": 1},
        {"artifact_store": {"kind": "s3"}},
        # A valid device id: a device registered under it would take over the server's session.
        {"mqtt_client_id": "edgefleet-server-host-8080"},
        {"mqtt_client_id": "fleet server"},
        # Dynamic security manages an external Mosquitto only.
        {"broker_dynsec": True},
        {"broker_http_auth_sources": ["not-an-address"]},
        {"broker_dynsec_timeout_s": 0},
    ],
)
def test_invalid_settings(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ServerSettings(**values)  # type: ignore[arg-type]


def test_ingest_pg_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerSettings().ingest_pg_statements == "arrays"
    monkeypatch.setenv("EDGEFLEET_INGEST_PG_STATEMENTS", "executemany")
    assert ServerSettings().ingest_pg_statements == "executemany"


def test_public_url_override() -> None:
    settings = ServerSettings(public_url="https://fleet.example.com/", port=1)
    assert settings.resolved_public_url == "https://fleet.example.com"


def test_s3_store_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "EDGEFLEET_ARTIFACT_STORE",
        '{"kind": "s3", "bucket": "fleet-bundles", "prefix": "prod", '
        '"endpoint_url": "http://minio.local:9000/", "addressing_style": "path"}',
    )
    store = ServerSettings().artifact_store
    assert isinstance(store, S3StoreConfig)
    assert (store.bucket, store.prefix, store.endpoint_url) == (
        "fleet-bundles",
        "prod/",
        "http://minio.local:9000",
    )
    assert store.access_key_id is None  # boto3's chain: AWS_ACCESS_KEY_ID, ~/.aws, a role
    assert store.multipart_threshold_bytes == 64 * 1024 * 1024
    explicit = S3StoreConfig(
        kind="s3",
        bucket="b-1",
        access_key_id="AKIAEXAMPLE",
        secret_access_key="s3cr3t-value",  # noqa: S106
    )
    assert "s3cr3t" not in repr(explicit) and "AKIAEXAMPLE" not in repr(explicit)
    # The local store stays the default.
    monkeypatch.delenv("EDGEFLEET_ARTIFACT_STORE")
    assert isinstance(ServerSettings().artifact_store, LocalStoreConfig)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bucket": "ab"}, "bucket must be"),
        ({"bucket": "Upper-Case"}, "bucket must be"),
        ({"bucket": "-starts-with-dash"}, "bucket must be"),
        ({"bucket": "has..dots"}, "bucket must be"),
        ({"bucket": "192.168.1.10"}, "bucket must be"),
        ({"bucket": "x" * 64}, "bucket must be"),
        ({"bucket": "b-1", "prefix": "../escape"}, "'..'"),
        ({"bucket": "b-1", "prefix": "a/../b"}, "'..'"),
        ({"bucket": "b-1", "prefix": "/abs"}, "must not start"),
        ({"bucket": "b-1", "prefix": "a//b"}, "must not start"),
        ({"bucket": "b-1", "prefix": "sp ace"}, "prefix may use"),
        ({"bucket": "b-1", "endpoint_url": "ftp://host"}, "http"),
        ({"bucket": "b-1", "endpoint_url": "http://key:secret@host"}, "credentials"),
        ({"bucket": "b-1", "access_key_id": "only-the-id"}, "together"),
        ({"bucket": "b-1", "multipart_threshold_bytes": 1024}, "greater than or equal"),
        ({"bucket": "b-1", "region": "EU West"}, "pattern"),
        ({"bucket": "b-1", "root": "/tmp"}, "Extra inputs"),
        ({"bucket": "b-1", "addressing_style": "other"}, "path"),
    ],
)
def test_invalid_s3_store(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        ServerSettings(artifact_store={"kind": "s3", **values})  # type: ignore[arg-type]
    # What `edgefleet server` prints: the location and message, never the value.
    first = err.value.errors()[0]
    assert first["loc"][0] == "artifact_store" and message in first["msg"]
    assert ":secret@" not in first["msg"]
