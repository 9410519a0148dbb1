"""The plugin's file and commands without a running server: what the initial file grants,
malformed stored hashes, the registry's choice, and how the admin client fails (one line)
against a Mosquitto without the plugin, with a wrong admin password, or with a plugin error."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.contract import CHANNELS, Channel, topic
from edgefleet.mqtt_tls import TlsFiles
from fleet_server import cli
from fleet_server.services.broker_credentials import CredentialsError
from fleet_server.services.broker_credentials.dynsec import DynsecClient, DynsecCredentials
from fleet_server.services.broker_credentials.dynsec_config import (
    PLUGIN_PATH,
    SERVER_ROLE,
    device_acls,
    device_role,
    initial_config,
    initial_json,
    split_hash,
)
from fleet_server.services.broker_credentials.registry import (
    CREDENTIALS,
    CredentialsContext,
    create_credentials,
    credentials_kind,
)
from fleet_server.services.mosquitto import mosquitto_hash, verify_mosquitto_hash
from tests.fleet_server.helpers import wait_until
from tests.utils.mosquitto import PrivateMosquitto
from tests.utils.required import missing

SERVER = ("edgefleet.server", "server-password-0123456789")
#: Passwords and tokens the tests make up (never real ones).
FAKE = [f"made-up-secret-{i}" for i in range(4)]


def test_device_acls_are_the_static_rule() -> None:
    acls = device_acls("pi-1")
    sends = {a["topic"] for a in acls if a["acltype"] == "publishClientSend"}
    assert sends == {topic("pi-1", c) for c, spec in CHANNELS.items() if spec.from_device}
    assert topic("pi-1", Channel.DESIRED) not in sends
    for kind in ("subscribeLiteral", "publishClientReceive"):
        assert {a["topic"] for a in acls if a["acltype"] == kind} == {
            topic("pi-1", Channel.DESIRED)
        }
    assert all(a["allow"] is True and "#" not in a["topic"] for a in acls)
    with pytest.raises(ValueError, match="device"):  # a topic level only (the contract)
        device_acls("a/b")


def test_initial_file_holds_the_server_and_registered_devices() -> None:
    hashed = mosquitto_hash("token-1")
    config = initial_config(server=SERVER, devices=[("pi-1", hashed), ("old", None)])
    clients = {c["username"]: c for c in config["clients"]}
    assert set(clients) == {SERVER[0], "pi-1"}  # "old" has no stored hash yet
    device = clients["pi-1"]
    assert device["clientid"] == "pi-1" and device["roles"] == [{"rolename": device_role("pi-1")}]
    # The plugin's fields are the stored hash's parts: the same PBKDF2-SHA512.
    rebuilt = f"$7${device['iterations']}${device['salt']}${device['password']}"
    assert rebuilt == hashed and verify_mosquitto_hash("token-1", rebuilt)
    server = clients[SERVER[0]]
    assert "clientid" not in server and server["roles"] == [{"rolename": SERVER_ROLE}]
    server_hash = f"$7${server['iterations']}${server['salt']}${server['password']}"
    assert verify_mosquitto_hash(SERVER[1], server_hash)
    assert config["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    assert json.loads(initial_json(server=SERVER, devices=[]))["roles"][0]["rolename"] == (
        SERVER_ROLE
    )


@pytest.mark.parametrize("hashed", ["", "plain", "$6$1$a$b", "$7$x$a$b", "$7$101$a", "a$7$1$b$c"])
def test_malformed_stored_hashes_are_refused(hashed: str) -> None:
    with pytest.raises(CredentialsError, match="malformed"):
        split_hash(hashed)
    with pytest.raises(CredentialsError):
        initial_config(server=SERVER, devices=[("pi-1", hashed)])


def test_registry_picks_one() -> None:
    assert set(CREDENTIALS) == {"static", "dynsec", "embedded"}
    assert credentials_kind(dynsec=False, external=True) == "static"
    assert credentials_kind(dynsec=False, external=False) == "embedded"
    assert credentials_kind(dynsec=True, external=True) == "dynsec"
    with pytest.raises(CredentialsError, match="external Mosquitto"):
        credentials_kind(dynsec=True, external=False)
    context = CredentialsContext(
        broker_url="mqtt://127.0.0.1:1", username="u", password=FAKE[0], client_id="c", timeout_s=1
    )
    with pytest.raises(CredentialsError, match="unknown broker credentials 'emqx'"):
        create_credentials("emqx", context)
    with pytest.raises(CredentialsError, match="need the embedded broker"):
        create_credentials("embedded", context)
    static = create_credentials("static", context)
    assert static.kind == "static" and static.remove(device_id="x") == "on_export"
    with pytest.raises(CredentialsError, match="dynamic security: .*ca_file"):
        DynsecClient(
            broker_url="mqtts://127.0.0.1:1",
            username="u",
            password=FAKE[0],
            client_id="c",
            tls=TlsFiles(ca_file=str(Path("/nonexistent/ca.pem"))),
        )
    with pytest.raises(CredentialsError, match="mqtt"):
        DynsecClient(broker_url="http://x:1", username="u", password=FAKE[0], client_id="c")


@pytest.fixture
def plugin_broker() -> Iterator[PrivateMosquitto]:
    """A private Mosquitto with the plugin and an initial file holding only the server."""
    if not PLUGIN_PATH.exists():
        missing(f"the dynamic-security plugin {PLUGIN_PATH} is not installed")
    directory = Path(tempfile.mkdtemp(prefix="edgefleet-dynsec-"))
    directory.chmod(0o777)
    config = directory / "dynamic-security.json"
    config.write_text(initial_json(server=SERVER, devices=[]))
    config.chmod(0o666)
    broker = PrivateMosquitto(
        directory,
        extra=f"plugin {PLUGIN_PATH}\nplugin_opt_config_file {config}\n",
    )
    broker.conf.write_text(
        broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.integration
def test_admin_client_failures_are_one_line(plugin_broker: PrivateMosquitto) -> None:
    wrong = DynsecClient(
        broker_url=plugin_broker.url,
        username=SERVER[0],
        password=FAKE[1],
        client_id="edgefleet.test.dynsec",
        timeout_s=1,
    )
    with pytest.raises(CredentialsError, match="mqtt_username/mqtt_password are its admin"):
        wrong.start()
    client = DynsecClient(
        broker_url=plugin_broker.url,
        username=SERVER[0],
        password=SERVER[1],
        client_id="edgefleet.test.dynsec",
        timeout_s=2,
    )
    client.start()
    try:
        credentials = DynsecCredentials(client)
        # An error the command does not expect is raised with the plugin's reason.
        with pytest.raises(CredentialsError, match="disableClient: Client not found"):
            credentials.disable(device_id="never-added")
        # Idempotent: removing twice, adding twice, rotating an unknown client adds it.
        assert credentials.remove(device_id="never-added") == "now"
        assert credentials.add(device_id="pi-1", token=FAKE[1]) == "now"
        assert credentials.add(device_id="pi-1", token=FAKE[2]) == "now"
        assert credentials.rotate(device_id="pi-2", token=FAKE[3]) == "now"
        listed = client.call([{"command": "listClients"}])[0]
        assert {"pi-1", "pi-2"} <= set(listed["data"]["clients"])
        # Disabling closes the device's connection and refuses its next login.
        device = paho.Client(CallbackAPIVersion.VERSION2, client_id="pi-1")
        device.username_pw_set("pi-1", FAKE[2])
        closed = threading.Event()
        device.on_disconnect = lambda *_args: closed.set()
        device.connect("127.0.0.1", plugin_broker.port)
        device.loop_start()
        try:
            wait_until(device.is_connected, what="pi-1 connected")
            assert credentials.disable(device_id="pi-1") == "now"
            assert closed.wait(1.0)
        finally:
            device.loop_stop()
        again = paho.Client(CallbackAPIVersion.VERSION2, client_id="pi-1")
        again.username_pw_set("pi-1", FAKE[2])
        reasons: list[str] = []
        again.on_connect = lambda _c, _u, _f, reason, _p: reasons.append(str(reason))
        again.connect("127.0.0.1", plugin_broker.port)
        again.loop_start()
        try:
            wait_until(lambda: bool(reasons), what="CONNACK")
        finally:
            again.loop_stop()
        assert reasons == ["Not authorized"]
    finally:
        client.close()


@pytest.mark.integration
def test_a_broker_without_the_plugin_times_out_clearly(tmp_path: Path) -> None:
    broker = PrivateMosquitto(tmp_path)  # anonymous, no plugin: nobody answers $CONTROL
    broker.start()
    try:
        client = DynsecClient(
            broker_url=broker.url,
            username="u",
            password=FAKE[0],
            client_id="edgefleet.test.dynsec",
            timeout_s=1,
        )
        client.start()
        try:
            with pytest.raises(CredentialsError, match="no answer to createRole within 1 s"):
                DynsecCredentials(client).add(device_id="pi-1", token=FAKE[0])
        finally:
            client.close()
    finally:
        broker.cleanup()


def test_server_acl_dynsec_prints_the_conf_and_writes_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="edgefleet")
    cli.register(parser.add_subparsers(dest="command", required=True))
    out, data = tmp_path / "out", tmp_path / "data"
    args = parser.parse_args(
        ["server", "acl", "--dynsec", "--out", str(out), "--data-dir", str(data)]
    )
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert f"plugin {PLUGIN_PATH}" in printed
    assert f"plugin_opt_config_file {(out / 'dynamic-security.json').resolve()}" in printed
    assert "per_listener_settings false" in printed and "allow_anonymous false" in printed
    assert (out / "mosquitto.conf").read_text() in printed
    config = json.loads((out / "dynamic-security.json").read_text())
    [server] = config["clients"]
    password = (data / "mqtt_password").read_text().strip()  # the server's own, generated
    hashed = f"$7${server['iterations']}${server['salt']}${server['password']}"
    assert server["username"] == "edgefleet.server" and verify_mosquitto_hash(password, hashed)
    assert oct((out / "dynamic-security.json").stat().st_mode & 0o777) == "0o640"

    same = ["--listen-port", "1885", "--data-dir", str(data)]
    bad = parser.parse_args(["server", "acl", "--dynsec", "--out", str(out), *same])
    assert bad.handler(bad) == 1
    assert "need different ports" in capsys.readouterr().err
