"""Typed options of one conversion, and the record of them kept in the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgefleet.contract.pydantic_types import ModelName, ModelVersion, PreprocessingField

ConvertTask = Literal["classification", "detection", "segmentation", "regression", "raw"]
PostprocessName = Literal[
    "yolov8", "yolov5", "yolox", "gfl", "picodet", "ssd", "ssd-anchors", "mask"
]
QuantizeMode = Literal["auto", "int8", "fp16", "none"]
CalibrationMethodName = Literal["minmax", "entropy", "percentile"]

DEFAULT_METHODS: tuple[CalibrationMethodName, ...] = ("minmax", "entropy", "percentile")

#: Upper bounds for user-supplied side files, checked before they are read.
MAX_EVAL_BYTES = 512 * 1024 * 1024
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 256
MAX_DIM = 1 << 20


class ConvertOptions(BaseModel):
    """Everything ``convert`` needs besides the source file and the output directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ModelName | None = Field(
        default=None, description="Model name; defaults to the source file's stem, sanitised."
    )
    version: ModelVersion | None = Field(
        default=None, description="Model version; defaults to the UTC time, e.g. 20261123.193000."
    )
    task: ConvertTask | None = Field(
        default=None,
        description="What the outputs mean; inferred from a scikit-learn model, else 'raw'.",
    )
    postprocess: PostprocessName | None = Field(
        default=None,
        description="Output layout of a detector/segmenter (manifest.postprocess); default: "
        "recognised from the output shapes where they pin it down (converters/tasks.py).",
    )
    score_threshold: float | None = Field(
        default=None, ge=0, le=1, description="A detector's minimum box score (default 0.25)."
    )
    iou_threshold: float | None = Field(
        default=None, gt=0, le=1, description="A detector's NMS overlap limit (default 0.45)."
    )
    preprocessing: PreprocessingField | None = Field(
        default=None, description="Image → tensor recipe copied into the manifest."
    )
    labels: list[str] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        description="Class names by output index; defaults to a classifier's classes_.",
    )
    input_shapes: dict[str, list[int]] = Field(
        default_factory=dict,
        description="Input name → concrete shape used for synthetic inputs and latency runs.",
    )
    keep_dynamic: bool = Field(
        default=False,
        description="Keep dynamic input dims in the graph (default: fix them from the data).",
    )
    eval_data: Path | None = Field(
        default=None,
        description="An .npz with 'x' (or 'x/<input>' per input) and optionally 'y' labels.",
    )
    sign_key: Path | None = Field(
        default=None, description="PEM Ed25519 private key that signs the manifest."
    )
    force: bool = Field(default=False, description="Replace an existing artifact at OUT_DIR.")
    fidelity_atol: float = Field(
        default=1e-3, ge=0, description="Allowed |onnx - source| on float outputs, absolute part."
    )
    fidelity_rtol: float = Field(
        default=1e-3, ge=0, description="Allowed |onnx - source| on float outputs, relative part."
    )
    min_agreement: float = Field(
        default=0.99,
        ge=0,
        le=1,
        description="Least fraction of samples whose label/argmax must equal the source's.",
    )
    max_top1_drop: float = Field(
        default=0.005, ge=0, le=1, description="Largest top-1 loss against the source allowed."
    )
    synthetic_samples: int = Field(
        default=64, ge=1, le=4096, description="Rows generated when there is no eval data."
    )
    selftest_samples: int = Field(
        default=4, ge=1, le=64, description="Rows stored in the self-test file."
    )
    latency_warmup: int = Field(
        default=20, ge=1, le=10_000, description="Untimed runs before latency is measured."
    )
    latency_runs: int = Field(
        default=200, ge=5, le=100_000, description="Timed single-row runs for p50/p95."
    )
    calibration: Path | None = Field(
        default=None,
        description="Calibration data: an .npz (x or x/<input>, optional y) or an image folder "
        "(flat, or one sub-folder per class), preprocessed by --preprocessing.",
    )
    quantize: QuantizeMode | None = Field(
        default=None,
        description="auto: fastest candidate within --max-drop (fp32 if none qualifies); "
        "int8/fp16: that precision or fail; none: fp32. Default: auto with calibration, else none.",
    )
    max_drop: float = Field(
        default=0.01, ge=0, le=1, description="Largest metric drop vs fp32 a candidate may have."
    )
    target: str | None = Field(
        default=None, description="Device profile (name or .toml) the candidates are chosen for."
    )
    calibration_rows: int = Field(
        default=256, ge=1, le=100_000, description="Calibration rows fed to the calibrators."
    )
    calibration_methods: list[CalibrationMethodName] = Field(
        default_factory=lambda: list(DEFAULT_METHODS),
        min_length=1,
        description="Range estimators tried (MinMax for every format, the others on one).",
    )
    max_exclusion_steps: int = Field(
        default=6, ge=0, le=100, description="Accuracy-budget loop: most tensors spared."
    )
    max_eval_rows: int = Field(
        default=2048, ge=1, description="Calibration rows validated on when there is no --eval."
    )
    gate_threads: int = Field(default=1, ge=1, le=64, description="Latency-gate threads.")
    gate_rounds: int = Field(
        default=15, ge=1, le=10_000, description="Interleaved latency-gate rounds."
    )
    gate_runs_per_round: int = Field(
        default=20, ge=1, le=10_000, description="Timed runs per model per round."
    )
    latency_probe: bool = Field(
        default=True,
        description="Time every candidate briefly against fp32 before validating it and drop "
        "the ones not faster on this host (False: validate every candidate, e.g. to study "
        "their accuracy; much slower).",
    )
    min_speedup: float = Field(
        default=1.0,
        ge=1.0,
        le=100.0,
        description="Latency gate: a candidate must be at least this much faster than fp32.",
    )
    format: Literal["onnx", "tflite", "all"] | None = Field(
        default=None,
        description="Artifact format; default: tflite for .keras/.tflite sources, else onnx.",
    )
    trust_pickle: bool = Field(
        default=False,
        description="Allow unpickling a whole torch nn.Module (runs code from the file).",
    )
    progress: bool = Field(default=False, description="Progress lines on stderr.")
    time_budget_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Stop trying further quantization candidates (and budget-loop steps) once "
        "the search has run this long; the best found so far is kept.",
    )
    verbose: bool = Field(
        default=False,
        description="Per-node lines on stderr too (each step of the accuracy-budget loop).",
    )
    max_eval_bytes: int = Field(
        default=MAX_EVAL_BYTES, ge=1, description="Largest eval file (and unpacked size) read."
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str] | None) -> list[str] | None:
        if labels is None:
            return None
        if not labels:
            raise ValueError("labels must not be empty")
        for label in labels:
            if not label or len(label) > MAX_LABEL_CHARS or "\n" in label or "\r" in label:
                raise ValueError(f"each label must be one line of 1-{MAX_LABEL_CHARS} characters")
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels

    @field_validator("input_shapes")
    @classmethod
    def _shapes(cls, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
        if len(shapes) > 16:
            raise ValueError("at most 16 input shapes")
        for name, dims in shapes.items():
            if not name or len(name) > 256:
                raise ValueError("input names must be 1-256 characters")
            if not 1 <= len(dims) <= 8 or any(not 1 <= d <= MAX_DIM for d in dims):
                raise ValueError(f"shape of {name!r} needs 1-8 dimensions, each 1..{MAX_DIM}")
        return shapes

    @property
    def quantize_mode(self) -> QuantizeMode:
        if self.quantize is not None:
            return self.quantize
        return "auto" if self.calibration is not None else "none"

    @model_validator(mode="after")
    def _consistent(self) -> ConvertOptions:
        if self.labels is not None and self.task in ("regression", "raw"):
            raise ValueError("labels only make sense for a classifier, detector or segmenter")
        return self


def config_record(
    options: ConvertOptions, *, eval_sha256: str | None
) -> dict[str, str | int | float | bool]:
    """The options as the flat dict stored in ``manifest.build.config``."""
    record: dict[str, str | int | float | bool] = {
        "task": options.task or "auto",
        "force": options.force,
        "fidelity_atol": options.fidelity_atol,
        "fidelity_rtol": options.fidelity_rtol,
        "min_agreement": options.min_agreement,
        "max_top1_drop": options.max_top1_drop,
        "synthetic_samples": options.synthetic_samples,
        "selftest_samples": options.selftest_samples,
        "latency_warmup": options.latency_warmup,
        "latency_runs": options.latency_runs,
        "labels_given": options.labels is not None,
        "preprocessing_given": options.preprocessing is not None,
        "signed": options.sign_key is not None,
        "keep_dynamic": options.keep_dynamic,
    }
    record["quantize"] = options.quantize_mode
    if options.quantize_mode != "none":
        record["max_drop"] = options.max_drop
        record["target"] = options.target or "host"
        record["calibration_rows"] = options.calibration_rows
        record["calibration_methods"] = ",".join(options.calibration_methods)
    if options.calibration is not None:
        record["calibration_file"] = options.calibration.name[:255]
    for name, dims in sorted(options.input_shapes.items()):
        record[f"input_shape.{name}"] = ",".join(str(d) for d in dims)
    if options.eval_data is not None:
        record["eval_file"] = options.eval_data.name[:255]
    if eval_sha256 is not None:
        record["eval_sha256"] = eval_sha256
    return record
