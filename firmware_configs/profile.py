"""The device profile: what a device class can afford, validated field by field.

Standard library and pydantic only: the agent loads it on the device.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_PROFILE_BYTES = 64 * 1024


#: onnxruntime graph optimisation levels, by name (shared with the agent's engine config).
GraphOptimization = Literal["disable", "basic", "extended", "all"]
GRAPH_OPTIMIZATION_FIELD: Any = Field(
    default="all", description="onnxruntime graph optimisation level."
)


# Measured with bench/agent_bench.py (section "onnxruntime memory options"): with the arena on,
# turning the memory pattern off lowers steady-state RSS (conv 224x224x32: -6.6 MB) at no
# measurable latency cost; turning the arena off raises it (glibc keeps the freed blocks).
CPU_MEM_ARENA_FIELD: Any = Field(
    default=True,
    description="onnxruntime CPU memory arena; off mallocs every tensor (measured: more RSS).",
)
MEM_PATTERN_FIELD: Any = Field(
    default=True,
    description="onnxruntime memory pattern (pre-planned block for intermediate tensors); "
    "off saves RSS on low-memory devices.",
)


BATCH_SIZE_FIELD: Any = Field(
    default=1,
    ge=1,
    le=256,
    description="Queued inputs of a non-live source (video, batch) run together when the "
    "model's batch dimension is dynamic; telemetry latency is then per input (amortised).",
)


def execution_providers_field() -> Any:
    """The execution-provider list field, shared with the agent's engine config."""
    return Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        description="onnxruntime execution providers, in order.",
    )


class ProfileError(ValueError):
    """A profile that cannot be found, read or validated; one line per bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineProfile(_Strict):
    threads: int = Field(ge=1, le=64, description="Intra-op threads for inference.")
    backends: list[Literal["onnx", "tflite"]] = Field(
        min_length=1, description="Backend preference when an artifact ships several formats."
    )
    graph_optimization: GraphOptimization = GRAPH_OPTIMIZATION_FIELD
    execution_providers: list[str] = execution_providers_field()
    cpu_mem_arena: bool = CPU_MEM_ARENA_FIELD
    mem_pattern: bool = MEM_PATTERN_FIELD
    batch_size: int = BATCH_SIZE_FIELD


class InputDefaults(_Strict):
    width: int = Field(ge=16, le=7680, description="Default capture width, pixels.")
    height: int = Field(ge=16, le=4320, description="Default capture height, pixels.")
    fps: float = Field(gt=0, le=240, description="Default capture rate.")
    queue_size: int = Field(default=4, ge=1, le=1024, description="Frames buffered before drops.")


class Budgets(_Strict):
    memory_mb: int = Field(ge=32, description="RSS the agent should stay under.")
    disk_mb: int = Field(ge=16, description="Disk for artifacts, downloads and the offline queue.")
    offline_queue_mb: int = Field(ge=1, description="Part of disk_mb for store-and-forward.")
    keep_artifacts: int = Field(default=2, ge=1, le=10, description="Artifacts kept for rollback.")

    @model_validator(mode="after")
    def _fits(self) -> Budgets:
        if self.offline_queue_mb >= self.disk_mb:
            raise ValueError("offline_queue_mb must be smaller than disk_mb")
        return self


class TelemetryProfile(_Strict):
    interval_s: float = Field(ge=1, le=3600, description="Seconds between telemetry summaries.")


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Device class id.")
    description: str = Field(max_length=400, description="What hardware this is.")
    arch: Literal["aarch64", "armv7l", "x86_64"] = Field(description="CPU architecture.")
    cores: int = Field(ge=1, le=256, description="CPU cores.")
    memory_mb: int = Field(ge=128, description="Installed RAM.")
    int8_fast: bool = Field(
        description="Has int8 dot-product instructions (ARMv8.2 dotprod, x86 VNNI)."
    )
    engine: EngineProfile
    input: InputDefaults
    budgets: Budgets
    telemetry: TelemetryProfile

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if self.engine.threads > self.cores:
            raise ValueError(f"engine.threads ({self.engine.threads}) exceeds cores ({self.cores})")
        if self.engine.batch_size > self.input.queue_size:
            raise ValueError(
                f"engine.batch_size ({self.engine.batch_size}) exceeds input.queue_size "
                f"({self.input.queue_size})"
            )
        if self.budgets.memory_mb > self.memory_mb:
            raise ValueError("budgets.memory_mb exceeds the installed memory_mb")
        return self


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
        return DeviceProfile.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
        )
        raise ProfileError(f"{where}: {problems}") from err
