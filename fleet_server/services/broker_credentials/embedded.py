"""The embedded (amqtt) broker: it asks the database on every CONNECT, so an enrolment needs no
call here; but a connection opened before a rotation or a decommissioning would live on, so
those close it at once (:meth:`EmbeddedBroker.drop_client`), as Mosquitto's dynamic security
does."""

from __future__ import annotations

from typing import Protocol

from fleet_server.broker.base import BrokerError
from fleet_server.services.broker_credentials.base import Applied, CredentialsError, SyncReport


class DropsClients(Protocol):
    """What this needs of the broker (:class:`~fleet_server.broker.EmbeddedBroker`)."""

    def drop_client(self, username: str, *, timeout: float = 5.0) -> int: ...


class EmbeddedCredentials:
    kind = "embedded"

    def __init__(self, broker: DropsClients) -> None:
        self._broker = broker

    def add(self, *, device_id: str, token: str) -> Applied:
        return Applied.ON_EXPORT  # the next CONNECT reads the database

    def rotate(self, *, device_id: str, token: str) -> Applied:
        return self._drop(device_id)

    def remove(self, *, device_id: str) -> Applied:
        return self._drop(device_id)

    def disable(self, *, device_id: str) -> Applied:
        return self._drop(device_id)

    def sync(self, *, live: set[str], decommissioned: set[str]) -> SyncReport:
        """Nothing to bring in line: a fresh embedded broker has no connections."""
        return SyncReport()

    def close(self) -> None:
        """Nothing held (the runtime stops the broker)."""

    def _drop(self, device_id: str) -> Applied:
        try:
            self._broker.drop_client(device_id)
        except BrokerError as err:
            raise CredentialsError(str(err)) from err
        return Applied.NOW
