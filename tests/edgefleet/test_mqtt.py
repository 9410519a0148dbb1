"""The shared MQTT transport against real brokers: delivery, acks, retained, Last Will, outages."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.mqtt import BrokerAddress, MqttError, MqttTransport, refusal
from tests.utils.mosquitto import PrivateMosquitto
from tests.utils.net import free_port


def _wait(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.02)
    return False


def test_broker_url_parsing() -> None:
    addr = BrokerAddress.from_url("mqtts://dev%2F1:p%40ss@broker.local")
    assert (addr.host, addr.port, addr.tls) == ("broker.local", 8883, True)
    assert (addr.username, addr.password) == ("dev/1", "p@ss")
    assert addr.url == "mqtts://broker.local:8883"
    for bad in ("http://x", "mqtt://", "mqtt://h:notaport", "x"):
        with pytest.raises(MqttError):
            BrokerAddress.from_url(bad)


@pytest.mark.integration
def test_publish_subscribe_ack_and_retained(mqtt_url: str) -> None:
    addr = BrokerAddress.from_url(mqtt_url)
    root = f"edgefleet/test/{time.time_ns()}"
    got: list[tuple[str, bytes, bool]] = []
    sub = MqttTransport(addr, client_id=f"sub-{time.time_ns()}")
    sub.subscribe(f"{root}/+", lambda t, p, r: got.append((t, p, r)))
    sub.start()
    pub = MqttTransport(addr, client_id=f"pub-{time.time_ns()}")
    pub.start()
    try:
        for i in range(500):
            pub.publish(f"{root}/data", str(i).encode())
        assert pub.wait_published(15)
        assert pub.unacknowledged == 0
        assert _wait(lambda: len(got) == 500)
        assert [int(p) for _, p, _ in got] == list(range(500))
        pub.publish(f"{root}/kept", b"retained", retain=True)
        assert pub.wait_published(5)
        late: list[tuple[str, bytes, bool]] = []
        sub2 = MqttTransport(addr, client_id=f"late-{time.time_ns()}")
        sub2.subscribe(f"{root}/kept", lambda t, p, r: late.append((t, p, r)))
        sub2.start()
        assert _wait(lambda: late == [(f"{root}/kept", b"retained", True)])
        sub2.close()
    finally:
        pub.publish(f"{root}/kept", b"", retain=True)  # clear the retained message
        pub.wait_published(5)
        pub.close()
        sub.close()


@pytest.mark.integration
def test_last_will_on_unclean_disconnect(mqtt_url: str) -> None:
    addr = BrokerAddress.from_url(mqtt_url)
    status = f"edgefleet/test/{time.time_ns()}/status"
    got: list[bytes] = []
    watcher = MqttTransport(addr, client_id=f"watch-{time.time_ns()}")
    watcher.subscribe(status, lambda t, p, r: got.append(p))
    watcher.start()
    dying = MqttTransport(addr, client_id=f"dying-{time.time_ns()}", will=(status, b"offline"))
    dying.start()
    # Kill the socket without DISCONNECT: the broker must publish the will.
    sock = dying._client.socket()
    assert sock is not None
    dying._client.loop_stop()
    sock.close()
    try:
        assert _wait(lambda: b"offline" in got, timeout=15)
    finally:
        watcher.publish(status, b"", retain=True)
        watcher.wait_published(5)
        watcher.close()


def test_connect_failure_is_one_clear_error() -> None:
    port = free_port()
    transport = MqttTransport(BrokerAddress("127.0.0.1", port), client_id="nobody")
    with pytest.raises(MqttError, match=f"no connection to mqtt://127.0.0.1:{port}"):
        transport.start(wait=1.5)


def _refusing_broker(connack: bytes) -> tuple[socket.socket, threading.Thread]:
    """A listener that answers every CONNECT with ``connack`` (a refusal) and hangs up."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(connack)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize(
    ("username", "says"),
    [
        ("dev-1", "user 'dev-1': check mqtt.username and mqtt.password"),
        (None, "no user name was sent; set mqtt.username"),
    ],
)
def test_a_refused_login_says_why_and_what_to_check(
    username: str | None, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, thread = _refusing_broker(b"\x20\x02\x00\x04")  # 3.1.1: bad user name or password
    try:
        port = server.getsockname()[1]
        wrong = "nope"
        address = BrokerAddress("127.0.0.1", port, username=username, password=wrong)
        transport = MqttTransport(address, client_id="dev-1", protocol=3)
        with pytest.raises(MqttError, match="refused the connection: Bad user name or pass") as err:
            transport.start(wait=10)
        assert says in str(err.value) and wrong not in str(err.value)
        refusals = [r.getMessage() for r in caplog.records if "connect refused" in r.getMessage()]
        assert refusals and all(says in r for r in refusals)
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        server.close()
        thread.join(5)


def test_other_refusals_are_passed_on_unchanged() -> None:
    assert refusal("Server unavailable", username="dev-1") == "Server unavailable"
    assert "mqtt.password" in refusal("Not authorized", username="dev-1")


def _persistent_subscriber(port: int, topic: str, got: list[bytes]) -> paho.Client:
    """A clean_session=False subscriber: the broker keeps its subscription across restarts."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="outage-sub", clean_session=False)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, msg: got.append(msg.payload)
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


@pytest.mark.integration
def test_qos1_published_during_outage_is_delivered_and_acked(
    tmp_path: Path,
) -> None:
    broker = PrivateMosquitto(tmp_path, persistent=True)
    port = broker.port
    topic = "edgefleet/test/outage"
    broker.start()
    got: list[bytes] = []
    sub = _persistent_subscriber(port, topic, got)
    pub = MqttTransport(BrokerAddress("127.0.0.1", port), client_id="outage-pub")
    pub.start()
    try:
        pub.publish(topic, b"before")
        assert pub.wait_published(5) and _wait(lambda: got == [b"before"])
        broker.stop()  # SIGTERM: mosquitto saves the subscriber's session
        assert _wait(lambda: not pub.connected)
        for i in range(20):
            pub.publish(topic, str(i).encode())
        assert pub.unacknowledged == 20
        assert not pub.wait_published(0.5)
        broker.start()
        # paho reconnects with back-off (1 s, 2 s, ...): everything queued is sent and acked.
        assert pub.wait_published(40), f"{pub.unacknowledged} still unacknowledged"
        assert _wait(lambda: len(got) == 21, timeout=15), got
        assert got[1:] == [str(i).encode() for i in range(20)]
    finally:
        pub.close()
        sub.loop_stop()
        sub.disconnect()
        broker.cleanup()


def test_topic_matching_agrees_with_paho() -> None:
    from edgefleet.mqtt_subs import filter_levels, topic_matches

    filters = ["#", "+", "a/#", "a/+", "a/+/c", "+/b/#", "a/b", "+/+", "$share/g/a/+", "a/b/c/#"]
    topics = ["a", "a/b", "a/b/c", "a/x/c", "b/b/d", "a/b/c/d", "$SYS/x", "x", "a/", "/a", ""]
    for topic_filter in filters:
        plain = (
            topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
        )
        for topic in topics:
            expected = paho.topic_matches_sub(plain, topic)
            assert topic_matches(filter_levels(topic_filter), topic) == expected, (
                topic_filter,
                topic,
            )


@pytest.mark.integration
@pytest.mark.parametrize(("protocol", "expiry"), [(5, 600), (3, 600), (5, None)])
def test_a_kept_session_survives_a_broker_restart(
    tmp_path: Path, protocol: int, expiry: int | None
) -> None:
    """The server's case: it is away while the broker restarts (persistence on), a device
    publishes into the fresh broker first; with a kept session the server still gets it."""
    broker = PrivateMosquitto(tmp_path, persistent=True)
    broker.start()
    address = BrokerAddress("127.0.0.1", broker.port)
    topic = f"edgefleet/v1/{time.time_ns()}/telemetry"
    client_id = f"server-{protocol}-{time.time_ns()}"
    got: list[bytes] = []
    subscribed: list[bool] = []

    def server() -> MqttTransport:
        transport = MqttTransport(
            address,
            client_id=client_id,
            protocol=protocol,  # type: ignore[arg-type]
            session_expiry_s=expiry,
            on_subscribed=lambda: subscribed.append(True),
        )
        transport.subscribe("edgefleet/v1/+/telemetry", lambda t, p, r: got.append(p))
        return transport

    first = server()
    first.start()
    pub = MqttTransport(address, client_id=f"dev-{time.time_ns()}")
    try:
        assert _wait(lambda: subscribed == [True])
        first.close()  # away; a kept session stays on the broker
        broker.stop()  # SIGTERM: Mosquitto saves sessions
        broker.start()
        pub.start()
        pub.publish(topic, b"while the server was away")
        assert pub.wait_published(5)
        second = server()
        second.start()
        try:
            if expiry is None:
                time.sleep(1.0)
                assert got == []  # a clean session: the broker dropped it
            else:
                assert _wait(lambda: got == [b"while the server was away"]), got
            assert _wait(lambda: subscribed == [True, True])
        finally:
            second.close()
    finally:
        pub.close()
        broker.cleanup()


def test_session_expiry_is_bounded() -> None:
    with pytest.raises(MqttError, match="session_expiry_s"):
        MqttTransport(BrokerAddress("127.0.0.1", 1), client_id="x", session_expiry_s=-1)


def test_pending_ack_sends_one_puback_when_every_acked_handler_is_done() -> None:
    from edgefleet.mqtt_subs import PendingAck

    sent: list[tuple[int, int]] = []

    class Client:
        def ack(self, mid: int, qos: int) -> None:
            sent.append((mid, qos))

    pending = PendingAck(Client(), 7, 1, 2)
    first, second = pending.part(), pending.part()
    first()
    first()  # a handler's ack counts once
    assert sent == []
    second()
    second()
    assert sent == [(7, 1)]


def test_subscribe_acked_needs_a_manual_ack_transport() -> None:
    from edgefleet.mqtt import BrokerAddress, MqttError, MqttTransport

    transport = MqttTransport(BrokerAddress.from_url("mqtt://127.0.0.1:9"), client_id="t-acks")
    with pytest.raises(MqttError, match="manual_ack=True"):
        transport.subscribe_acked("edgefleet/v1/+/telemetry", lambda *_: None)
