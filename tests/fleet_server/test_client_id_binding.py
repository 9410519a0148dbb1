"""Issue #11, finding 4: a registered device must not take over a client id that is not its own.

The attack as an intruder with one device's credentials runs it: connect with the server's
client id (resuming its kept session, whose queued messages a device may not read, so the broker
drops them) or with another device's (evicting it), eight times, while a victim device sends
1,500 QoS 1 telemetry messages. Every message the broker acknowledged to the victim must be
stored by the real server, and neither the victim nor the server may be disconnected. Run
against a private Mosquitto started with the files ``edgefleet server acl`` writes, and against
the embedded broker. Before the fix (one listener, ``use_username_as_clientid`` commented out)
the Mosquitto run lost 1,087 of 1,500 acknowledged messages and the victim was kicked off 4
times; on the embedded broker (which already refused taking over a *connected* session) a device
holding the client id another had not used yet locked that one out for good (refused 22 times
in 10 s, and the squatter's kept session outlives its connection).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select
from sqlmodel import Session

from edgefleet.contract import Channel, Telemetry, encode, topic
from edgefleet.mqtt import BrokerAddress
from fleet_server.acl import export_mosquitto
from fleet_server.models.telemetry import TelemetryRow
from fleet_server.runtime import Runtime
from fleet_server.services.mosquitto import PASSWORD_FILE, SERVER_PASSWORD_FILE
from tests.fleet_server.helpers import make_settings, operator, running_app, wait_until
from tests.utils.mosquitto import require_mosquitto
from tests.utils.net import free_port, wait_for_port

pytestmark = pytest.mark.integration

MESSAGES = 1_500
TAKEOVERS = 8


class Victim:
    """A device publishing QoS 1 telemetry: counts acknowledgements and disconnects."""

    def __init__(self, url: str, device_id: str, token: str) -> None:
        self.device_id = device_id
        self.acked = 0
        self.disconnects = 0
        self.refusals: list[str] = []
        self.connected = threading.Event()
        self._lock = threading.Lock()
        address = BrokerAddress.from_url(url)
        # The agent's client id and session (agent/service.py): kept across reconnects.
        self.mqtt = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edgefleet-agent-{device_id}",
            clean_session=False,
        )
        self.mqtt.username_pw_set(device_id, token)
        self.mqtt.reconnect_delay_set(0.05, 0.5)
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = self._on_disconnect
        self.mqtt.on_publish = self._on_publish
        self.mqtt.connect(address.host, address.port, keepalive=30)
        self.mqtt.loop_start()
        assert self.connected.wait(10), f"{device_id} did not connect: {self.refusals}"

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refusals.append(str(reason))
        else:
            self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        with self._lock:
            self.disconnects += 1

    def _on_publish(self, _c: Any, _u: Any, _mid: Any, _reason: Any, _p: Any) -> None:
        with self._lock:
            self.acked += 1

    def send(self, count: int, *, first_seq: int, duration_s: float) -> None:
        for i in range(count):
            payload = encode(
                Telemetry(
                    device_id=self.device_id,
                    seq=first_seq + i,
                    interval_s=1,
                    model=None,
                    inference_count=1,
                )
            )
            info = self.mqtt.publish(topic(self.device_id, Channel.TELEMETRY), payload, qos=1)
            assert info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN), info.rc
            time.sleep(duration_s / count)

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def take_over(
    url: str, device_id: str, token: str, client_id: str, *, hold_s: float, v5: bool = False
) -> str:
    """Connect as ``device_id`` with ``client_id`` (resuming any kept session: MQTT v5 for
    Mosquitto, 3.1.1 for amqtt, which has no v5), stay ``hold_s``, leave; the CONNACK's
    reason ('' when admitted)."""
    address = BrokerAddress.from_url(url)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else False,
    )
    client.username_pw_set(device_id, token)
    answered = threading.Event()
    outcome: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome.append(str(reason) if reason.is_failure else "")
        answered.set()

    client.on_connect = on_connect
    if v5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        client.connect(
            address.host, address.port, clean_start=False, properties=properties, keepalive=30
        )
    else:
        client.connect(address.host, address.port, keepalive=30)
    client.loop_start()
    answered.wait(5)
    time.sleep(hold_s)
    client.disconnect()
    client.loop_stop()
    return outcome[0] if outcome else "no answer"


def register(client: TestClient, device_id: str) -> str:
    response = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def stored(runtime: Runtime, device_id: str) -> int:
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        query = select(func.count()).where(TelemetryRow.device_id == device_id)
        return int(session.exec(query).one()[0])  # type: ignore[call-overload]


def attack_while_sending(
    *, runtime: Runtime, device_url: str, attacker: tuple[str, str], victim: Victim, v5: bool
) -> list[str]:
    """Victim sends MESSAGES over ~4 s while the attacker takes over the server's client id
    and the victim's, TAKEOVERS times in all; returns the CONNACK reasons the attacker got."""
    targets = [runtime.settings.resolved_mqtt_client_id, f"edgefleet-agent-{victim.device_id}"]
    sender = threading.Thread(
        target=victim.send, kwargs={"count": MESSAGES, "first_seq": 1, "duration_s": 4.0}
    )
    sender.start()
    reasons = []
    for i in range(TAKEOVERS):
        reasons.append(take_over(device_url, *attacker, targets[i % 2], hold_s=0.4, v5=v5))
        time.sleep(0.05)
    sender.join()
    wait_until(lambda: victim.acked >= MESSAGES, timeout=30, what="every PUBACK")
    # Everything acknowledged is stored, or the wait times out with what was lost.
    try:
        wait_until(lambda: stored(runtime, victim.device_id) >= victim.acked, timeout=15)
    except AssertionError:
        pass
    return reasons


@pytest.fixture
def mosquitto_dir() -> Iterator[Path]:
    """A directory the 'mosquitto' user can read (pytest's tmp_path is mode 700)."""
    require_mosquitto()
    path = Path(tempfile.mkdtemp(prefix="edgefleet-ids-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _readable(out: Path) -> None:
    (out / PASSWORD_FILE).chmod(0o644)
    (out / SERVER_PASSWORD_FILE).chmod(0o644)


def test_no_device_takes_over_another_client_id_on_the_generated_mosquitto(
    tmp_path: Path, mosquitto_dir: Path
) -> None:
    port, server_port = free_port(), free_port()
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        broker_url=f"mqtt://127.0.0.1:{server_port}",
        # A kept session, as in production: what a takeover would resume and empty.
        mqtt_session_expiry_s=3600,
        mqtt_client_id=f"edgefleet.server-ids-{secrets.token_hex(3)}",
    )
    files: dict[str, Any] = {
        "out": mosquitto_dir,
        "port": port,
        "host": "127.0.0.1",
        "server_port": server_port,
        "persistence_location": mosquitto_dir,  # never the system broker's database
    }
    export_mosquitto(settings=settings, **files)
    _readable(mosquitto_dir)
    broker = subprocess.Popen(
        [require_mosquitto(), "-c", str(mosquitto_dir / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    victim: Victim | None = None
    try:
        wait_for_port("127.0.0.1", port)
        wait_for_port("127.0.0.1", server_port)
        with running_app(settings) as (client, runtime):
            run = secrets.token_hex(3)
            a, b = f"intruder-{run}", f"victim-{run}"
            tokens = {device_id: register(client, device_id) for device_id in (a, b)}
            export_mosquitto(settings=settings, **files)
            _readable(mosquitto_dir)
            broker.send_signal(signal.SIGHUP)
            device_url = f"mqtt://127.0.0.1:{port}"
            wait_until(
                lambda: take_over(device_url, a, tokens[a], f"probe-{run}", hold_s=0) == "",
                what="the reloaded password file",
            )
            victim = Victim(device_url, b, tokens[b])
            reasons = attack_while_sending(
                runtime=runtime,
                device_url=device_url,
                attacker=(a, tokens[a]),
                victim=victim,
                v5=True,
            )
            lost = victim.acked - stored(runtime, b)
            assert reasons == [""] * TAKEOVERS  # admitted, as itself: its client id is "a"
            assert (lost, victim.disconnects) == (0, 0), (
                f"{lost} of {victim.acked} acknowledged messages lost, victim kicked off "
                f"{victim.disconnects} times"
            )
            assert runtime.bus is not None and runtime.bus.connected
    finally:
        if victim is not None:
            victim.close()
        broker.terminate()
        broker.wait(10)


def test_no_device_takes_over_or_squats_a_client_id_on_the_embedded_broker(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    with running_app(settings) as (client, runtime):
        run = secrets.token_hex(3)
        a, b, c = f"intruder-{run}", f"victim-{run}", f"newcomer-{run}"
        tokens = {device_id: register(client, device_id) for device_id in (a, b, c)}
        url = runtime.broker_url
        victim = Victim(url, b, tokens[b])
        try:
            reasons = attack_while_sending(
                runtime=runtime, device_url=url, attacker=(a, tokens[a]), victim=victim, v5=False
            )
            lost = victim.acked - stored(runtime, b)
            assert reasons == [""] * TAKEOVERS
            assert (lost, victim.disconnects) == (0, 0)
        finally:
            victim.close()

        # Squatting: a holds the client id c will use before c ever connects; c must get in.
        squat = threading.Thread(
            target=take_over,
            args=(url, a, tokens[a], f"edgefleet-agent-{c}"),
            kwargs={"hold_s": 3.0},
        )
        squat.start()
        time.sleep(0.5)
        try:
            returning = Victim(url, c, tokens[c])
            returning.send(10, first_seq=1, duration_s=0.1)
            wait_until(lambda: stored(runtime, c) == 10, what="c's messages")
            returning.close()
        finally:
            squat.join()


def test_no_device_can_be_registered_or_enrolled_under_a_server_name(
    app: tuple[TestClient, Runtime],
) -> None:
    client, runtime = app
    settings = runtime.settings
    names = [
        settings.resolved_mqtt_client_id,
        f"{settings.resolved_mqtt_client_id}-w0",
        settings.mqtt_username,
    ]
    for name in names:
        response = client.post("/api/v1/devices", json={"device_id": name}, headers=operator())
        assert response.status_code == 422, (name, response.text)
    grant = client.post(
        "/api/v1/enrollment-tokens", json={"uses": 5, "expires_in_s": 600}, headers=operator()
    )
    assert grant.status_code == 201, grant.text
    for name in names:
        body = {"enrollment_token": grant.json()["token"], "device_id": name}
        response = client.post("/api/v1/enroll", json=body)
        assert response.status_code == 422, (name, response.text)
