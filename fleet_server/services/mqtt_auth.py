"""MQTT identities: the server's credential, and the database-backed check the embedded broker
calls for every CONNECT (user name = device id, password = device token)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from fleet_server.broker.access import Identity
from fleet_server.services.auth import secret_file, tokens_equal
from fleet_server.services.devices import device_for_credentials
from fleet_server.settings import ServerSettings

log = logging.getLogger(__name__)

MQTT_PASSWORD_FILE = "mqtt_password"  # noqa: S105 - a file name, not a secret
#: Longer user names and passwords are refused before any lookup (tokens are 43 characters).
_MAX_FIELD = 256


@dataclass(frozen=True)
class MqttCredential:
    """A user name and password for the broker; ``repr`` hides the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"MqttCredential(username={self.username!r}, password='***')"


def resolve_server_credential(*, settings: ServerSettings) -> MqttCredential:
    """The server's own MQTT identity: the user:password of ``broker_url`` if it carries one,
    else ``mqtt_username`` with ``mqtt_password`` or the one generated into
    ``<data_dir>/mqtt_password`` (once, mode 0600)."""
    if settings.broker_url:
        parts = urlsplit(settings.broker_url)
        if parts.username:
            return MqttCredential(unquote(parts.username), unquote(parts.password or ""))
    if settings.mqtt_password is not None:
        password = settings.mqtt_password.get_secret_value()
    else:
        password = secret_file(
            settings.data_dir / MQTT_PASSWORD_FILE, what="the server's MQTT password"
        )
    return MqttCredential(settings.mqtt_username, password)


class DatabaseAuthenticator:
    """The embedded broker's :class:`~fleet_server.broker.access.Authenticator`.

    The server credential is compared in constant time; a device is looked up by id and its
    token's SHA-256 compared with the stored one. A database error refuses (and is logged).
    """

    def __init__(self, *, engine: Engine, server: MqttCredential) -> None:
        self._engine = engine
        self._server = server

    def authenticate(self, *, username: str, password: str) -> Identity | None:
        if not username or len(username) > _MAX_FIELD or len(password) > _MAX_FIELD:
            return None
        if username == self._server.username:
            if tokens_equal(password, self._server.password):
                return Identity.server(username)
            return None
        try:
            with Session(self._engine) as session:
                device = device_for_credentials(session=session, device_id=username, token=password)
        except SQLAlchemyError as err:
            log.warning("MQTT login check failed: database error", extra={"error": str(err)})
            return None
        return Identity.device(device.device_id) if device is not None else None
