"""One typed config per quantization mode; engines are dispatched on the config's type.

``StaticInt8`` (calibrated activations, QDQ or QOperator), ``DynamicInt8`` (weights only,
activations quantized at run time) and ``Fp16`` (float16 weights and activations, float32 I/O).
Each is a frozen pydantic model with ``extra="forbid"``; :data:`QuantConfig` is their
discriminated union (``kind``), which is what ``manifest.build.config`` records.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Int8Type = Literal["int8", "uint8"]
CalibrationMethodName = Literal["minmax", "entropy", "percentile"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticInt8(_Config):
    """Static int8: activation ranges from the calibration set, written as QDQ or QOperator."""

    kind: Literal["static_int8"] = "static_int8"
    format: Literal["qdq", "qoperator"] = Field(description="QDQ pairs or QLinear* operators.")
    per_channel: bool = Field(description="One weight scale per output channel.")
    activation: Int8Type = Field(description="Activation type (x86 QOperator wants uint8).")
    weight: Int8Type = Field(default="int8", description="Weight type.")
    method: CalibrationMethodName = Field(default="minmax", description="Range estimator.")
    reduce_range: bool = Field(
        default=False, description="7-bit weights: avoids overflow on x86 without VNNI."
    )
    excluded_nodes: tuple[str, ...] = Field(
        default=(), description="Nodes left in float (accuracy-budget loop)."
    )


class DynamicInt8(_Config):
    """Dynamic int8: int8 weights, activations quantized per run (MatMul/Gemm models)."""

    kind: Literal["dynamic_int8"] = "dynamic_int8"
    per_channel: bool = Field(default=False, description="One weight scale per output channel.")
    weight: Int8Type = Field(default="int8", description="Weight type.")
    reduce_range: bool = Field(default=False, description="7-bit weights.")
    excluded_nodes: tuple[str, ...] = Field(default=(), description="Nodes left in float.")


class Fp16(_Config):
    """float16 weights and activations; inputs and outputs stay float32."""

    kind: Literal["fp16"] = "fp16"
    keep_io_types: bool = Field(default=True, description="Keep float32 graph inputs/outputs.")


QuantConfig = Annotated[StaticInt8 | DynamicInt8 | Fp16, Field(discriminator="kind")]


def config_name(config: StaticInt8 | DynamicInt8 | Fp16) -> str:
    """A short stable label, e.g. ``int8-qdq-s8s8-pc-minmax``."""
    if isinstance(config, Fp16):
        return "fp16"
    letters = {"int8": "s8", "uint8": "u8"}
    excluded = f"-x{len(config.excluded_nodes)}" if config.excluded_nodes else ""
    channel = "pc" if config.per_channel else "pt"
    rr = "-rr" if config.reduce_range else ""
    if isinstance(config, DynamicInt8):
        return f"int8-dynamic-{letters[config.weight]}-{channel}{rr}{excluded}"
    types = f"{letters[config.activation]}{letters[config.weight]}"
    return f"int8-{config.format}-{types}-{channel}-{config.method}{rr}{excluded}"


def precision_of(
    config: StaticInt8 | DynamicInt8 | Fp16 | None,
) -> Literal["fp32", "fp16", "int8", "mixed"]:
    """The manifest precision: 'mixed' when the budget loop left some nodes in float."""
    if config is None:
        return "fp32"
    if isinstance(config, Fp16):
        return "fp16"
    return "mixed" if config.excluded_nodes else "int8"


def config_record(config: StaticInt8 | DynamicInt8 | Fp16 | None) -> dict[str, str | int | bool]:
    """The chosen config flattened for ``manifest.build.config`` (``quant.*`` keys)."""
    if config is None:
        return {"quant.kind": "fp32"}
    record: dict[str, str | int | bool] = {"quant.name": config_name(config)}
    for key, value in config.model_dump().items():
        if key == "excluded_nodes":
            record["quant.excluded_nodes"] = len(value)
            if value:
                record["quant.excluded"] = ",".join(value)[:1000]
        else:
            record[f"quant.{key}"] = value
    return record
