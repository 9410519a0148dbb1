"""amqtt 0.12 glue, part three: a device's QoS 1 message is acknowledged only once delivered.

amqtt answers a QoS 1 PUBLISH with PUBACK as soon as the message is queued in its memory. The
embedded broker lives in the server's process, so a SIGKILL of the server lost what the broker
had acknowledged and ingest had not yet committed, after the device's outbox had deleted it:
about one ingest batch window (0.2 s); 4 of 1,242, 7 of 2,318 and 2 of 2,342 messages in three
runs of two kills each (tests/fleet_server/broker/test_broker_crash.py; now 0 in three).

Here a QoS 1 message on a device channel (:data:`~edgefleet.contract.CHANNELS` ``from_device``:
telemetry, state, events, status) is *held*: its publisher gets the PUBACK only once every
subscriber the broker sent it to has acknowledged it. The fleet server's bus acknowledges after
ingest committed the batch (``FleetBus(acks_after_store=True)``), so on the embedded broker a
device's PUBACK means "in the database" and the device's outbox is the only copy until then.
Nothing is journalled, no disk write per message: the price is latency (the PUBACK comes one
ingest batch later), not throughput (bench/ingest_bench.py --broker embedded, SQLite, median of
3 runs: 1,029 msg/s before, 1,001 after, within the runs' spread).

When a delivery fails (the subscriber went away before acknowledging), or, on the server's
gated broker, the message reached no subscriber at all (the server's own connection is being
re-established, or the server is stopping), the publisher's connection is closed without a
PUBACK: its client sends the message again after reconnecting, and ingest de-duplicates by
device and seq. A held message's delivery waits for its PUBACK as long as the subscriber stays
connected (amqtt gives up after 5 s and forgets the message: a database slower than that must
slow the devices down, not lose their messages).

Everything else keeps amqtt's behaviour: the server's desired state to a device is not held
(a device that never acknowledges cannot stall the server's publishes), nor is QoS 0, nor a
message queued for an offline persistent session (the embedded server's session is clean).
Overrides ``handle_publish``/``_handle_qos1_message_flow`` of the protocol handler and
``_run_broadcast`` of the broker (amqtt 0.12.1's code plus the tracking), pinned by the tests.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.session import INCOMING, IncomingApplicationMessage, OutgoingApplicationMessage

from edgefleet.contract import CHANNELS, ContractError, parse_topic

log = logging.getLogger(__name__)

#: The held message whose broadcast is being prepared (set around ``_handle_message_delivery``,
#: which runs in the publisher's message-loop task and calls ``_broadcast_message``).
_ORIGIN: ContextVar[Held | None] = ContextVar("edgefleet_held_origin", default=None)


def holds(topic: str) -> bool:
    """Is a QoS 1 message on ``topic`` acknowledged only once delivered (a device channel)?"""
    try:
        _device, channel = parse_topic(topic)
    except ContractError:
        return False
    return CHANNELS[channel].from_device


class Held:
    """The outcome of one held message: True once every delivery was acknowledged, False as
    soon as one failed."""

    __slots__ = ("broadcast", "outcome")

    def __init__(self) -> None:
        self.outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        #: Set when the message went to the broadcast queue (else it was refused: acknowledge).
        self.broadcast = False

    def settle(self, delivered: bool) -> None:
        if not self.outcome.done():
            self.outcome.set_result(delivered)

    def track(self, deliveries: list[asyncio.Future[Any]]) -> None:
        """Settle once every one of ``deliveries`` is done (at once when there are none)."""
        left = len(deliveries)
        if left == 0:
            self.settle(True)
            return

        def done(task: asyncio.Future[Any]) -> None:
            nonlocal left
            if task.cancelled() or task.exception() is not None:
                self.settle(False)
                return
            left -= 1
            if left == 0:
                self.settle(True)

        for task in deliveries:
            task.add_done_callback(done)


class HeldIncoming(IncomingApplicationMessage):  # type: ignore[misc]  # amqtt ships no types
    """A device's QoS 1 message whose PUBACK waits for its deliveries."""

    __slots__ = ("held",)

    def __init__(self, packet_id: int, topic: str, data: bytes, retain: bool) -> None:
        super().__init__(packet_id, topic, QOS_1, data, retain)
        self.held = Held()


class HeldOutgoing(OutgoingApplicationMessage):  # type: ignore[misc]
    """The delivery of a held message to one subscriber: waits for its PUBACK without limit."""

    __slots__ = ()


class HeldAckHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt's protocol handler, holding the PUBACK of a device's QoS 1 message."""

    async def handle_publish(self, publish_packet: Any) -> None:
        header = publish_packet.variable_header
        topic, data = publish_packet.topic_name, publish_packet.data
        if (
            publish_packet.qos != QOS_1
            or header is None
            or header.packet_id is None
            or topic is None
            or data is None
            or not holds(topic)
        ):
            await super().handle_publish(publish_packet)
            return
        message = HeldIncoming(header.packet_id, topic, data, publish_packet.retain_flag)
        message.publish_packet = publish_packet
        await self._handle_message_flow(message)

    async def deliver_held(self, topic: str, data: bytes, qos: int) -> None:
        """Send a held message to this handler's client and wait for its acknowledgement."""
        assert self.session is not None
        packet_id = self.session.next_packet_id if qos != QOS_0 else None
        await self._handle_message_flow(HeldOutgoing(packet_id, topic, qos, data, False))

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        if isinstance(app_message, HeldIncoming) and app_message.direction == INCOMING:
            await self._receive_held(app_message)
        elif isinstance(app_message, HeldOutgoing):
            await self._send_held(app_message)
        else:
            await super()._handle_qos1_message_flow(app_message)

    async def _receive_held(self, message: HeldIncoming) -> None:
        assert self.session is not None
        await self.session.delivered_message_queue.put(message)
        if not await message.held.outcome:
            log.info(
                "a held message was not delivered; closing its publisher's connection so that "
                "it sends the message again",
                extra={"client_id": self.session.client_id, "topic": message.topic[:200]},
            )
            await self.handle_connection_closed()
            return
        puback = PubackPacket.build(message.packet_id)
        await self._send_packet(puback)
        message.puback_packet = puback

    async def _send_held(self, message: HeldOutgoing) -> None:
        # amqtt 0.12.1's outgoing QoS 1 flow without its 5 s PUBACK limit: the waiter ends when
        # the PUBACK arrives or the connection stops (``_stop_waiters`` cancels it).
        assert self.session is not None and message.packet_id is not None
        self.session.inflight_out[message.packet_id] = message
        packet = message.build_publish_packet(dup=message.publish_packet is not None)
        await self._send_packet(packet)
        message.publish_packet = packet
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[message.packet_id] = waiter
        try:
            message.puback_packet = await waiter
        finally:
            self._puback_waiters.pop(message.packet_id, None)
            self.session.inflight_out.pop(message.packet_id, None)


class HeldAckBroker(Broker):  # type: ignore[misc]
    """amqtt's broker with every client served by a :class:`HeldAckHandler` and held messages
    tracked from their publisher through the broadcast to each delivery."""

    #: True: a held message that reached no connected subscriber is not acknowledged either
    #: (the fleet server's broker, where only the server subscribes to device channels: while
    #: its connection is being re-established, devices keep their messages). False: amqtt's
    #: rule, a message nobody subscribed to is acknowledged and dropped.
    held_needs_subscriber = False

    async def _handle_client_session(
        self,
        reader: Any,
        writer: Any,
        client_session: Any,
        handler: Any,
        server: Any,
        listener_name: str,
    ) -> None:
        # The handler amqtt made from the CONNECT holds no state yet: serve with ours instead.
        held = HeldAckHandler(self.plugins_manager, loop=asyncio.get_running_loop())
        await super()._handle_client_session(
            reader, writer, client_session, held, server, listener_name
        )

    async def _handle_message_delivery(
        self, client_session: Any, handler: Any, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        message = wait_deliver.result()
        held = message.held if isinstance(message, HeldIncoming) else None
        token = _ORIGIN.set(held)
        try:
            return bool(
                await super()._handle_message_delivery(client_session, handler, wait_deliver)
            )
        finally:
            _ORIGIN.reset(token)
            if held is not None and not held.broadcast:
                held.settle(True)  # refused by the ACL or malformed: acknowledged, as before

    async def _broadcast_message(
        self,
        session: Any,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        held = _ORIGIN.get()
        if held is None:
            await super()._broadcast_message(session, topic, data, force_qos)
            return
        held.broadcast = True
        broadcast: dict[str, Any] = {"session": session, "topic": topic, "data": data}
        if force_qos is not None:
            broadcast["qos"] = force_qos
        broadcast["held"] = held
        await self._broadcast_queue.put(broadcast)

    async def _run_broadcast(self, running_tasks: Any) -> None:
        # amqtt 0.12.1's _run_broadcast; a held message's deliveries are tracked, and go out
        # through deliver_held.
        broadcast = await self._broadcast_queue.get()
        held: Held | None = broadcast.get("held")
        deliveries: list[asyncio.Future[Any]] = []
        for k_filter, subscriptions in self._subscriptions.items():
            if not self._matches(broadcast["topic"], k_filter):
                continue
            for target_session, sub_qos in subscriptions:
                qos = broadcast.get("qos", sub_qos)
                sendable = await self._topic_filtering(
                    target_session, topic=broadcast["topic"], action=Action.RECEIVE
                )
                if not sendable:
                    continue
                if (
                    target_session.transitions.state != "connected"
                    and not target_session.clean_session
                    and qos in (QOS_1, QOS_2)
                    and not target_session.is_anonymous
                ):
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if target_session.transitions.state != "connected":
                    continue
                handler = self._get_handler(target_session)
                if handler is None:
                    continue
                if held is not None and isinstance(handler, HeldAckHandler):
                    send = handler.deliver_held(broadcast["topic"], broadcast["data"], qos)
                else:
                    send = handler.mqtt_publish(broadcast["topic"], broadcast["data"], qos, False)
                task = asyncio.ensure_future(send)
                running_tasks.append(task)
                if qos != QOS_0:
                    deliveries.append(task)
        if held is None:
            return
        if not deliveries and self.held_needs_subscriber:
            held.settle(False)  # nobody to store it (the server is reconnecting): send again
        else:
            held.track(deliveries)
