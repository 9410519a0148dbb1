"""Real paho clients and embedded brokers for the broker tests, closed after each test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.broker import EmbeddedBroker
from tests.utils.net import free_port


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class Client:
    """A connected paho client (callback API v2) that records what it receives."""

    mqtt: paho.Client
    messages: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_message(self, _client: Any, _userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self.cond.notify_all()

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        done = threading.Event()
        self.mqtt.on_subscribe = lambda *_args: done.set()
        result, _mid = self.mqtt.subscribe(topic_filter, qos=qos)
        assert result == paho.MQTT_ERR_SUCCESS
        assert done.wait(5), f"no SUBACK for {topic_filter}"

    def suback(self, topic_filter: str, qos: int = 1) -> list[int]:
        """Subscribe and return the SUBACK return codes (0x80 = refused)."""
        codes: list[int] = []
        done = threading.Event()

        def on_subscribe(_c: Any, _u: Any, _mid: Any, reasons: Any, _props: Any) -> None:
            codes.extend(int(r.value) for r in reasons)
            done.set()

        self.mqtt.on_subscribe = on_subscribe
        result, _mid = self.mqtt.subscribe(topic_filter, qos=qos)
        assert result == paho.MQTT_ERR_SUCCESS
        assert done.wait(5), f"no SUBACK for {topic_filter}"
        return codes

    @property
    def connected(self) -> bool:
        return bool(self.mqtt.is_connected())

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        info = self.mqtt.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == paho.MQTT_ERR_SUCCESS
        info.wait_for_publish(timeout=5)
        assert info.is_published()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.messages)

    def kill_socket(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a device losing its network does."""
        self.mqtt.loop_stop()
        sock = self.mqtt.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


ClientFactory = Callable[..., Client]


def _open(
    url: str,
    client_id: str,
    *,
    will: tuple[str, bytes] | None,
    keepalive: int,
    credentials: tuple[str, str] | None,
) -> tuple[Client, threading.Event, list[str]]:
    """A paho client connecting to ``url`` (``user:password@`` in the URL or ``credentials``)."""
    parts = urlsplit(url)
    mqtt = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
    client = Client(mqtt)
    mqtt.on_message = client.on_message
    answered = threading.Event()
    reasons: list[str] = []

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        reasons.append("" if not reason.is_failure else str(reason))
        answered.set()

    mqtt.on_connect = on_connect
    if credentials is None and parts.username is not None:
        credentials = (unquote(parts.username), unquote(parts.password or ""))
    if credentials is not None:
        mqtt.username_pw_set(*credentials)
    if will is not None:
        mqtt.will_set(will[0], will[1], qos=1, retain=True)
    mqtt.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=keepalive)
    mqtt.loop_start()
    return client, answered, reasons


@pytest.fixture
def connect() -> Iterator[ClientFactory]:
    """``connect(url, client_id, will=(topic, payload)|None, keepalive=30,
    credentials=(user, password)|None) -> Client``; ``url`` may carry ``user:password@``."""
    clients: list[Client] = []

    def _connect(
        url: str,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        keepalive: int = 30,
        credentials: tuple[str, str] | None = None,
    ) -> Client:
        client, answered, reasons = _open(
            url, client_id, will=will, keepalive=keepalive, credentials=credentials
        )
        clients.append(client)
        assert answered.wait(5), f"{client_id} did not connect to {url}"
        assert reasons == [""], f"{client_id} was refused: {reasons}"
        return client

    yield _connect
    for client in clients:
        client.mqtt.disconnect()
        client.mqtt.loop_stop()


RefusalProbe = Callable[..., str]


@pytest.fixture
def refused() -> RefusalProbe:
    """``refused(url, client_id, credentials=..., will=...) -> reason``: asserts the broker
    answers the CONNECT with a refusal (or closes the connection) and returns why."""

    def _refused(
        url: str,
        client_id: str,
        *,
        credentials: tuple[str, str] | None = None,
        will: tuple[str, bytes] | None = None,
    ) -> str:
        client, answered, reasons = _open(
            url, client_id, will=will, keepalive=30, credentials=credentials
        )
        try:
            answered.wait(5)
            time.sleep(0.2)  # a refused client must not be connected a moment later either
            assert not client.mqtt.is_connected(), f"{client_id} was admitted"
            assert reasons and reasons[0] != "", f"{client_id}: no refusal, {reasons}"
            return reasons[0]
        finally:
            client.mqtt.disconnect()
            client.mqtt.loop_stop()

    return _refused


@pytest.fixture
def start_broker() -> Iterator[Callable[..., EmbeddedBroker]]:
    """``start_broker(**settings) -> EmbeddedBroker`` on a free port, stopped afterwards."""
    brokers: list[EmbeddedBroker] = []

    def _start(**settings: Any) -> EmbeddedBroker:
        settings.setdefault("port", free_port())
        broker = EmbeddedBroker(host="127.0.0.1", **settings)
        broker.start(timeout=10.0)
        brokers.append(broker)
        return broker

    yield _start
    for broker in brokers:
        broker.stop()
