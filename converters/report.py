"""``report.json``: what the conversion did, with numbers, and its human summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from converters.quantize.report import QuantizationReport, table, where_timed
from converters.validators import CheckResult
from edgefleet.contract import Manifest

REPORT_FILE = "report.json"


class SourceReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="The source file's name.")
    kind: str = Field(description="Loader that read it, e.g. 'sklearn'.")
    sha256: str = Field(description="SHA-256 of the source file.")
    size: int = Field(description="Size of the source file in bytes.")
    framework_version: str | None = Field(default=None, description="Source framework version.")


class EvalReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    synthetic: bool = Field(description="True when no eval data was given.")
    samples: int = Field(description="Rows validated.")
    file: str | None = Field(default=None, description="The eval file's name.")
    sha256: str | None = Field(default=None, description="SHA-256 of the eval file.")
    has_labels: bool = Field(default=False, description="Whether 'y' was present.")


class ConvertReport(BaseModel):
    """Everything the converter checked and measured, in one JSON document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Model name.")
    version: str = Field(description="Model version.")
    task: str = Field(description="Task recorded in the manifest.")
    source: SourceReport = Field(description="The input model file.")
    eval: EvalReport = Field(description="The rows used for validation.")
    checks: list[CheckResult] = Field(description="Every validator's result.")
    latency_ms_p50: float = Field(description="Single-row latency median, one thread.")
    latency_ms_p95: float = Field(description="Single-row latency 95th percentile, one thread.")
    latency_runs: int = Field(description="Timed runs behind the latency figures.")
    model_bytes: int = Field(description="Size of the written model file.")
    tools: dict[str, str] = Field(description="Tool name → version.")
    timings_s: dict[str, float] = Field(description="Seconds spent per conversion step.")
    notes: list[str] = Field(default_factory=list, description="Things worth knowing.")
    quantization: QuantizationReport | None = Field(
        default=None, description="Every quantization candidate with its numbers and verdict."
    )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`converters.api.convert` returns."""

    manifest: Manifest
    artifact_dir: Path
    report: ConvertReport


def summary(result: ConvertResult) -> str:
    """A few lines for a terminal."""
    m, r = result.manifest, result.report
    lines = [
        f"converted {r.source.file} ({r.source.kind}) → {result.artifact_dir}",
        f"  model    {m.name}@{m.version}  {m.format}/{m.precision}  task={m.task}  "
        f"{r.model_bytes} bytes",
        f"  inputs   {', '.join(f'{t.name}{t.shape}:{t.dtype}' for t in m.inputs)}",
        f"  outputs  {', '.join(f'{t.name}{t.shape}:{t.dtype}' for t in m.outputs)}",
    ]
    for check in r.checks:
        state = "skipped" if check.skipped else ("ok" if check.passed else "FAILED")
        lines.append(f"  {check.name:<8} {state}: {check.message}")
    where = "synthetic" if r.eval.synthetic else f"eval ({r.eval.file})"
    lines.append(f"  rows     {r.eval.samples} {where}")
    lines.append(
        f"  latency  p50 {r.latency_ms_p50:.3f} ms  p95 {r.latency_ms_p95:.3f} ms  (1 thread)"
    )
    if r.quantization is not None:
        q = r.quantization
        lines.append(
            f"  quantize {q.mode} for {q.target} ({q.target_arch}"
            f"{', int8-fast' if q.target_int8_fast else ''}), budget {q.metric} drop <= "
            f"{q.max_drop}, {q.eval_rows} {q.eval_source} rows, calibration "
            f"{q.calibration_samples} rows of {q.calibration_file}"
            + (f", load {q.host_load}" if q.host_load is not None else "")
        )
        lines.extend(table(q))
        lines.append(f"  chosen   {q.chosen}")
        if (warning := where_timed(q)) is not None:
            lines.append(warning)
    signed = f"signed by {m.signature.key_id}" if m.signature else "unsigned"
    lines.append(f"  manifest {signed}")
    return "\n".join(lines)
