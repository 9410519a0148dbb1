"""Store-and-forward for telemetry, events and state: the outbox plus its drain thread.

Every such message is first put in the on-disk :class:`~agent.outbox.Outbox` (durable before
:meth:`Forwarder.put` returns). One drain thread sends them oldest first, QoS 1, rate-limited, a
small batch at a time, and deletes a batch from the outbox only once the broker acknowledged
all of it (``MqttTransport.wait_published``). While disconnected nothing is sent and messages
accumulate on disk under the byte budget; after a reconnect, paho re-sends an unacknowledged
batch itself and the drain continues in order. Delivery is at least once: a batch the broker
received whose acknowledgement was lost to a crash is sent again after a restart (consumers
de-duplicate on ``seq``). Status (retained online / Last Will offline) does not come here.
"""

from __future__ import annotations

import logging
import threading
import time

from agent.outbox import Kind, Outbox, OutboxError, OutboxStats
from edgefleet.mqtt import MqttError, MqttTransport

log = logging.getLogger(__name__)

#: How long one wait for a batch's acknowledgement lasts before ``stop`` is checked again.
ACK_POLL_S = 0.5


class Forwarder:
    def __init__(
        self,
        transport: MqttTransport,
        outbox: Outbox,
        *,
        rate_per_s: float,
        batch: int,
    ) -> None:
        if not rate_per_s > 0 or batch < 1:
            raise OutboxError(f"invalid drain settings: rate {rate_per_s!r}, batch {batch!r}")
        self.transport = transport
        self.outbox = outbox
        self._interval = 1.0 / rate_per_s
        self._batch = batch
        self._wake = threading.Event()
        self._idle = threading.Event()
        self.drained = 0

    def put(self, topic: str, payload: bytes, *, kind: Kind, retain: bool) -> bool:
        """Queue a message durably; False (logged) if the outbox refused it."""
        try:
            self.outbox.put(topic, payload, kind=kind, retain=retain)
        except OutboxError as err:
            log.error("outbox refused a message", extra={"topic": topic, "error": str(err)})
            return False
        self._idle.clear()
        self._wake.set()
        return True

    def stats(self) -> OutboxStats:
        return self.outbox.stats()

    def run(self, stop: threading.Event) -> None:
        """Drain until ``stop`` is set (the service sets it after :meth:`flush`)."""
        next_send = time.monotonic()
        while not stop.is_set():
            if not self.transport.connected:
                self._wake.wait(0.2)
                continue
            self._wake.clear()
            try:
                messages = self.outbox.peek(self._batch)
            except OutboxError as err:
                log.error("outbox unreadable", extra={"error": str(err)})
                stop.wait(1.0)
                continue
            if not messages:
                self._idle.set()
                self._wake.wait(0.5)
                continue
            sent: list[int] = []
            failed = False
            for message in messages:
                delay = next_send - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                next_send = max(next_send, time.monotonic() - self._interval) + self._interval
                try:
                    self.transport.publish(
                        message.topic, message.payload, qos=1, retain=message.retain
                    )
                except MqttError as err:
                    log.error("outbox publish failed", extra={"error": str(err)})
                    failed = True
                    break
                sent.append(message.id)
            # Acknowledged as a whole: paho re-sends the batch itself after a reconnect, so it
            # is never published twice from here; on stop it stays queued for the next start.
            while sent and not self.transport.wait_published(ACK_POLL_S):
                if stop.is_set():
                    return
            if sent:
                self._ack(sent)
            if failed:
                stop.wait(1.0)  # the transport refused a publish: retry later, in order

    def _ack(self, ids: list[int]) -> None:
        try:
            self.outbox.ack(ids)
        except OutboxError as err:
            log.error("outbox ack failed", extra={"error": str(err)})
            return
        self.drained += len(ids)

    def flush(self, timeout: float) -> bool:
        """Wait (bounded) until the outbox is empty and acknowledged; False if it is not.

        Returns at once while disconnected: a device shutting down offline keeps its backlog.
        """
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            if not self.transport.connected:
                return False
            if self._idle.wait(0.05) and self.outbox.stats().messages == 0:
                return True
            self._wake.set()
        return False

    def close(self) -> None:
        self.outbox.close()
