"""The broker plugin boundary: something that gives the server an MQTT URL to connect to."""

from __future__ import annotations

from typing import Protocol


class BrokerError(Exception):
    """The broker could not be started, or its configuration is unusable (one clear line)."""


class BrokerBackend(Protocol):
    """A broker the server talks to: the embedded amqtt one, or an external Mosquitto/EMQX.

    ``start`` returns once the broker accepts TCP connections (or raises :class:`BrokerError`);
    ``stop`` is idempotent; ``url`` is what :class:`edgefleet.mqtt.BrokerAddress` parses.
    """

    @property
    def url(self) -> str: ...

    def start(self, *, timeout: float = 10.0) -> None: ...

    def stop(self) -> None: ...
