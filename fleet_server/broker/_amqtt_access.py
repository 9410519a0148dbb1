"""amqtt 0.12 glue, part two: authentication and the topic ACL for the embedded broker.

amqtt checks credentials only *after* it has acted on the CONNECT: with clean_session it first
deletes the existing session of that client id (an unauthenticated client could wipe the
server's subscriptions), otherwise it copies the newcomer's Last Will into the existing session,
and a second connection with a connected client id takes the first one over. So
:class:`AccessControlledBroker` re-implements ``_initialize_client_session`` (amqtt 0.12.1's code,
with the check moved first) and refuses, with a CONNACK return code and a closed connection:

* no user name, or credentials the :class:`~fleet_server.broker.access.Authenticator` rejects
  (0x04 bad user name or password);
* a user name or source address locked after repeated failures (0x03 server unavailable,
  the password unchecked: :mod:`fleet_server.broker.throttle`);
* a Last Will on a topic the identity may not publish to (0x05 not authorised), as Mosquitto 2
  does;
* a client id whose existing session belongs to another user name (0x05): one device cannot
  evict another, or resume its session;
* a device while ``devices_open`` is not set (0x03 server unavailable): after a (re)start the
  server subscribes first, so no device message reaches a broker with nobody to deliver it to.

A device's client id is its user name, whatever its CONNECT said (as Mosquitto's
``use_username_as_clientid``): without that, a device could squat on a client id another
device or the server is about to (re)connect with, and the rule above would then lock the
rightful owner out. Server client ids always contain a character device ids cannot (settings),
so no device id is ever one of them.

Topic decisions replace amqtt's plugin chain (``_topic_filtering``): a refused PUBLISH is
dropped (QoS 1 is still acknowledged and the connection stays open, as Mosquitto does for MQTT
3.1.1), a refused SUBSCRIBE gets return code 0x80, and nothing a device may not subscribe to is
delivered to it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import (
    BAD_USERNAME_PASSWORD,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    ConnackPacket,
)
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.utils import gen_client_id

from fleet_server.broker._amqtt import GuardedBroker
from fleet_server.broker.access import Authenticator, Identity
from fleet_server.broker.throttle import AuthThrottle

log = logging.getLogger(__name__)

#: The attribute each admitted amqtt ``Session`` carries its :class:`Identity` in.
_IDENTITY = "edgefleet_identity"


def identity_of(session: Any) -> Identity | None:
    identity = getattr(session, _IDENTITY, None)
    return identity if isinstance(identity, Identity) else None


class AccessControlledBroker(GuardedBroker):
    """A :class:`GuardedBroker` that admits only clients its authenticator vouches for."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        authenticator: Authenticator,
        devices_open: threading.Event | None = None,
        throttle: AuthThrottle | None = None,
        **guard: Any,
    ) -> None:
        super().__init__(config, **guard)
        self._authenticator = authenticator
        self._devices_open = devices_open
        self._throttle = throttle
        # The fleet server's broker (gated): only the server subscribes to device channels,
        # so a device message that reached nobody has not reached the server.
        self.held_needs_subscriber = devices_open is not None

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except AMQTTError as exc:
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc

        identity, code, why = await self._admit(session)
        if identity is None:
            log.info(
                "refused an MQTT connection",
                extra={"peer": f"{remote_address}:{remote_port}", "reason": why},
            )
            await ConnackPacket.build(0, code).to_stream(writer)
            await writer.close()
            raise MQTTError(f"connection refused: {why}")
        if not identity.is_server:
            session.client_id = identity.username  # bound to the identity (module docstring)

        # From here on: amqtt 0.12.1 Broker._initialize_client_session, unchanged.
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            existing.will_flag = session.will_flag
            existing.will_message = session.will_message
            existing.will_topic = session.will_topic
            existing.will_qos = session.will_qos
            existing.will_retain = session.will_retain
            existing.keep_alive = session.keep_alive
            existing.username = session.username
            existing.password = session.password
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        setattr(session, _IDENTITY, identity)
        return handler, session

    def drop_user(self, username: str) -> int:
        """Close every connection logged in as device ``username`` (call on the broker's loop):
        its TCP connection is aborted, so amqtt's disconnect path runs (the Last Will goes out,
        as when Mosquitto's dynamic security removes a client). Returns how many."""
        dropped = 0
        for session, handler in list(self._sessions.values()):
            identity = identity_of(session)
            if identity is None or identity.is_server or identity.username != username:
                continue
            adapter = getattr(handler, "writer", None)  # None once it is disconnected
            writer = getattr(adapter, "_writer", None)
            if isinstance(writer, asyncio.StreamWriter) and not writer.is_closing():
                writer.transport.abort()
                dropped += 1
        return dropped

    async def _admit(self, session: Any) -> tuple[Identity | None, int, str]:
        """(identity, 0, "") to admit, or (None, CONNACK return code, reason) to refuse."""
        username = session.username
        if not username:
            return None, BAD_USERNAME_PASSWORD, "no user name"
        throttle, address = self._throttle, str(session.remote_address or "")
        if throttle is not None:
            wait = throttle.locked(username=str(username), address=address)
            if wait > 0:
                return None, SERVER_UNAVAILABLE, f"too many failed logins; retry in {wait:.0f} s"
        try:
            identity = await asyncio.to_thread(
                self._authenticator.authenticate,
                username=str(username),
                password=str(session.password or ""),
            )
        except Exception:  # noqa: BLE001 - a failing check refuses; it must not kill the broker
            log.exception("the MQTT authenticator failed; refusing the connection")
            # Not the client's failure (the database is down): it counts against nobody.
            return None, BAD_USERNAME_PASSWORD, "the credentials could not be checked"
        if identity is None:
            if throttle is not None:
                throttle.failed(username=str(username), address=address)
            return None, BAD_USERNAME_PASSWORD, f"bad user name or password for {username[:64]!r}"
        if throttle is not None:
            throttle.succeeded(username=str(username), address=address)
        if session.will_flag and not identity.may_publish(str(session.will_topic or "")):
            return None, NOT_AUTHORIZED, f"{username[:64]!r} may not publish its Last Will there"
        gate = self._devices_open
        if not identity.is_server and gate is not None and not gate.is_set():
            return None, SERVER_UNAVAILABLE, "devices wait until the fleet server has subscribed"
        client_id = session.client_id if identity.is_server else identity.username
        if client_id and client_id in self._sessions:
            owner = identity_of(self._sessions[client_id][0])
            if owner is not None and owner.username != identity.username:
                return (
                    None,
                    NOT_AUTHORIZED,
                    f"client id is in use by another user than {username!r}",
                )
        return identity, 0, ""

    async def _topic_filtering(self, session: Any, topic: str, action: Action) -> bool:
        identity = identity_of(session)
        if identity is None:  # amqtt's own offline sessions: nobody we admitted
            return False
        if action == Action.PUBLISH:
            allowed = identity.may_publish(topic)
        elif action == Action.SUBSCRIBE:
            allowed = identity.may_subscribe(topic)
        else:
            allowed = identity.may_receive(topic)
        if not allowed and action != Action.RECEIVE:
            log.warning(
                "MQTT %s refused",
                action.value,
                extra={"user": identity.username, "topic": topic[:200]},
            )
        return allowed
