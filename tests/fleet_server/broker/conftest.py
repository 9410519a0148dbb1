"""Real paho clients and embedded brokers for the broker tests, closed after each test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import pytest

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


@pytest.fixture
def connect() -> Iterator[ClientFactory]:
    """``connect(url, client_id, will=(topic, payload)|None, keepalive=30) -> Client``."""
    clients: list[Client] = []

    def _connect(
        url: str,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        keepalive: int = 30,
    ) -> Client:
        parts = urlsplit(url)
        mqtt = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311
        )
        client = Client(mqtt)
        mqtt.on_message = client.on_message
        connected = threading.Event()
        mqtt.on_connect = lambda *_args: connected.set()
        if will is not None:
            mqtt.will_set(will[0], will[1], qos=1, retain=True)
        mqtt.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=keepalive)
        mqtt.loop_start()
        clients.append(client)
        assert connected.wait(5), f"{client_id} did not connect to {url}"
        return client

    yield _connect
    for client in clients:
        client.mqtt.disconnect()
        client.mqtt.loop_stop()


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
