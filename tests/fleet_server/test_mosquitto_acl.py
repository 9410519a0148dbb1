"""``edgefleet server acl``: the generated files, checked by a real private Mosquitto 2.0.

The workflow an operator follows: start Mosquitto with the files (server only), start the
server against it, register devices, generate again and send SIGHUP; then each device is
confined to its own topics by Mosquitto exactly as by the embedded broker.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.contract import Channel, Telemetry, encode, topic
from fleet_server import cli
from fleet_server.acl import AclError, export_mosquitto
from fleet_server.services.mosquitto import (
    ACL_FILE,
    CONF_FILE,
    PASSWORD_FILE,
    SERVER_PASSWORD_FILE,
    MosquittoError,
    acl_lines,
    mosquitto_hash,
    password_lines,
    server_password_lines,
    verify_mosquitto_hash,
)
from fleet_server.settings import ServerSettings
from tests.fleet_server.helpers import (
    MqttProbe,
    make_settings,
    operator,
    running_app,
    unique_id,
    wait_until,
    with_credentials,
)
from tests.utils.net import free_port, wait_for_port

SERVER_USER = "edgefleet.server"


# -- the file formats ---------------------------------------------------------------------------
def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    hashed = mosquitto_hash("secret", salt=b"\x01" * 12)
    assert hashed.startswith("$7$101$" + base64.b64encode(b"\x01" * 12).decode() + "$")
    assert verify_mosquitto_hash("secret", hashed)
    assert not verify_mosquitto_hash("secreT", hashed)
    assert mosquitto_hash("secret") != mosquitto_hash("secret")  # salted
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed")
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "alice", "s3cr:t"], check=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    assert verify_mosquitto_hash("s3cr:t", theirs)  # we read what mosquitto_passwd writes
    assert not verify_mosquitto_hash("s3cr:", theirs)


@pytest.mark.parametrize(
    "hashed",
    ["", "$6$abc$def", "$7$x$a$b", "$7$101$!!$AAAA", "$7$0$AAAA$AAAA", "$7$101$AAAA$", "$7$101"],
)
def test_malformed_hashes_never_verify(hashed: str) -> None:
    assert not verify_mosquitto_hash("anything", hashed)


def test_password_and_acl_lines() -> None:
    text = password_lines(devices=[("dev-1", mosquitto_hash("t")), ("old", None)])
    # The devices' file never holds the server's user: it logs in on its own listener only.
    assert [line.split(":")[0] for line in text.splitlines()] == ["dev-1"]
    [server_line] = server_password_lines(server=(SERVER_USER, "p" * 20)).splitlines()
    assert server_line.split(":")[0] == SERVER_USER
    assert verify_mosquitto_hash("p" * 20, server_line.split(":", 1)[1])
    for bad_user in ("a:b", "a/b", "a+b", "a#", "", "a b", "x" * 65):
        with pytest.raises(MosquittoError):
            server_password_lines(server=(bad_user, "p"))
        with pytest.raises(MosquittoError):
            password_lines(devices=[(bad_user, mosquitto_hash("t"))])
    with pytest.raises(MosquittoError, match="malformed stored MQTT hash"):
        password_lines(devices=[("dev-1", "$7$1$a$b\nroot:x")])
    acl = acl_lines(server_username=SERVER_USER)
    assert acl.splitlines()[1:3] == [f"user {SERVER_USER}", "topic readwrite edgefleet/#"]
    patterns = [line for line in acl.splitlines() if line.startswith("pattern")]
    assert patterns == [
        "pattern write edgefleet/v1/%u/telemetry",
        "pattern write edgefleet/v1/%u/state",
        "pattern write edgefleet/v1/%u/events",
        "pattern write edgefleet/v1/%u/status",
        "pattern write edgefleet/v1/%u/results",
        "pattern read edgefleet/v1/%u/desired",
    ]


def test_acl_command_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    out = tmp_path / "out"
    parser = cli_parser()
    args = parser.parse_args(
        ["server", "acl", "--out", str(out), "--data-dir", str(data), "--listen-port", "1999"]
    )
    assert args.handler(args) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [PASSWORD_FILE, SERVER_PASSWORD_FILE, ACL_FILE, CONF_FILE]
    )
    assert (out / PASSWORD_FILE).stat().st_mode & 0o777 == 0o640
    assert (out / SERVER_PASSWORD_FILE).stat().st_mode & 0o777 == 0o640
    conf = (out / CONF_FILE).read_text()
    assert conf.count("allow_anonymous false") == 2 and "per_listener_settings true" in conf
    # Devices: client id forced to the user name, on their own listener with their own file.
    devices, server = conf.split("listener 1999 0.0.0.0\n")[1].split("listener 1885 127.0.0.1\n")
    assert "\nuse_username_as_clientid true\n" in devices
    assert f"password_file {(out / PASSWORD_FILE).resolve()}\n" in devices
    assert "use_username_as_clientid" not in server
    assert f"password_file {(out / SERVER_PASSWORD_FILE).resolve()}\n" in server
    assert "max_queued_messages 100000" in conf
    # The server's session must survive a broker restart (docs: README, deployment).
    assert "persistence true" in conf and "persistence_location /var/lib/mosquitto/" in conf
    assert "autosave_interval 30" in conf
    # The server's password was generated into the data dir, the one the server will use.
    password = (data / "mqtt_password").read_text().strip()
    [line] = (out / SERVER_PASSWORD_FILE).read_text().splitlines()
    assert verify_mosquitto_hash(password, line.split(":", 1)[1])
    assert (out / PASSWORD_FILE).read_text() == ""
    assert "(0 devices)" in capsys.readouterr().out

    bad = parser.parse_args(["server", "acl", "--out", str(out), "--listen-port", "0"])
    assert bad.handler(bad) == 2
    same = ["--listen-port", "1885", "--data-dir", str(data)]
    bad = parser.parse_args(["server", "acl", "--out", str(out), *same])
    assert bad.handler(bad) == 1
    assert "need different ports" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    args = parser.parse_args(["server", "acl", "--out", str(blocked), "--data-dir", str(data)])
    assert args.handler(args) == 1
    assert "edgefleet server acl:" in capsys.readouterr().err


def test_export_reports_unusable_databases(tmp_path: Path) -> None:
    settings = ServerSettings(
        data_dir=tmp_path,
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/x?connect_timeout=1",
    )
    with pytest.raises(AclError, match="migration failed"):
        export_mosquitto(settings=settings, out=tmp_path / "out")


def cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefleet")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


# -- a real Mosquitto ---------------------------------------------------------------------------
@pytest.fixture
def mosquitto_dir() -> Iterator[Path]:
    """A directory the 'mosquitto' user can read (pytest's tmp_path is mode 700)."""
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto binary not installed")
    path = Path(tempfile.mkdtemp(prefix="edgefleet-acl-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _readable(out: Path) -> None:
    # Mosquitto started as root reads the files as user 'mosquitto' (in production: chgrp it).
    (out / PASSWORD_FILE).chmod(0o644)
    (out / SERVER_PASSWORD_FILE).chmod(0o644)


@pytest.mark.integration
def test_mosquitto_enforces_the_generated_files(tmp_path: Path, mosquitto_dir: Path) -> None:
    port, server_port = free_port(), free_port()
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        broker_url=f"mqtt://127.0.0.1:{server_port}",
    )
    export_mosquitto(
        settings=settings,
        out=mosquitto_dir,
        port=port,
        host="127.0.0.1",
        server_port=server_port,
        persistence_location=mosquitto_dir,  # never the system broker's database
    )
    _readable(mosquitto_dir)
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(mosquitto_dir / CONF_FILE)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    probes: list[MqttProbe] = []
    try:
        wait_for_port("127.0.0.1", port)
        with running_app(settings) as (client, runtime):
            assert runtime.bus is not None and runtime.bus.connected  # the server's credential
            a, b = unique_id("dev-a"), unique_id("dev-b")
            tokens = {}
            for device_id in (a, b):
                created = client.post(
                    "/api/v1/devices", json={"device_id": device_id}, headers=operator()
                )
                tokens[device_id] = created.json()["token"]
            url = f"mqtt://127.0.0.1:{port}"
            assert _refused(with_credentials(url, a, tokens[a])), "not in the file yet"

            files = export_mosquitto(
                settings=settings,
                out=mosquitto_dir,
                port=port,
                server_port=server_port,
                persistence_location=mosquitto_dir,
            )
            assert files.devices == 2 and files.skipped == ()
            _readable(mosquitto_dir)
            broker.send_signal(signal.SIGHUP)  # reloads password_file and acl_file
            wait_until(lambda: not _refused(with_credentials(url, a, tokens[a])), what="reload")

            assert _refused(url)  # anonymous
            assert _refused(with_credentials(url, a, tokens[b]))
            assert _refused(with_credentials(url, "nobody", tokens[a]))
            assert _refused(with_credentials(url, SERVER_USER, tokens[a]))
            # Each listener admits its own users only.
            server_url = f"mqtt://127.0.0.1:{server_port}"
            assert _refused(with_credentials(url, SERVER_USER, _server_password(settings)))
            assert _refused(with_credentials(server_url, a, tokens[a]))

            server = MqttProbe(
                with_credentials(server_url, SERVER_USER, _server_password(settings))
            )
            probes.append(server)
            server.subscribe("edgefleet/#")
            server.publish(topic(a, Channel.DESIRED), b"for-a", retain=True)
            server.publish(topic(b, Channel.DESIRED), b"for-b", retain=True)
            device = MqttProbe(with_credentials(url, a, tokens[a]))
            probes.append(device)
            device.subscribe(topic(b, Channel.DESIRED))
            device.subscribe("edgefleet/#")
            device.subscribe(topic(a, Channel.DESIRED))
            forged = _telemetry(b, 1)
            device.publish(topic(b, Channel.TELEMETRY), forged)
            device.publish(topic(b, Channel.STATUS), b'{"forged": true}', retain=True)
            device.publish(topic(a, Channel.DESIRED), b"self-assigned", retain=True)
            device.publish(topic(a, Channel.TELEMETRY), _telemetry(a, 1))

            wait_until(lambda: bool(server.received(topic(a, Channel.TELEMETRY))), what="own")
            wait_until(lambda: bool(device.received(topic(a, Channel.DESIRED))), what="desired")
            time.sleep(0.5)
            assert server.received(topic(b, Channel.TELEMETRY)) == []
            assert server.received(topic(b, Channel.STATUS)) == []
            assert [m[1] for m in server.received(topic(a, Channel.DESIRED))] == [b"for-a"]
            # Mosquitto grants the wildcard subscriptions and filters each delivery by the read
            # ACL: a's retained desired comes once per matching subscription, b's never.
            assert {(m[0], m[1]) for m in device.messages} == {
                (topic(a, Channel.DESIRED), b"for-a")
            }

            # One connection per device: its client id is its device id, so a second
            # connection of a's would take the first one's place (and its reconnects back).
            probes.remove(device)
            device.close()
            # Last Will: Mosquitto 2.0.11 admits a forged one but never delivers it; a's own
            # will on its own status topic is delivered when its connection drops.
            _drop_with_will(url, a, tokens[a], topic(b, Channel.STATUS))
            _drop_with_will(url, a, tokens[a], topic(a, Channel.STATUS))
            wait_until(lambda: bool(server.received(topic(a, Channel.STATUS))), what="a's will")
            assert server.received(topic(a, Channel.STATUS))[0][1] == b"offline"
            assert server.received(topic(b, Channel.STATUS)) == []

            # The server ingested a's telemetry through Mosquitto, and nothing forged for b.
            wait_until(lambda: runtime.stats.stored >= 1, what="stored")
            rows = client.get(f"/api/v1/devices/{b}/telemetry", headers=operator()).json()
            assert rows == []
            rows = client.get(f"/api/v1/devices/{a}/telemetry", headers=operator()).json()
            assert [r["seq"] for r in rows] == [1]
    finally:
        for probe in probes:
            probe.close()
        broker.terminate()
        broker.wait(10)


def _drop_with_will(url: str, username: str, password: str, will_topic: str) -> None:
    """Connect with a Last Will, then drop the TCP connection as a dying device does."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"will-{unique_id()}")
    client.username_pw_set(username, password)
    client.will_set(will_topic, b"offline", qos=1, retain=True)
    port = int(url.rsplit(":", 1)[1])
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_until(client.is_connected, what="connected with a will")
    client.loop_stop()
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _server_password(settings: ServerSettings) -> str:
    return (settings.data_dir / "mqtt_password").read_text().strip()


def _telemetry(device_id: str, seq: int) -> bytes:
    return encode(
        Telemetry(device_id=device_id, seq=seq, interval_s=1, model=None, inference_count=1)
    )


def _refused(url: str) -> bool:
    from tests.fleet_server.test_mqtt_auth import _connect_result

    return _connect_result(url) != ""
