"""Factories for fleet server tests: a running app, hostile bundles, an MQTT test client."""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from fleet_server.app import create_app
from fleet_server.runtime import Runtime
from fleet_server.settings import ServerSettings
from tests.utils.brokers import mqtt_version_for
from tests.utils.net import free_port

OPERATOR_TOKEN = "operator-token-for-tests-0123456789"  # noqa: S105 - test-only token


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "operator_token": OPERATOR_TOKEN,
        "embedded_broker_port": free_port(),
        "mqtt_client_id": f"edgefleet.server-test-{secrets.token_hex(4)}",
        # A random client id is never resumed: no kept session (a clean start) unless a
        # test asks for one, so none is left behind on a shared broker.
        "mqtt_session_expiry_s": 0,
        "public_url": "http://fleet.test:8080",
        "ingest_batch_interval_s": 0.05,
    }
    values.update(mqtt_version_for(overrides.get("broker_url")))
    values.update(overrides)
    return ServerSettings(**values)


@contextmanager
def running_app(settings: ServerSettings) -> Iterator[tuple[TestClient, Runtime]]:
    app = create_app(settings)
    with TestClient(app) as client:
        runtime = app.state.runtime
        assert isinstance(runtime, Runtime)
        yield client, runtime


def server_mqtt_url(runtime: Runtime) -> str:
    """The running server's broker URL with the server's own MQTT credential in it."""
    assert runtime.mqtt_credential is not None
    return with_credentials(
        runtime.broker_url, runtime.mqtt_credential.username, runtime.mqtt_credential.password
    )


def device_mqtt_url(runtime: Runtime, device_id: str, token: str) -> str:
    """The broker URL a device uses: user name = device id, password = its token."""
    return with_credentials(runtime.broker_url, device_id, token)


def with_credentials(url: str, username: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def operator() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique_id(prefix: str = "dev") -> str:
    """Device ids unique per test: an external broker keeps retained messages across tests."""
    return f"{prefix}-{secrets.token_hex(4)}"


def upload(
    client: TestClient, bundle: bytes | Path, *, headers: dict[str, str] | None = None
) -> Any:
    data = bundle.read_bytes() if isinstance(bundle, Path) else bundle
    files = {"bundle": ("model.tar.gz", data, "application/gzip")}
    return client.post("/api/v1/models", files=files, headers=headers or operator())


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def file_member(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def rebundle(
    artifact_dir: Path,
    *,
    extra: list[tuple[tarfile.TarInfo, bytes | None]],
    manifest: bytes | None = None,
) -> bytes:
    """The artifact's files plus ``extra`` members (hostile ones), optionally a new manifest."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (file_member("manifest.json"), manifest or (artifact_dir / "manifest.json").read_bytes())
    ]
    for path in sorted(p for p in artifact_dir.iterdir() if p.name != "manifest.json"):
        members.append((file_member(path.name), path.read_bytes()))
    return tar_gz(members + extra)


def manifest_of(artifact_dir: Path) -> dict[str, Any]:
    data = json.loads((artifact_dir / "manifest.json").read_text())
    assert isinstance(data, dict)
    return data


def wait_until(
    check: Callable[[], bool],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    every: float = 0.02,
) -> None:
    """Poll ``check`` every ``every`` seconds (slower for checks that call the server's API)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class MqttProbe:
    """A separate paho client: publishes like a device and records what it receives.

    ``url`` may carry ``user:password@`` (see :func:`server_mqtt_url`, :func:`device_mqtt_url`).
    """

    def __init__(self, url: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edgefleet.mqtt import BrokerAddress

        address = BrokerAddress.from_url(url)
        self.messages: list[tuple[str, bytes, bool, int]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"probe-{secrets.token_hex(4)}"
        )
        self._client.on_message = self._on_message
        if address.username is not None:
            self._client.username_pw_set(address.username, address.password)
        self._client.connect(address.host, address.port)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))

    def subscribe(self, topic_filter: str) -> None:
        result, _ = self._client.subscribe(topic_filter, qos=1)
        assert result == 0

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def received(self, topic: str) -> list[tuple[str, bytes, bool, int]]:
        with self._lock:
            return [m for m in self.messages if m[0] == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextmanager
def migrated_engine(
    database_url: str, devices: tuple[str, ...], created_at: datetime
) -> Iterator[Engine]:
    """An engine on a migrated database holding ``devices`` (for tests that write telemetry
    rows directly, as ingest would)."""
    from sqlalchemy import insert
    from sqlmodel import SQLModel

    from fleet_server.db import make_engine, migrate

    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            for device in devices:
                conn.execute(
                    insert(SQLModel.metadata.tables["device"]).values(
                        device_id=device,
                        token_hash=f"hash-{device}",
                        tags=[],
                        created_at=created_at,
                        online=False,
                        desired_revision=0,
                    )
                )
        yield engine
    finally:
        engine.dispose()


def publish_telemetry(
    url: str,
    devices: list[str],
    per_device: int,
    *,
    inflight: int = 200,
    login: tuple[str, str] | None = None,
) -> None:
    """Telemetry seq 1..``per_device`` for each device, QoS 1, from one paho client; returns
    once the broker has acknowledged every message. ``login``: (user name, password), which is
    also the client id (a device's own login, as a broker that binds client ids wants it)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edgefleet.contract import Channel, Telemetry, encode, topic
    from edgefleet.mqtt import BrokerAddress

    model = {"name": "digits", "version": "1.0.0"}
    address = BrokerAddress.from_url(url)
    client_id = login[0] if login else f"pub-{secrets.token_hex(4)}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if login is not None:
        client.username_pw_set(*login)
    client.max_inflight_messages_set(inflight)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        infos = []
        for seq in range(1, per_device + 1):
            for device in devices:
                message = Telemetry(
                    device_id=device, seq=seq, interval_s=1, model=model, inference_count=seq
                )
                infos.append(client.publish(topic(device, Channel.TELEMETRY), encode(message), 1))
        for info in infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def connack(
    host: str,
    port: int,
    login: tuple[str, str] | None,
    *,
    client_id: str | None = None,
    source: str = "127.0.0.1",
    timeout: float = 5.0,
) -> str:
    """The broker's CONNACK reason ("Success" when admitted) for one MQTT login ``(user name,
    password)`` or an anonymous one, from ``source``; then the connection is closed."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{secrets.token_hex(4)}"
    )
    if login is not None:
        client.username_pw_set(*login)
    codes: list[str] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(str(reason))
    client.connect(host, port, keepalive=10, bind_address=source)
    deadline = time.monotonic() + timeout
    while not codes and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    assert codes, f"no CONNACK for {login[0] if login else 'an anonymous login'} from {source}"
    return codes[0]
