"""MQTT payloads: JSON objects, readable by ``mosquitto_sub`` and any other tool.

Every device → server payload except ``status`` carries the device id, a per-device monotonic
sequence number (one counter per device, across channels, persisted across restarts), a UTC
timestamp and the schema version. ``status`` is also the Last Will, fixed at connect time, so it
has no sequence number.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field

from edgefleet.contract.base import decoding
from edgefleet.contract.capture import CapturePolicy, ClassKey, InputStats
from edgefleet.contract.common import (
    SCHEMA_VERSION,
    AwareDatetime,
    DeviceId,
    ModelRef,
    PayloadSchemaVersion,
    Strict,
)
from edgefleet.contract.common import DesiredModel as DesiredModel  # moved; still importable
from edgefleet.contract.errors import ContractError
from edgefleet.contract.manifest import Task
from edgefleet.contract.parsing import load_json_object, migrate, validate
from edgefleet.contract.shadow import ShadowReport, ShadowSpec
from edgefleet.contract.topics import Channel

#: A payload larger than this is refused unread (by ingest and by the agent).
MAX_PAYLOAD_BYTES = 64 * 1024

Seq = Annotated[int, Meta(ge=0, le=2**63 - 1, description="Per-device monotonic number.")]
Counter = Annotated[int, Meta(ge=0)]
SchemaVersion = PayloadSchemaVersion

#: Fields each schema version added, per payload type. A payload that says an older
#: schema_version must leave the newer fields at their defaults, and :func:`encode` leaves them
#: out of its bytes, so an older payload is written exactly as that EdgeFleet wrote it and an
#: older device can still read a desired state the server marks with its version.
ADDED_FIELDS: dict[int, dict[str, tuple[str, ...]]] = {
    2: {"Telemetry": ("inputs", "class_counts"), "DesiredState": ("capture",)},
    3: {"Telemetry": ("shadow",), "DesiredState": ("shadow",)},
}
#: The version-2 additions (kept for readers of the version-2 rules).
V2_FIELDS: dict[str, tuple[str, ...]] = ADDED_FIELDS[2]


def newer_fields(payload: Strict) -> list[tuple[int, str]]:
    """(version, field) of every field added after ``payload``'s schema_version."""
    version = getattr(payload, "schema_version", SCHEMA_VERSION)
    kind = type(payload).__name__
    return [
        (added, name)
        for added, fields in ADDED_FIELDS.items()
        if added > version
        for name in fields.get(kind, ())
    ]


def _check_version(payload: Strict) -> None:
    version = getattr(payload, "schema_version", SCHEMA_VERSION)
    for added, name in newer_fields(payload):
        if getattr(payload, name) not in (None, {}):
            raise ValueError(f"{name} needs schema_version {added} (this payload says {version})")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(Strict, frozen=True, kw_only=True):
    schema_version: SchemaVersion = SCHEMA_VERSION
    device_id: DeviceId
    seq: Seq
    ts: Annotated[AwareDatetime, Meta(description="When the device sent it.")] = field(
        default_factory=utcnow
    )


class LatencySummary(Strict, frozen=True, kw_only=True):
    """Inference latency over the interval, in milliseconds."""

    p50: Annotated[float, Meta(ge=0, description="Median.")]
    p95: Annotated[float, Meta(ge=0, description="95th percentile.")]
    p99: Annotated[float, Meta(ge=0, description="99th percentile.")] | None = None
    max: Annotated[float, Meta(ge=0, description="Slowest.")] | None = None


class Telemetry(Envelope, frozen=True, kw_only=True):
    """A per-interval summary of what the device did."""

    kind: Annotated[Literal["telemetry"], Meta(description="Payload kind.")] = "telemetry"
    interval_s: Annotated[
        float, Meta(gt=0, le=86_400, description="Length of the summarised interval.")
    ]
    model: (
        Annotated[ModelRef, Meta(description="The model that served during the interval.")] | None
    )
    inference_count: Annotated[Counter, Meta(description="Inferences in the interval.")]
    error_count: Annotated[Counter, Meta(description="Failed inputs in the interval.")] = 0
    errors: Annotated[
        dict[str, Counter], Meta(max_length=64, description="Error count by kind.")
    ] = field(default_factory=dict)
    latency_ms: Annotated[LatencySummary, Meta(description="None if no inference.")] | None = None
    dropped: Annotated[Counter, Meta(description="Inputs dropped by full queues.")] = 0
    system: Annotated[
        dict[str, float],
        Meta(
            max_length=64,
            description="Host gauges: cpu_percent, rss_mb, disk_free_mb, soc_temp_c, ...",
        ),
    ] = field(default_factory=dict)
    confidence_histogram: Annotated[
        list[Counter], Meta(max_length=64, description="Counts of top-1 confidence in bins.")
    ] = field(default_factory=list)
    inputs: (
        Annotated[
            InputStats,
            Meta(
                description="Statistics of a subsample of the preprocessed inputs on the "
                "manifest's reference bins (schema 2; None: not measured)."
            ),
        ]
        | None
    ) = None
    class_counts: Annotated[
        dict[ClassKey, Counter],
        Meta(
            max_length=1000,
            description="Predicted top-1 class counts in the interval, by label or class "
            "index (schema 2).",
        ),
    ] = field(default_factory=dict)
    shadow: (
        Annotated[
            ShadowReport,
            Meta(description="The shadow model's paired figures (schema 3; None: no shadow)."),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_version(self)


Phase = Literal["idle", "downloading", "verifying", "loading", "probation", "serving", "failed"]


class State(Envelope, frozen=True, kw_only=True):
    """The device's current state; retained, so a new subscriber sees it at once."""

    kind: Annotated[Literal["state"], Meta(description="Payload kind.")] = "state"
    phase: Annotated[Phase, Meta(description="What the agent is doing.")]
    running: Annotated[ModelRef, Meta(description="The model serving now.")] | None = None
    desired: Annotated[ModelRef, Meta(description="The model it was told to run.")] | None = None
    agent_version: Annotated[str, Meta(max_length=64, description="The agent's version.")]
    device_class: (
        Annotated[str, Meta(max_length=64, description="Hardware class, e.g. 'pi4'.")] | None
    ) = None
    last_error: (
        Annotated[str, Meta(max_length=2000, description="The last failure, if any.")] | None
    ) = None


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


class Event(Envelope, frozen=True, kw_only=True):
    """Something that happened once: update progress, an error worth a line."""

    kind: Annotated[Literal["event"], Meta(description="Payload kind.")] = "event"
    event: Annotated[EventKind, Meta(description="What happened.")]
    model: Annotated[ModelRef, Meta(description="The model it concerns.")] | None = None
    progress: Annotated[float, Meta(ge=0, le=1, description="0-1, for downloads.")] | None = None
    detail: Annotated[str, Meta(max_length=2000, description="One line of detail.")] = ""


class Status(Strict, frozen=True, kw_only=True):
    """Online/offline; published retained at connect and set as the Last Will."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    kind: Annotated[Literal["status"], Meta(description="Payload kind.")] = "status"
    device_id: DeviceId
    status: Annotated[Literal["online", "offline"], Meta(description="Connection status.")]
    ts: Annotated[AwareDatetime, Meta(description="When it was set.")] = field(
        default_factory=utcnow
    )


class DesiredState(Strict, frozen=True, kw_only=True):
    """What the server wants a device to run; retained, so a device sees it on (re)connect.

    ``seq`` is the server's per-device desired-state revision; a device ignores a desired state
    whose seq is lower than one it has already acted on.
    """

    schema_version: SchemaVersion = SCHEMA_VERSION
    kind: Annotated[Literal["desired"], Meta(description="Payload kind.")] = "desired"
    device_id: DeviceId
    seq: Seq
    ts: Annotated[AwareDatetime, Meta(description="When the server set it.")] = field(
        default_factory=utcnow
    )
    model: Annotated[DesiredModel, Meta(description="None: run no model.")] | None
    capture: (
        Annotated[
            CapturePolicy,
            Meta(description="Which inputs to capture and upload (schema 2); None: none."),
        ]
        | None
    ) = None
    shadow: (
        Annotated[
            ShadowSpec,
            Meta(description="A model to run beside the served one (schema 3); None: none."),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_version(self)


class Result(Envelope, frozen=True, kw_only=True):
    """One postprocessed inference result, published by the ``mqtt`` result sink.

    ``output`` is what the task's postprocessor made (``top_k``, ``detections``, ``classes``,
    ``outputs``...); a failed input has ``error`` instead. Results are not stored and forwarded:
    a device that is offline drops them (oldest first).
    """

    kind: Annotated[Literal["result"], Meta(description="Payload kind.")] = "result"
    model: (
        Annotated[ModelRef, Meta(description="The model that produced it (None: no model).")] | None
    )
    input_id: Annotated[str, Meta(max_length=512, description="Where the input came from.")]
    task: Annotated[Task, Meta(description="The model's task.")] | None = None
    output: (
        Annotated[
            dict[str, Any],
            Meta(description="The postprocessed output; None for a failed input."),
        ]
        | None
    ) = None
    error: Annotated[str, Meta(max_length=2000, description="Why the input failed.")] | None = None


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
    """The JSON bytes published on the wire. A payload marked an older schema_version is
    written without the fields later versions added, exactly as that EdgeFleet wrote it."""
    dropped = newer_fields(payload)
    if not dropped:
        return msgspec.json.encode(payload)
    data = msgspec.to_builtins(payload)
    for _, name in dropped:
        del data[name]
    return msgspec.json.encode(data)


def decode(channel: Channel, raw: bytes, *, device_id: str | None = None) -> Payload:
    """Parse and validate a payload from ``channel``; ContractError with one line if bad.

    When ``device_id`` (from the topic) is given, the payload must name the same device: a
    device cannot speak for another by writing another id in the body.
    """
    cls = PAYLOAD_TYPES[channel]
    if len(raw) <= MAX_PAYLOAD_BYTES:
        # The common case in one msgspec pass; anything it refuses (an older schema version to
        # migrate, or an error) takes the path below, whose errors are the ones reported.
        try:
            with decoding():
                fast = msgspec.json.decode(raw, type=cls)
        except msgspec.DecodeError:
            pass
        else:
            if device_id is None or fast.device_id == device_id:
                return fast
    what = f"{channel.value} payload"
    data = load_json_object(raw, what=what, max_bytes=MAX_PAYLOAD_BYTES)
    payload = validate(cls, migrate(data, what=what), what=what)
    if device_id is not None and payload.device_id != device_id:
        raise ContractError(
            f"{what}: device_id {payload.device_id!r} does not match topic device {device_id!r}"
        )
    return payload
