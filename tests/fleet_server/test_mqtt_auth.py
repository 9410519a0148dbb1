"""MQTT identities end to end: devices log in with id + token (checked against the database),
the server with its own credential, and the embedded broker confines each device to its topics.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError
from sqlmodel import Session

from edgefleet.contract import Channel, DesiredState, Telemetry, encode, topic
from fleet_server.acl import export_mosquitto
from fleet_server.broker import Identity
from fleet_server.db import make_engine, migrate
from fleet_server.models import Device
from fleet_server.runtime import Runtime
from fleet_server.runtime.mqtt import without_credentials
from fleet_server.services.mosquitto import verify_mosquitto_hash
from fleet_server.services.mqtt_auth import (
    MQTT_PASSWORD_FILE,
    DatabaseAuthenticator,
    MqttCredential,
    resolve_server_credential,
)
from fleet_server.settings import ServerSettings
from tests.fleet_server.helpers import (
    MqttProbe,
    bearer,
    device_mqtt_url,
    make_settings,
    operator,
    running_app,
    server_mqtt_url,
    unique_id,
    upload,
    wait_until,
)

pytestmark = pytest.mark.integration


def _register(client: TestClient, device_id: str) -> str:
    response = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert isinstance(token, str)
    return token


def _connect_result(url: str, *, client_id: str | None = None) -> str:
    """'' when the broker admits a client with the URL's credentials, else the refusal."""
    from edgefleet.mqtt import BrokerAddress

    address = BrokerAddress.from_url(url)
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id or f"try-{secrets.token_hex(3)}"
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    outcome: list[str] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(
        str(reason) if reason.is_failure else ""
    )
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.02)
        assert outcome, f"no CONNACK from {address.url}"
        return outcome[0]
    finally:
        client.disconnect()
        client.loop_stop()


def _telemetry(device_id: str, seq: int) -> bytes:
    return encode(
        Telemetry(device_id=device_id, seq=seq, interval_s=1, model=None, inference_count=seq)
    )


def test_devices_log_in_with_id_and_token_and_stay_in_their_lane(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, runtime = app
    a, b = unique_id("dev-a"), unique_id("dev-b")
    token_a, token_b = _register(client, a), _register(client, b)

    assert _connect_result(runtime.broker_url) != ""  # anonymous
    assert _connect_result(device_mqtt_url(runtime, a, token_b)) != ""
    assert _connect_result(device_mqtt_url(runtime, a, "x" * 43)) != ""
    assert _connect_result(device_mqtt_url(runtime, "nobody", token_a)) != ""
    assert _connect_result(device_mqtt_url(runtime, a, runtime.operator_token)) != ""
    assert _connect_result(device_mqtt_url(runtime, a, token_a)) == ""

    watcher = MqttProbe(server_mqtt_url(runtime))
    device = MqttProbe(device_mqtt_url(runtime, a, token_a))
    try:
        watcher.subscribe("edgefleet/#")
        time.sleep(0.2)
        device.publish(topic(b, Channel.TELEMETRY), _telemetry(b, 1))  # forged: dropped
        device.publish(topic(a, Channel.TELEMETRY), _telemetry(a, 1))
        wait_until(lambda: bool(watcher.received(topic(a, Channel.TELEMETRY))), what="a's own")
        assert watcher.received(topic(b, Channel.TELEMETRY)) == []

        # a receives its own desired state (published by the server bus), never b's.
        assert upload(client, digits_bundle).status_code == 201
        device.subscribe(topic(a, Channel.DESIRED))
        device.subscribe(topic(b, Channel.DESIRED))
        response = client.post(
            "/api/v1/assignments",
            json={"model": "digits", "version": "1.0.0", "device_ids": [a, b]},
            headers=operator(),
        )
        assert response.status_code == 200, response.text
        wait_until(lambda: bool(device.received(topic(a, Channel.DESIRED))), what="desired")
        state = DesiredState.model_validate_json(device.received(topic(a, Channel.DESIRED))[0][1])
        assert state.device_id == a
        time.sleep(0.3)
        assert device.received(topic(b, Channel.DESIRED)) == []
    finally:
        device.close()
        watcher.close()

    wait_until(lambda: runtime.stats.stored >= 1, what="telemetry stored")
    rows_a = client.get(f"/api/v1/devices/{a}/telemetry", headers=operator()).json()
    rows_b = client.get(f"/api/v1/devices/{b}/telemetry", headers=operator()).json()
    assert [r["seq"] for r in rows_a] == [1] and rows_b == []


def test_server_credential_is_generated_once_into_the_data_dir(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    with running_app(settings) as (_client, runtime):
        assert runtime.mqtt_credential is not None
        first = runtime.mqtt_credential
        assert first.username == "edgefleet.server" and len(first.password) >= 32
        assert "***" in repr(first) and first.password not in repr(first)
        assert _connect_result(server_mqtt_url(runtime)) == ""
    path = settings.data_dir / MQTT_PASSWORD_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().strip() == first.password
    assert resolve_server_credential(settings=settings) == first


def test_auth_can_be_switched_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", mqtt_auth=False)
    with running_app(settings) as (_client, runtime):
        assert runtime.broker is not None and not runtime.broker.requires_auth
        assert _connect_result(runtime.broker_url) == ""
        assert runtime.bus is not None and runtime.bus.connected


def test_credential_sources() -> None:
    configured = ServerSettings(
        data_dir=Path("/nonexistent"), mqtt_username="Fleet", mqtt_password="p" * 20
    )
    assert resolve_server_credential(settings=configured) == MqttCredential("Fleet", "p" * 20)
    in_url = configured.model_copy(update={"broker_url": "mqtt://srv%40x:s%3Acret@h:1883"})
    assert resolve_server_credential(settings=in_url) == MqttCredential("srv@x", "s:cret")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mqtt_username": "dev-1"}, "must not be a valid device id"),
        ({"mqtt_username": "server:x"}, "letters, digits"),
        ({"mqtt_username": "srv/#"}, "letters, digits"),
        ({"mqtt_username": ""}, "at least 1"),
        ({"mqtt_password": "short"}, "at least 16"),
    ],
)
def test_bad_mqtt_settings_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ServerSettings(**fields)  # type: ignore[arg-type]


def test_database_authenticator(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url)
    with running_app(settings) as (client, runtime):
        device_id = unique_id()
        token = _register(client, device_id)
    engine = make_engine(database_url)
    try:
        migrate(engine)
        server = MqttCredential("edgefleet.server", "s" * 32)
        auth = DatabaseAuthenticator(engine=engine, server=server)
        assert auth.authenticate(username="edgefleet.server", password="s" * 32) == (
            Identity.server("edgefleet.server")
        )
        assert auth.authenticate(username=device_id, password=token) == Identity.device(device_id)
        for username, password in [
            ("edgefleet.server", "s" * 31),
            ("edgefleet.server", ""),
            (device_id, ""),
            (device_id, token + "x"),
            (device_id.upper(), token),
            ("", token),
            ("x" * 10_000, token),
            (device_id, "\x00" * 300),
            ("' OR 1=1 --", token),
            ("nobody", token),
        ]:
            assert auth.authenticate(username=username, password=password) is None, username
        assert runtime.operator_token
    finally:
        engine.dispose()


def test_database_errors_refuse(tmp_path: Path) -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    try:
        auth = DatabaseAuthenticator(engine=engine, server=MqttCredential("srv.x", "p" * 20))
        assert auth.authenticate(username="dev-1", password="t" * 43) is None
        assert auth.authenticate(username="srv.x", password="p" * 20) == Identity.server("srv.x")
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("mqtt://srv:secret@broker:1883", "mqtt://broker:1883"),
        ("mqtts://a%40b:p%3Aw@[::1]:8883", "mqtts://[::1]:8883"),
        ("mqtt://broker:1883", "mqtt://broker:1883"),
        ("mqtt://user@broker", "mqtt://broker"),
    ],
)
def test_broker_urls_are_logged_without_credentials(url: str, safe: str) -> None:
    assert without_credentials(url) == safe


def test_token_rotation_replaces_both_hashes(
    app: tuple[TestClient, Runtime], tmp_path: Path
) -> None:
    client, runtime = app
    device_id = unique_id()
    old = _register(client, device_id)
    assert runtime.engine is not None
    with Session(runtime.engine) as session:  # as if registered before migration 0002
        device = session.get(Device, device_id)
        assert device is not None
        device.mqtt_password_hash = None
        session.add(device)
        session.commit()
    files = export_mosquitto(settings=runtime.settings, out=tmp_path / "before")
    assert files.skipped == (device_id,) and files.devices == 0

    path = f"/api/v1/devices/{device_id}/token"
    assert client.post(path, headers=bearer(old)).status_code == 401  # operators only
    assert client.post(path).status_code == 401
    assert client.post("/api/v1/devices/nobody/token", headers=operator()).status_code == 404
    rotated = client.post(path, headers=operator())
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["token"]
    assert new != old and rotated.json()["device_id"] == device_id

    assert _connect_result(device_mqtt_url(runtime, device_id, old)) != ""
    assert _connect_result(device_mqtt_url(runtime, device_id, new)) == ""
    assert client.get("/api/v1/models/x/1/bundle", headers=bearer(old)).status_code == 401
    assert client.get("/api/v1/models/x/1/bundle", headers=bearer(new)).status_code == 404
    files = export_mosquitto(settings=runtime.settings, out=tmp_path / "after")
    assert files.skipped == () and files.devices == 1
    [line] = files.password_file.read_text().splitlines()
    assert line.startswith(f"{device_id}:")
    assert verify_mosquitto_hash(new, line.split(":", 1)[1])
    assert not verify_mosquitto_hash(old, line.split(":", 1)[1])
