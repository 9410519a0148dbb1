"""``mqtts://`` against a real Mosquitto TLS listener, with a PKI made in the test.

Server-authenticated TLS (the broker's certificate checked against ``ca_file``), then mutual TLS
(``require_certificate true`` + ``use_identity_as_username true``: the certificate's common name
is the MQTT user, confined by an ACL pattern). A wrong CA, a missing client certificate or a
plaintext port fail at once with a reason, never by falling back to plaintext.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgefleet.mqtt import BrokerAddress, MqttError, MqttTransport
from tests.utils.mosquitto import PrivateMosquitto
from tests.utils.tls import Pki, make_pki, mosquitto_tls

pytestmark = pytest.mark.integration


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def pki() -> Iterator[Pki]:
    made = make_pki()
    yield made
    made.cleanup()


def _broker(tmp_path: Path, pki: Pki, *, mutual: bool) -> PrivateMosquitto:
    extra = mosquitto_tls(pki, require_certificate=mutual)
    if mutual:  # identities come from the certificate: each confined to its own level
        acl = pki.directory / "acl"
        acl.write_text(
            "user edgefleet.server\ntopic readwrite edgefleet/#\n"
            "pattern write edgefleet/v1/%u/telemetry\n"
        )
        acl.chmod(0o644)
        extra += f"acl_file {acl}\n"
    broker = PrivateMosquitto(tmp_path, extra=extra)
    broker.start()
    return broker


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[PrivateMosquitto]:
    broker = _broker(tmp_path, pki, mutual=False)
    yield broker
    broker.cleanup()


@pytest.fixture
def mtls_broker(tmp_path: Path, pki: Pki) -> Iterator[PrivateMosquitto]:
    broker = _broker(tmp_path, pki, mutual=True)
    yield broker
    broker.cleanup()


def _url(broker: PrivateMosquitto, host: str = "127.0.0.1") -> str:
    return f"mqtts://{host}:{broker.port}"


def _round_trip(pub: MqttTransport, sub: MqttTransport, topic: str) -> None:
    got: list[bytes] = []
    sub.subscribe(topic, lambda t, p, r: got.append(p))
    sub.start()
    pub.start()
    try:
        pub.publish(topic, b"over tls")
        assert pub.wait_published(5)
        assert _wait(lambda: got == [b"over tls"]), got
    finally:
        pub.close()
        sub.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_server_authenticated_tls_round_trip(
    tls_broker: PrivateMosquitto, pki: Pki, host: str
) -> None:
    address = BrokerAddress.from_url(_url(tls_broker, host), ca_file=str(pki.ca.cert))
    topic = f"edgefleet/v1/tls-{time.time_ns()}/telemetry"
    _round_trip(
        MqttTransport(address, client_id=f"pub-{time.time_ns()}"),
        MqttTransport(address, client_id=f"sub-{time.time_ns()}"),
        topic,
    )


def test_wrong_ca_is_a_clear_error_not_a_timeout(tls_broker: PrivateMosquitto, pki: Pki) -> None:
    address = BrokerAddress.from_url(_url(tls_broker), ca_file=str(pki.other_ca.cert))
    started = time.monotonic()
    with pytest.raises(MqttError, match=r"certificate was not accepted.*ca_file"):
        MqttTransport(address, client_id="wrong-ca").start(wait=20)
    assert time.monotonic() - started < 10


def test_no_plaintext_either_way(tls_broker: PrivateMosquitto, tmp_path: Path, pki: Pki) -> None:
    # mqtt:// to the TLS port: the broker drops the plaintext CONNECT; nothing connects.
    plain = MqttTransport(BrokerAddress("127.0.0.1", tls_broker.port), client_id="plain")
    with pytest.raises(MqttError, match="no connection"):
        plain.start(wait=3)
    # mqtts:// to a plaintext listener: refused at the handshake, not downgraded.
    other = PrivateMosquitto(tmp_path / "plain" if _mkdir(tmp_path / "plain") else tmp_path)
    other.start()
    try:
        address = BrokerAddress.from_url(
            f"mqtts://127.0.0.1:{other.port}", ca_file=str(pki.ca.cert)
        )
        with pytest.raises(MqttError, match="TLS"):
            MqttTransport(address, client_id="tls-to-plain").start(wait=10)
    finally:
        other.cleanup()


def _mkdir(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return True


def test_mutual_tls_identity_from_the_certificate(mtls_broker: PrivateMosquitto, pki: Pki) -> None:
    device = f"tls-{time.time_ns() % 10**9}"
    device_pair, server_pair = pki.client(device), pki.client("edgefleet.server")
    url, ca = _url(mtls_broker), str(pki.ca.cert)
    dev = BrokerAddress.from_url(
        url, ca_file=ca, cert_file=str(device_pair.cert), key_file=str(device_pair.key)
    )
    srv = BrokerAddress.from_url(
        url, ca_file=ca, cert_file=str(server_pair.cert), key_file=str(server_pair.key)
    )
    got: list[str] = []
    server = MqttTransport(srv, client_id="server")
    server.subscribe("edgefleet/v1/+/telemetry", lambda t, p, r: got.append(t))
    server.start()
    agent = MqttTransport(dev, client_id=f"agent-{device}")
    agent.start()
    try:
        agent.publish("edgefleet/v1/someone-else/telemetry", b"x")  # the ACL drops it
        agent.publish(f"edgefleet/v1/{device}/telemetry", b"mine")
        assert agent.wait_published(5)
        assert _wait(lambda: got == [f"edgefleet/v1/{device}/telemetry"]), got
    finally:
        agent.close()
        server.close()


@pytest.mark.parametrize("version", ["tlsv1.2", "tlsv1.3"])
def test_missing_client_certificate_is_refused_clearly(
    tmp_path: Path, pki: Pki, version: str
) -> None:
    # TLS 1.2 refuses in the handshake; TLS 1.3 after it, with an alert on the first read.
    broker = PrivateMosquitto(
        tmp_path, extra=mosquitto_tls(pki, require_certificate=True, tls_version=version)
    )
    broker.start()
    try:
        address = BrokerAddress.from_url(_url(broker), ca_file=str(pki.ca.cert))
        started = time.monotonic()
        with pytest.raises(MqttError, match="client certificate"):
            MqttTransport(address, client_id="no-cert").start(wait=20)
        assert time.monotonic() - started < 10
    finally:
        broker.cleanup()


def test_a_certificate_from_another_ca_is_refused(mtls_broker: PrivateMosquitto, pki: Pki) -> None:
    rogue = pki.client("rogue", ca=pki.other_ca)
    address = BrokerAddress.from_url(
        _url(mtls_broker),
        ca_file=str(pki.ca.cert),
        cert_file=str(rogue.cert),
        key_file=str(rogue.key),
    )
    with pytest.raises(MqttError, match="TLS"):
        MqttTransport(address, client_id="rogue").start(wait=20)


def test_bad_tls_settings_fail_before_connecting(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(MqttError, match="need an mqtts://"):
        BrokerAddress.from_url("mqtt://127.0.0.1:1883", ca_file=str(pki.ca.cert))
    with pytest.raises(MqttError, match="both cert_file and key_file"):
        BrokerAddress.from_url("mqtts://h", cert_file=str(pki.broker.cert))
    missing = BrokerAddress.from_url("mqtts://h", ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(MqttError, match="ca_file .*nope.pem: cannot read"):
        MqttTransport(missing, client_id="x")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\x00\xff not a certificate")
    with pytest.raises(MqttError, match="not a PEM file"):
        MqttTransport(BrokerAddress.from_url("mqtts://h", ca_file=str(garbage)), client_id="x")
    fake = tmp_path / "fake.pem"
    fake.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(MqttError, match="TLS files rejected"):
        MqttTransport(BrokerAddress.from_url("mqtts://h", ca_file=str(fake)), client_id="x")
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b"A" * (2 * 1024 * 1024))
    with pytest.raises(MqttError, match="larger than"):
        MqttTransport(BrokerAddress.from_url("mqtts://h", ca_file=str(huge)), client_id="x")
    # A key that does not belong to the certificate.
    other = pki.client("other")
    with pytest.raises(MqttError, match="TLS files rejected"):
        MqttTransport(
            BrokerAddress.from_url(
                "mqtts://h", cert_file=str(pki.broker.cert), key_file=str(other.key)
            ),
            client_id="x",
        )
