"""Turning one finished, validated conversion into its manifest and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from converters.errors import ConvertError
from converters.evaldata import EvalSet
from converters.options import ConvertOptions, ConvertTask, config_record
from converters.quantize.configs import config_record as quant_record
from converters.quantize.configs import precision_of
from converters.quantize.stage import QuantStage
from converters.report import REPORT_FILE, ConvertReport, EvalReport, SourceReport
from converters.runtime import Latency
from converters.selftest import SelfTestData
from converters.sources import LoadedModel
from converters.validators import CheckResult
from edgefleet.contract import Manifest, ModelFile, SelfTest, TensorSpec
from edgefleet.contract.manifest import BuildInfo, Metrics, ReferenceStats, SourceInfo
from edgefleet.contract.postprocess import Postprocess
from edgefleet.pydantic_errors import describe_validation_error

MODEL_FILE = "model.onnx"
SELFTEST_FILE = "selftest.npz"


@dataclass(frozen=True)
class Conversion:
    """Everything known about one converted model once it has passed validation."""

    source: Path
    source_kind: str
    source_sha256: str
    source_size: int
    loaded: LoadedModel
    options: ConvertOptions
    name: str
    version: str
    task: ConvertTask
    labels: list[str]
    postprocess: Postprocess | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    model_bytes: int
    eval_set: EvalSet | None
    eval_sha256: str | None
    rows: int
    checks: list[CheckResult]
    latency: Latency
    selftest: SelfTestData
    stats: ReferenceStats | None
    tools: dict[str, str]
    quant: QuantStage | None = None
    #: What the converter did to the graph that a reader should know (fixed dims, ...).
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


def _top1(conv: Conversion) -> float | None:
    """The shipped model's top-1: the quantized candidate's when one was chosen."""
    quantized = check_value(conv.checks, "quantized", "top1")
    return quantized if quantized is not None else check_value(conv.checks, "top1", "top1")


def _build_config(conv: Conversion) -> dict[str, str | int | float | bool]:
    record = config_record(conv.options, eval_sha256=conv.eval_sha256)
    if conv.quant is not None:
        record.update(quant_record(conv.quant.config))
        record["quant.chosen"] = conv.quant.outcome.report.chosen
    return record


def build_report(conv: Conversion, *, timings: dict[str, float]) -> ConvertReport:
    return ConvertReport(
        name=conv.name,
        version=conv.version,
        task=conv.task,
        source=SourceReport(
            file=conv.source.name,
            kind=conv.source_kind,
            sha256=conv.source_sha256,
            size=conv.source_size,
            framework_version=conv.loaded.framework_version,
        ),
        eval=EvalReport(
            synthetic=conv.eval_set is None,
            samples=conv.rows,
            file=conv.options.eval_data.name if conv.options.eval_data else None,
            sha256=conv.eval_sha256,
            has_labels=conv.eval_set is not None and conv.eval_set.labels is not None,
        ),
        checks=conv.checks,
        latency_ms_p50=conv.latency.p50_ms,
        latency_ms_p95=conv.latency.p95_ms,
        latency_runs=conv.latency.runs,
        model_bytes=conv.model_bytes,
        tools=conv.tools,
        timings_s=timings,
        notes=[*conv.loaded.notes, *conv.notes],
        quantization=conv.quant.outcome.report if conv.quant is not None else None,
    )


def build_manifest(conv: Conversion, files: list[ModelFile]) -> Manifest:
    """The unsigned manifest, validated by the contract (ConvertError if it would be invalid)."""
    try:
        return Manifest(
            name=conv.name,
            version=conv.version,
            format="onnx",
            precision=precision_of(conv.quant.config) if conv.quant is not None else "fp32",
            model_file=MODEL_FILE,
            files=files,
            inputs=conv.inputs,
            outputs=conv.outputs,
            preprocessing=conv.options.preprocessing,
            task=conv.task,
            labels=conv.labels,
            postprocess=conv.postprocess,
            source=SourceInfo(
                framework=conv.loaded.framework,
                framework_version=conv.loaded.framework_version,
                tools=conv.tools,
                original_file=conv.source.name[:255],
            ),
            metrics=Metrics(
                top1=_top1(conv),
                eval_samples=conv.eval_set.samples if conv.eval_set is not None else None,
                latency_ms_p50=conv.latency.p50_ms,
                latency_ms_p95=conv.latency.p95_ms,
                threads=conv.latency.threads,
                extra=extra_metrics(conv.checks),
            ),
            self_test=SelfTest(
                file=SELFTEST_FILE,
                atol=conv.selftest.atol,
                rtol=conv.selftest.rtol,
                outputs=conv.selftest.outputs,
            ),
            reference_stats=conv.stats,
            build=BuildInfo(
                config=_build_config(conv),
                calibration_sha256=(
                    conv.quant.calibration.sha256 if conv.quant is not None else None
                ),
                report_file=REPORT_FILE,
            ),
        )
    except ValidationError as err:
        raise ConvertError(
            f"the manifest would be invalid: {describe_validation_error(err)}"
        ) from err
