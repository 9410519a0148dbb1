"""Everything the agent publishes, encoded only through the contract, on contract topics.

Telemetry, events and state go through the :class:`~agent.forwarder.Forwarder` (on disk first,
then drained in order); status goes straight to the transport (it is retained and its offline
form is the Last Will, so a queued copy would only ever be stale). A sequence number is taken
and its message queued under one lock, so the outbox order is the ``seq`` order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Literal

from agent.forwarder import Forwarder
from agent.outbox import Kind
from agent.seq import SequenceCounter
from agent.state import Snapshot
from edgefleet import __version__
from edgefleet.contract import Channel, Event, ModelRef, State, Status, Telemetry, encode, topic
from edgefleet.contract.payloads import EventKind
from edgefleet.contract.topics import CHANNELS
from edgefleet.mqtt import MqttError, MqttTransport

log = logging.getLogger(__name__)


def status_payload(device_id: str, status: Literal["online", "offline"]) -> bytes:
    return encode(Status(device_id=device_id, status=status))


class Publisher:
    def __init__(
        self,
        transport: MqttTransport,
        *,
        forwarder: Forwarder,
        device_id: str,
        seq: SequenceCounter,
        device_class: str | None = None,
    ) -> None:
        self.transport = transport
        self.forwarder = forwarder
        self.device_id = device_id
        self.seq = seq
        self.device_class = device_class
        self._lock = threading.Lock()

    def _queue(self, channel: Channel, build: Callable[[int], bytes]) -> None:
        """Take the next seq, build the payload with it and queue it, atomically."""
        spec = CHANNELS[channel]
        with self._lock:
            seq = self.seq.next()
            payload = build(seq)
            self.forwarder.put(
                topic(self.device_id, channel), payload, kind=_KINDS[channel], retain=spec.retained
            )
        log.debug("queued", extra={"channel": channel.value, "seq": seq})

    def _send(self, channel: Channel, payload: bytes) -> None:
        spec = CHANNELS[channel]
        try:
            self.transport.publish(
                topic(self.device_id, channel), payload, qos=spec.qos, retain=spec.retained
            )
        except MqttError as err:
            log.error("publish failed", extra={"channel": channel.value, "error": str(err)})

    def status(self, status: Literal["online", "offline"]) -> None:
        self._send(Channel.STATUS, status_payload(self.device_id, status))

    def state(self, snapshot: Snapshot) -> None:
        def build(seq: int) -> bytes:
            return encode(
                State(
                    device_id=self.device_id,
                    seq=seq,
                    phase=snapshot.phase,
                    running=snapshot.running,
                    desired=snapshot.desired,
                    agent_version=__version__,
                    device_class=self.device_class,
                    last_error=snapshot.last_error,
                )
            )

        self._queue(Channel.STATE, build)

    def event(
        self,
        kind: EventKind,
        *,
        model: ModelRef | None = None,
        detail: str = "",
        progress: float | None = None,
    ) -> None:
        def build(seq: int) -> bytes:
            return encode(
                Event(
                    device_id=self.device_id,
                    seq=seq,
                    event=kind,
                    model=model,
                    detail=detail.replace("\n", " ")[:2000],
                    progress=progress,
                )
            )

        log.info(
            "event",
            extra={"event": kind, "model": str(model) if model else None, "detail": detail[:300]},
        )
        self._queue(Channel.EVENTS, build)

    def telemetry(self, build: Callable[[int], Telemetry]) -> None:
        """Queue the telemetry ``build(seq)`` returns (built under the seq lock)."""
        self._queue(Channel.TELEMETRY, lambda seq: encode(build(seq)))


_KINDS: dict[Channel, Kind] = {
    Channel.TELEMETRY: "telemetry",
    Channel.EVENTS: "event",
    Channel.STATE: "state",
}
