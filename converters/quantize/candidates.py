"""Which quantization candidates are worth trying for this graph on this target.

The op mix decides *whether* (tree ensembles and graphs without Conv/MatMul/Gemm are never
quantized; dynamic int8 only for MatMul/Gemm graphs without convolutions), the target profile
decides *which* int8 types: S8S8 QDQ everywhere (ARM and VNNI run it fast), U8S8 QOperator on
x86 (S8S8 QOperator is ~10× slower there), ``reduce_range`` on x86 without VNNI. The latency
probe and gate still measure every candidate: these are guesses to measure, not conclusions.
Every static candidate is planned with MinMax ranges; the pipeline tries the other range
estimators only on a candidate MinMax leaves outside the accuracy budget.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from converters.quantize.configs import DynamicInt8, Fp16, StaticInt8

if TYPE_CHECKING:
    from onnx import ModelProto

QuantizeMode = Literal["auto", "int8", "fp16", "none"]
Arch = Literal["aarch64", "armv7l", "x86_64"]

CONV_OPS = frozenset({"Conv", "ConvTranspose"})
MATMUL_OPS = frozenset({"MatMul", "Gemm"})
ML_DOMAIN = "ai.onnx.ml"


@dataclass(frozen=True)
class Target:
    """What the candidates are chosen for (a device profile, or this host)."""

    name: str
    arch: Arch
    int8_fast: bool


@dataclass(frozen=True)
class OpMix:
    convs: int
    matmuls: int
    ml_ops: int
    total: int

    @property
    def quantizable(self) -> bool:
        return self.convs + self.matmuls > 0


@dataclass
class Plan:
    """The candidates to build, and each mode that was not tried with the reason."""

    configs: list[StaticInt8 | DynamicInt8 | Fp16] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def op_mix(model: ModelProto) -> OpMix:
    counts = Counter(n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx"))
    ml = sum(1 for n in model.graph.node if n.domain == ML_DOMAIN)
    return OpMix(
        convs=sum(counts[o] for o in CONV_OPS),
        matmuls=sum(counts[o] for o in MATMUL_OPS),
        ml_ops=ml,
        total=len(model.graph.node),
    )


def host_target() -> Target:
    """This machine: its architecture and whether it has int8 dot-product instructions."""
    import platform

    machine = platform.machine().lower()
    arch: Arch = "x86_64" if machine in ("x86_64", "amd64") else "aarch64"
    if machine.startswith("armv7"):
        arch = "armv7l"
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        flags = ""
    fast = any(f in flags for f in ("avx512_vnni", "avx_vnni", " asimddp"))
    return Target(name="host", arch=arch, int8_fast=fast)


def _int8_configs(target: Target, *, per_channel_ok: bool) -> list[StaticInt8]:
    channels = [True, False] if per_channel_ok else [False]
    configs: list[StaticInt8] = [
        StaticInt8(format="qdq", per_channel=pc, activation="int8") for pc in channels
    ]
    if target.arch == "x86_64":
        rr = not target.int8_fast
        configs += [
            StaticInt8(format="qoperator", per_channel=pc, activation="uint8", reduce_range=rr)
            for pc in channels
        ]
    else:
        configs.append(StaticInt8(format="qoperator", per_channel=channels[0], activation="uint8"))
    return configs


def plan_candidates(
    mix: OpMix,
    *,
    mode: QuantizeMode,
    target: Target,
    per_channel_ok: bool,
    fp16_problem: str | None,
) -> Plan:
    """The candidate configs for ``mode`` (``none`` → no candidates)."""
    plan = Plan()
    if mode == "none":
        return plan
    if mix.ml_ops:
        plan.skipped["int8"] = plan.skipped["fp16"] = (
            f"{mix.ml_ops} ai.onnx.ml operators (tree/linear ML ops): not quantized"
        )
        return plan
    if mode in ("auto", "int8"):
        if not mix.quantizable:
            plan.skipped["int8"] = "no Conv/MatMul/Gemm to quantize"
        else:
            plan.configs += _int8_configs(target, per_channel_ok=per_channel_ok)
            if not per_channel_ok:
                plan.skipped["int8-per-channel"] = "opset < 13 and the upgrade failed"
            if mix.convs == 0:
                plan.configs.append(DynamicInt8(per_channel=per_channel_ok))
            else:
                plan.skipped["int8-dynamic"] = (
                    f"{mix.convs} convolutions: dynamic int8 runs ConvInteger (slow)"
                )
    if mode in ("auto", "fp16"):
        if fp16_problem is not None:
            plan.skipped["fp16"] = fp16_problem
        else:
            plan.configs.append(Fp16())
    return plan
