"""An external broker (Mosquitto, EMQX): no process to run, only a URL to hand out."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from pydantic import ValidationError

from fleet_server.broker.base import BrokerError
from fleet_server.broker.config import ExternalBrokerConfig


class ExternalBroker:
    """A broker someone else runs; ``start`` only checks that it is reachable."""

    def __init__(self, *, url: str) -> None:
        try:
            self._config = ExternalBrokerConfig(url=url)
        except ValidationError as err:
            raise BrokerError(
                f"invalid broker URL {url[:80]!r}: must be mqtt[s]://host:port"
            ) from err
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        self._host = parts.hostname or ""
        self._port = parts.port or (8883 if tls else 1883)

    @classmethod
    def from_config(cls, config: ExternalBrokerConfig) -> ExternalBroker:
        return cls(url=config.url)

    @property
    def url(self) -> str:
        return self._config.url

    def start(self, *, timeout: float = 10.0) -> None:
        """Fail fast with one line when nothing listens at the URL."""
        try:
            with socket.create_connection((self._host, self._port), timeout=timeout):
                return
        except OSError as err:
            raise BrokerError(
                f"external broker {self._host}:{self._port} is not reachable: {err}"
            ) from err

    def stop(self) -> None:
        """Nothing to stop: the broker is not ours."""
