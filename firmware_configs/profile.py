"""The device profile: what a device class can afford, validated table by table.

Standard library and msgspec only: the agent loads it on the device (no pydantic there: it alone
costs +15.4 MB RSS). A bad profile gives one ProfileError naming a bad field of each bad table
(msgspec stops at a table's first error).
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from edgefleet.structs import TableErrors, anchored, convert_tables

MAX_PROFILE_BYTES = 64 * 1024


#: onnxruntime graph optimisation levels, by name (shared with the agent's engine config).
GraphOptimization = Literal["disable", "basic", "extended", "all"]
GraphOptimizationField = Annotated[
    GraphOptimization, Meta(description="onnxruntime graph optimisation level.")
]

# Measured with bench/agent_bench.py (section "onnxruntime memory options"): with the arena on,
# turning the memory pattern off lowers steady-state RSS (conv 224x224x32: -6.6 MB) at no
# measurable latency cost; turning the arena off raises it (glibc keeps the freed blocks).
CpuMemArenaField = Annotated[
    bool,
    Meta(
        description="onnxruntime CPU memory arena; off mallocs every tensor (measured: more RSS)."
    ),
]
MemPatternField = Annotated[
    bool,
    Meta(
        description="onnxruntime memory pattern (pre-planned block for intermediate tensors); "
        "off saves RSS on low-memory devices."
    ),
]
BatchSizeField = Annotated[
    int,
    Meta(
        ge=1,
        le=256,
        description="Queued inputs of a non-live source (video, batch) run together when the "
        "model's batch dimension is dynamic; telemetry latency is then per input (amortised).",
    ),
]
#: The execution-provider list, shared with the agent's engine config (default: CPU only).
ExecutionProvidersField = Annotated[
    list[str], Meta(min_length=1, description="onnxruntime execution providers, in order.")
]


def default_execution_providers() -> list[str]:
    return ["CPUExecutionProvider"]


class ProfileError(ValueError):
    """A profile that cannot be found, read or validated; one line naming each bad table's field."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Unknown keys are errors, instances are immutable. Each subclass says ``frozen=True,
    kw_only=True`` again: msgspec applies kw_only to the fields a class defines (it is not
    inherited), and mypy needs frozen repeated."""


#: The artifact formats a device runs, in order of preference; a format left out is refused
#: by the agent at load and by the server at assignment/rollout time (32-bit ARM: no
#: onnxruntime wheels, so "tflite" only).
BackendsField = Annotated[
    list[Literal["onnx", "tflite"]],
    Meta(
        min_length=1,
        description="Artifact formats this device runs, in order of preference; others are "
        "refused (at load by the agent, at assignment and rollout time by the server).",
    ),
]


class EngineProfile(_Strict, frozen=True, kw_only=True):
    threads: Annotated[int, Meta(ge=1, le=64, description="Intra-op threads for inference.")]
    backends: BackendsField
    graph_optimization: GraphOptimizationField = "all"
    execution_providers: ExecutionProvidersField = msgspec.field(
        default_factory=default_execution_providers
    )
    cpu_mem_arena: CpuMemArenaField = True
    mem_pattern: MemPatternField = True
    batch_size: BatchSizeField = 1


class InputDefaults(_Strict, frozen=True, kw_only=True):
    width: Annotated[int, Meta(ge=16, le=7680, description="Default capture width, pixels.")]
    height: Annotated[int, Meta(ge=16, le=4320, description="Default capture height, pixels.")]
    fps: Annotated[float, Meta(gt=0, le=240, description="Default capture rate.")]
    queue_size: Annotated[int, Meta(ge=1, le=1024, description="Frames buffered before drops.")] = 4


class Budgets(_Strict, frozen=True, kw_only=True):
    memory_mb: Annotated[int, Meta(ge=32, description="RSS the agent should stay under.")]
    disk_mb: Annotated[
        int, Meta(ge=16, description="Disk for artifacts, downloads and the offline queue.")
    ]
    offline_queue_mb: Annotated[
        int, Meta(ge=1, description="Part of disk_mb for store-and-forward.")
    ]
    keep_artifacts: Annotated[
        int, Meta(ge=1, le=10, description="Artifacts kept for rollback.")
    ] = 2

    def __post_init__(self) -> None:
        if self.offline_queue_mb >= self.disk_mb:
            raise ValueError("offline_queue_mb must be smaller than disk_mb")


class TelemetryProfile(_Strict, frozen=True, kw_only=True):
    interval_s: Annotated[
        float, Meta(ge=1, le=3600, description="Seconds between telemetry summaries.")
    ]


class DeviceProfile(_Strict, frozen=True, kw_only=True):
    name: Annotated[
        str, Meta(pattern=anchored(r"^[a-z0-9][a-z0-9_-]{0,31}$"), description="Device class id.")
    ]
    description: Annotated[str, Meta(max_length=400, description="What hardware this is.")]
    arch: Annotated[Literal["aarch64", "armv7l", "x86_64"], Meta(description="CPU architecture.")]
    cores: Annotated[int, Meta(ge=1, le=256, description="CPU cores.")]
    memory_mb: Annotated[int, Meta(ge=128, description="Installed RAM.")]
    int8_fast: Annotated[
        bool, Meta(description="Has int8 dot-product instructions (ARMv8.2 dotprod, x86 VNNI).")
    ]
    engine: Annotated[EngineProfile, Meta(description="Inference engine defaults.")]
    input: Annotated[InputDefaults, Meta(description="Camera and queue defaults.")]
    budgets: Annotated[Budgets, Meta(description="Memory and disk the agent may use.")]
    telemetry: Annotated[TelemetryProfile, Meta(description="Telemetry defaults.")]

    def __post_init__(self) -> None:
        if self.engine.threads > self.cores:
            raise ValueError(f"engine.threads ({self.engine.threads}) exceeds cores ({self.cores})")
        if self.engine.batch_size > self.input.queue_size:
            raise ValueError(
                f"engine.batch_size ({self.engine.batch_size}) exceeds input.queue_size "
                f"({self.input.queue_size})"
            )
        if self.budgets.memory_mb > self.memory_mb:
            raise ValueError("budgets.memory_mb exceeds the installed memory_mb")


def validate_profile(data: Any) -> DeviceProfile:
    """Raw TOML data as a DeviceProfile; ProfileError naming a bad field of each bad table."""
    try:
        return convert_tables(data, DeviceProfile)
    except TableErrors as err:
        raise ProfileError("; ".join(err.lines)) from err


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped in ``firmware_configs/profiles``."""
    folder = resources.files("firmware_configs") / "profiles"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a built-in profile by name, or a profile file by path; ProfileError if bad."""
    text: str
    where: str
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        where = str(candidate)
        try:
            if candidate.stat().st_size > MAX_PROFILE_BYTES:
                raise ProfileError(f"{where}: larger than {MAX_PROFILE_BYTES} bytes")
            text = candidate.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ProfileError(f"{where}: cannot read: {err}") from err
    else:
        name = str(name_or_path)
        if name not in builtin_profiles():
            raise ProfileError(
                f"unknown profile {name!r}; built-in: {', '.join(builtin_profiles())}"
            )
        where = f"profile {name}"
        resource = resources.files("firmware_configs") / "profiles" / f"{name}.toml"
        text = resource.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{where}: not valid TOML: {err}") from err
    try:
        return validate_profile(data)
    except ProfileError as err:
        raise ProfileError(f"{where}: {err}") from err


def systemd_memory_dropin(profile: DeviceProfile) -> str:
    """A drop-in for ``edgefleet-agent.service`` with the memory limits of ``profile``: the
    kernel reclaims the service's page cache above ``MemoryHigh`` (the budget, which the agent
    keeps its RSS under: agent.memory) and kills it above ``MemoryMax`` (1.5x: the cgroup also
    counts the page cache of downloads and the outbox). Without it the unit's 768 MB stop sits
    under the 1024 MB budgets of the rpi5 and x86_64 profiles."""
    budget = profile.budgets.memory_mb
    return (
        f"# From device profile {profile.name} (budgets.memory_mb = {budget}): "
        "firmware_configs/install-agent.sh\n"
        f"[Service]\nMemoryHigh={budget}M\nMemoryMax={budget * 3 // 2}M\n"
    )
