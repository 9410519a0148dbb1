"""The server's one MQTT connection (embedded or external broker: the same code path)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from edgefleet.contract import Channel, DesiredState, encode, topic
from edgefleet.contract.topics import CHANNELS, fleet_filter, shared_filter
from edgefleet.mqtt import BrokerAddress, MqttTransport
from fleet_server.messaging.ingest import IngestWriter

log = logging.getLogger(__name__)

INGEST_CHANNELS = (Channel.TELEMETRY, Channel.STATE, Channel.EVENTS, Channel.STATUS)


class FleetBus:
    """Subscribes every device's telemetry/state/events/status into the ingest writer and
    publishes retained desired state. After every (re)connect it republishes the desired state
    of all assigned devices from the database, so a broker restart loses nothing.

    ``username``/``password`` (the server's MQTT identity) apply unless ``broker_url`` carries
    its own ``user:password@``; ``ca_file``/``cert_file``/``key_file`` apply to ``mqtts://``.

    ``session_expiry_s`` (None: clean session) asks the broker to keep the server's session
    (its subscriptions and the device messages queued for it) while the server is away, and,
    on a broker with persistence, across a broker restart: a device that drains its offline
    queue into a restarted broker before the server is back still reaches the server.
    ``on_subscribed`` runs after every (re)connect once the ingest subscriptions are
    acknowledged (the embedded broker admits devices then). ``acks_after_store`` acknowledges
    each message only once ingest stored it, whatever the protocol (the embedded broker passes
    that acknowledgement on to the device).

    With ``shared_group`` (replicas) the connection speaks MQTT v5 and takes the non-retained
    channels (telemetry, events) through ``$share/<group>/...``: the broker hands each message
    to one replica of the group. The retained channels (state, status) stay plain subscriptions
    on every replica: the MQTT v5 spec has brokers send no retained messages to a shared
    subscription (Mosquitto 2.0.11 still does, to each new shared subscriber; brokers that follow
    the spec do not), and a plain subscription gets them on every broker, so a replica that
    starts while devices are quiet still learns every device's last state and status. Those
    messages reach every replica; ingest applies them only forward (by seq, by timestamp, under a
    row lock), so the extra copies are counted as duplicates and change nothing."""

    def __init__(
        self,
        *,
        broker_url: str,
        client_id: str,
        writer: IngestWriter,
        desired_source: Callable[[], Sequence[DesiredState]],
        username: str | None = None,
        password: str | None = None,
        protocol: Literal[3, 5] = 3,
        session_expiry_s: int | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        on_subscribed: Callable[[], None] | None = None,
        shared_group: str | None = None,
        channels: Sequence[Channel] = INGEST_CHANNELS,
        receive_maximum: int = 10_000,
        acks_after_store: bool = False,
    ) -> None:
        self._writer = writer
        self._desired_source = desired_source
        self._protocol = protocol
        address = BrokerAddress.from_url(
            broker_url, ca_file=ca_file, cert_file=cert_file, key_file=key_file
        )
        if address.username is None and username is not None:
            address = replace(address, username=username, password=password)
        speaks_v5 = bool(shared_group) or protocol == 5
        #: With a kept session on MQTT v5, a message is acknowledged to the broker only once
        #: ingest has stored it: a server killed mid-batch gets it again when it reconnects.
        #: (Not on 3.1.1: Mosquitto's window for such a client is 20 messages.) With
        #: ``acks_after_store`` (the embedded broker, which holds a device's PUBACK until the
        #: server's: fleet_server.broker._amqtt_held) on any version.
        self.acks_after_commit = (speaks_v5 and bool(session_expiry_s)) or acks_after_store
        self._transport = MqttTransport(
            address,
            client_id=client_id,
            on_connect=self._on_connect,
            protocol=5 if speaks_v5 else 3,
            session_expiry_s=session_expiry_s,
            on_subscribed=on_subscribed,
            manual_ack=self.acks_after_commit,
            # On v5 the broker may send this many unacknowledged messages (its queue for a
            # slow subscriber is small and drops beyond: Mosquitto's max_queued_messages).
            receive_maximum=receive_maximum if speaks_v5 else None,
        )
        for channel in channels:
            topic_filter = ingest_filter(channel, shared_group)
            if self.acks_after_commit:
                self._transport.subscribe_acked(topic_filter, writer.submit, qos=1)
            else:
                self._transport.subscribe(topic_filter, writer.submit, qos=1)

    @property
    def connected(self) -> bool:
        return self._transport.connected

    @property
    def receive_maximum(self) -> int | None:
        """The receive window asked of the broker (MQTT v5), or None (the broker's)."""
        return self._transport.receive_maximum

    @property
    def protocol(self) -> int:
        """The MQTT version spoken: 3 (3.1.1) or 5."""
        return self._protocol

    @property
    def broker(self) -> str:
        return self._transport.address.url

    def start(self, *, wait: float = 10.0) -> None:
        self._transport.start(wait=wait)

    def close(self) -> None:
        self._transport.wait_published(timeout=2.0)
        self._transport.close()

    def publish_desired(self, state: DesiredState) -> None:
        self._transport.publish(
            topic(state.device_id, Channel.DESIRED), encode(state), qos=1, retain=True
        )

    def wait_published(self, timeout: float = 10.0) -> bool:
        return self._transport.wait_published(timeout)

    def _on_connect(self) -> None:
        # Runs on paho's network thread: the database read happens elsewhere.
        threading.Thread(target=self._republish, name="edgefleet-republish", daemon=True).start()

    def _republish(self) -> None:
        try:
            states = self._desired_source()
            for state in states:
                self.publish_desired(state)
        except Exception:  # noqa: BLE001 - logged; the next reconnect tries again
            log.exception("republishing desired state failed")
            return
        log.info("desired state republished", extra={"devices": len(states)})


def ingest_filter(channel: Channel, shared_group: str | None) -> str:
    """The subscription for one ingest channel: shared in a replica group unless retained."""
    if shared_group is None or CHANNELS[channel].retained:
        return fleet_filter(channel)
    return shared_filter(shared_group, channel)
