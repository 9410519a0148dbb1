"""MQTT payloads: JSON objects, readable by ``mosquitto_sub`` and any other tool.

Every device → server payload except ``status`` carries the device id, a per-device monotonic
sequence number (one counter per device, across channels, persisted across restarts), a UTC
timestamp and the schema version. ``status`` is also the Last Will, fixed at connect time, so it
has no sequence number.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field

from edgefleet.contract.common import (
    SCHEMA_VERSION,
    DeviceId,
    ModelRef,
    Sha256Hex,
    Strict,
)
from edgefleet.contract.errors import ContractError
from edgefleet.contract.manifest import Task
from edgefleet.contract.parsing import load_json_object, migrate, validate
from edgefleet.contract.topics import Channel

#: A payload larger than this is refused unread (by ingest and by the agent).
MAX_PAYLOAD_BYTES = 64 * 1024

Seq = Annotated[int, Field(ge=0, le=2**63 - 1, description="Per-device monotonic number.")]
Counter = Annotated[int, Field(ge=0)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    device_id: DeviceId
    seq: Seq
    ts: AwareDatetime = Field(default_factory=utcnow, description="When the device sent it.")


class LatencySummary(Strict):
    """Inference latency over the interval, in milliseconds."""

    p50: float = Field(ge=0)
    p95: float = Field(ge=0)
    p99: float | None = Field(default=None, ge=0)
    max: float | None = Field(default=None, ge=0)


class Telemetry(Envelope):
    """A per-interval summary of what the device did."""

    kind: Literal["telemetry"] = "telemetry"
    interval_s: float = Field(gt=0, le=86_400, description="Length of the summarised interval.")
    model: ModelRef | None = Field(description="The model that served during the interval.")
    inference_count: Counter
    error_count: Counter = 0
    errors: dict[str, Counter] = Field(
        default_factory=dict, max_length=64, description="Error count by kind."
    )
    latency_ms: LatencySummary | None = Field(default=None, description="None if no inference.")
    dropped: Counter = Field(default=0, description="Inputs dropped by full queues.")
    system: dict[str, float] = Field(
        default_factory=dict,
        max_length=64,
        description="Host gauges: cpu_percent, rss_mb, disk_free_mb, soc_temp_c, ...",
    )
    confidence_histogram: list[Counter] = Field(
        default_factory=list, max_length=64, description="Counts of top-1 confidence in bins."
    )


Phase = Literal["idle", "downloading", "verifying", "loading", "probation", "serving", "failed"]


class State(Envelope):
    """The device's current state; retained, so a new subscriber sees it at once."""

    kind: Literal["state"] = "state"
    phase: Phase
    running: ModelRef | None = None
    desired: ModelRef | None = None
    agent_version: str = Field(max_length=64)
    device_class: str | None = Field(default=None, max_length=64)
    last_error: str | None = Field(default=None, max_length=2000)


EventKind = Literal[
    "agent.started",
    "agent.stopping",
    "update.received",
    "update.downloading",
    "update.verifying",
    "update.self_test",
    "update.switching",
    "update.committed",
    "update.rolled_back",
    "update.failed",
    "model.load_failed",
    "input.error",
    "payload.rejected",
]


class Event(Envelope):
    """Something that happened once: update progress, an error worth a line."""

    kind: Literal["event"] = "event"
    event: EventKind
    model: ModelRef | None = None
    progress: float | None = Field(default=None, ge=0, le=1)
    detail: str = Field(default="", max_length=2000)


class Status(Strict):
    """Online/offline; published retained at connect and set as the Last Will."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["status"] = "status"
    device_id: DeviceId
    status: Literal["online", "offline"]
    ts: AwareDatetime = Field(default_factory=utcnow)


class DesiredModel(Strict):
    """Where to fetch the artifact bundle of a model version, and how to check it."""

    name: str
    version: str
    url: str = Field(min_length=1, max_length=2048, description="HTTP(S) URL of the bundle.")
    sha256: Sha256Hex = Field(description="SHA-256 of the bundle file.")
    size: int = Field(ge=1, description="Bundle size in bytes.")
    signature: str | None = Field(default=None, max_length=200, description="Manifest signature.")

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version)


class DesiredState(Strict):
    """What the server wants a device to run; retained, so a device sees it on (re)connect.

    ``seq`` is the server's per-device desired-state revision; a device ignores a desired state
    whose seq is lower than one it has already acted on.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["desired"] = "desired"
    device_id: DeviceId
    seq: Seq
    ts: AwareDatetime = Field(default_factory=utcnow)
    model: DesiredModel | None = Field(description="None: run no model.")


class Result(Envelope):
    """One postprocessed inference result, published by the ``mqtt`` result sink.

    ``output`` is what the task's postprocessor made (``top_k``, ``detections``, ``classes``,
    ``outputs``...); a failed input has ``error`` instead. Results are not stored and forwarded:
    a device that is offline drops them (oldest first).
    """

    kind: Literal["result"] = "result"
    model: ModelRef | None = Field(description="The model that produced it (None: no model).")
    input_id: str = Field(max_length=512, description="Where the input came from.")
    task: Task | None = Field(default=None, description="The model's task.")
    output: dict[str, Any] | None = Field(
        default=None, description="The postprocessed output; None for a failed input."
    )
    error: str | None = Field(default=None, max_length=2000, description="Why the input failed.")


Payload = Telemetry | State | Event | Status | DesiredState | Result
PAYLOAD_TYPES: dict[Channel, type[Payload]] = {
    Channel.TELEMETRY: Telemetry,
    Channel.STATE: State,
    Channel.EVENTS: Event,
    Channel.STATUS: Status,
    Channel.DESIRED: DesiredState,
    Channel.RESULTS: Result,
}


def encode(payload: Payload) -> bytes:
    """The JSON bytes published on the wire."""
    return payload.model_dump_json(exclude_none=False).encode()


def decode(channel: Channel, raw: bytes, *, device_id: str | None = None) -> Payload:
    """Parse and validate a payload from ``channel``; ContractError with one line if bad.

    When ``device_id`` (from the topic) is given, the payload must name the same device: a
    device cannot speak for another by writing another id in the body.
    """
    what = f"{channel.value} payload"
    data = load_json_object(raw, what=what, max_bytes=MAX_PAYLOAD_BYTES)
    payload = validate(PAYLOAD_TYPES[channel], migrate(data, what=what), what=what)
    if device_id is not None and payload.device_id != device_id:
        raise ContractError(
            f"{what}: device_id {payload.device_id!r} does not match topic device {device_id!r}"
        )
    return payload
