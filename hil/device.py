"""One simulated device: speaks the real EdgeFleet protocol with a real MQTT connection.

It does what an agent does on the wire — status with a Last Will, retained state, desired-state
handling with a real bundle download (token, size and SHA-256 checked), update events, periodic
telemetry — without loading a model: inference is simulated from a :class:`Behaviour`, which can
differ per model version so rollout gates have something to judge.
"""

from __future__ import annotations

import hashlib
import random
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edgefleet.contract import (
    Channel,
    ContractError,
    DesiredState,
    Event,
    LatencySummary,
    ModelRef,
    State,
    Status,
    Telemetry,
    decode,
    encode,
    topic,
)
from edgefleet.contract.payloads import EventKind, Phase
from edgefleet.mqtt import BrokerAddress

if TYPE_CHECKING:
    import paho.mqtt.client as paho

#: Schedules a callable on the simulator's network thread (paho clients are driven there).
Schedule = Callable[[Callable[[], None]], None]


class Wire(Protocol):
    """What a simulated device needs of its MQTT connection (paho's ``Client`` has it, and so
    has :class:`hil.mqtt_lite.LiteClient`)."""

    def publish(self, topic: str, payload: bytes, qos: int = ..., retain: bool = ...) -> Any: ...

    def subscribe(self, topic: str, qos: int = ...) -> Any: ...


@dataclass(frozen=True)
class Behaviour:
    """How inference looks on this device, per model version (``default`` for the others)."""

    latency_ms: float = 1.0
    error_rate: float = 0.0
    inferences_per_s: float = 10.0
    per_version: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Typical top-1 confidence (0..1); per version overrides it (a collapsed model: ~0.2).
    confidence: float = 0.9
    confidence_per_version: dict[str, float] = field(default_factory=dict)

    def for_version(self, version: str | None) -> tuple[float, float]:
        if version is not None and version in self.per_version:
            return self.per_version[version]
        return self.latency_ms, self.error_rate

    def confidence_for(self, version: str | None) -> float:
        if version is not None and version in self.confidence_per_version:
            return self.confidence_per_version[version]
        return self.confidence


def will_of(device_id: str) -> tuple[str, bytes]:
    """A device's Last Will: (topic, payload) of a retained ``offline`` status."""
    offline = Status(device_id=device_id, status="offline")
    return topic(device_id, Channel.STATUS), encode(offline)


class DeviceLogic:
    """A simulated device's protocol behaviour over any :class:`Wire` (``self.wire``)."""

    def __init__(
        self,
        device_id: str,
        token: str,
        *,
        wire: Wire,
        schedule: Schedule,
        behaviour: Behaviour,
        telemetry_interval_s: float,
        seed: int = 0,
    ) -> None:
        self.device_id = device_id
        self.token = token
        self.behaviour = behaviour
        self.interval = telemetry_interval_s
        self.running: ModelRef | None = None
        self.phase: Phase = "idle"
        self.last_error: str | None = None
        self.desired_seq = -1
        self.desired: ModelRef | None = None
        self.updates_committed = 0
        self.updates_failed = 0
        self.telemetry_sent = 0
        self.next_telemetry = 0.0
        self._seq = 0
        self._schedule = schedule
        self._rng = random.Random(seed)
        self.wire = wire
        self.on_update: Callable[[DeviceLogic, DesiredState], None] | None = None

    def will(self) -> tuple[str, bytes]:
        return will_of(self.device_id)

    # -- wire ----------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def publish_state(self) -> None:
        state = State(
            device_id=self.device_id,
            seq=self._next_seq(),
            phase=self.phase,
            running=self.running,
            desired=self.desired,
            agent_version="sim-0.1",
            device_class=None,  # the class it was registered with stands
            last_error=self.last_error,
        )
        self.wire.publish(topic(self.device_id, Channel.STATE), encode(state), qos=1, retain=True)

    def publish_event(self, kind: EventKind, *, model: ModelRef | None, detail: str = "") -> None:
        event = Event(
            device_id=self.device_id, seq=self._next_seq(), event=kind, model=model, detail=detail
        )
        self.wire.publish(topic(self.device_id, Channel.EVENTS), encode(event), qos=1)

    def publish_telemetry(self) -> None:
        version = self.running.version if self.running else None
        latency, error_rate = self.behaviour.for_version(version)
        count = max(1, round(self.behaviour.inferences_per_s * self.interval))
        errors = sum(self._rng.random() < error_rate for _ in range(count))
        samples = sorted(self._rng.gauss(latency, latency * 0.1) for _ in range(32))
        histogram = [0] * 10
        if self.running:
            peak = self.behaviour.confidence_for(version)
            for _ in range(count):
                value = min(0.999, max(0.0, self._rng.gauss(peak, 0.05)))
                histogram[int(value * 10)] += 1
        telemetry = Telemetry(
            device_id=self.device_id,
            seq=self._next_seq(),
            interval_s=self.interval,
            model=self.running,
            inference_count=count if self.running else 0,
            error_count=errors if self.running else 0,
            errors={"inference": errors} if errors and self.running else {},
            latency_ms=LatencySummary(
                p50=max(0.0, samples[16]),
                p95=max(0.0, samples[30]),
                p99=max(0.0, samples[31]),
            )
            if self.running
            else None,
            confidence_histogram=histogram if self.running else [],
        )
        self.wire.publish(topic(self.device_id, Channel.TELEMETRY), encode(telemetry), qos=1)
        self.telemetry_sent += 1

    def announce(self) -> None:
        """On (re)connect: retained ``online``, the retained state, subscribe to ``desired``."""
        online = Status(device_id=self.device_id, status="online")
        self.wire.publish(topic(self.device_id, Channel.STATUS), encode(online), qos=1, retain=True)
        self.publish_state()
        self.wire.subscribe(topic(self.device_id, Channel.DESIRED), qos=1)

    def clear_retained(self, qos: int = 1) -> None:
        """Empty this device's retained topics (status, state, desired): a simulator stopping
        on a shared broker leaves nothing retained for the servers that subscribe later."""
        for channel in (Channel.STATUS, Channel.STATE, Channel.DESIRED):
            self.wire.publish(topic(self.device_id, channel), b"", qos=qos, retain=True)

    def handle_desired(self, data: bytes) -> None:
        try:
            payload = decode(Channel.DESIRED, data, device_id=self.device_id)
        except ContractError as err:
            self.publish_event("payload.rejected", model=None, detail=str(err))
            return
        assert isinstance(payload, DesiredState)
        if payload.seq <= self.desired_seq:
            return
        self.desired_seq = payload.seq
        self.desired = payload.model.ref if payload.model is not None else None
        if payload.model is None or payload.model.ref == self.running:
            return
        if self.on_update is not None:
            self.on_update(self, payload)

    # -- update (runs on a worker thread; wire calls are scheduled on the network thread) ------
    def apply_update(self, desired: DesiredState, *, server_url: str) -> None:
        assert desired.model is not None
        target = desired.model.ref
        self._schedule(lambda: self._begin(target))
        try:
            url = desired.model.url
            if url.startswith("/"):
                url = server_url.rstrip("/") + url
            request = urllib.request.Request(  # noqa: S310 (the server's own URL)
                url, headers={"Authorization": f"Bearer {self.token}"}
            )
            digest = hashlib.sha256()
            size = 0
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                while chunk := response.read(64 * 1024):
                    size += len(chunk)
                    if size > desired.model.size:
                        raise ValueError("bundle larger than announced")
                    digest.update(chunk)
            if size != desired.model.size or digest.hexdigest() != desired.model.sha256:
                raise ValueError("bundle size or sha256 does not match the desired state")
        except (OSError, ValueError) as err:
            reason = str(err)
            self._schedule(lambda: self._fail(target, reason))
            return
        self._schedule(lambda: self._commit(target))

    def _begin(self, target: ModelRef) -> None:
        self.phase = "downloading"
        self.publish_event("update.received", model=target)
        self.publish_event("update.downloading", model=target)
        self.publish_state()

    def _commit(self, target: ModelRef) -> None:
        self.publish_event("update.verifying", model=target)
        self.publish_event("update.switching", model=target)
        self.running = target
        self.phase = "serving"
        self.last_error = None
        self.updates_committed += 1
        self.publish_event("update.committed", model=target)
        self.publish_state()

    def _fail(self, target: ModelRef, reason: str) -> None:
        self.phase = "serving" if self.running else "failed"
        self.last_error = reason
        self.updates_failed += 1
        self.publish_event("update.failed", model=target, detail=reason[:500])
        self.publish_state()


class SimDevice(DeviceLogic):
    """A simulated device on its own paho client (driven by :class:`hil.fleet.FleetSimulator`)."""

    def __init__(
        self,
        device_id: str,
        token: str,
        *,
        broker: BrokerAddress,
        schedule: Schedule,
        behaviour: Behaviour,
        telemetry_interval_s: float,
        seed: int = 0,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id)
        super().__init__(
            device_id,
            token,
            wire=self.client,
            schedule=schedule,
            behaviour=behaviour,
            telemetry_interval_s=telemetry_interval_s,
            seed=seed,
        )
        self.client.username_pw_set(device_id, token)
        will_topic, will_payload = self.will()
        self.client.will_set(will_topic, will_payload, qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.broker = broker

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            self.announce()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.handle_desired(bytes(msg.payload))
