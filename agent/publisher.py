"""Everything the agent publishes, encoded only through the contract, on contract topics."""

from __future__ import annotations

import logging
from typing import Literal

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
        device_id: str,
        seq: SequenceCounter,
        device_class: str | None = None,
    ) -> None:
        self.transport = transport
        self.device_id = device_id
        self.seq = seq
        self.device_class = device_class

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
        payload = State(
            device_id=self.device_id,
            seq=self.seq.next(),
            phase=snapshot.phase,
            running=snapshot.running,
            desired=snapshot.desired,
            agent_version=__version__,
            device_class=self.device_class,
            last_error=snapshot.last_error,
        )
        self._send(Channel.STATE, encode(payload))

    def event(
        self,
        kind: EventKind,
        *,
        model: ModelRef | None = None,
        detail: str = "",
        progress: float | None = None,
    ) -> None:
        payload = Event(
            device_id=self.device_id,
            seq=self.seq.next(),
            event=kind,
            model=model,
            detail=detail.replace("\n", " ")[:2000],
            progress=progress,
        )
        log.info(
            "event",
            extra={"event": kind, "model": str(model) if model else None, "detail": detail[:300]},
        )
        self._send(Channel.EVENTS, encode(payload))

    def telemetry(self, payload: Telemetry) -> None:
        self._send(Channel.TELEMETRY, encode(payload))
