"""Assemble: one finished conversion, in any format, → its report and its (unsigned) manifest.

Every format fills one :class:`Artifact`; the report and the manifest are built from it here and
nowhere else, so a field means the same thing whatever the format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from converters.errors import ConvertError
from converters.options import ConvertTask
from converters.quantize.report import QuantizationReport
from converters.report import REPORT_FILE, ConvertReport, EvalReport, SourceReport
from converters.validators import CheckResult
from edgefleet.contract import Manifest, ModelFile, SelfTest, TensorSpec
from edgefleet.contract.manifest import (
    BuildInfo,
    Format,
    Framework,
    Metrics,
    Precision,
    Preprocessing,
    ReferenceStats,
    SourceInfo,
)
from edgefleet.contract.postprocess import Postprocess
from edgefleet.pydantic_errors import describe_validation_error

SELFTEST_FILE = "selftest.npz"


@dataclass(frozen=True)
class Artifact:
    """Everything the report and the manifest say about one converted, measured model."""

    name: str
    version: str
    task: ConvertTask
    format: Format
    precision: Precision
    model_file: str
    #: The model file's and the self-test file's bytes, as written.
    model: bytes
    selftest: bytes
    selftest_atol: float
    selftest_rtol: float
    selftest_outputs: list[str]
    source: SourceReport
    framework: Framework
    eval: EvalReport
    #: ``manifest.metrics.eval_samples`` (None when validated on synthetic rows, for ONNX).
    eval_samples: int | None
    checks: list[CheckResult]
    latency_ms_p50: float
    latency_ms_p95: float
    latency_runs: int
    threads: int | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: Preprocessing | None
    labels: list[str]
    postprocess: Postprocess | None
    top1: float | None
    stats: ReferenceStats | None
    tools: dict[str, str]
    config: dict[str, str | int | float | bool]
    calibration_sha256: str | None
    quantization: QuantizationReport | None = None
    #: ``manifest.metrics.extra``: every validator number, ``<check>.<key>``.
    extra: dict[str, float] = field(default_factory=dict)
    #: What the converter did that a reader should know (fixed dims, a kept fp32, ...).
    notes: list[str] = field(default_factory=list)


def check_value(checks: list[CheckResult], check: str, key: str) -> float | None:
    """A number a validator measured, or None when it was skipped or absent."""
    for result in checks:
        if result.name == check and not result.skipped:
            value = result.values.get(key)
            return float(value) if isinstance(value, int | float) else None
    return None


def extra_metrics(checks: list[CheckResult]) -> dict[str, float]:
    """Every validator number as ``<check>.<key>`` for ``manifest.metrics.extra``."""
    return {
        f"{c.name}.{k}": float(v)
        for c in checks
        for k, v in c.values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def build_report(art: Artifact, *, timings: dict[str, float]) -> ConvertReport:
    return ConvertReport(
        name=art.name,
        version=art.version,
        task=art.task,
        source=art.source,
        eval=art.eval,
        checks=art.checks,
        latency_ms_p50=art.latency_ms_p50,
        latency_ms_p95=art.latency_ms_p95,
        latency_runs=art.latency_runs,
        model_bytes=len(art.model),
        tools=art.tools,
        timings_s=timings,
        notes=art.notes,
        quantization=art.quantization,
    )


def build_manifest(art: Artifact, files: list[ModelFile]) -> Manifest:
    """The unsigned manifest, validated by the contract (ConvertError if it would be invalid)."""
    try:
        return Manifest(
            name=art.name,
            version=art.version,
            format=art.format,
            precision=art.precision,
            model_file=art.model_file,
            files=files,
            inputs=art.inputs,
            outputs=art.outputs,
            preprocessing=art.preprocessing,
            task=art.task,
            labels=art.labels,
            postprocess=art.postprocess,
            source=SourceInfo(
                framework=art.framework,
                framework_version=art.source.framework_version,
                tools=art.tools,
                original_file=art.source.file[:255],
            ),
            metrics=Metrics(
                top1=art.top1,
                eval_samples=art.eval_samples,
                latency_ms_p50=art.latency_ms_p50,
                latency_ms_p95=art.latency_ms_p95,
                threads=art.threads,
                extra=art.extra,
            ),
            self_test=SelfTest(
                file=SELFTEST_FILE,
                atol=art.selftest_atol,
                rtol=art.selftest_rtol,
                outputs=art.selftest_outputs,
            ),
            reference_stats=art.stats,
            build=BuildInfo(
                config=art.config,
                calibration_sha256=art.calibration_sha256,
                report_file=REPORT_FILE,
            ),
        )
    except ValidationError as err:
        raise ConvertError(
            f"the manifest would be invalid: {describe_validation_error(err)}"
        ) from err
