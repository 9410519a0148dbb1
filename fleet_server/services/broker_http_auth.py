"""Answers for brokers that call out to authenticate a CONNECT and authorise each publish,
subscribe and delivery (EMQX's HTTP authn/authz, mosquitto-go-auth's HTTP backend).

The rule is the embedded broker's (:mod:`fleet_server.broker.access`): the server's user may do
anything; a device (user name = device id, password = device token, client id = device id)
publishes only to its own telemetry/state/events/status/results and subscribes to / receives
only its own ``desired``. A decommissioned or unknown device is nobody. The broker-specific
request and response shapes live in :mod:`fleet_server.api.broker_auth`.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from fleet_server.broker.access import Identity
from fleet_server.models import Device
from fleet_server.services.mqtt_auth import DatabaseAuthenticator, MqttCredential

log = logging.getLogger(__name__)

#: User names, passwords, client ids and topics longer than this are refused unread.
MAX_FIELD = 256
MAX_TOPIC = 1024


class Access(StrEnum):
    """What a client asks to do with a topic."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    #: A message on the topic delivered to the client (mosquitto-go-auth's "read").
    RECEIVE = "receive"


class BrokerAuth:
    """Decisions for one server: its own credential and the device table."""

    def __init__(self, *, engine: Engine, server: MqttCredential) -> None:
        self._engine = engine
        self._server = server
        self._authenticator = DatabaseAuthenticator(engine=engine, server=server)

    def authenticate(
        self, *, username: str, password: str, clientid: str | None
    ) -> Identity | None:
        """The identity these credentials log in as, or None. A device must use its id as its
        client id (else another device could take over its session); the server's client ids
        contain a '.', which no device id can, so no device can take one of them either."""
        if clientid is not None and len(clientid) > MAX_FIELD:
            return None
        identity = self._authenticator.authenticate(username=username, password=password)
        if identity is None:
            return None
        if (
            identity.device_id is not None
            and clientid is not None
            and clientid != identity.device_id
        ):
            return None
        return identity

    def is_superuser(self, *, username: str) -> bool:
        return bool(username) and username == self._server.username

    def identity(self, *, username: str) -> Identity | None:
        """Who a connected client with this user name is (for an authorisation check, which
        carries no password): the server, a device in the fleet, or nobody."""
        if not username or len(username) > MAX_FIELD:
            return None
        if username == self._server.username:
            return Identity.server(username)
        try:
            with Session(self._engine) as session:
                device = session.get(Device, username)
        except SQLAlchemyError as err:
            log.warning(
                "MQTT authorisation check failed: database error", extra={"error": str(err)}
            )
            return None
        if device is None or device.decommissioned_at is not None:
            return None
        return Identity.device(device.device_id)

    def allowed(self, *, username: str, topic: str, access: Access) -> bool:
        if not topic or len(topic) > MAX_TOPIC:
            return False
        identity = self.identity(username=username)
        if identity is None:
            return False
        if access is Access.PUBLISH:
            return identity.may_publish(topic)
        if access is Access.SUBSCRIBE:
            return identity.may_subscribe(topic)
        return identity.may_receive(topic)
